//! The database harness alone, with no agent: each test server starts, answers the stock client
//! and every `peers/db_client.py` scenario as planned, the N+1 app answers, and dropping the
//! guards leaves no server process behind. When a database end-to-end test fails and these
//! pass, look at the agent.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tracewire_tests::TempDir;
use tracewire_tests::db::{
    self, Db, MariaDbServer, PostgresServer, RedisServer, mariadb_client, psql, python_db_client,
    redis_cli,
};
use tracewire_tests::net::{http_get, loopback};

/// The server's pid and its children's (the postmaster's backends and workers), to check that
/// none is left once the guard is dropped.
fn process_tree(pid: u32) -> Vec<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect()
}

fn ensure_gone(pids: &[u32]) -> Result<()> {
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    ensure!(alive.is_empty(), "processes left behind: {alive:?}");
    Ok(())
}

/// The operations a `db_client.py` report lists.
fn operations(report: &Value) -> Result<&Vec<Value>> {
    report["operations"]
        .as_array()
        .with_context(|| format!("no operations in {report}"))
}

#[test]
fn postgres_answers_psql_psycopg_and_the_n_plus_1_app() -> Result<()> {
    let dir = TempDir::new("db-postgres")?;
    let server = PostgresServer::start(&dir)?;

    let run = psql(
        &dir,
        &server,
        "SELECT name FROM items WHERE id = 42;\n\
         SELECT * FROM missing_table;\n\
         SELECT count(*) FROM items;\n",
        "disable",
    )?;
    ensure!(
        run.stdout.contains("item-42") && run.stdout.contains(&db::ITEMS.to_string()),
        "psql did not print the rows:\n{}",
        run.stdout
    );
    ensure!(
        run.stderr
            .contains("relation \"missing_table\" does not exist"),
        "psql did not report the failing query:\n{}",
        run.stderr
    );
    ensure!(run.process.executable_name == "psql", "{:?}", run.process);

    for sslmode in ["require", "verify-full"] {
        let run = psql(
            &dir,
            &server,
            "SELECT 'ssl=' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n",
            sslmode,
        )?;
        ensure!(
            run.stdout.contains("ssl=true"),
            "psql with sslmode={sslmode} did not use TLS:\n{}{}",
            run.stdout,
            run.stderr
        );
    }

    let simple = python_db_client(&dir, Db::Postgres, server.port, "simple", None, "tw-db")?;
    let report = simple.report()?;
    ensure!(report["ssl"] == false, "{report}");
    let ops = operations(&report)?;
    ensure!(
        ops.len() == 4 && ops.iter().all(|op| op["error"].is_null()),
        "{report}"
    );
    ensure!(
        ops[0]["rows"] == serde_json::json!([["item-42"]]),
        "{report}"
    );

    let extended = python_db_client(&dir, Db::Postgres, server.port, "extended", None, "tw-db")?;
    let report = extended.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops.len() == 4 && ops.iter().all(|op| op["error"].is_null()),
        "{report}"
    );
    ensure!(
        ops[3]["rows"] == serde_json::json!([["item-44"]]),
        "{report}"
    );

    let error = python_db_client(&dir, Db::Postgres, server.port, "error", None, "tw-db")?;
    let report = error.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops[0]["sqlstate"] == "42P01" && ops[1]["rows"] == serde_json::json!([[1]]),
        "{report}"
    );

    let tls = python_db_client(
        &dir,
        Db::Postgres,
        server.port,
        "extended",
        Some("require"),
        "tw-db",
    )?;
    let report = tls.report()?;
    ensure!(report["ssl"] == true, "{report}");
    ensure!(
        tls.process.service_name == "tw-db" && tls.process.executable_name.starts_with("python3"),
        "{:?}",
        tls.process
    );

    // The server saw the simple protocol for the literal query, the unnamed extended protocol for
    // the parameterized one, and a named prepared statement for prepare=True.
    let log = server.log()?;
    for wanted in [
        "statement: SELECT name FROM items WHERE id = 42",
        "execute <unnamed>: SELECT name FROM items WHERE id = $1",
        "execute _pg3_0: SELECT name FROM items WHERE id = $1",
        "ERROR:  relation \"missing_table\" does not exist",
    ] {
        ensure!(
            log.contains(wanted),
            "the server log lacks {wanted:?}:\n{log}"
        );
    }

    let app = db::db_app(&dir, &server, "tw-orders")?;
    let mut backends = Vec::new();
    for order in [7, 8] {
        let reply = http_get(
            loopback(app.port),
            &format!("/orders/{order}"),
            Duration::from_secs(20),
        )?;
        ensure!(reply.status == 200, "GET /orders/{order}: {reply:?}");
        let body: Value = serde_json::from_str(&reply.body)?;
        let items = body["items"].as_array().context("no items")?;
        ensure!(
            body["queries"] == 20 && items.len() == 20 && items.iter().all(Value::is_string),
            "GET /orders/{order}: {body}"
        );
        backends.push(body["backend_pid"].clone());
    }
    ensure!(
        backends[0] == backends[1],
        "the app used more than one connection: {backends:?}"
    );
    let reply = http_get(loopback(app.port), "/nothing", Duration::from_secs(20))?;
    ensure!(reply.status == 404, "GET /nothing: {reply:?}");
    drop(app);

    let tree = process_tree(server.pid);
    ensure!(tree.len() > 1, "the postmaster has no children: {tree:?}");
    drop(server);
    ensure_gone(&tree)
}

