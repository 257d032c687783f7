"""A web app with the classic N+1: GET /orders/N runs 20 identical queries
`SELECT name FROM items WHERE id = %s` (ids N+1 .. N+20, wrapped into 1..100) on the process's one
psycopg 3 connection to PostgreSQL, then answers 200 with a small JSON body; GET /report runs a
handful of distinct queries (no N+1: the control case); anything else is 404.

The connection is made on the first request (module-level, under a lock that also serializes the
requests' use of it), autocommit, so each query is one Parse/Bind/Describe/Execute/Sync exchange.
psycopg prepares a query server-side once it has run PREPARE_THRESHOLD times on a connection (its
default is 5): later runs send Bind/Execute of the named statement `_pg3_0`, with no Parse and no
query text. Pass `none` to never prepare.

Usage: db_app.py PORT PG_PORT [SSLMODE (default disable)] [PREPARE_THRESHOLD (default 5)]"""
import http.server
import json
import re
import sys
import threading

import psycopg

PORT, PG_PORT = int(sys.argv[1]), int(sys.argv[2])
SSLMODE = sys.argv[3] if len(sys.argv) > 3 else "disable"
THRESHOLD = sys.argv[4] if len(sys.argv) > 4 else "5"
QUERIES = 20
REPORT = [
    "SELECT count(*) FROM items",
    "SELECT max(id) FROM items",
    "SELECT count(*) FROM orders",
    "SELECT min(name) FROM items",
    "SELECT count(*) FROM items WHERE id > 50",
]
ORDER = re.compile(r"^/orders/(\d+)$")

_lock = threading.Lock()
_conn = None


def connection():
    """The process's connection, made on first use; the caller holds _lock."""
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(
            host="127.0.0.1",
            port=PG_PORT,
            user="tw",
            password="tw",
            dbname="shop",
            sslmode=SSLMODE,
            autocommit=True,
            connect_timeout=10,
        )
        _conn.prepare_threshold = None if THRESHOLD == "none" else int(THRESHOLD)
    return _conn


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/report":
            with _lock:
                conn = connection()
                with conn.cursor() as cur:
                    counts = []
                    for sql in REPORT:
                        cur.execute(sql)
                        counts.append(str(cur.fetchone()[0]))
            self.answer(200, {"report": counts})
            return
        match = ORDER.match(self.path)
        if not match:
            self.answer(404, {"error": "not found", "path": self.path})
            return
        n = int(match.group(1))
        names = []
        with _lock:
            conn = connection()
            with conn.cursor() as cur:
                for i in range(QUERIES):
                    cur.execute("SELECT name FROM items WHERE id = %s", ((n + i) % 100 + 1,))
                    row = cur.fetchone()
                    names.append(row[0] if row else None)
            backend_pid = conn.info.backend_pid
        self.answer(200, {"order": n, "queries": QUERIES, "items": names,
                          "backend_pid": backend_pid})

    def answer(self, status, payload):
        body = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), App).serve_forever()
