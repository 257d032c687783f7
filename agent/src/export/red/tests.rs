//! RED aggregation: buckets, limits, and both renderings.

use super::*;
use crate::{
    capture::process::ProcessInfo,
    span::{Attribute, Status},
};

const START: u64 = 1_700_000_000_000_000_000;

fn span(kind: SpanKind, service: &str, attributes: Vec<Attribute>, dur_ns: u64) -> Span {
    Span {
        trace_id: [1; 16],
        span_id: [2; 8],
        parent_span_id: None,
        parent_is_remote: false,
        tracestate: None,
        kind,
        name: "GET".into(),
        start_unix_ns: START + 1_000,
        end_unix_ns: START + 1_000 + dur_ns,
        attributes,
        events: Vec::new(),
        status: Status::Unset,
        process: ProcessInfo::for_test(service),
    }
}

fn server(service: &str, path: &str, status: i64, dur_ns: u64) -> Span {
    span(
        SpanKind::Server,
        service,
        vec![
            Attribute::str(sc::HTTP_REQUEST_METHOD, "GET"),
            Attribute::int(sc::HTTP_RESPONSE_STATUS_CODE, status),
            Attribute::str(sc::NETWORK_PROTOCOL_VERSION, "1.1"),
            Attribute::int(sc::THREAD_ID, 7),
            Attribute::str(sc::URL_PATH, path),
            Attribute::str(sc::URL_SCHEME, "http"),
            Attribute::str(sc::SERVER_ADDRESS, "example.com"),
            Attribute::str(sc::CLIENT_ADDRESS, "10.0.0.1"),
        ],
        dur_ns,
    )
}

fn client(service: &str, host: &str, status: i64, dur_ns: u64) -> Span {
    span(
        SpanKind::Client,
        service,
        vec![
            Attribute::str(sc::HTTP_REQUEST_METHOD, "POST"),
            Attribute::int(sc::HTTP_RESPONSE_STATUS_CODE, status),
            Attribute::str(sc::NETWORK_PROTOCOL_VERSION, "1.1"),
            Attribute::str(sc::SERVER_ADDRESS, host),
            Attribute::int(sc::SERVER_PORT, 8443),
            Attribute::str(sc::URL_FULL, format!("https://{host}:8443/pay/123")),
            Attribute::str(sc::NETWORK_PEER_ADDRESS, "10.0.0.2"),
        ],
        dur_ns,
    )
}

fn grpc(kind: SpanKind, service: &str, code: i64, dur_ns: u64) -> Span {
    span(
        kind,
        service,
        vec![
            Attribute::str(sc::RPC_SYSTEM, "grpc"),
            Attribute::str(sc::RPC_SERVICE, "helloworld.Greeter"),
            Attribute::str(sc::RPC_METHOD, "SayHello"),
            Attribute::int(sc::RPC_GRPC_STATUS_CODE, code),
            Attribute::str(sc::SERVER_ADDRESS, "greeter"),
            Attribute::int(sc::SERVER_PORT, 50051),
        ],
        dur_ns,
    )
}

fn only<'a>(red: &'a Red, service: &str, inst: Instrument) -> (&'a Key, &'a Series) {
    let m = &red.services[service].series[inst as usize];
    assert_eq!(m.len(), 1, "{m:?}");
    m.iter().next().expect("one series")
}

fn get<'a>(key: &'a Key, name: &str) -> Option<&'a Val> {
    key.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
}

fn sv(v: &str) -> Val {
    Val::Str(v.into())
}