#[test]
fn mariadb_answers_the_mariadb_client_and_pymysql() -> Result<()> {
    let dir = TempDir::new("db-mariadb")?;
    let server = MariaDbServer::start(&dir)?;

    let run = mariadb_client(
        &dir,
        &server,
        "SELECT name FROM items WHERE id = 42; SELECT * FROM missing_table; \
         SELECT count(*) FROM items",
    )?;
    ensure!(
        run.stdout.contains("item-42") && run.stdout.contains(&db::ITEMS.to_string()),
        "mariadb did not print the rows:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    ensure!(
        run.stderr.contains("ERROR 1146"),
        "mariadb did not report the failing query:\n{}",
        run.stderr
    );
    ensure!(
        run.process.executable_name == "mariadb",
        "{:?}",
        run.process
    );

    let simple = python_db_client(&dir, Db::MySql, server.port, "simple", None, "tw-db")?;
    let report = simple.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops.len() == 3 && ops.iter().all(|op| op["error"].is_null()),
        "{report}"
    );
    ensure!(
        ops[0]["rows"] == serde_json::json!([["item-42"]]),
        "{report}"
    );
    ensure!(ops[1]["rowcount"] == 1, "{report}");

    let error = python_db_client(&dir, Db::MySql, server.port, "error", None, "tw-db")?;
    let report = error.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops[0]["errno"] == 1146 && ops[1]["rows"] == serde_json::json!([[1]]),
        "{report}"
    );

    let log = server.log()?;
    for wanted in [
        "Query\tSELECT name FROM items WHERE id = 42",
        "Query\tINSERT INTO orders (item_id, qty) VALUES (42, 1)",
    ] {
        ensure!(
            log.contains(wanted),
            "the general log lacks {wanted:?}:\n{log}"
        );
    }

    let pids = process_tree(server.pid);
    drop(server);
    ensure_gone(&pids)
}

#[test]
fn redis_answers_redis_cli_and_redis_py() -> Result<()> {
    let dir = TempDir::new("db-redis")?;
    let server = RedisServer::start(&dir)?;

    let set = redis_cli(&dir, &server, &["SET", "tw:key", "value"])?;
    ensure!(set.stdout.trim() == "OK", "SET: {set:?}");
    let get = redis_cli(&dir, &server, &["GET", "tw:key"])?;
    ensure!(get.stdout.trim() == "value", "GET: {get:?}");
    let wrong = redis_cli(&dir, &server, &["LPUSH", "tw:key", "x"])?;
    ensure!(
        wrong.stdout.contains("WRONGTYPE"),
        "LPUSH on a string: {wrong:?}"
    );
    ensure!(
        set.process.executable_name == "redis-cli",
        "{:?}",
        set.process
    );

    let simple = python_db_client(&dir, Db::Redis, server.port, "simple", None, "tw-db")?;
    let report = simple.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops.len() == 3 && ops[1]["reply"] == "hello" && ops[2]["reply"] == 1,
        "{report}"
    );

    let pipeline = python_db_client(&dir, Db::Redis, server.port, "pipeline", None, "tw-db")?;
    let report = pipeline.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops[0]["replies"] == serde_json::json!([true, 2, 7, "7", 1]),
        "{report}"
    );

    let error = python_db_client(&dir, Db::Redis, server.port, "error", None, "tw-db")?;
    let report = error.report()?;
    let ops = operations(&report)?;
    ensure!(
        ops[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("WRONGTYPE"))
            && ops[2]["reply"] == "x",
        "{report}"
    );

    let pids = process_tree(server.pid);
    drop(server);
    ensure_gone(&pids)
}
