//! Real conversations recorded with `fixtures/capture.py` (PostgreSQL 15; psql 15, psycopg 3.1
//! on libpq 15), and hand-made messages for what the recordings do not show.
use super::*;
use crate::protocol::db::replay;

const PSQL_SIMPLE: &[u8] = include_bytes!("../fixtures/postgres/psql_simple.bin");
const PSQL_LARGE: &[u8] = include_bytes!("../fixtures/postgres/psql_large.bin");
const PSYCOPG_EXTENDED: &[u8] = include_bytes!("../fixtures/postgres/psycopg_extended.bin");
const PSYCOPG_SIMPLE: &[u8] = include_bytes!("../fixtures/postgres/psycopg_simple.bin");

/// Events in a compact, comparable form.
fn show(events: &[DbEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            DbEvent::Query(q) => format!(
                "query {} | {} | {}{}{}",
                q.operation.as_deref().unwrap_or("-"),
                q.collection.as_deref().unwrap_or("-"),
                q.text.as_deref().unwrap_or("-"),
                if q.truncated { " (truncated)" } else { "" },
                if q.batch_size > 1 {
                    format!(" x{}", q.batch_size)
                } else {
                    String::new()
                },
            ),
            DbEvent::Reply(r) => format!(
                "reply {} rows {}",
                r.error_code.as_deref().unwrap_or("ok"),
                r.rows.map_or("-".to_string(), |n| n.to_string())
            ),
            DbEvent::Namespace(n) => format!("namespace {n}"),
            DbEvent::System(s) => format!("system {}", s.as_str()),
            DbEvent::StartTls => "starttls".into(),
            DbEvent::Lost => "lost".into(),
        })
        .collect()
}

fn records(fixture: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = fixture;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (data, after) = tail.split_at(len);
        out.push((*tag, data));
        rest = after;
    }
    out
}

/// Feeds each record cut to `capture` bytes, the rest as a gap, as the kernel side does.
fn replay_captured(fixture: &[u8], capture: usize) -> Vec<DbEvent> {
    let mut p = PostgresParser::new();
    let mut out = Vec::new();
    for (tag, data) in records(fixture) {
        let kept = &data[..data.len().min(capture)];
        let gap = (data.len() - kept.len()) as u64;
        match tag {
            b'C' => p.client(kept, gap, &mut out),
            _ => p.server(kept, gap, &mut out),
        }
        assert!(p.buffered() <= MAX_BUFFERED);
    }
    out
}

#[test]
fn fixtures_give_their_queries_and_replies() {
    let cases: [(&[u8], &[&str]); 4] = [
        (
            PSQL_SIMPLE,
            &[
                "namespace shop",
                "query SELECT | items | SELECT name FROM items WHERE id = ?",
                "reply ok rows 1",
                "query SELECT | missing_table | SELECT * FROM missing_table",
                "reply 42P01 rows -",
                "query UPDATE | items | UPDATE items SET name = ? WHERE id = ?",
                "reply ok rows 1",
            ],
        ),
        (
            PSQL_LARGE,
            &[
                "namespace shop",
                "query SELECT | - | SELECT g, md5(g::text) FROM generate_series(?,?) g",
                "reply ok rows 3000",
            ],
        ),
        (
            // Unnamed statements, then a named one (prepare=True) executed again without its
            // Parse, a failing one, and three statements pipelined before one Sync.
            PSYCOPG_EXTENDED,
            &[
                "namespace shop",
                "query SELECT | items | SELECT name FROM items WHERE id = $1",
                "reply ok rows 1",
                "query SELECT | items | SELECT name FROM items WHERE id = $1",
                "reply ok rows 1",
                "query SELECT | items | SELECT name FROM items WHERE id = $1",
                "reply ok rows 1",
                "query SELECT | missing_table | SELECT * FROM missing_table WHERE id = $1",
                "reply 42P01 rows -",
                "query BATCH | items | INSERT INTO items VALUES ($1, $2) ON CONFLICT DO NOTHING; \
                 SELECT count(*) FROM items; DELETE FROM items WHERE id = $1 x3",
                "reply ok rows 3",
            ],
        ),
        (
            PSYCOPG_SIMPLE,
            &[
                "namespace shop",
                "query SELECT | items | SELECT name FROM items WHERE id = ? AND name <> ?",
                "reply ok rows 1",
                "query BEGIN | - | BEGIN",
                "reply ok rows -",
                "query UPDATE | items | UPDATE items SET name = ? WHERE id = ?",
                "reply ok rows 1",
                "query COMMIT | - | COMMIT",
                "reply ok rows -",
            ],
        ),
    ];
    for (fixture, want) in cases {
        assert_eq!(show(&replay(&mut PostgresParser::new(), fixture)), want);
    }
}

