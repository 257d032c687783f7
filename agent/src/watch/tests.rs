use super::*;

const T0: u64 = 1_764_115_200_000_000_000;
const MS: u64 = 1_000_000;

#[allow(clippy::too_many_arguments)]
fn span(
    id: &str,
    parent: Option<&str>,
    server: bool,
    service: &str,
    name: &str,
    target: &str,
    start_ms: u64,
    end_ms: u64,
) -> WatchSpan {
    WatchSpan {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: id.into(),
        parent_span_id: parent.map(str::to_string),
        server,
        service: service.into(),
        name: name.into(),
        target: target.into(),
        status: "200".into(),
        error: false,
        start_unix_ns: T0 + start_ms * MS,
        end_unix_ns: T0 + end_ms * MS,
        findings: Vec::new(),
        critical_path: Vec::new(),
    }
}

/// A 3-hop trace as the agent would export it: front -> middle -> leaf, plus a database query
/// and a parallel cache call at the front.
fn three_hop() -> Vec<WatchSpan> {
    let mut front = span("a1", None, true, "front", "GET", "/front/1", 0, 40);
    front.critical_path = vec![
        "a1".into(),
        "a2".into(),
        "b1".into(),
        "b2".into(),
        "c1".into(),
    ];
    front.findings = vec!["serial_fan_out".into()];
    let mut cache = span("a3", Some("a1"), false, "front", "GET", "redis/0", 2, 5);
    cache.status = String::new();
    let mut failing = span(
        "a4",
        Some("a1"),
        false,
        "front",
        "GET",
        "http://127.0.0.1:9/x",
        3,
        4,
    );
    failing.status = "503".into();
    failing.error = true;
    vec![
        span("c1", Some("b2"), true, "leaf", "GET", "/leaf/1", 20, 30),
        span(
            "b2",
            Some("b1"),
            false,
            "middle",
            "GET",
            "http://127.0.0.1:8082/leaf/1",
            18,
            32,
        ),
        span("b1", Some("a2"), true, "middle", "GET", "/back/1", 12, 34),
        span(
            "a2",
            Some("a1"),
            false,
            "front",
            "GET",
            "http://127.0.0.1:8081/back/1",
            10,
            36,
        ),
        cache,
        failing,
        front,
    ]
}

#[test]
fn spans_become_one_tree_in_waterfall_order() {
    let list = traces(&three_hop());
    assert_eq!(list.len(), 1);
    let t = &list[0];
    let order: Vec<(&str, usize)> = t
        .spans
        .iter()
        .zip(&t.depths)
        .map(|(s, d)| (s.span_id.as_str(), *d))
        .collect();
    assert_eq!(
        order,
        [
            ("a1", 0),
            ("a3", 1),
            ("a4", 1),
            ("a2", 1),
            ("b1", 2),
            ("b2", 3),
            ("c1", 4)
        ]
    );
    assert_eq!(t.duration_ns(), 40 * MS);
    assert!(t.error());
}

#[test]
fn the_waterfall_text_matches_the_golden_file() {
    let list = traces(&three_hop());
    let text = render(&list[0], 100);
    let golden = include_str!("golden/three_hop.txt");
    if std::env::var_os("TRACEWIRE_BLESS").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/watch/golden/three_hop.txt"
            ),
            &text,
        )
        .expect("writing the golden file");
        return;
    }
    assert_eq!(text, golden, "\n{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{line:?} is wider than 100 columns"
        );
    }
}

#[test]
fn an_80_column_waterfall_fits() {
    let list = traces(&three_hop());
    for line in render(&list[0], 80).lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
}

#[test]
fn filters() {
    let list = traces(&three_hop());
    let t = &list[0];
    assert!(Filter::default().accepts(t));
    let by = |f: Filter| f.accepts(t);
    assert!(by(Filter {
        service: Some("leaf".into()),
        ..Filter::default()
    }));
    assert!(!by(Filter {
        service: Some("nobody".into()),
        ..Filter::default()
    }));
    assert!(!by(Filter {
        min_duration: Duration::from_millis(41),
        ..Filter::default()
    }));
    assert!(by(Filter {
        errors_only: true,
        ..Filter::default()
    }));
    assert!(!by(Filter {
        trace_id: Some("00".into()),
        ..Filter::default()
    }));
}

#[test]
fn hostile_ids_do_not_loop() {
    // A span that is its own parent, and two that are each other's.
    let spans = vec![
        span("x", Some("x"), true, "s", "GET", "/", 0, 1),
        span("y", Some("z"), true, "s", "GET", "/", 0, 1),
        span("z", Some("y"), true, "s", "GET", "/", 0, 1),
    ];
    let list = traces(&spans);
    assert_eq!(list.len(), 1);
    assert!(list[0].spans.len() <= 3);
    let _ = render(&list[0], 80);
}
