//! Database and cache calls as client spans, end to end: real PostgreSQL, MariaDB and Redis
//! servers from Debian's packages, their own command-line clients and the Python drivers
//! (psycopg, PyMySQL, redis-py), the real agent, and the spans a real OTLP receiver got.
//!
//! Each span is checked against the OpenTelemetry database conventions: `db.system.name`,
//! `db.operation.name`, `db.collection.name`, `db.query.text` with the literals gone,
//! `db.response.status_code` and status ERROR on an error reply, `server.address/port`, and a
//! name `{operation} {collection}`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tracewire_tests::collector::{event_int, event_str};
use tracewire_tests::db::{
    self, Db, MariaDbServer, PostgresServer, RedisServer, mariadb_client, psql, python_db_client,
    redis_cli,
};
use tracewire_tests::net::{http_get, loopback};
use tracewire_tests::{
    AgentGuard, Export, OtlpProtocol, OtlpReceiver, PeerServer, SpanRecord, TempDir,
};

/// The database client spans of one process, in start order.
fn db_spans(receiver: &OtlpReceiver, pid: u32) -> Vec<SpanRecord> {
    let mut spans: Vec<SpanRecord> = receiver
        .spans()
        .into_iter()
        .filter(|s| {
            s.kind() == SpanKind::Client
                && s.pid() == Some(pid)
                && s.attr("db.system.name").is_some()
        })
        .collect();
    spans.sort_by_key(|s| s.span.start_time_unix_nano);
    spans
}

/// Waits until `pid` has at least `n` database spans, then a moment for stragglers.
fn wait_db_spans(receiver: &OtlpReceiver, pid: u32, n: usize) -> Result<Vec<SpanRecord>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while db_spans(receiver, pid).len() < n {
        if Instant::now() >= deadline {
            bail!(
                "pid {pid} has {} database spans, wanted {n}\n{}",
                db_spans(receiver, pid).len(),
                receiver.report()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    Ok(db_spans(receiver, pid))
}

/// One expected span: its name, its `db.query.text`, and its error code if it failed.
struct Want<'a> {
    name: &'a str,
    text: Option<&'a str>,
    error: Option<&'a str>,
}

const fn ok<'a>(name: &'a str, text: &'a str) -> Want<'a> {
    Want {
        name,
        text: Some(text),
        error: None,
    }
}

const fn failed<'a>(name: &'a str, text: &'a str, code: &'a str) -> Want<'a> {
    Want {
        name,
        text: Some(text),
        error: Some(code),
    }
}

/// The spans are exactly `want`, in order, each with the conventions' attributes for `system`
/// on `port`.
fn check_spans(
    spans: &[SpanRecord],
    want: &[Want<'_>],
    system: &str,
    namespace: Option<&str>,
    port: u16,
) -> Result<()> {
    let names: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} [{}]",
                s.span.name,
                s.attr_str("db.query.text").unwrap_or("-")
            )
        })
        .collect();
    ensure!(
        spans.len() == want.len(),
        "expected {} spans, got {}: {names:#?}",
        want.len(),
        spans.len()
    );
    for (span, want) in spans.iter().zip(want) {
        let what = format!("span {:?} ({names:?})", span.span.name);
        ensure!(
            span.span.name == want.name,
            "{what}: wanted name {:?}",
            want.name
        );
        ensure!(
            span.attr_str("db.query.text") == want.text,
            "{what}: db.query.text {:?}, wanted {:?}",
            span.attr_str("db.query.text"),
            want.text
        );
        ensure!(
            span.attr_str("db.system.name") == Some(system),
            "{what}: db.system.name {:?}",
            span.attr_str("db.system.name")
        );
        if let Some(ns) = namespace {
            ensure!(
                span.attr_str("db.namespace") == Some(ns),
                "{what}: db.namespace {:?}",
                span.attr_str("db.namespace")
            );
        }
        ensure!(
            span.attr_str("server.address") == Some("127.0.0.1")
                && span.attr_int("server.port") == Some(i64::from(port)),
            "{what}: server {:?}:{:?}",
            span.attr_str("server.address"),
            span.attr_int("server.port")
        );
        ensure!(
            span.attr_str("db.response.status_code") == want.error,
            "{what}: db.response.status_code {:?}, wanted {:?}",
            span.attr_str("db.response.status_code"),
            want.error
        );
        let status = span.status_code();
        match want.error {
            Some(code) => ensure!(
                status == StatusCode::Error && span.attr_str("error.type") == Some(code),
                "{what}: status {status:?}, error.type {:?}",
                span.attr_str("error.type")
            ),
            None => ensure!(status == StatusCode::Unset, "{what}: status {status:?}"),
        }
        ensure!(
            span.span.end_time_unix_nano >= span.span.start_time_unix_nano,
            "{what}: ends before it starts"
        );
    }
    Ok(())
}

