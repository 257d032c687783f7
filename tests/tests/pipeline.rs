//! The production pipeline end to end: tail sampling with the collector's policy shape, read
//! from a `--config` file, and RED metrics on `/metrics` (read with a real Prometheus parser)
//! and over OTLP to the same receiver as the spans.

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_tests::agent::Selection;
use tracewire_tests::metrics::{histogram_count, scalar, scrape};
use tracewire_tests::peers;
use tracewire_tests::{AgentGuard, Export, OtlpProtocol, OtlpReceiver, SpanRecord, TempDir};

/// The seed policy of the issue: every error, every trace slower than 500 ms, 5% of the rest.
const TAIL_POLICY: &str = "\
sampling:
  tail:
    decision_wait: 1s
    policies:
      - name: errors
        type: status_code
        status_code: {status_codes: [ERROR]}
      - name: slow
        type: latency
        latency: {threshold_ms: 500}
      - name: some-of-the-rest
        type: probabilistic
        probabilistic: {sampling_percentage: 5}
";

const REQUESTS: u64 = 1000;

fn server_spans(receiver: &OtlpReceiver, pid: u32) -> Vec<SpanRecord> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.kind() == SpanKind::Server && s.pid() == Some(pid))
        .collect()
}

fn item_of(span: &SpanRecord) -> Option<u64> {
    span.request_path()?.strip_prefix("/items/")?.parse().ok()
}