#[test]
fn server_span_lands_in_its_bucket() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&server("shop", "/users/123", 200, 30_000_000));
    // Bounds are inclusive: exactly 100 ms is in le=0.1.
    red.record(&server("shop", "/users/456", 200, 100_000_000));
    red.record(&server("shop", "/users/7", 200, 20_000_000_000));
    let (key, s) = only(&red, "shop", Instrument::HttpServer);
    assert_eq!(
        key,
        &vec![
            (sc::HTTP_REQUEST_METHOD, sv("GET")),
            (sc::HTTP_RESPONSE_STATUS_CODE, Val::Int(200)),
            (HTTP_ROUTE, sv("/users/{id}")),
            (sc::URL_SCHEME, sv("http")),
            (sc::NETWORK_PROTOCOL_VERSION, sv("1.1")),
        ]
    );
    assert_eq!(s.count, 3);
    assert!((s.sum - 20.13).abs() < 1e-9, "{}", s.sum);
    assert_eq!((s.min, s.max), (0.03, 20.0));
    let mut want = [0u64; 15];
    want[3] = 1; // 0.05
    want[5] = 1; // 0.1
    want[14] = 1; // +Inf
    assert_eq!(&*s.buckets, &want);
    assert_eq!(s.start_unix_ns, START + 1_000);
    assert_eq!(red.series(), 1);
    assert_eq!(red.overflowed(), 0);
}

#[test]
fn client_and_rpc_spans_go_to_their_metrics() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&client("shop", "pay.internal", 201, 5_000_000));
    red.record(&grpc(SpanKind::Server, "shop", 0, 12_000_000));
    red.record(&grpc(SpanKind::Client, "shop", 14, 0));
    let svc = &red.services["shop"];
    assert!(svc.series[Instrument::HttpServer as usize].is_empty());
    let (key, c) = only(&red, "shop", Instrument::HttpClient);
    assert_eq!(
        key,
        &vec![
            (sc::HTTP_REQUEST_METHOD, sv("POST")),
            (sc::HTTP_RESPONSE_STATUS_CODE, Val::Int(201)),
            (sc::SERVER_ADDRESS, sv("pay.internal")),
            (sc::SERVER_PORT, Val::Int(8443)),
            (sc::URL_SCHEME, sv("https")),
            (sc::NETWORK_PROTOCOL_VERSION, sv("1.1")),
        ]
    );
    assert_eq!(c.count, 1);
    let (key, r) = only(&red, "shop", Instrument::RpcServer);
    assert_eq!(
        key,
        &vec![
            (sc::RPC_SYSTEM, sv("grpc")),
            (sc::RPC_SERVICE, sv("helloworld.Greeter")),
            (sc::RPC_METHOD, sv("SayHello")),
            (sc::RPC_GRPC_STATUS_CODE, Val::Int(0)),
        ]
    );
    // 12 ms, in milliseconds: le=25.
    assert_eq!(r.sum, 12.0);
    assert_eq!(r.buckets[3], 1);
    let (key, r) = only(&red, "shop", Instrument::RpcClient);
    assert_eq!(get(key, sc::RPC_GRPC_STATUS_CODE), Some(&Val::Int(14)));
    // 0 ms: the first bucket, le=0.
    assert_eq!(r.buckets[0], 1);
    assert_eq!(red.series(), 3);
}

#[test]
fn stable_rpc_conventions_map_to_the_old_attributes() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&span(
        SpanKind::Client,
        "shop",
        vec![
            Attribute::str(sc::RPC_SYSTEM_NAME, "grpc"),
            Attribute::str(sc::RPC_METHOD, "helloworld.Greeter/SayHello"),
            Attribute::str(sc::RPC_RESPONSE_STATUS_CODE, "UNAVAILABLE"),
        ],
        1_000_000,
    ));
    assert!(red.services["shop"].series[Instrument::HttpClient as usize].is_empty());
    let (key, _) = only(&red, "shop", Instrument::RpcClient);
    assert_eq!(
        key,
        &vec![
            (sc::RPC_SYSTEM, sv("grpc")),
            (sc::RPC_SERVICE, sv("helloworld.Greeter")),
            (sc::RPC_METHOD, sv("SayHello")),
            (sc::RPC_GRPC_STATUS_CODE, Val::Int(14)),
        ]
    );
}

