"""Database clients on the real drivers, for the database tests: psycopg 3 (PostgreSQL), PyMySQL
(MySQL/MariaDB) and redis-py, all over TCP to 127.0.0.1. Runs one scenario on one connection and
prints one JSON line describing what it sent and got; an error the scenario provokes is caught and
reported, so the exit status is 0 unless something unplanned failed.

Usage: db_client.py postgres|mysql|redis PORT SCENARIO [SSLMODE]
  postgres simple    conn.execute() without parameters: simple-query protocol (Query message)
  postgres extended  parameters (Parse/Bind/Execute), then prepare=True twice (named statement)
  postgres error     a SELECT on a missing table (42P01), caught, then SELECT 1
  mysql    simple    a SELECT and an INSERT (COM_QUERY, PyMySQL interpolates parameters)
  mysql    error     a SELECT on a missing table (1146), caught, then SELECT 1
  redis    simple    SET, GET, INCR
  redis    pipeline  one pipeline (no MULTI) of SET, INCR, INCRBY, GET, DEL, sent in one write
  redis    error     SET then LPUSH on that string key (WRONGTYPE), caught, then GET
SSLMODE (postgres only, default disable) is libpq's: disable, require, verify-full, ...
The user, password and database are tw/tw/shop."""
import json
import sys

DB, PORT, SCENARIO = sys.argv[1], int(sys.argv[2]), sys.argv[3]
SSLMODE = sys.argv[4] if len(sys.argv) > 4 else "disable"

report = {"db": DB, "scenario": SCENARIO, "port": PORT, "operations": []}


def record(op, **fields):
    entry = {"op": op}
    entry.update(fields)
    report["operations"].append(entry)


def local_port(sock):
    return sock.getsockname()[1]


def postgres():
    import socket

    import psycopg

    conn = psycopg.connect(
        host="127.0.0.1",
        port=PORT,
        user="tw",
        password="tw",
        dbname="shop",
        sslmode=SSLMODE,
        autocommit=True,
        connect_timeout=10,
    )
    report["sslmode"] = SSLMODE
    report["ssl"] = conn.pgconn.ssl_in_use
    report["backend_pid"] = conn.info.backend_pid
    with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
        report["local_port"] = local_port(sock)

    def run(query, params=None, prepare=None):
        try:
            cur = conn.execute(query, params, prepare=prepare)
            rows = cur.fetchall() if cur.description else None
            record("query", query=query, params=params, prepare=prepare, rows=rows,
                   rowcount=cur.rowcount, status=cur.statusmessage)
        except psycopg.Error as e:
            record("query", query=query, params=params, prepare=prepare,
                   error=str(e).strip(), sqlstate=e.sqlstate)

    if SCENARIO == "simple":
        # No parameters and no prepare: psycopg sends a simple Query message.
        run("SELECT name FROM items WHERE id = 42")
        run("UPDATE items SET name = 'item-7' WHERE id = 7")
        run("INSERT INTO orders (item_id, qty) VALUES (42, 1)")
        run("SELECT count(*) FROM items")
    elif SCENARIO == "extended":
        # Parameters: Parse (unnamed) / Bind / Describe / Execute / Sync.
        run("SELECT name FROM items WHERE id = %s", (42,))
        run("UPDATE items SET name = %s WHERE id = %s", ("item-8", 8))
        # prepare=True: Parse of a named statement (_pg3_N), then Bind/Execute of that name; the
        # second run sends no Parse at all.
        run("SELECT name FROM items WHERE id = %s", (43,), prepare=True)
        run("SELECT name FROM items WHERE id = %s", (44,), prepare=True)
    elif SCENARIO == "error":
        run("SELECT * FROM missing_table")
        run("SELECT 1")
    else:
        raise SystemExit(f"unknown postgres scenario {SCENARIO}")
    conn.close()


def mysql():
    import pymysql

    conn = pymysql.connect(
        host="127.0.0.1",
        port=PORT,
        user="tw",
        password="tw",
        database="shop",
        autocommit=True,
        connect_timeout=10,
    )
    report["thread_id"] = conn.thread_id()
    report["local_port"] = local_port(conn._sock)

    def run(query, params=None):
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                rows = [list(r) for r in cur.fetchall()] if cur.description else None
                record("query", query=query, params=params, sent=cur._executed, rows=rows,
                       rowcount=cur.rowcount)
        except pymysql.MySQLError as e:
            code = e.args[0] if e.args else None
            record("query", query=query, params=params, error=str(e), errno=code)

    if SCENARIO == "simple":
        run("SELECT name FROM items WHERE id = %s", (42,))
        run("INSERT INTO orders (item_id, qty) VALUES (%s, %s)", (42, 1))
        run("SELECT count(*) FROM items")
    elif SCENARIO == "error":
        run("SELECT * FROM missing_table")
        run("SELECT 1")
    else:
        raise SystemExit(f"unknown mysql scenario {SCENARIO}")
    conn.close()


def redis_():
    import redis

    client = redis.Redis(host="127.0.0.1", port=PORT, socket_timeout=10)

    def run(*args):
        try:
            reply = client.execute_command(*args)
            if isinstance(reply, bytes):
                reply = reply.decode()
            record("command", args=list(args), reply=reply)
        except redis.ResponseError as e:
            record("command", args=list(args), error=str(e))

    # One connection for the whole scenario: take it from the pool now to report its port.
    client.ping()
    conn = client.connection_pool.get_connection("PING")
    report["local_port"] = local_port(conn._sock)
    client.connection_pool.release(conn)

    if SCENARIO == "simple":
        run("SET", "tw:greeting", "hello")
        run("GET", "tw:greeting")
        run("INCR", "tw:counter")
    elif SCENARIO == "pipeline":
        pipe = client.pipeline(transaction=False)
        commands = [
            ("SET", "tw:p", "1"),
            ("INCR", "tw:p"),
            ("INCRBY", "tw:p", "5"),
            ("GET", "tw:p"),
            ("DEL", "tw:p"),
        ]
        for command in commands:
            pipe.execute_command(*command)
        replies = [r.decode() if isinstance(r, bytes) else r for r in pipe.execute()]
        record("pipeline", commands=[list(c) for c in commands], replies=replies)
    elif SCENARIO == "error":
        run("SET", "tw:string", "x")
        run("LPUSH", "tw:string", "y")
        run("GET", "tw:string")
    else:
        raise SystemExit(f"unknown redis scenario {SCENARIO}")
    client.close()


{"postgres": postgres, "mysql": mysql, "redis": redis_}[DB]()
print(json.dumps(report), flush=True)
