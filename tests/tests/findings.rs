//! Findings on spans, end to end, from programs nobody here wrote the runtime of: a Node handler
//! that calls three services one after another (serial fan-out) and the same calls with
//! `Promise.all` (no finding), and a Java `HttpServer` whose first request is slow (cold
//! start) while a steady one is not. (N+1 from a Python handler and PostgreSQL: `databases`.)

use std::time::Duration;

use anyhow::{Result, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_tests::collector::event_int;
use tracewire_tests::net::{http_get, loopback};
use tracewire_tests::peers::Runtime;
use tracewire_tests::{
    AgentGuard, Export, OtlpProtocol, OtlpReceiver, PeerServer, SpanRecord, TempDir,
};

const REPLY_WAIT: Duration = Duration::from_secs(20);

fn get(server: &PeerServer, path: &str) -> Result<()> {
    let reply = http_get(loopback(server.port), path, REPLY_WAIT)?;
    ensure!(
        reply.status == 200,
        "GET {path} answered {}: {}",
        reply.status,
        reply.body
    );
    Ok(())
}

fn server_span(receiver: &OtlpReceiver, server: &PeerServer, path: &str) -> Result<SpanRecord> {
    let pid = server.serving.pid;
    receiver.wait_for_span(&format!("the server span of {path}"), |s| {
        s.kind() == SpanKind::Server && s.pid() == Some(pid) && s.request_path() == Some(path)
    })
}

/// The client spans whose parent is `parent`.
fn children(receiver: &OtlpReceiver, parent: &SpanRecord) -> Vec<SpanRecord> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.kind() == SpanKind::Client && s.span.parent_span_id == parent.span.span_id)
        .collect()
}

#[test]
fn three_calls_one_after_another_are_a_serial_fan_out_and_promise_all_is_not() -> Result<()> {
    let dir = TempDir::new("findings-fan-out")?;
    let downstream = [
        Runtime::Node.start_server(&dir, "stock")?,
        Runtime::Node.start_server(&dir, "prices")?,
        Runtime::Node.start_server(&dir, "reviews")?,
    ];
    let urls: Vec<String> = downstream.iter().map(|d| d.url("/ok")).collect();
    let front = Runtime::Node.start_mode(&dir, "front", "fanout", &urls)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let mut ports = vec![front.port];
    ports.extend(downstream.iter().map(|d| d.port));
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &ports, dir.path())?;

    get(&front, "/serial")?;
    get(&front, "/parallel")?;
    let serial = server_span(&receiver, &front, "/serial")?;
    let parallel = server_span(&receiver, &front, "/parallel")?;
    // Children are built before their parent: they are all in by now.
    for (span, path) in [(&serial, "/serial"), (&parallel, "/parallel")] {
        let calls = children(&receiver, span);
        ensure!(
            calls.len() == 3,
            "{path} has {} client children, not 3 (the in-process links this test relies on)\n{}",
            calls.len(),
            receiver.report()
        );
    }
    let found = serial.events("tracewire.finding.serial_fan_out");
    ensure!(
        found.len() == 1,
        "/serial has {} serial fan-out findings, not 1: {:?}\n{}",
        found.len(),
        serial.event_names(),
        receiver.report()
    );
    let event = found[0];
    let count = event_int(event, "tracewire.finding.count");
    let saved = event_int(event, "tracewire.finding.saved_ns").unwrap_or(-1);
    let total = event_int(event, "tracewire.finding.duration_ns").unwrap_or(-1);
    ensure!(
        count == Some(3) && saved > 0 && saved < total,
        "serial fan-out: count {count:?}, saved {saved} ns of {total} ns"
    );
    let peers: Vec<String> = event
        .attributes
        .iter()
        .filter(|kv| kv.key == "tracewire.finding.peers")
        .flat_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::ArrayValue(a)) => a
                    .values
                    .iter()
                    .filter_map(|v| match &v.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                s,
                            ),
                        ) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
        )
        .collect();
    let want: Vec<String> = downstream
        .iter()
        .map(|d| format!("127.0.0.1:{}", d.port))
        .collect();
    ensure!(
        peers == want,
        "peers {peers:?}, want {want:?} in call order"
    );
    ensure!(
        parallel.span.events.is_empty(),
        "Promise.all raised findings: {:?}",
        parallel.event_names()
    );
    Ok(())
}

/// The server spans of `server` once there are `n` of them.
fn wait_server_spans(
    receiver: &OtlpReceiver,
    server: &PeerServer,
    n: usize,
) -> Result<Vec<SpanRecord>> {
    let pid = server.serving.pid;
    let spans = |r: &OtlpReceiver| -> Vec<SpanRecord> {
        r.spans()
            .into_iter()
            .filter(|s| s.kind() == SpanKind::Server && s.pid() == Some(pid))
            .collect()
    };
    let deadline = std::time::Instant::now() + REPLY_WAIT;
    while spans(receiver).len() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = spans(receiver);
    ensure!(
        got.len() == n,
        "{} server spans of pid {pid}, not {n}\n{}",
        got.len(),
        receiver.report()
    );
    Ok(got)
}

#[test]
fn a_slow_first_request_is_a_cold_start_and_a_steady_server_has_none() -> Result<()> {
    let dir = TempDir::new("findings-cold-start")?;
    let lazy = Runtime::Java.start_mode(&dir, "lazy", "cold", &["400".to_string()])?;
    let steady = Runtime::Java.start_mode(&dir, "steady", "cold", &["0".to_string()])?;
    // The steady server is warmed up (class loading, JIT) before the agent starts: the first
    // request the agent sees it serve is then like the next ones.
    for i in 0..20 {
        get(&steady, &format!("/ok?warm={i}"))?;
    }
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let _agent = AgentGuard::start(
        Export::Otlp(&receiver),
        &[lazy.port, steady.port],
        dir.path(),
    )?;
    for server in [&lazy, &steady] {
        for i in 0..6 {
            get(server, &format!("/ok?n={i}"))?;
        }
    }
    let lazy_spans = wait_server_spans(&receiver, &lazy, 6)?;
    let flagged: Vec<&SpanRecord> = lazy_spans
        .iter()
        .filter(|s| !s.events("tracewire.finding.cold_start").is_empty())
        .collect();
    ensure!(
        flagged.len() == 1,
        "{} of the lazy server's spans have a cold-start finding, not 1\n{}",
        flagged.len(),
        receiver.report()
    );
    let first = flagged[0];
    ensure!(
        lazy_spans
            .iter()
            .all(|s| s.span.start_time_unix_nano >= first.span.start_time_unix_nano),
        "the cold start is not on the first request"
    );
    let event = first.events("tracewire.finding.cold_start")[0];
    let duration = event_int(event, "tracewire.finding.duration_ns").unwrap_or(0);
    let median = event_int(event, "tracewire.finding.median_ns").unwrap_or(0);
    ensure!(
        duration >= 400_000_000
            && median > 0
            && duration >= 10 * median
            && event_int(event, "tracewire.finding.count") == Some(5),
        "cold start: {duration} ns against a median of {median} ns"
    );
    let steady_spans = wait_server_spans(&receiver, &steady, 6)?;
    ensure!(
        steady_spans.iter().all(|s| s.span.events.is_empty()),
        "the warm server raised findings: {:?}",
        steady_spans
            .iter()
            .map(|s| s.event_names())
            .collect::<Vec<_>>()
    );
    Ok(())
}