#[test]
fn error_type_is_carried() {
    let mut red = Red::new(RedConfig::default(), START);
    let mut failed = server("shop", "/checkout", 503, 1_000_000);
    failed
        .attributes
        .push(Attribute::str(sc::ERROR_TYPE, "503"));
    red.record(&failed);
    red.record(&server("shop", "/checkout", 200, 1_000_000));
    let mut reset = client("shop", "pay", 0, 1_000_000);
    reset
        .attributes
        .retain(|a| a.key != sc::HTTP_RESPONSE_STATUS_CODE);
    reset
        .attributes
        .push(Attribute::str(sc::ERROR_TYPE, "stream_reset"));
    red.record(&reset);
    let servers = &red.services["shop"].series[Instrument::HttpServer as usize];
    assert_eq!(servers.len(), 2);
    let errors: Vec<_> = servers
        .keys()
        .filter_map(|k| get(k, sc::ERROR_TYPE))
        .collect();
    assert_eq!(errors, vec![&sv("503")]);
    let (key, _) = only(&red, "shop", Instrument::HttpClient);
    assert_eq!(get(key, sc::ERROR_TYPE), Some(&sv("stream_reset")));
    assert_eq!(get(key, sc::HTTP_RESPONSE_STATUS_CODE), None);
    let mut text = String::new();
    red.render_prometheus(&mut text);
    assert!(text.contains("error_type=\"503\""), "{text}");
}

#[test]
fn route_limit_records_other() {
    let cfg = RedConfig {
        max_routes_per_service: 2,
        ..RedConfig::default()
    };
    let mut red = Red::new(cfg, START);
    for path in ["/a", "/b", "/c", "/d/1", "/a", "/b/"] {
        red.record(&server("shop", path, 200, 1_000));
    }
    // Another service has its own routes.
    red.record(&server("other", "/c", 200, 1_000));
    let routes: Vec<_> = red.services["shop"].series[Instrument::HttpServer as usize]
        .iter()
        .map(|(k, s)| (get(k, HTTP_ROUTE).cloned(), s.count))
        .collect();
    assert_eq!(
        routes,
        vec![
            (Some(sv("/a")), 2),
            (Some(sv("/b")), 1),
            (Some(sv("{other}")), 3),
        ]
    );
    let (key, _) = only(&red, "other", Instrument::HttpServer);
    assert_eq!(get(key, HTTP_ROUTE), Some(&sv("/c")));
    assert_eq!(red.overflowed(), 0);
}

#[test]
fn series_limit_overflows() {
    let cfg = RedConfig {
        max_series: 2,
        ..RedConfig::default()
    };
    let mut red = Red::new(cfg, START);
    red.record(&client("shop", "h1", 200, 1_000));
    red.record(&client("shop", "h2", 200, 1_000));
    for host in ["h3", "h4", "h5"] {
        red.record(&client("shop", host, 200, 1_000));
    }
    // Existing series keep counting.
    red.record(&client("shop", "h1", 200, 1_000));
    red.record(&grpc(SpanKind::Server, "api", 0, 1_000));
    assert_eq!(red.overflowed(), 4);
    assert_eq!(red.series(), 4);
    let svc = &red.services["shop"];
    assert_eq!(svc.series[Instrument::HttpClient as usize].len(), 2);
    let overflow = svc.overflow[Instrument::HttpClient as usize]
        .as_ref()
        .expect("overflow series");
    assert_eq!(overflow.count, 3);
    assert!(red.services["api"].overflow[Instrument::RpcServer as usize].is_some());

    let mut text = String::new();
    red.render_prometheus(&mut text);
    assert!(text.contains(
        "http_client_request_duration_seconds_count{service_name=\"shop\",otel_metric_overflow=\"true\"} 3"
    ), "{text}");
    assert!(text.contains("tracewire_red_overflow_total 4\n"));
    assert!(text.contains("tracewire_red_series 4\n"));

    let req = red.to_otlp("host", START + 10);
    let shop = req
        .resource_metrics
        .iter()
        .find(|rm| resource_service(rm) == "shop")
        .expect("shop");
    let Some(metric::Data::Histogram(h)) = &shop.scope_metrics[0].metrics[0].data else {
        panic!("histogram")
    };
    let last = h.data_points.last().expect("points");
    assert_eq!(last.count, 3);
    assert_eq!(last.attributes.len(), 1);
    assert_eq!(last.attributes[0].key, OTEL_METRIC_OVERFLOW);
    assert_eq!(
        last.attributes[0].value,
        Some(AnyValue {
            value: Some(any_value::Value::BoolValue(true))
        })
    );
}