#[test]
fn every_split_point_gives_the_same_events() {
    for fixture in [PSQL_SIMPLE, PSYCOPG_EXTENDED, PSYCOPG_SIMPLE] {
        let whole = replay(&mut PostgresParser::new(), fixture);
        for (i, (tag, data)) in records(fixture).into_iter().enumerate() {
            for at in 0..=data.len() {
                let mut p = PostgresParser::new();
                let mut out = Vec::new();
                for (j, (t, d)) in records(fixture).into_iter().enumerate() {
                    let feed = |p: &mut PostgresParser, d: &[u8], out: &mut Vec<DbEvent>| match t {
                        b'C' => p.client(d, 0, out),
                        _ => p.server(d, 0, out),
                    };
                    if j == i {
                        assert_eq!(t, tag);
                        feed(&mut p, &d[..at], &mut out);
                        feed(&mut p, &d[at..], &mut out);
                    } else {
                        feed(&mut p, d, &mut out);
                    }
                }
                assert_eq!(out, whole, "record {i} split at {at}");
            }
        }
    }
}

#[test]
fn a_large_result_read_past_the_capture_still_ends_its_query() {
    // 4096 bytes of each 8 KiB+ read are captured: the framing of the rows is lost, and the
    // reply ends where the read that ends with ReadyForQuery does (or the client's next write).
    for capture in [4096, 512, 64] {
        let events = show(&replay_captured(PSQL_LARGE, capture));
        assert_eq!(events.first().map(String::as_str), Some("namespace shop"));
        assert_eq!(
            events.get(1).map(String::as_str),
            Some("query SELECT | - | SELECT g, md5(g::text) FROM generate_series(?,?) g"),
            "capture {capture}"
        );
        assert!(
            events.get(2).is_some_and(|e| e.starts_with("reply ok")),
            "capture {capture}: {events:?}"
        );
        assert_eq!(events.len(), 3, "capture {capture}: {events:?}");
    }
}

