use std::sync::Arc;

use super::*;
use crate::{
    capture::process::ProcessInfo,
    span::{Status, semconv as sc},
};

const MS: u64 = 1_000_000;
const T0: u64 = 1_764_115_200_000_000_000;

fn process(pid: u32) -> Arc<ProcessInfo> {
    let mut p = (*ProcessInfo::for_test("shop")).clone();
    p.pid = pid;
    Arc::new(p)
}

fn span(id: u8, parent: Option<u8>, kind: SpanKind, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: [1; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        parent_is_remote: false,
        tracestate: None,
        kind,
        name: format!("span{id}").into(),
        start_unix_ns: T0 + start_ms * MS,
        end_unix_ns: T0 + end_ms * MS,
        attributes: Vec::new(),
        events: Vec::new(),
        status: Status::Unset,
        process: process(1),
    }
}

fn query(id: u8, parent: u8, start_ms: u64, end_ms: u64, text: &str) -> Span {
    let mut s = span(id, Some(parent), SpanKind::Client, start_ms, end_ms);
    s.attributes = vec![
        Attribute::str(sc::DB_SYSTEM_NAME, "postgresql"),
        Attribute::str(sc::DB_QUERY_TEXT, text),
        Attribute::str(sc::SERVER_ADDRESS, "127.0.0.1"),
        Attribute::int(sc::SERVER_PORT, 5432),
    ];
    s
}

fn call(id: u8, parent: u8, start_ms: u64, end_ms: u64, port: i64, path: &str) -> Span {
    let mut s = span(id, Some(parent), SpanKind::Client, start_ms, end_ms);
    s.attributes = vec![
        Attribute::str(sc::HTTP_REQUEST_METHOD, "GET"),
        Attribute::str(sc::URL_FULL, format!("http://127.0.0.1:{port}{path}")),
        Attribute::str(sc::SERVER_ADDRESS, "127.0.0.1"),
        Attribute::int(sc::SERVER_PORT, port),
    ];
    s
}

/// Runs `spans` through an analyzer (children first, as they arrive) and returns the spans it
/// let out, held ones included, by id.
fn analyze(cfg: FindingsConfig, spans: Vec<Span>) -> HashMap<u8, Span> {
    let mut a = Analyzer::new(cfg);
    let mut out = Vec::new();
    let now = Instant::now();
    for s in spans {
        a.process(s, now, &mut out);
    }
    a.drain(&mut out);
    out.into_iter().map(|s| (s.span_id[0], s)).collect()
}

fn events<'a>(s: &'a Span, name: &str) -> Vec<&'a SpanEvent> {
    s.events.iter().filter(|e| e.name == name).collect()
}

