//! Database spans: attributes, names and status, from hand-built exchanges.
use std::sync::Arc;

use agent_common::ConnOrigin;

use super::*;
use crate::{
    capture::process::ProcessInfo,
    protocol::db::{DbQuery, DbReply, DbSystem},
    reassembly::{ConnMeta, Message, Role},
    span::{AttrValue, Status},
};

fn exchange(db: DbExchange) -> Exchange {
    Exchange {
        id: 1,
        role: Role::Client,
        conn: Arc::new(ConnMeta {
            local: Some("10.0.0.1:41000".parse().expect("addr")),
            remote: Some("10.0.0.9:5432".parse().expect("addr")),
            origin: ConnOrigin::Unknown,
            tls: false,
            ip_text: Default::default(),
            process: ProcessInfo::for_test("shop"),
        }),
        message: Message::Db(Box::new(db)),
        start_ns: 1_000,
        end_ns: 4_000,
        tid: 7,
    }
}

fn query(operation: Option<&str>, collection: Option<&str>, text: &str) -> DbQuery {
    DbQuery {
        operation: operation.map(str::to_string),
        collection: collection.map(str::to_string),
        text: Some(text.to_string()),
        truncated: false,
        batch_size: 1,
    }
}

fn ok(rows: Option<u64>) -> Option<DbReply> {
    Some(DbReply {
        error_code: None,
        rows,
    })
}

/// Through the span stage's entry point, so the `Message::Db` dispatch is covered too.
fn span_of(db: DbExchange) -> Span {
    let ex = exchange(db);
    crate::span::http::build(
        &ex,
        SpanContext::new_root(),
        &Clock::with_offset(10),
        crate::span::http::SpanOptions::default(),
    )
}

fn s(span: &Span, key: &str) -> Option<String> {
    span.attribute(key).map(AttrValue::to_string)
}

fn keys_are_unique(span: &Span) {
    let mut keys: Vec<_> = span.attributes.iter().map(|a| a.key).collect();
    keys.sort_unstable();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "{:?}", span.attributes);
}

#[test]
fn postgres_select_with_collection() {
    let span = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: Some("shop".into()),
        query: query(
            Some("SELECT"),
            Some("users"),
            "SELECT * FROM users WHERE id = ?",
        ),
        reply: ok(Some(3)),
    });
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(span.name, "SELECT users");
    assert_eq!(span.status, Status::Unset);
    assert_eq!((span.start_unix_ns, span.end_unix_ns), (1_010, 4_010));
    for (key, want) in [
        (sc::DB_SYSTEM_NAME, "postgresql"),
        (sc::DB_NAMESPACE, "shop"),
        (sc::DB_OPERATION_NAME, "SELECT"),
        (sc::DB_COLLECTION_NAME, "users"),
        (sc::DB_QUERY_SUMMARY, "SELECT users"),
        (sc::DB_QUERY_TEXT, "SELECT * FROM users WHERE id = ?"),
        (sc::DB_RESPONSE_RETURNED_ROWS, "3"),
        (sc::SERVER_ADDRESS, "10.0.0.9"),
        (sc::SERVER_PORT, "5432"),
        (sc::NETWORK_PEER_ADDRESS, "10.0.0.9"),
        (sc::NETWORK_PEER_PORT, "5432"),
        (sc::THREAD_ID, "7"),
    ] {
        assert_eq!(s(&span, key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(span.attribute(sc::SERVER_PORT), Some(&AttrValue::Int(5432)));
    for absent in [
        sc::DB_RESPONSE_STATUS_CODE,
        sc::ERROR_TYPE,
        sc::DB_OPERATION_BATCH_SIZE,
        sc::TRACEWIRE_INCOMPLETE,
    ] {
        assert_eq!(s(&span, absent), None, "{absent}");
    }
    keys_are_unique(&span);
}

#[test]
fn redis_get_is_named_by_its_command() {
    let span = span_of(DbExchange {
        system: DbSystem::Redis,
        namespace: Some("0".into()),
        query: query(Some("GET"), None, "GET ?"),
        reply: ok(None),
    });
    assert_eq!(span.name, "GET");
    assert_eq!(s(&span, sc::DB_SYSTEM_NAME).as_deref(), Some("redis"));
    assert_eq!(s(&span, sc::DB_QUERY_SUMMARY).as_deref(), Some("GET"));
    assert_eq!(s(&span, sc::DB_QUERY_TEXT).as_deref(), Some("GET ?"));
    assert_eq!(s(&span, sc::DB_COLLECTION_NAME), None);
    assert_eq!(s(&span, sc::DB_RESPONSE_RETURNED_ROWS), None);
    assert_eq!(span.status, Status::Unset);
    keys_are_unique(&span);
}

#[test]
fn failing_mysql_query_is_an_error() {
    let span = span_of(DbExchange {
        system: DbSystem::MySql,
        namespace: None,
        query: query(Some("SELECT"), Some("missing"), "SELECT * FROM missing"),
        reply: Some(DbReply {
            error_code: Some("1146".into()),
            rows: None,
        }),
    });
    assert_eq!(span.status, Status::Error);
    assert_eq!(span.name, "SELECT missing");
    assert_eq!(s(&span, sc::DB_SYSTEM_NAME).as_deref(), Some("mysql"));
    assert_eq!(
        s(&span, sc::DB_RESPONSE_STATUS_CODE).as_deref(),
        Some("1146")
    );
    assert_eq!(s(&span, sc::ERROR_TYPE).as_deref(), Some("1146"));
    assert_eq!(s(&span, sc::DB_NAMESPACE), None);
    keys_are_unique(&span);
}

#[test]
fn batch_size_only_from_two() {
    let mut q = query(
        Some("INSERT"),
        Some("orders"),
        "INSERT INTO orders VALUES (?)",
    );
    q.batch_size = 3;
    let span = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: Some("shop".into()),
        query: q,
        reply: ok(Some(3)),
    });
    assert_eq!(
        span.attribute(sc::DB_OPERATION_BATCH_SIZE),
        Some(&AttrValue::Int(3))
    );
    assert_eq!(span.name, "INSERT orders");
    // A zero (unset) batch size is no batch either.
    let mut q = query(
        Some("INSERT"),
        Some("orders"),
        "INSERT INTO orders VALUES (?)",
    );
    q.batch_size = 0;
    let single = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: None,
        query: q,
        reply: ok(Some(1)),
    });
    assert_eq!(s(&single, sc::DB_OPERATION_BATCH_SIZE), None);
}