#[test]
fn prometheus_exact_lines() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&server("svc", "/users/123?token=x", 200, 30_000_000));
    let mut text = String::new();
    red.render_prometheus(&mut text);
    let n = "http_server_request_duration_seconds";
    let l = "service_name=\"svc\",http_request_method=\"GET\",http_response_status_code=\"200\",\
             http_route=\"/users/{id}\",url_scheme=\"http\",network_protocol_version=\"1.1\"";
    let mut want = format!("# HELP {n} Duration of HTTP server requests.\n# TYPE {n} histogram\n");
    for (le, c) in [
        ("0.005", 0),
        ("0.01", 0),
        ("0.025", 0),
        ("0.05", 1),
        ("0.075", 1),
        ("0.1", 1),
        ("0.25", 1),
        ("0.5", 1),
        ("0.75", 1),
        ("1", 1),
        ("2.5", 1),
        ("5", 1),
        ("7.5", 1),
        ("10", 1),
        ("+Inf", 1),
    ] {
        want.push_str(&format!("{n}_bucket{{{l},le=\"{le}\"}} {c}\n"));
    }
    want.push_str(&format!("{n}_sum{{{l}}} 0.03\n{n}_count{{{l}}} 1\n"));
    want.push_str(
        "# HELP tracewire_red_overflow_total RED measurements recorded into an overflow \
         series (otel_metric_overflow) because the series limit was reached.\n\
         # TYPE tracewire_red_overflow_total counter\n\
         tracewire_red_overflow_total 0\n\
         # HELP tracewire_red_series RED series held, overflow series included.\n\
         # TYPE tracewire_red_series gauge\n\
         tracewire_red_series 1\n",
    );
    assert_eq!(text, want);

    // Nothing recorded: only the module's own counters.
    let mut empty = String::new();
    Red::new(RedConfig::default(), START).render_prometheus(&mut empty);
    assert!(!empty.contains("duration"), "{empty}");
}

#[test]
fn prometheus_buckets_cumulative_and_inf_is_count() {
    let mut red = Red::new(RedConfig::default(), START);
    for (i, ms) in [1u64, 7, 30, 30, 80, 300, 900, 4000, 12_000]
        .iter()
        .enumerate()
    {
        red.record(&server("a", "/x", 200, ms * 1_000_000));
        red.record(&grpc(SpanKind::Client, "b", 0, ms * 1_000_000 + i as u64));
    }
    let mut text = String::new();
    red.render_prometheus(&mut text);
    for family in [
        "http_server_request_duration_seconds",
        "rpc_client_duration_milliseconds",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {family} histogram\n"))
                .count(),
            1
        );
        let bucket = format!("{family}_bucket{{");
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(&bucket))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("value")
            })
            .collect();
        assert_eq!(counts.len(), family_bounds(family) + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let count_line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}_count{{")))
            .expect("count");
        assert_eq!(counts.last(), Some(&9));
        assert!(count_line.ends_with(" 9"), "{count_line}");
        let inf = text
            .lines()
            .find(|l| l.starts_with(&bucket) && l.contains("le=\"+Inf\""))
            .expect("+Inf");
        assert!(inf.ends_with(" 9"));
    }
    assert!(text.contains("rpc_client_duration_milliseconds_bucket{service_name=\"b\",rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"0\",le=\"0\"} 0\n"), "{text}");
    // A family's lines are together: no other family between its TYPE and its last line.
    let types: Vec<usize> = text.match_indices("# TYPE").map(|(i, _)| i).collect();
    for pair in types.windows(2) {
        let block = &text[pair[0]..pair[1]];
        let name = block.split(' ').nth(2).expect("name");
        assert!(
            block
                .lines()
                .skip(1)
                .all(|l| l.starts_with(name) || l.starts_with("# HELP"))
        );
    }
}