/// Literal values the clients sent must appear in no attribute that carries query text, nor in
/// the span's name.
fn check_no_literals(spans: &[SpanRecord], literals: &[&str]) -> Result<()> {
    for span in spans {
        for literal in literals {
            ensure!(
                !span.span.name.contains(literal),
                "span {:?} names {literal:?}",
                span.span.name
            );
        }
        let texts = [
            "db.query.text",
            "db.query.summary",
            "db.operation.name",
            "db.collection.name",
        ];
        for kv in span
            .span
            .attributes
            .iter()
            .filter(|kv| texts.contains(&kv.key.as_str()))
        {
            let value = format!("{:?}", kv.value);
            for literal in literals {
                ensure!(
                    !value.contains(literal),
                    "span {:?} exports {literal:?} in {}: {value}",
                    span.span.name,
                    kv.key
                );
            }
        }
    }
    Ok(())
}

fn start_agent(receiver: &OtlpReceiver, ports: &[u16], dir: &TempDir) -> Result<AgentGuard> {
    AgentGuard::start(Export::Otlp(receiver), ports, dir.path())
}

#[test]
fn postgres_queries_from_psql_and_psycopg_become_client_spans() -> Result<()> {
    let dir = TempDir::new("db-e2e-postgres")?;
    let server = PostgresServer::start(&dir)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = start_agent(&receiver, &[server.port], &dir)?;

    // psql: one simple Query per statement, one of them failing.
    let run = psql(
        &dir,
        &server,
        "SELECT name FROM items WHERE id = 42;\n\
         SELECT * FROM missing_table;\n\
         UPDATE items SET name = 'item-seven' WHERE id = 7;\n",
        "disable",
    )?;
    let spans = wait_db_spans(&receiver, run.process.pid, 3)?;
    check_spans(
        &spans,
        &[
            // psql sends each statement with its semicolon.
            ok("SELECT items", "SELECT name FROM items WHERE id = ?;"),
            failed(
                "SELECT missing_table",
                "SELECT * FROM missing_table;",
                "42P01",
            ),
            ok("UPDATE items", "UPDATE items SET name = ? WHERE id = ?;"),
        ],
        "postgresql",
        Some(db::DATABASE),
        server.port,
    )?;
    check_no_literals(&spans, &["42", "item-seven"])?;
    ensure!(
        spans[0].attr_str("db.operation.name") == Some("SELECT")
            && spans[0].attr_str("db.collection.name") == Some("items")
            && spans[0].attr_int("db.response.returned_rows") == Some(1),
        "the SELECT's operation, collection or row count is wrong: {:?}",
        spans[0].span.attributes
    );

    // psycopg, simple protocol (literals in the text) and extended protocol (parameters, and a
    // named statement executed again without its Parse).
    let simple = python_db_client(&dir, Db::Postgres, server.port, "simple", None, "shop-py")?;
    let spans = wait_db_spans(&receiver, simple.process.pid, 4)?;
    check_spans(
        &spans,
        &[
            ok("SELECT items", "SELECT name FROM items WHERE id = ?"),
            ok("UPDATE items", "UPDATE items SET name = ? WHERE id = ?"),
            ok(
                "INSERT orders",
                "INSERT INTO orders (item_id, qty) VALUES (?, ?)",
            ),
            ok("SELECT items", "SELECT count(*) FROM items"),
        ],
        "postgresql",
        Some(db::DATABASE),
        server.port,
    )?;
    check_no_literals(&spans, &["42", "item-7"])?;

    let extended = python_db_client(&dir, Db::Postgres, server.port, "extended", None, "shop-py")?;
    let by_id = "SELECT name FROM items WHERE id = $1";
    let spans = wait_db_spans(&receiver, extended.process.pid, 4)?;
    check_spans(
        &spans,
        &[
            ok("SELECT items", by_id),
            ok("UPDATE items", "UPDATE items SET name = $1 WHERE id = $2"),
            ok("SELECT items", by_id),
            ok("SELECT items", by_id),
        ],
        "postgresql",
        Some(db::DATABASE),
        server.port,
    )?;

    let error = python_db_client(&dir, Db::Postgres, server.port, "error", None, "shop-py")?;
    let spans = wait_db_spans(&receiver, error.process.pid, 2)?;
    check_spans(
        &spans,
        &[
            failed(
                "SELECT missing_table",
                "SELECT * FROM missing_table",
                "42P01",
            ),
            ok("SELECT", "SELECT ?"),
        ],
        "postgresql",
        Some(db::DATABASE),
        server.port,
    )?;
    Ok(())
}