fn int(e: &SpanEvent, key: &str) -> i64 {
    match e.attributes.iter().find(|a| a.key == key).map(|a| &a.value) {
        Some(AttrValue::Int(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn twenty_identical_queries_are_one_n_plus_one_on_their_parent() {
    let mut spans: Vec<Span> = (0..20)
        .map(|i| {
            query(
                10 + i as u8,
                1,
                1 + i,
                2 + i,
                "SELECT name FROM items WHERE id = $1",
            )
        })
        .collect();
    spans.push(span(1, None, SpanKind::Server, 0, 30));
    let out = analyze(FindingsConfig::default(), spans);
    assert_eq!(out.len(), 21, "every span comes out");
    let found = events(&out[&1], N_PLUS_ONE);
    assert_eq!(found.len(), 1, "{:?}", out[&1].events);
    assert_eq!(int(found[0], COUNT), 20);
    assert_eq!(int(found[0], DURATION_NS), 20 * MS as i64);
    assert_eq!(found[0].time_unix_ns, T0 + MS);
    assert!(
        found[0].attributes.iter().any(|a| a.key == SHAPE
            && a.value
                == AttrValue::Str(
                    "postgresql SELECT name FROM items WHERE id = $1 @127.0.0.1:5432".into()
                )),
        "{found:?}"
    );
    assert!(events(&out[&10], N_PLUS_ONE).is_empty(), "only the parent");
}

#[test]
fn a_handful_of_distinct_queries_and_nine_repeats_raise_nothing() {
    let mut spans = Vec::new();
    for (i, table) in ["users", "orders", "items", "prices", "stock"]
        .iter()
        .enumerate()
    {
        let i = i as u64;
        spans.push(query(
            10 + i as u8,
            1,
            i * 2,
            i * 2 + 1,
            &format!("SELECT * FROM {table}"),
        ));
        spans.push(query(
            20 + i as u8,
            1,
            i * 2 + 1,
            i * 2 + 2,
            &format!("SELECT * FROM {table}"),
        ));
    }
    for i in 0..9u64 {
        spans.push(query(40 + i as u8, 1, 20 + i, 21 + i, "SELECT 1"));
    }
    spans.push(span(1, None, SpanKind::Server, 0, 40));
    let out = analyze(FindingsConfig::default(), spans);
    assert!(out[&1].events.is_empty(), "{:?}", out[&1].events);
}

#[test]
fn calls_to_the_same_path_template_are_the_same_shape() {
    let spans: Vec<Span> = (0..10)
        .map(|i| {
            call(
                10 + i as u8,
                1,
                i * 3,
                i * 3 + 2,
                8080,
                &format!("/users/{}?q=x", 100 + i),
            )
        })
        .chain([span(1, None, SpanKind::Server, 0, 40)])
        .collect();
    let out = analyze(FindingsConfig::default(), spans);
    let found = events(&out[&1], N_PLUS_ONE);
    assert_eq!(found.len(), 1);
    assert!(found[0].attributes.iter().any(
        |a| a.key == SHAPE && a.value == AttrValue::Str("GET 127.0.0.1:8080/users/{id}".into())
    ));
    // Ten calls to one peer back to back are not a fan-out: one peer.
    assert!(events(&out[&1], SERIAL_FAN_OUT).is_empty());
}

#[test]
fn three_calls_one_after_another_to_different_peers_are_a_serial_fan_out() {
    let spans = vec![
        call(10, 1, 1, 11, 8081, "/a"),
        call(11, 1, 12, 32, 8082, "/b"),
        call(12, 1, 33, 38, 8083, "/c"),
        span(1, None, SpanKind::Server, 0, 40),
    ];
    let out = analyze(FindingsConfig::default(), spans);
    let found = events(&out[&1], SERIAL_FAN_OUT);
    assert_eq!(found.len(), 1, "{:?}", out[&1].events);
    assert_eq!(int(found[0], COUNT), 3);
    assert_eq!(int(found[0], DURATION_NS), 35 * MS as i64);
    assert_eq!(
        int(found[0], SAVED_NS),
        15 * MS as i64,
        "35 ms in series, 20 in parallel"
    );
    assert!(found[0].attributes.iter().any(|a| a.key == PEERS
        && a.value
            == AttrValue::StrArray(vec![
                "127.0.0.1:8081".into(),
                "127.0.0.1:8082".into(),
                "127.0.0.1:8083".into()
            ])));
}

#[test]
fn parallel_calls_long_gaps_and_two_calls_are_no_fan_out() {
    let parallel = vec![
        call(10, 1, 1, 11, 8081, "/a"),
        call(11, 1, 2, 30, 8082, "/b"),
        call(12, 1, 2, 20, 8083, "/c"),
        span(1, None, SpanKind::Server, 0, 40),
    ];
    let out = analyze(FindingsConfig::default(), parallel);
    assert!(
        out[&1].events.is_empty(),
        "Promise.all: {:?}",
        out[&1].events
    );
    let gaps = vec![
        call(10, 1, 1, 11, 8081, "/a"),
        call(11, 1, 30, 40, 8082, "/b"),
        call(12, 1, 60, 70, 8083, "/c"),
        span(1, None, SpanKind::Server, 0, 80),
    ];
    let out = analyze(FindingsConfig::default(), gaps);
    assert!(
        out[&1].events.is_empty(),
        "work between calls: {:?}",
        out[&1].events
    );
    let two = vec![
        call(10, 1, 1, 11, 8081, "/a"),
        call(11, 1, 12, 20, 8082, "/b"),
        span(1, None, SpanKind::Server, 0, 30),
    ];
    assert!(
        analyze(FindingsConfig::default(), two)[&1]
            .events
            .is_empty()
    );
}

#[test]
fn the_critical_path_skips_what_ran_in_parallel_and_counts_gaps_as_own_work() {
    // A 10..40 runs in parallel with B 20..90; C 92..98 after; C has a child D 93..97 (a
    // downstream server span, in another process).
    let mut d = span(4, Some(3), SpanKind::Server, 93, 97);
    d.parent_is_remote = true;
    d.process = process(2);
    let spans = vec![
        d,
        call(2, 1, 10, 40, 8081, "/a"),
        call(5, 1, 20, 90, 8082, "/b"),
        call(3, 1, 92, 98, 8083, "/c"),
        span(1, None, SpanKind::Server, 0, 100),
    ];
    let out = analyze(FindingsConfig::default(), spans);
    let root = &out[&1];
    let ids = root
        .attribute(CRITICAL_PATH_SPAN_IDS)
        .expect("path on the root");
    assert_eq!(
        ids,
        &AttrValue::StrArray([1u8, 5, 3, 4].iter().map(|i| hex(&[*i; 8])).collect())
    );
    assert_eq!(
        root.attribute(CRITICAL_PATH_SELF_NS),
        Some(&AttrValue::IntArray(vec![
            24 * MS as i64,
            70 * MS as i64,
            2 * MS as i64,
            4 * MS as i64
        ])),
        "root: 0..20, 90..92, 98..100; B whole; C less D; D whole"
    );
    // D's parent is in another process: D is a root too (of its process), with no children.
    assert!(out[&4].attribute(CRITICAL_PATH_SPAN_IDS).is_none());
    assert!(
        out[&3].attribute(CRITICAL_PATH_SPAN_IDS).is_none(),
        "not a root"
    );
}

#[test]
fn a_first_request_ten_times_slower_than_the_next_is_a_cold_start() {
    let mut spans = vec![span(1, None, SpanKind::Server, 0, 500)];
    for i in 0..5u64 {
        spans.push(span(
            10 + i as u8,
            None,
            SpanKind::Server,
            600 + i * 20,
            610 + i * 20,
        ));
    }
    let out = analyze(FindingsConfig::default(), spans);
    assert_eq!(out.len(), 6);
    let found = events(&out[&1], COLD_START);
    assert_eq!(found.len(), 1, "{:?}", out[&1].events);
    assert_eq!(int(found[0], DURATION_NS), 500 * MS as i64);
    assert_eq!(int(found[0], MEDIAN_NS), 10 * MS as i64);
    assert_eq!(int(found[0], COUNT), 5);
    assert!(events(&out[&10], COLD_START).is_empty());
}

#[test]
fn a_steady_process_and_a_lone_request_are_no_cold_start() {
    let mut spans = vec![span(1, None, SpanKind::Server, 0, 30)];
    for i in 0..5u64 {
        spans.push(span(
            10 + i as u8,
            None,
            SpanKind::Server,
            600 + i * 20,
            610 + i * 20,
        ));
    }
    assert!(
        analyze(FindingsConfig::default(), spans)[&1]
            .events
            .is_empty(),
        "3x is not 10x"
    );

    // A first request, then five of the same duration, each from 1 ms after the last:
    // - sub-millisecond: 50 µs after 4 µs is no cold start, however large the ratio;
    // - a hiccup: 9 ms after 300 µs is 30x, but under 10 ms slower; 10.4 ms after 300 µs is one.
    for (first_ns, next_ns, cold) in [
        (50_000u64, 4_000u64, false),
        (9_000_000, 300_000, false),
        (10_400_000, 300_000, true),
    ] {
        let mut first = span(1, None, SpanKind::Server, 0, 0);
        first.end_unix_ns = first.start_unix_ns + first_ns;
        let mut spans = vec![first];
        for i in 0..5u64 {
            let mut s = span(10 + i as u8, None, SpanKind::Server, 20 + i, 20 + i);
            s.end_unix_ns += next_ns;
            spans.push(s);
        }
        let out = analyze(FindingsConfig::default(), spans);
        let what = format!("{first_ns} ns after a median of {next_ns} ns");
        if cold {
            assert_eq!(events(&out[&1], COLD_START).len(), 1, "{what}");
        } else {
            assert!(out[&1].events.is_empty(), "{what}");
        }
    }

    // One request and nothing after it: released after the wait, without a verdict.
    let mut a = Analyzer::new(FindingsConfig::default());
    let mut out = Vec::new();
    let now = Instant::now();
    a.process(span(1, None, SpanKind::Server, 0, 500), now, &mut out);
    assert!(out.is_empty(), "held");
    a.tick(now + Duration::from_millis(100), &mut out);
    assert!(out.is_empty(), "still held");
    a.tick(now + Duration::from_secs(3), &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].events.is_empty());
}

#[test]
fn families_whose_parent_never_comes_are_forgotten() {
    let mut a = Analyzer::new(FindingsConfig::default());
    let mut out = Vec::new();
    let now = Instant::now();
    a.process(call(10, 99, 0, 1, 8081, "/a"), now, &mut out);
    assert_eq!(out.len(), 1, "children are never delayed");
    a.tick(now + FAMILY_TTL + Duration::from_secs(1), &mut out);
    assert_eq!(a.orphans, 1);
    assert!(a.families.is_empty());
}

#[test]
fn disabled_passes_spans_through_untouched() {
    let cfg = FindingsConfig {
        enabled: false,
        ..FindingsConfig::default()
    };
    let spans: Vec<Span> = (0..20)
        .map(|i| query(10 + i as u8, 1, 1 + i, 2 + i, "SELECT 1"))
        .chain([span(1, None, SpanKind::Server, 0, 30)])
        .collect();
    let out = analyze(cfg, spans);
    assert!(out[&1].events.is_empty());
    assert!(out[&1].attribute(CRITICAL_PATH_SPAN_IDS).is_none());
}

#[test]
fn path_templates() {
    assert_eq!(
        path_template("http://a:1/users/123/orders?x=1"),
        "/users/{id}/orders"
    );
    assert_eq!(path_template("https://h/"), "/");
    assert_eq!(path_template("http://h"), "/");
    assert_eq!(
        path_template("http://h/o/6f1c9a4e-1f2b-4c3d-8e9f-0a1b2c3d4e5f#x"),
        "/o/{id}"
    );
    assert_eq!(path_template("/v1/items"), "/v1/items");
}
