//! gRPC over HTTP/2 (h2c), each implementation calling its own server (grpcio: C-core;
//! @grpc/grpc-js: JS over Node's http2), both ends traced. Unary OK and NOT_FOUND, a
//! server-streaming call, and 20 concurrent calls on one connection must each give exactly one
//! SERVER and one CLIENT span with the gRPC conventions; `traceparent` sent as gRPC metadata
//! joins the trace as in HTTP/1; no other metadata value is exported.
//!
//! And HTTP/2 without gRPC: curl with prior knowledge to Node's `http2` server gives HTTP spans
//! with `network.protocol.version` 2.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use tracewire_tests::peers::{self, GrpcPeer};
use tracewire_tests::{
    AgentGuard, CurlRequests, Export, OtlpProtocol, OtlpReceiver, SpanRecord, TempDir, Window,
    check_exchanges,
};

const SERVICE: &str = "tracewire.test.Echo";
const CALLS: usize = 23;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `pid` has `n` spans of `kind`, then a little longer to catch duplicates.
fn spans_of(
    receiver: &OtlpReceiver,
    pid: u32,
    kind: SpanKind,
    n: usize,
) -> Result<Vec<SpanRecord>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let of = || -> Vec<SpanRecord> {
        receiver
            .spans()
            .into_iter()
            .filter(|s| s.pid() == Some(pid) && s.kind() == kind)
            .collect()
    };
    while of().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let spans = of();
    if spans.len() != n {
        bail!(
            "expected {n} {kind:?} spans of pid {pid}, got {}\n{}",
            spans.len(),
            receiver.report()
        );
    }
    Ok(spans)
}

fn check_rpc_attributes(span: &SpanRecord, port: u16) -> Result<()> {
    let (service, method) =
        span.span.name.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("span name {:?} is not service/method", span.span.name)
        })?;
    ensure!(service == SERVICE, "{span}");
    ensure!(matches!(method, "Unary" | "Stream"), "{span}");
    ensure!(span.attr_str("rpc.system") == Some("grpc"), "{span}");
    ensure!(span.attr_str("rpc.service") == Some(SERVICE), "{span}");
    ensure!(span.attr_str("rpc.method") == Some(method), "{span}");
    ensure!(
        span.attr_str("server.address") == Some("127.0.0.1"),
        "{span}"
    );
    ensure!(
        span.attr_int("server.port") == Some(i64::from(port)),
        "{span}"
    );
    ensure!(
        span.attr_str("network.peer.address") == Some("127.0.0.1"),
        "{span}"
    );
    ensure!(span.attr("tracewire.incomplete").is_none(), "{span}");
    ensure!(span.end() > span.start(), "{span}");
    Ok(())
}