#[test]
fn truncated_text_is_marked() {
    let mut q = query(
        Some("UPDATE"),
        Some("carts"),
        "UPDATE carts SET items = ?, ...",
    );
    q.truncated = true;
    let span = span_of(DbExchange {
        system: DbSystem::MariaDb,
        namespace: Some("shop".into()),
        query: q,
        reply: ok(Some(1)),
    });
    assert_eq!(s(&span, sc::DB_SYSTEM_NAME).as_deref(), Some("mariadb"));
    assert_eq!(
        s(&span, sc::TRACEWIRE_INCOMPLETE).as_deref(),
        Some("query_text_truncated")
    );
    assert_eq!(span.status, Status::Unset);
}

#[test]
fn no_reply_is_incomplete_not_an_error() {
    let span = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: Some("shop".into()),
        query: query(Some("DELETE"), Some("sessions"), "DELETE FROM sessions"),
        reply: None,
    });
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        s(&span, sc::TRACEWIRE_INCOMPLETE).as_deref(),
        Some("no_reply")
    );
    assert_eq!(s(&span, sc::ERROR_TYPE), None);
    assert_eq!(s(&span, sc::DB_RESPONSE_STATUS_CODE), None);

    let mut q = query(
        Some("DELETE"),
        Some("sessions"),
        "DELETE FROM sessions WHERE ...",
    );
    q.truncated = true;
    let both = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: None,
        query: q,
        reply: None,
    });
    assert_eq!(
        s(&both, sc::TRACEWIRE_INCOMPLETE).as_deref(),
        Some("query_text_truncated,no_reply")
    );
    keys_are_unique(&both);
}

#[test]
fn names_without_an_operation() {
    // No operation: no summary, the target names the span.
    let with_ns = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: Some("shop".into()),
        query: DbQuery::default(),
        reply: ok(None),
    });
    assert_eq!(with_ns.name, "shop");
    assert_eq!(s(&with_ns, sc::DB_QUERY_SUMMARY), None);
    assert_eq!(s(&with_ns, sc::DB_OPERATION_NAME), None);
    assert_eq!(s(&with_ns, sc::DB_QUERY_TEXT), None);
    let by_address = span_of(DbExchange {
        system: DbSystem::Postgres,
        namespace: Some(String::new()),
        query: DbQuery::default(),
        reply: ok(None),
    });
    assert_eq!(by_address.name, "10.0.0.9:5432");
    assert_eq!(s(&by_address, sc::DB_NAMESPACE), None);

    let mut ex = exchange(DbExchange {
        system: DbSystem::Redis,
        namespace: None,
        query: DbQuery::default(),
        reply: ok(None),
    });
    let Some(conn) = Arc::get_mut(&mut ex.conn) else {
        panic!("the exchange owns its connection")
    };
    conn.remote = None;
    let Message::Db(db) = &ex.message else {
        panic!("db exchange")
    };
    let bare = build(&ex, db, SpanContext::new_root(), &Clock::with_offset(0));
    assert_eq!(bare.name, "redis");
    assert_eq!(s(&bare, sc::SERVER_ADDRESS), None);
}

#[test]
fn summary_rules() {
    assert_eq!(summary(None, Some("users")), None);
    assert_eq!(summary(Some("PING"), None).as_deref(), Some("PING"));
    let long = "t".repeat(MAX_SUMMARY);
    // An overlong target is dropped whole, not cut.
    assert_eq!(
        summary(Some("SELECT"), Some(&long)).as_deref(),
        Some("SELECT")
    );
    assert_eq!(summary(Some(&long), None).as_deref(), Some(long.as_str()));
    assert_eq!(summary(Some(&format!("{long}x")), None), None);
    assert_eq!(
        span_name(None, Some("SELECT"), Some("shop".into()), "postgresql"),
        "SELECT shop"
    );
}
