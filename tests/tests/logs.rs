//! Logs tied to traces with no code (`--export-logs`): what a Python handler writes to stderr
//! while it serves a request arrives at the collector as OTLP log records carrying that
//! request's trace and span ids, at 20 concurrent requests, with the secret in the line
//! redacted.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tracewire_tests::net::{http_get, loopback};
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, SpanRecord, TempDir,
};

const REQUESTS: usize = 20;

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Every log record received, with the `service.name` of its resource.
fn records(receiver: &OtlpReceiver) -> Vec<(String, LogRecord)> {
    let mut out = Vec::new();
    for request in receiver.logs() {
        for rl in request.resource_logs {
            let service = rl
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| text(kv.value.as_ref()))
                .unwrap_or_default()
                .to_string();
            for sl in rl.scope_logs {
                out.extend(sl.log_records.into_iter().map(|r| (service.clone(), r)));
            }
        }
    }
    out
}

fn body(r: &LogRecord) -> &str {
    text(r.body.as_ref()).unwrap_or_default()
}

#[test]
fn a_python_handlers_lines_carry_their_requests_trace_at_20_concurrent() -> Result<()> {
    let dir = TempDir::new("logs")?;
    let server = peers::python_logging_server(&dir, "tw-logs")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let selection = Selection {
        ports: vec![server.port],
        extra_args: vec!["--export-logs".into()],
        ..Selection::default()
    };
    let _agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    // The agent learns the process (and starts taking its stderr) from its first connection.
    let warm = http_get(loopback(server.port), "/log/warm", Duration::from_secs(20))?;
    ensure!(warm.status == 200, "warm-up: {}", warm.status);
    peers::python_load(&dir, &server.url("/log"), REQUESTS)?;

    let spans: Vec<SpanRecord> = (0..REQUESTS)
        .map(|i| receiver.wait_for(&SpanQuery::server(server.serving.pid, &format!("/log/{i}"))))
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = records(&receiver);
    while Instant::now() < deadline
        && (0..REQUESTS).any(|i| {
            let needle = format!("/log/{i} ");
            got.iter()
                .filter(|(_, r)| body(r).contains(&needle))
                .count()
                < 2
        })
    {
        std::thread::sleep(Duration::from_millis(200));
        got = records(&receiver);
    }
    for (i, span) in spans.iter().enumerate() {
        let needle = format!("/log/{i} ");
        let lines: Vec<&LogRecord> = got
            .iter()
            .filter(|(_, r)| body(r).contains(&needle))
            .map(|(_, r)| r)
            .collect();
        ensure!(
            lines.len() == 2,
            "request {i}: {} log records, want the handler's line and the access line: {:?}",
            lines.len(),
            lines.iter().map(|r| body(r)).collect::<Vec<_>>()
        );
        for r in &lines {
            ensure!(
                r.trace_id == span.span.trace_id && r.span_id == span.span.span_id,
                "request {i}: the line {:?} is tied to another request",
                body(r)
            );
        }
        ensure!(
            lines
                .iter()
                .any(|r| body(r) == format!("handling /log/{i} for user=bob password=[REDACTED]")),
            "request {i}: no redacted handler line in {:?}",
            lines.iter().map(|r| body(r)).collect::<Vec<_>>()
        );
    }
    ensure!(
        got.iter().all(|(service, r)| service == "tw-logs"
            && !body(r).contains("hunter2")
            && r.attributes
                .iter()
                .any(|kv| kv.key == "log.iostream" && text(kv.value.as_ref()) == Some("stderr"))),
        "every record: service tw-logs, stream stderr, the secret gone"
    );
    Ok(())
}