fn message(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

const READY: &[u8] = b"Z\0\0\0\x05I";
const SSL_REQUEST_BYTES: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[test]
fn ssl_refused_goes_on_in_clear_and_accepted_hands_over_to_tls() {
    let mut p = PostgresParser::new();
    let mut out = Vec::new();
    p.client(SSL_REQUEST_BYTES, 0, &mut out);
    p.server(b"N", 0, &mut out);
    p.client(&startup(&[("user", "app")]), 0, &mut out);
    p.server(READY, 0, &mut out);
    p.client(&message(b'Q', b"SELECT 1\0"), 0, &mut out);
    p.server(
        &[message(b'C', b"SELECT 1\0"), READY.to_vec()].concat(),
        0,
        &mut out,
    );
    assert_eq!(
        show(&out),
        [
            "namespace app",
            "query SELECT | - | SELECT ?",
            "reply ok rows 1"
        ]
    );

    let mut p = PostgresParser::new();
    let mut out = Vec::new();
    p.client(SSL_REQUEST_BYTES, 0, &mut out);
    p.server(b"S", 0, &mut out);
    p.client(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, &mut out);
    assert_eq!(show(&out), ["starttls"]);
}

#[test]
fn joined_mid_stream_pairs_from_the_next_query() {
    let q = message(b'Q', b"SELECT name FROM items WHERE id = 1\0");
    assert!(looks_like_client_messages(&q));
    let mut p = PostgresParser::joined();
    let mut out = Vec::new();
    p.client(&q, 0, &mut out);
    let error = message(
        b'E',
        b"SERROR\0VERROR\0C42703\0Mcolumn \"x\" does not exist\0\0",
    );
    p.server(&[error, READY.to_vec()].concat(), 0, &mut out);
    assert_eq!(
        show(&out),
        [
            "query SELECT | items | SELECT name FROM items WHERE id = ?",
            "reply 42703 rows -"
        ]
    );
}

#[test]
fn a_long_query_is_cut_and_marked() {
    let mut text = b"SELECT * FROM t WHERE a IN (".to_vec();
    for i in 0..3000 {
        text.extend_from_slice(format!("{i}, ").as_bytes());
    }
    text.extend_from_slice(b"0)\0");
    let q = message(b'Q', &text);
    let mut p = PostgresParser::joined();
    let mut out = Vec::new();
    p.client(&q[..4096], (q.len() - 4096) as u64, &mut out);
    p.server(READY, 0, &mut out);
    let [DbEvent::Query(query), DbEvent::Reply(_)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert!(query.truncated);
    let text = query.text.as_deref().unwrap_or_default();
    assert!(
        text.starts_with("SELECT * FROM t WHERE a IN (?, ?"),
        "{text}"
    );
    assert!(
        text.len() <= MAX_QUERY_TEXT && !text.contains('7'),
        "{text}"
    );
}

#[test]
fn a_gap_over_client_messages_loses_the_pairing_and_recovers() {
    let mut p = PostgresParser::joined();
    let mut out = Vec::new();
    p.client(&message(b'Q', b"SELECT 1\0"), 0, &mut out);
    // A write whose end (maybe a Sync) was not captured.
    let b = message(b'B', b"\0s1\0\0\0\0\0\0\0");
    p.client(&b, 10, &mut out);
    p.server(READY, 0, &mut out);
    p.client(&message(b'Q', b"SELECT 2\0"), 0, &mut out);
    p.server(READY, 0, &mut out);
    assert_eq!(
        show(&out),
        [
            "query SELECT | - | SELECT ?",
            "lost",
            "query SELECT | - | SELECT ?",
            "reply ok rows -"
        ]
    );
}

#[test]
fn hostile_bytes_do_not_panic_or_grow() {
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 64],
        b"Q\xff\xff\xff\xff".to_vec(),
        b"Q\0\0\0\x03".to_vec(),
        [0, 0, 0, 9, 0, 3, 0, 0, b'u'].to_vec(),
        message(b'P', b"no terminators"),
        message(b'B', b""),
        message(b'C', b"S"),
        message(b'E', b"C"),
    ];
    inputs.push(startup(&[("user", &"u".repeat(5000))]));
    for input in &inputs {
        for mut p in [PostgresParser::new(), PostgresParser::joined()] {
            let mut out = Vec::new();
            for gap in [0, 1, 1 << 40] {
                p.client(input, gap, &mut out);
                p.server(input, gap, &mut out);
                assert!(p.buffered() <= MAX_BUFFERED);
            }
        }
    }
}

#[test]
fn prepared_statements_are_bounded() {
    let mut p = PostgresParser::joined();
    let mut out = Vec::new();
    for i in 0..(MAX_STATEMENTS * 2) {
        let mut body = format!("s{i}\0").into_bytes();
        body.extend_from_slice(&b"SELECT x FROM t WHERE y = $1 ".repeat(60));
        body.extend_from_slice(b"\0\0\0");
        p.client(&message(b'P', &body), 0, &mut out);
        assert!(p.statements.by_name.len() <= MAX_STATEMENTS);
        assert!(p.statements.bytes <= MAX_STATEMENT_BYTES);
    }
}

#[test]
fn detection() {
    assert!(looks_like_startup(&startup(&[
        ("user", "tw"),
        ("database", "shop")
    ])));
    assert!(looks_like_startup(SSL_REQUEST_BYTES));
    assert!(looks_like_client_messages(&message(b'Q', b"SELECT 1\0")));
    assert!(looks_like_client_messages(
        &[
            message(b'B', b"\0_pg3_0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b"")
        ]
        .concat()
    ));
    for not_postgres in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
        b"POST /x HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x21\0\0\0\x03SELECT * FROM t WHERE a = 1 LIMIT 5",
        b"Q",
        b"Q\0\0\0\x09SELECT 1",
    ] {
        assert!(!looks_like_startup(not_postgres), "{not_postgres:?}");
        assert!(
            !looks_like_client_messages(not_postgres),
            "{not_postgres:?}"
        );
    }
}

/// Found by the fuzzer: a typed message of type 0 was taken for a cancel request, which ends the
/// parsing of the connection, but only from the next write on.
#[test]
fn a_zero_type_byte_is_lost_framing_whole_or_split() {
    let input = include_bytes!("../fixtures/postgres/fuzz_split_lost.bin");
    let split = usize::from(input[0]) * input.len() / 256;
    for make in [PostgresParser::new, PostgresParser::joined] {
        let (mut whole, mut pieces) = (make(), make());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        whole.client(input, 0, &mut a);
        pieces.client(&input[..split], 0, &mut b);
        pieces.client(&input[split..], 0, &mut b);
        assert_eq!(a, b);
    }
}