fn client_to_own_server(peer: GrpcPeer) -> Result<()> {
    let name = peer.name();
    let dir = TempDir::new(name)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peer.start_server(&dir, &format!("tw-{name}-server"))?;
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let client = peer.run_client(
        &dir,
        &format!("tw-{name}-client"),
        server.port,
        &traceparent,
    )?;
    let printed: Vec<&str> = client.stdout.lines().collect();
    ensure!(
        printed == ["ok hello", "missing NOT_FOUND", "stream 3", "concurrent 20"],
        "{name} client printed {printed:?}"
    );

    let servers = spans_of(&receiver, server.serving.pid, SpanKind::Server, CALLS)?;
    let clients = spans_of(&receiver, client.process.pid, SpanKind::Client, CALLS)?;
    for (spans, kind) in [(&servers, "server"), (&clients, "client")] {
        let mut codes: Vec<i64> = Vec::new();
        let mut streams = 0;
        for span in spans.iter() {
            check_rpc_attributes(span, server.port)?;
            let code = span
                .attr_int("rpc.grpc.status_code")
                .ok_or_else(|| anyhow::anyhow!("no int rpc.grpc.status_code: {span}"))?;
            codes.push(code);
            if span.span.name.ends_with("/Stream") {
                streams += 1;
            }
            // NOT_FOUND is the caller's error, not the server's (OTel gRPC status rules).
            let want = if code == 5 && kind == "client" {
                StatusCode::Error
            } else {
                StatusCode::Unset
            };
            ensure!(span.status_code() == want, "{kind} status: {span}");
            if code == 5 && kind == "client" {
                ensure!(span.attr_str("error.type") == Some("NOT_FOUND"), "{span}");
            }
            let all = format!("{span}");
            ensure!(
                !all.contains("grpc-secret-token"),
                "metadata leaked: {span}"
            );
        }
        codes.sort();
        ensure!(
            codes.iter().filter(|c| **c == 0).count() == CALLS - 1 && codes.last() == Some(&5),
            "{kind} status codes {codes:?}"
        );
        ensure!(streams == 1, "{kind}: {streams} Stream spans");
    }
    for span in &servers {
        ensure!(
            span.attr_int("client.port").is_some_and(|p| p > 0),
            "{span}"
        );
    }

    // The first call carried traceparent: its client span is the header's span (the
    // application's ids win), and the server span is that span's child.
    let joined: Vec<&SpanRecord> = servers
        .iter()
        .filter(|s| hex(&s.span.trace_id) == TRACE_ID)
        .collect();
    let [server_span] = joined.as_slice() else {
        bail!(
            "{} server spans in trace {TRACE_ID}\n{}",
            joined.len(),
            receiver.report()
        );
    };
    ensure!(
        hex(&server_span.span.parent_span_id) == PARENT_ID,
        "{server_span}"
    );
    let client_span = clients
        .iter()
        .find(|s| hex(&s.span.trace_id) == TRACE_ID)
        .ok_or_else(|| anyhow::anyhow!("no client span in trace {TRACE_ID}"))?;
    ensure!(hex(&client_span.span.span_id) == PARENT_ID, "{client_span}");
    Ok(())
}

#[test]
fn grpcio_client_to_grpcio_server() -> Result<()> {
    client_to_own_server(GrpcPeer::Grpcio)
}

#[test]
fn grpc_js_client_to_grpc_js_server() -> Result<()> {
    client_to_own_server(GrpcPeer::GrpcJs)
}

#[test]
fn curl_http2_prior_knowledge_to_node_h2c_server() -> Result<()> {
    const USER_AGENT: &str = "tracewire-e2e-curl-h2/1.0";
    let dir = TempDir::new("h2c")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::node_h2c_server(&dir, "tw-node-h2c")?;
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    let window = Window::open();

    // One curl per request: curl 7.88 cannot reuse a prior-knowledge connection.
    let curl = CurlRequests {
        requests: &[("/ok", 200), ("/missing", 404), ("/fail", 500)],
        options: &["--http2-prior-knowledge", "--user-agent", USER_AGENT],
        protocol_version: "2",
        user_agent: USER_AGENT,
    };
    let runs = curl.run(&dir, &server)?;
    let exchanges = curl.exchanges(&server, &runs);
    check_exchanges(&receiver, &exchanges, window)
}

/// A gRPC server that calls an HTTP service while serving: each HTTP CLIENT span it makes is a
/// child of the gRPC SERVER span of the call being served (in-process link, as for HTTP/1).
#[test]
fn grpc_js_server_calling_http_links_its_calls() -> Result<()> {
    const CALLS: usize = 3;
    let dir = TempDir::new("grpc-js-proxy")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let backend = peers::python_http_server(&dir, "tw-backend")?;
    let server = GrpcPeer::GrpcJs.start_server(&dir, "tw-grpc-js-proxy")?;
    let _agent = AgentGuard::start(
        Export::Otlp(&receiver),
        &[server.port, backend.port],
        dir.path(),
    )?;
    let client =
        GrpcPeer::GrpcJs.run_proxy_client(&dir, server.port, &backend.url("/ok.html"), CALLS)?;
    ensure!(
        client.stdout.lines().collect::<Vec<_>>() == ["200"; CALLS],
        "proxy client printed {:?}",
        client.stdout
    );
    let grpc_servers = spans_of(&receiver, server.serving.pid, SpanKind::Server, CALLS)?;
    let http_clients = spans_of(&receiver, server.serving.pid, SpanKind::Client, CALLS)?;
    for span in &grpc_servers {
        ensure!(span.span.name == format!("{SERVICE}/Proxy"), "{span}");
    }
    for call in &http_clients {
        let parent = grpc_servers
            .iter()
            .find(|s| s.span.span_id == call.span.parent_span_id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "HTTP call without its gRPC parent: {call}\n{}",
                    receiver.report()
                )
            })?;
        ensure!(parent.span.trace_id == call.span.trace_id, "{call}");
        ensure!(
            parent.start() <= call.start() && call.end() <= parent.end(),
            "the call is not inside the request it was made for:\n  {parent}\n  {call}"
        );
    }
    Ok(())
}