#[test]
fn tail_sampling_keeps_every_error_and_slow_trace_and_5_percent_of_the_rest() -> Result<()> {
    let dir = TempDir::new("tail-sampling")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::mixed_server(&dir, "tw-mixed")?;
    let config = dir.join("tracewire.yaml");
    std::fs::write(&config, TAIL_POLICY)?;
    let selection = Selection {
        ports: vec![server.port],
        extra_args: vec![OsString::from("--config"), config.into_os_string()],
        env: vec![("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into())],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;

    // 1% answer 500 (N % 100 == 0), 1% take 600 ms (N % 100 == 50).
    let load = peers::steady_load(&dir, server.port, "/items", 0..REQUESTS, 8, 0)?;
    ensure!(
        load.count(500) == REQUESTS / 100 && load.count(200) == REQUESTS - REQUESTS / 100,
        "the server's answers were not the planned mix: {load:?}"
    );

    let errors: HashSet<u64> = (0..REQUESTS).filter(|n| n % 100 == 0).collect();
    let slow: HashSet<u64> = (0..REQUESTS).filter(|n| n % 100 == 50).collect();
    let wanted: HashSet<u64> = errors.union(&slow).copied().collect();
    // Kept traces leave once decision_wait (1 s) has passed for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: HashSet<u64> = server_spans(&receiver, server.serving.pid)
            .iter()
            .filter_map(item_of)
            .collect();
        if wanted.is_subset(&seen) {
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = wanted.difference(&seen).collect();
            bail!(
                "error and slow traces missing after 30 s: {missing:?}\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every trace has been decided 1 s after the last request; then one more batch.
    std::thread::sleep(Duration::from_secs(3));

    let spans = server_spans(&receiver, server.serving.pid);
    let mut ids = HashSet::new();
    for span in &spans {
        let n = item_of(span);
        ensure!(n.is_some(), "a server span for another path: {span}");
        ensure!(
            ids.insert(n),
            "a server span exported twice for /items/{n:?}"
        );
    }
    let rest = spans
        .iter()
        .filter_map(item_of)
        .filter(|n| !wanted.contains(n))
        .count();
    // 980 other traces at 5%: 49 expected, one standard deviation ~6.8; the bounds are 4 of
    // them, so a correct sampler fails this about once in 30 000 runs.
    let others = REQUESTS as usize - wanted.len();
    ensure!(
        (22..=76).contains(&rest),
        "{rest} of {others} ordinary traces kept; 5% is 49"
    );
    eprintln!(
        "tail sampling: {} error + {} slow traces kept, {rest} of {others} others ({:.1}%)",
        errors.len(),
        slow.len(),
        rest as f64 * 100.0 / others as f64
    );

    let m = scrape(&agent.metrics()?)?;
    let kept = scalar(
        &m,
        "tracewire_tail_sampling_traces_total",
        &[("decision", "kept")],
    );
    let dropped = scalar(
        &m,
        "tracewire_tail_sampling_traces_total",
        &[("decision", "dropped")],
    );
    // Server and client spans are separate traces here (nothing injects traceparent).
    ensure!(
        kept + dropped >= 2.0 * REQUESTS as f64 && dropped > kept,
        "tail sampler counters: kept {kept}, dropped {dropped}"
    );
    // RED metrics count every request, whichever traces the tail sampler kept.
    let route = [("http_route", "/items/{id}"), ("service_name", "tw-mixed")];
    let ok = histogram_count(
        &m,
        "http_server_request_duration_seconds",
        &[route[0], route[1], ("http_response_status_code", "200")],
    );
    let failed = histogram_count(
        &m,
        "http_server_request_duration_seconds",
        &[route[0], route[1], ("http_response_status_code", "500")],
    );
    ensure!(
        ok == (REQUESTS - REQUESTS / 100) as f64 && failed == (REQUESTS / 100) as f64,
        "RED histogram counts {ok} x 200 and {failed} x 500 for /items/{{id}}"
    );
    // Over OTLP/gRPC too, with the same counts.
    let otlp = otlp_histogram_count(
        &receiver,
        "http.server.request.duration",
        "tw-mixed",
        &[("http.route", "/items/{id}")],
    );
    ensure!(
        otlp == Some(REQUESTS),
        "OTLP/gRPC http.server.request.duration for /items/{{id}}: {otlp:?} ({} metrics requests)\n{}",
        receiver.metrics().len(),
        agent.logs()
    );
    Ok(())
}

/// The count of every data point of the histogram `name` whose attributes include `want`,
/// over the newest metrics request that has it (they are cumulative).
fn otlp_histogram_count(
    receiver: &OtlpReceiver,
    name: &str,
    service: &str,
    want: &[(&str, &str)],
) -> Option<u64> {
    let requests = receiver.metrics();
    for request in requests.iter().rev() {
        for rm in &request.resource_metrics {
            let is_service = rm.resource.as_ref().is_some_and(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && matches!(
                            kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(AnyValue::StringValue(s)) if s == service
                        )
                })
            });
            if !is_service {
                continue;
            }
            for sm in &rm.scope_metrics {
                for metric in sm.metrics.iter().filter(|m| m.name == name) {
                    let Some(Data::Histogram(h)) = &metric.data else {
                        continue;
                    };
                    let count = h
                        .data_points
                        .iter()
                        .filter(|p| {
                            want.iter().all(|(k, v)| {
                                p.attributes.iter().any(|kv| {
                                    kv.key == *k
                                        && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                            Some(AnyValue::StringValue(s)) => s == v,
                                            Some(AnyValue::IntValue(i)) => i.to_string() == *v,
                                            _ => false,
                                        }
                                })
                            })
                        })
                        .map(|p| p.count)
                        .sum();
                    return Some(count);
                }
            }
        }
    }
    None
}

#[test]
fn red_metrics_reach_prometheus_and_otlp_with_templated_routes() -> Result<()> {
    let dir = TempDir::new("red-metrics")?;
    // HTTP/protobuf with gzip this time: the metrics exporter follows the span exporter.
    let receiver = OtlpReceiver::start(OtlpProtocol::HttpProtobuf)?;
    let server = peers::mixed_server(&dir, "tw-red")?;
    let selection = Selection {
        ports: vec![server.port],
        env: vec![
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION".into(), "gzip".into()),
        ],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;

    // Ids in paths must not become series: 40 users, one route.
    let load = peers::steady_load(&dir, server.port, "/users", 1000..1040, 2, 0)?;
    ensure!(load.count(200) == 40, "{load:?}");

    let want = [
        ("http.route", "/users/{id}"),
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let count =
            otlp_histogram_count(&receiver, "http.server.request.duration", "tw-red", &want);
        if count == Some(40) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "no OTLP http.server.request.duration of 40 requests for tw-red /users/{{id}} \
                 (last: {count:?}, {} metrics requests)\n{}",
                receiver.metrics().len(),
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let text = agent.metrics()?;
    let m = scrape(&text)?;
    let count = histogram_count(
        &m,
        "http_server_request_duration_seconds",
        &[
            ("service_name", "tw-red"),
            ("http_route", "/users/{id}"),
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
        ],
    );
    ensure!(count == 40.0, "/metrics counted {count} requests:\n{text}");
    ensure!(
        !text.contains("/users/1000"),
        "a raw path became a label value:\n{text}"
    );
    // The client side (python's http.client) is measured too.
    let client = histogram_count(
        &m,
        "http_client_request_duration_seconds",
        &[("http_request_method", "GET")],
    );
    ensure!(client == 40.0, "client histogram counted {client}:\n{text}");
    ensure!(
        scalar(&m, "tracewire_metric_exports_total", &[("outcome", "ok")]) >= 1.0,
        "no successful OTLP metrics export counted:\n{text}"
    );
    ensure!(
        scalar(&m, "process_resident_memory_bytes", &[]) > 0.0,
        "no RSS gauge:\n{text}"
    );
    Ok(())
}

/// The default export interval is a minute: an agent stopped before its first interval still
/// sends the RED histograms it has, once, on the way out.
#[test]
fn metrics_are_flushed_at_shutdown() -> Result<()> {
    let dir = TempDir::new("metrics-shutdown")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::mixed_server(&dir, "tw-flush")?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    let load = peers::steady_load(&dir, server.port, "/users", 1..4, 1, 0)?;
    ensure!(load.count(200) == 3, "{load:?}");
    receiver.wait_for_span("a server span", |s| {
        s.kind() == SpanKind::Server && s.request_path() == Some("/users/3")
    })?;
    ensure!(
        receiver.metrics().is_empty(),
        "metrics arrived before the first interval"
    );
    let logs = agent.logs();
    let status = agent.stop()?;
    ensure!(status.success(), "the agent exited with {status}\n{logs}");
    let count = otlp_histogram_count(
        &receiver,
        "http.server.request.duration",
        "tw-flush",
        &[("http.route", "/users/{id}")],
    );
    ensure!(
        count == Some(3),
        "the final OTLP metrics export carried {count:?} requests ({} metrics requests)",
        receiver.metrics().len()
    );
    Ok(())
}