fn family_bounds(family: &str) -> usize {
    if family.starts_with("rpc") {
        RPC_BOUNDS_MS.len()
    } else {
        HTTP_BOUNDS_S.len()
    }
}

#[test]
fn prometheus_escapes_label_values() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&client("shop", "we\"ird\\host\nx", 200, 1));
    let mut text = String::new();
    red.render_prometheus(&mut text);
    assert!(
        text.contains("server_address=\"we\\\"ird\\\\host\\nx\""),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.contains("we\\\"ird")).count(), 17);
}

fn resource_service(rm: &ResourceMetrics) -> String {
    let attrs = &rm.resource.as_ref().expect("resource").attributes;
    match attrs
        .iter()
        .find(|kv| kv.key == sc::SERVICE_NAME)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
    {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("service.name: {other:?}"),
    }
}

#[test]
fn otlp_conversion() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&server("a", "/users/1", 200, 30_000_000));
    red.record(&server("a", "/users/2", 200, 70_000_000));
    red.record(&client("a", "pay", 200, 1_000_000));
    red.record(&grpc(SpanKind::Server, "b", 0, 2_000_000));
    let now = START + 5_000_000_000;
    let req = red.to_otlp("node-1", now);
    assert_eq!(req.resource_metrics.len(), 2);
    let services: Vec<_> = req.resource_metrics.iter().map(resource_service).collect();
    assert_eq!(services, vec!["a", "b"]);
    let attrs = &req.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes;
    assert!(attrs.contains(&kv_str(sc::HOST_NAME, "node-1")));
    assert!(attrs.contains(&kv_str(sc::TELEMETRY_SDK_NAME, "tracewire")));

    let a = &req.resource_metrics[0].scope_metrics[0];
    assert_eq!(a.scope.as_ref().map(|s| s.name.as_str()), Some("tracewire"));
    let names: Vec<_> = a
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.unit.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("http.server.request.duration", "s"),
            ("http.client.request.duration", "s")
        ]
    );
    let b = &req.resource_metrics[1].scope_metrics[0];
    assert_eq!(b.metrics.len(), 1);
    assert_eq!(
        (b.metrics[0].name.as_str(), b.metrics[0].unit.as_str()),
        ("rpc.server.duration", "ms")
    );

    for m in a.metrics.iter().chain(&b.metrics) {
        let Some(metric::Data::Histogram(h)) = &m.data else {
            panic!("{} is not a histogram", m.name)
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        for p in &h.data_points {
            assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
            assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
            assert_eq!(p.time_unix_nano, now);
            assert_eq!(p.start_time_unix_nano, START + 1_000);
        }
    }
    let Some(metric::Data::Histogram(h)) = &a.metrics[0].data else {
        panic!("histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 2);
    assert_eq!((p.min, p.max), (Some(0.03), Some(0.07)));
    assert!((p.sum.expect("sum") - 0.1).abs() < 1e-12);
    assert_eq!(p.explicit_bounds, HTTP_BOUNDS_S.to_vec());
    assert!(p.attributes.contains(&kv_str(HTTP_ROUTE, "/users/{id}")));
    assert!(p.attributes.contains(&kv(
        sc::HTTP_RESPONSE_STATUS_CODE,
        any_value::Value::IntValue(200)
    )));
    assert!(
        Red::new(RedConfig::default(), START)
            .to_otlp("h", now)
            .resource_metrics
            .is_empty()
    );
}

#[test]
fn series_start_is_not_before_aggregation_start() {
    let mut red = Red::new(RedConfig::default(), START + 10_000);
    red.record(&server("a", "/", 200, 1));
    assert_eq!(
        only(&red, "a", Instrument::HttpServer).1.start_unix_ns,
        START + 10_000
    );
}

#[test]
fn red_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Red>();
    assert_send::<std::sync::Mutex<Red>>();
}

fn db(service: &str, operation: &str, error: Option<&str>, dur_ns: u64) -> Span {
    let mut attributes = vec![
        Attribute::str(sc::DB_SYSTEM_NAME, "postgresql"),
        Attribute::str(sc::DB_NAMESPACE, "shop"),
        Attribute::str(sc::DB_OPERATION_NAME, operation),
        Attribute::str(sc::DB_COLLECTION_NAME, "users"),
        Attribute::str(sc::DB_QUERY_SUMMARY, format!("{operation} users")),
        Attribute::str(sc::DB_QUERY_TEXT, "SELECT * FROM users WHERE id = ?"),
        Attribute::int(sc::DB_RESPONSE_RETURNED_ROWS, 1),
        Attribute::str(sc::SERVER_ADDRESS, "10.0.0.9"),
        Attribute::int(sc::SERVER_PORT, 5432),
        Attribute::str(sc::NETWORK_PEER_ADDRESS, "10.0.0.9"),
        Attribute::int(sc::NETWORK_PEER_PORT, 5432),
        Attribute::int(sc::THREAD_ID, 7),
    ];
    if let Some(code) = error {
        attributes.push(Attribute::str(sc::DB_RESPONSE_STATUS_CODE, code));
        attributes.push(Attribute::str(sc::ERROR_TYPE, code));
    }
    span(SpanKind::Client, service, attributes, dur_ns)
}

#[test]
fn db_spans_go_to_the_db_metric_only() {
    let mut red = Red::new(RedConfig::default(), START);
    // 3 ms: le=0.005; exactly 10 ms: le=0.01 (inclusive); 20 s: +Inf.
    red.record(&db("shop", "SELECT", None, 3_000_000));
    red.record(&db("shop", "SELECT", None, 10_000_000));
    red.record(&db("shop", "SELECT", None, 20_000_000_000));
    let svc = &red.services["shop"];
    assert!(svc.series[Instrument::HttpClient as usize].is_empty());
    assert!(svc.series[Instrument::RpcClient as usize].is_empty());
    let (key, s) = only(&red, "shop", Instrument::DbClient);
    assert_eq!(
        key,
        &vec![
            (sc::DB_SYSTEM_NAME, sv("postgresql")),
            (sc::DB_NAMESPACE, sv("shop")),
            (sc::DB_OPERATION_NAME, sv("SELECT")),
            (sc::DB_COLLECTION_NAME, sv("users")),
            (sc::SERVER_ADDRESS, sv("10.0.0.9")),
            (sc::SERVER_PORT, Val::Int(5432)),
        ]
    );
    assert_eq!(s.count, 3);
    let mut want = [0u64; 10];
    want[1] = 1; // 0.005
    want[2] = 1; // 0.01
    want[9] = 1; // +Inf
    assert_eq!(&*s.buckets, &want);
    assert!((s.sum - 20.013).abs() < 1e-9, "{}", s.sum);
}

#[test]
fn db_errors_are_their_own_series() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&db("shop", "SELECT", Some("42P01"), 1_000_000));
    red.record(&db("shop", "SELECT", None, 1_000_000));
    red.record(&db("shop", "INSERT", None, 1_000_000));
    let series = &red.services["shop"].series[Instrument::DbClient as usize];
    assert_eq!(series.len(), 3);
    let failed: Vec<_> = series
        .keys()
        .filter(|k| get(k, sc::ERROR_TYPE).is_some())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        get(failed[0], sc::DB_RESPONSE_STATUS_CODE),
        Some(&sv("42P01"))
    );
    assert_eq!(get(failed[0], sc::ERROR_TYPE), Some(&sv("42P01")));
}