#[test]
fn postgres_over_tls_is_read_through_the_openssl_probes() -> Result<()> {
    let dir = TempDir::new("db-e2e-postgres-tls")?;
    let server = PostgresServer::start(&dir)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = start_agent(&receiver, &[server.port], &dir)?;

    let run = python_db_client(
        &dir,
        Db::Postgres,
        server.port,
        "simple",
        Some("require"),
        "shop-tls",
    )?;
    ensure!(
        run.report()?["ssl"] == serde_json::Value::Bool(true),
        "psycopg did not use TLS: {}",
        run.stdout
    );
    let spans = wait_db_spans(&receiver, run.process.pid, 4)?;
    check_spans(
        &spans,
        &[
            ok("SELECT items", "SELECT name FROM items WHERE id = ?"),
            ok("UPDATE items", "UPDATE items SET name = ? WHERE id = ?"),
            ok(
                "INSERT orders",
                "INSERT INTO orders (item_id, qty) VALUES (?, ?)",
            ),
            ok("SELECT items", "SELECT count(*) FROM items"),
        ],
        "postgresql",
        Some(db::DATABASE),
        server.port,
    )?;
    check_no_literals(&spans, &["42", "item-7"])?;
    Ok(())
}

#[test]
fn mariadb_queries_from_its_client_and_pymysql_become_client_spans() -> Result<()> {
    let dir = TempDir::new("db-e2e-mariadb")?;
    let server = MariaDbServer::start(&dir)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = start_agent(&receiver, &[server.port], &dir)?;

    let run = mariadb_client(
        &dir,
        &server,
        "SELECT name FROM items WHERE id = 42; SELECT * FROM missing_table; \
         UPDATE items SET name = 'item-seven' WHERE id = 7;",
    )?;
    // Interactive, the client would first ask for `@@version_comment`: not counted if it does.
    let spans = wait_db_spans(&receiver, run.process.pid, 3)?;
    let spans: Vec<SpanRecord> = spans
        .into_iter()
        .filter(|s| {
            !s.attr_str("db.query.text")
                .is_some_and(|t| t.contains("@@"))
        })
        .collect();
    check_spans(
        &spans,
        &[
            ok("SELECT items", "SELECT name FROM items WHERE id = ?"),
            failed(
                "SELECT missing_table",
                "SELECT * FROM missing_table",
                "1146",
            ),
            ok("UPDATE items", "UPDATE items SET name = ? WHERE id = ?"),
        ],
        "mariadb",
        Some(db::DATABASE),
        server.port,
    )?;
    check_no_literals(&spans, &["42", "item-seven"])?;

    let simple = python_db_client(&dir, Db::MySql, server.port, "simple", None, "shop-py")?;
    let spans = wait_db_spans(&receiver, simple.process.pid, 3)?;
    // PyMySQL interpolates parameters client side: the literals are in the text it sends.
    check_spans(
        &spans,
        &[
            ok("SELECT items", "SELECT name FROM items WHERE id = ?"),
            ok(
                "INSERT orders",
                "INSERT INTO orders (item_id, qty) VALUES (?, ?)",
            ),
            ok("SELECT items", "SELECT count(*) FROM items"),
        ],
        "mariadb",
        Some(db::DATABASE),
        server.port,
    )?;
    check_no_literals(&spans, &["42"])?;

    let error = python_db_client(&dir, Db::MySql, server.port, "error", None, "shop-py")?;
    let spans = wait_db_spans(&receiver, error.process.pid, 2)?;
    check_spans(
        &spans,
        &[
            failed(
                "SELECT missing_table",
                "SELECT * FROM missing_table",
                "1146",
            ),
            ok("SELECT", "SELECT ?"),
        ],
        "mariadb",
        Some(db::DATABASE),
        server.port,
    )?;
    Ok(())
}