/// A gRPC connection opened before the agent started: its HPACK table holds entries the agent
/// never saw. Every call made after the start must still give one span per end, with only what
/// is known — never a wrong service, method or status — marked incomplete when fields are
/// missing, and the count on /metrics.
#[test]
fn grpc_connection_older_than_the_agent_is_reported_honestly() -> Result<()> {
    const AFTER: usize = 5;
    let dir = TempDir::new("grpc-late")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = GrpcPeer::Grpcio.start_server(&dir, "tw-grpc-late-server")?;
    let go = dir.join("go");
    let mut client = GrpcPeer::Grpcio.spawn_late_client(&dir, server.port, &go)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.stdout_text()?.contains("first") {
        if Instant::now() > deadline {
            bail!("late client never made its first calls\n{}", client.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    std::fs::write(&go, "")?;
    let status = client
        .wait_timeout(Duration::from_secs(30))?
        .ok_or_else(|| anyhow::anyhow!("late client did not finish\n{}", client.logs()))?;
    ensure!(status.success(), "late client failed\n{}", client.logs());

    let servers = spans_of(&receiver, server.serving.pid, SpanKind::Server, AFTER)?;
    let clients = spans_of(&receiver, client.pid(), SpanKind::Client, AFTER)?;
    let mut incomplete = 0;
    for span in servers.iter().chain(&clients) {
        let path = span.request_path();
        match span.span.name.as_str() {
            "tracewire.test.Echo/Unary" => {
                ensure!(span.attr_str("rpc.system") == Some("grpc"), "{span}");
                ensure!(span.attr_str("rpc.service") == Some(SERVICE), "{span}");
                ensure!(span.attr_str("rpc.method") == Some("Unary"), "{span}");
            }
            // gRPC known (content-type decoded), the call's name not.
            "grpc" => ensure!(
                span.attr_str("rpc.system") == Some("grpc") && span.attr("rpc.service").is_none(),
                "{span}"
            ),
            // Not even the content-type decoded: an HTTP/2 request, with what is known of it.
            "POST" | "HTTP" => {
                ensure!(
                    span.attr_str("tracewire.incomplete") == Some("header_fields_unknown"),
                    "{span}"
                );
                if let Some(method) = span.attr_str("http.request.method") {
                    ensure!(method == "POST", "{span}");
                }
                if let Some(path) = path {
                    ensure!(path == "/tracewire.test.Echo/Unary", "{span}");
                }
                if let Some(code) = span.attr_int("http.response.status_code") {
                    ensure!(code == 200, "{span}");
                }
                ensure!(
                    span.attr_str("network.protocol.version") == Some("2"),
                    "{span}"
                );
            }
            other => bail!("span named {other:?} from a joined connection: {span}"),
        }
        if let Some(code) = span.attr_int("rpc.grpc.status_code") {
            ensure!(code == 0, "{span}");
        }
        // All calls succeeded: an unknown status is not reported as a failure.
        ensure!(span.status_code() == StatusCode::Unset, "{span}");
        if span.attr_str("tracewire.incomplete") == Some("header_fields_unknown") {
            incomplete += 1;
        } else {
            ensure!(
                span.span.name != "grpc" && span.attr_int("rpc.grpc.status_code").is_some(),
                "fields missing without the incomplete mark: {span}"
            );
        }
    }
    let text = agent.metrics()?;
    let counted = tracewire_tests::metrics::value(
        &text,
        "tracewire_dropped_total",
        "reason=\"header_fields_unknown\"",
    )
    .unwrap_or(0.0);
    ensure!(
        (incomplete == 0) == (counted == 0.0),
        "{incomplete} incomplete spans, header_fields_unknown = {counted}"
    );
    Ok(())
}