#[test]
fn db_redis_span_without_collection_or_namespace() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&span(
        SpanKind::Client,
        "cache",
        vec![
            Attribute::str(sc::DB_SYSTEM_NAME, "redis"),
            Attribute::str(sc::DB_OPERATION_NAME, "GET"),
            Attribute::str(sc::DB_QUERY_TEXT, "GET ?"),
            Attribute::str(sc::SERVER_ADDRESS, "10.0.0.3"),
            Attribute::int(sc::SERVER_PORT, 6379),
        ],
        500_000,
    ));
    let (key, s) = only(&red, "cache", Instrument::DbClient);
    assert_eq!(
        key,
        &vec![
            (sc::DB_SYSTEM_NAME, sv("redis")),
            (sc::DB_OPERATION_NAME, sv("GET")),
            (sc::SERVER_ADDRESS, sv("10.0.0.3")),
            (sc::SERVER_PORT, Val::Int(6379)),
        ]
    );
    // 0.5 ms: the first bucket, le=0.001.
    assert_eq!(s.buckets[0], 1);
}

#[test]
fn db_prometheus_and_otlp() {
    let mut red = Red::new(RedConfig::default(), START);
    red.record(&db("shop", "SELECT", Some("42P01"), 2_000_000));
    let mut text = String::new();
    red.render_prometheus(&mut text);
    let n = "db_client_operation_duration_seconds";
    assert!(
        text.contains(&format!(
            "# HELP {n} Duration of database client operations.\n# TYPE {n} histogram\n"
        )),
        "{text}"
    );
    let l = "service_name=\"shop\",db_system_name=\"postgresql\",db_namespace=\"shop\",\
             db_operation_name=\"SELECT\",db_collection_name=\"users\",\
             db_response_status_code=\"42P01\",error_type=\"42P01\",\
             server_address=\"10.0.0.9\",server_port=\"5432\"";
    for (le, c) in [("0.001", 0), ("0.005", 1), ("10", 1), ("+Inf", 1)] {
        let want = format!("{n}_bucket{{{l},le=\"{le}\"}} {c}\n");
        assert!(text.contains(&want), "{want}\n{text}");
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with(&format!("{n}_bucket{{")))
            .count(),
        DB_BOUNDS_S.len() + 1
    );
    assert!(text.contains(&format!("{n}_count{{{l}}} 1\n")));
    // Neither the query text nor the summary becomes a label.
    assert!(!text.contains("db_query"), "{text}");
    assert!(!text.contains("http_client_request_duration"), "{text}");

    let req = red.to_otlp("host", START + 10);
    let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        (metrics[0].name.as_str(), metrics[0].unit.as_str()),
        (DB_CLIENT_OPERATION_DURATION, "s")
    );
    let Some(metric::Data::Histogram(h)) = &metrics[0].data else {
        panic!("histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, DB_BOUNDS_S.to_vec());
    assert!(
        p.attributes
            .contains(&kv(sc::SERVER_PORT, any_value::Value::IntValue(5432)))
    );
    assert!(
        p.attributes
            .contains(&kv_str(sc::DB_RESPONSE_STATUS_CODE, "42P01"))
    );
}

#[test]
fn db_series_share_the_limit() {
    let cfg = RedConfig {
        max_series: 2,
        ..RedConfig::default()
    };
    let mut red = Red::new(cfg, START);
    red.record(&client("shop", "h1", 200, 1_000));
    red.record(&db("shop", "SELECT", None, 1_000));
    for op in ["INSERT", "UPDATE"] {
        red.record(&db("shop", op, None, 1_000));
    }
    assert_eq!(red.overflowed(), 2);
    let svc = &red.services["shop"];
    assert_eq!(svc.series[Instrument::DbClient as usize].len(), 1);
    assert_eq!(
        svc.overflow[Instrument::DbClient as usize]
            .as_ref()
            .map(|s| s.count),
        Some(2)
    );
    assert!(svc.overflow[Instrument::HttpClient as usize].is_none());
    let mut text = String::new();
    red.render_prometheus(&mut text);
    assert!(
        text.contains(
            "db_client_operation_duration_seconds_count{service_name=\"shop\",otel_metric_overflow=\"true\"} 2\n"
        ),
        "{text}"
    );
}
