//! Trace context without code changes: an incoming W3C `traceparent` is joined (and its sampled
//! flag honoured), and the calls a thread-per-request server makes while serving a request are
//! children of that request's server span — exactly, at 50 concurrent requests.

use anyhow::{Context as _, Result, ensure};
use std::time::{Duration, Instant};
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, TempDir,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn incoming_traceparent_is_joined_and_its_sampled_flag_honoured() -> Result<()> {
    let dir = TempDir::new("context-join")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[python.port], dir.path())?;

    // Not sampled upstream: nothing of this request may be exported.
    let unsampled = format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-00");
    peers::curl(
        &dir,
        &python.url("/unsampled"),
        &["--http1.0", "--header", &unsampled],
    )?;
    let sampled = format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01");
    let run = peers::curl(
        &dir,
        &python.url("/ok.html"),
        &["--http1.0", "--header", &sampled],
    )?;
    ensure!(run.status == 200, "curl: {} instead of 200", run.status);

    let server = receiver.wait_for(&SpanQuery::server(python.serving.pid, "/ok.html"))?;
    ensure!(
        hex(&server.span.trace_id) == TRACE_ID,
        "server span is not in the caller's trace: {server}"
    );
    ensure!(
        hex(&server.span.parent_span_id) == PARENT_ID,
        "server span's parent is not the caller's span: {server}"
    );
    // curl sent the header itself: its own instrumentation wins, so its client span carries
    // the ids it put on the wire and the server span is its child.
    let client = receiver.wait_for(&SpanQuery::client(run.process.pid, "/ok.html"))?;
    ensure!(
        hex(&client.span.trace_id) == TRACE_ID && hex(&client.span.span_id) == PARENT_ID,
        "client span does not carry the ids it sent: {client}"
    );
    // The unsampled request was served before the sampled one, so its spans would be here.
    for span in receiver.spans() {
        ensure!(
            span.request_path() != Some("/unsampled"),
            "a span of an unsampled trace was exported: {span}"
        );
    }
    let metrics = agent.metrics()?;
    let sampled_out =
        tracewire_tests::metrics::value(&metrics, "tracewire_spans_sampled_out_total", "")
            .context("no tracewire_spans_sampled_out_total")?;
    ensure!(
        sampled_out >= 2.0,
        "sampled-out spans not counted: {sampled_out}"
    );
    Ok(())
}

#[test]
fn calls_made_while_serving_are_children_of_the_request_at_50_concurrent() -> Result<()> {
    const REQUESTS: usize = 50;
    let dir = TempDir::new("context-inprocess")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let backend = peers::python_http_server(&dir, "tw-backend")?;
    let front = peers::python_front_server(&dir, "tw-front", backend.port)?;
    let _agent = AgentGuard::start(
        Export::Otlp(&receiver),
        &[front.port, backend.port],
        dir.path(),
    )?;

    peers::python_load(&dir, &front.url("/front"), REQUESTS)?;

    let mut correct = 0;
    let mut wrong = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..REQUESTS {
        let server = receiver.wait_for(&SpanQuery::server(
            front.serving.pid,
            &format!("/front/{i}"),
        ))?;
        let client =
            receiver.wait_for(&SpanQuery::client(front.serving.pid, &format!("/back/{i}")))?;
        ensure!(Instant::now() < deadline, "spans arrived too slowly");
        let linked = client.span.trace_id == server.span.trace_id
            && client.span.parent_span_id == server.span.span_id;
        let enclosed = server.start() <= client.start() && client.end() <= server.end();
        if linked && enclosed {
            correct += 1;
        } else {
            wrong.push(format!(
                "request {i}: linked={linked} enclosed={enclosed}\n  server {server}\n  client {client}"
            ));
        }
    }
    eprintln!("correct trees: {correct}/{REQUESTS}");
    ensure!(
        wrong.is_empty(),
        "{} of {REQUESTS} calls have the wrong parent (thread-per-request must be exact):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// `traceidratio` decides by the trace id alone (the Go SDK's rule), whatever the caller's
/// sampled flag says: the last 8 bytes shifted right by one against ratio * 2^63.
#[test]
fn traceidratio_sampler_decides_by_trace_id() -> Result<()> {
    let dir = TempDir::new("context-sampler")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let selection = Selection {
        ports: vec![python.port],
        env: vec![
            ("OTEL_TRACES_SAMPLER".into(), "traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG".into(), "0.5".into()),
        ],
        ..Selection::default()
    };
    let _agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    // Low half 0x7f...: (x >> 1) < 2^62, kept. Low half 0x80...: dropped, even though the
    // caller says sampled.
    let kept = "00-0af7651916cd43dd7fffffffffffffff-b7ad6b7169203331-01";
    let dropped = "00-0af7651916cd43dd8000000000000000-b7ad6b7169203331-01";
    peers::curl(
        &dir,
        &python.url("/dropped"),
        &["--http1.0", "--header", &format!("traceparent: {dropped}")],
    )?;
    peers::curl(
        &dir,
        &python.url("/ok.html"),
        &["--http1.0", "--header", &format!("traceparent: {kept}")],
    )?;
    let server = receiver.wait_for(&SpanQuery::server(python.serving.pid, "/ok.html"))?;
    ensure!(
        hex(&server.span.trace_id) == "0af7651916cd43dd7fffffffffffffff",
        "kept span is in the wrong trace: {server}"
    );
    for span in receiver.spans() {
        ensure!(
            span.request_path() != Some("/dropped"),
            "a span of a trace the ratio rejects was exported: {span}"
        );
    }
    Ok(())
}