#[test]
fn redis_commands_from_redis_cli_and_redis_py_become_client_spans() -> Result<()> {
    let dir = TempDir::new("db-e2e-redis")?;
    let server = RedisServer::start(&dir)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = start_agent(&receiver, &[server.port], &dir)?;

    let run = redis_cli(&dir, &server, &["SET", "tw:secret-key", "secret-value"])?;
    let spans = wait_db_spans(&receiver, run.process.pid, 1)?;
    // redis-cli asks for COMMAND DOCS before the command when it is interactive only.
    let spans: Vec<SpanRecord> = spans
        .into_iter()
        .filter(|s| s.span.name != "COMMAND")
        .collect();
    check_spans(&spans, &[ok("SET", "SET ? ?")], "redis", None, server.port)?;
    check_no_literals(&spans, &["secret"])?;

    let pipeline = python_db_client(&dir, Db::Redis, server.port, "pipeline", None, "cache-py")?;
    let spans = wait_db_spans(&receiver, pipeline.process.pid, 6)?;
    check_spans(
        &spans,
        &[
            ok("PING", "PING"),
            ok("SET", "SET ? ?"),
            ok("INCR", "INCR ?"),
            ok("INCRBY", "INCRBY ? ?"),
            ok("GET", "GET ?"),
            ok("DEL", "DEL ?"),
        ],
        "redis",
        None,
        server.port,
    )?;
    check_no_literals(&spans, &["tw:p"])?;

    let error = python_db_client(&dir, Db::Redis, server.port, "error", None, "cache-py")?;
    let spans = wait_db_spans(&receiver, error.process.pid, 4)?;
    check_spans(
        &spans,
        &[
            ok("PING", "PING"),
            ok("SET", "SET ? ?"),
            failed("LPUSH", "LPUSH ? ?", "WRONGTYPE"),
            ok("GET", "GET ?"),
        ],
        "redis",
        None,
        server.port,
    )?;
    Ok(())
}

#[test]
fn twenty_queries_of_one_request_hang_under_its_server_span() -> Result<()> {
    let dir = TempDir::new("db-e2e-n-plus-1")?;
    let pg = PostgresServer::start(&dir)?;
    let app = db::db_app(&dir, &pg, "orders")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = start_agent(&receiver, &[pg.port, app.port], &dir)?;

    let reply = http_get(loopback(app.port), "/orders/1", Duration::from_secs(10))?;
    ensure!(reply.status == 200, "the app answered {}", reply.status);
    let server = receiver.wait_for_span("the app's server span", |s| {
        s.kind() == SpanKind::Server
            && s.pid() == Some(app.serving.pid)
            && s.attr_str("url.path") == Some("/orders/1")
    })?;
    let spans = wait_db_spans(&receiver, app.serving.pid, 20)?;
    ensure!(
        spans.len() == 20,
        "one request made {} query spans, not 20",
        spans.len()
    );
    for span in &spans {
        ensure!(
            span.span.trace_id == server.span.trace_id
                && span.span.parent_span_id == server.span.span_id,
            "query span {:?} is not a child of the request's server span",
            span.span.name
        );
        ensure!(
            span.span.name == "SELECT items"
                && span.attr_str("db.query.text") == Some("SELECT name FROM items WHERE id = $1"),
            "query span {:?} text {:?}",
            span.span.name,
            span.attr_str("db.query.text")
        );
        ensure!(
            span.span.start_time_unix_nano >= server.span.start_time_unix_nano
                && span.span.end_time_unix_nano <= server.span.end_time_unix_nano,
            "query span {:?} is outside its request",
            span.span.name
        );
    }
    check_findings(&receiver, &app, &server, &spans)
}

/// The N+1 finding on the request's server span, its critical path, and none of it on a
/// request that runs a handful of distinct queries.
fn check_findings(
    receiver: &OtlpReceiver,
    app: &PeerServer,
    server: &SpanRecord,
    queries: &[SpanRecord],
) -> Result<()> {
    let found = server.events("tracewire.finding.n_plus_one");
    ensure!(
        found.len() == 1,
        "the server span has {} N+1 findings, not 1: {:?}",
        found.len(),
        server.event_names()
    );
    let shape = event_str(found[0], "tracewire.finding.shape").unwrap_or_default();
    ensure!(
        event_int(found[0], "tracewire.finding.count") == Some(20)
            && shape.starts_with("postgresql SELECT name FROM items WHERE id = $1 @127.0.0.1:"),
        "N+1 finding: count {:?}, shape {shape:?}",
        event_int(found[0], "tracewire.finding.count")
    );
    ensure!(
        server.events("tracewire.finding.serial_fan_out").is_empty(),
        "twenty queries to one database are not a fan-out: {:?}",
        server.event_names()
    );
    // The critical path: the server span itself, then queries (they ran one after another).
    let hex = |id: &[u8]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ids = server
        .attr_strs("tracewire.critical_path.span_ids")
        .context("no tracewire.critical_path.span_ids on the server span")?;
    let self_ns = server
        .attr_ints("tracewire.critical_path.self_ns")
        .context("no tracewire.critical_path.self_ns on the server span")?;
    let query_ids: Vec<String> = queries.iter().map(|q| hex(&q.span.span_id)).collect();
    ensure!(
        ids.len() == 21
            && ids[0] == hex(&server.span.span_id)
            && ids[1..].iter().all(|id| query_ids.iter().any(|q| q == id))
            && self_ns.len() == ids.len(),
        "critical path {ids:?} ({self_ns:?}) is not the server span then its 20 queries"
    );
    let duration = (server.span.end_time_unix_nano - server.span.start_time_unix_nano) as i64;
    let total: i64 = self_ns.iter().sum();
    ensure!(
        (total - duration).abs() <= 1_000,
        "the critical path adds up to {total} ns, the server span lasted {duration} ns"
    );

    let reply = http_get(loopback(app.port), "/report", Duration::from_secs(10))?;
    ensure!(reply.status == 200, "/report answered {}", reply.status);
    let report = receiver.wait_for_span("the /report server span", |s| {
        s.kind() == SpanKind::Server
            && s.pid() == Some(app.serving.pid)
            && s.attr_str("url.path") == Some("/report")
    })?;
    ensure!(
        report.span.events.is_empty(),
        "five distinct queries raised findings: {:?}",
        report.event_names()
    );
    Ok(())
}
