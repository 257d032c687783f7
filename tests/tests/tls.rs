//! HTTPS through the OpenSSL probes: curl (libcurl + OpenSSL) to Python's `ssl` server and to
//! nginx with TLS, every process started after the agent; Node's `https` (OpenSSL linked into
//! `node`, behind memory BIOs) client and server, and a Node service calling HTTPS while it
//! serves. Each request must give exactly one SERVER and one CLIENT span with `url.scheme`
//! https, and the ciphertext the syscall probes also see must give nothing (no span, no
//! `not_http`, no `tls_opaque`).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tracewire_tests::metrics;
use tracewire_tests::peers::{self, PeerServer, ProcessIdentity, SelfSigned};
use tracewire_tests::{AgentGuard, Export, OtlpProtocol, OtlpReceiver, SpanQuery, TempDir};

const REQUESTS: [(&str, u16); 2] = [("/ok", 200), ("/missing", 404)];

fn https_url(server: &PeerServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.port)
}

fn curl_https(
    dir: &TempDir,
    server: &PeerServer,
    cert: &SelfSigned,
) -> Result<Vec<ProcessIdentity>> {
    let cacert = cert.cert.to_string_lossy().into_owned();
    let mut clients = Vec::new();
    for (path, status) in REQUESTS {
        let run = peers::curl(
            dir,
            &https_url(server, path),
            &["--http1.1", "--cacert", &cacert],
        )?;
        ensure!(
            run.status == status,
            "curl {path}: {} instead of {status}",
            run.status
        );
        clients.push(run.process);
    }
    Ok(clients)
}

/// Exactly one SERVER and one CLIENT span per request, both saying https.
fn check_https_spans(
    receiver: &OtlpReceiver,
    agent: &AgentGuard,
    server: &PeerServer,
    clients: &[ProcessIdentity],
) -> Result<()> {
    let queries: Vec<SpanQuery> = REQUESTS
        .iter()
        .zip(clients)
        .flat_map(|((path, _), client)| {
            [
                SpanQuery::server(server.serving.pid, path),
                SpanQuery::client(client.pid, path),
            ]
        })
        .collect();
    let spans = receiver.wait_for_each(&queries)?;
    for ((path, status), pair) in REQUESTS.iter().zip(spans.chunks_exact(2)) {
        let [server_span, client_span] = pair else {
            unreachable!("chunks_exact(2) yields pairs");
        };
        ensure!(
            server_span.attr_str("url.scheme") == Some("https"),
            "{server_span}"
        );
        ensure!(
            server_span.attr_str("url.path") == Some(*path),
            "{server_span}"
        );
        ensure!(
            client_span.attr_str("url.full") == Some(https_url(server, path).as_str()),
            "{client_span}"
        );
        for span in [server_span, client_span] {
            ensure!(
                span.attr_str("http.request.method") == Some("GET"),
                "{span}"
            );
            ensure!(
                span.attr_int("http.response.status_code") == Some(i64::from(*status)),
                "{span}"
            );
            ensure!(
                span.attr_int("server.port") == Some(i64::from(server.port)),
                "{span}"
            );
            ensure!(
                span.attr_str("network.protocol.version") == Some("1.1"),
                "{span}"
            );
            ensure!(span.end() > span.start(), "{span}");
        }
    }
    // The syscall probes saw the same connections encrypted: nothing of that may show.
    let text = agent.metrics()?;
    for reason in ["not_http", "tls_opaque", "invalid_head"] {
        let dropped = metrics::value(
            &text,
            "tracewire_dropped_total",
            &format!("reason=\"{reason}\""),
        );
        ensure!(
            dropped.unwrap_or(0.0) == 0.0,
            "ciphertext was taken for traffic: {reason} = {dropped:?}"
        );
    }
    // Kernel counters reach /metrics within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let text = agent.metrics()?;
    let plaintext = metrics::value(
        &text,
        "tracewire_tls_records_total",
        "outcome=\"plaintext\"",
    );
    ensure!(
        plaintext.unwrap_or(0.0) >= 4.0,
        "TLS plaintext records: {plaintext:?}\n{text}"
    );
    Ok(())
}

#[test]
fn curl_https_to_python_ssl_server_started_after_the_agent() -> Result<()> {
    let dir = TempDir::new("tls-python")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let cert = peers::self_signed_cert(&dir)?;
    // The port is known before the server starts: the agent selects it, then the server and
    // the client start, both after the agent.
    let port = tracewire_tests::net::free_port()?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[port], dir.path())?;
    let server = peers::python_https_server(&dir, "tw-python-https", &cert, port)?;
    let clients = curl_https(&dir, &server, &cert)?;
    check_https_spans(&receiver, &agent, &server, &clients)
}

#[test]
fn curl_https_to_nginx_with_tls() -> Result<()> {
    let dir = TempDir::new("tls-nginx")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let cert = peers::self_signed_cert(&dir)?;
    let server = peers::nginx_server_with(&dir, Some(&cert))?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    let clients = curl_https(&dir, &server, &cert)?;
    check_https_spans(&receiver, &agent, &server, &clients)
}

#[test]
fn node_https_client_to_node_https_server() -> Result<()> {
    let dir = TempDir::new("tls-node")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let cert = peers::self_signed_cert(&dir)?;
    let server = peers::node_https_server(&dir, "tw-node-https", &cert)?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    // One keep-alive connection for both requests.
    let urls: Vec<String> = REQUESTS
        .iter()
        .map(|(p, _)| https_url(&server, p))
        .collect();
    let client = peers::node_https_client(&dir, &cert, &urls)?;
    let printed: Vec<String> = REQUESTS
        .iter()
        .zip(&urls)
        .map(|((_, status), url)| format!("{status} {url}"))
        .collect();
    ensure!(
        client.stdout.lines().collect::<Vec<_>>() == printed,
        "node client printed {:?}",
        client.stdout
    );
    let clients = vec![client.process.clone(), client.process];
    check_https_spans(&receiver, &agent, &server, &clients)?;
    let text = agent.metrics()?;
    ensure!(
        metrics::value(
            &text,
            "tracewire_tls_records_total",
            "outcome=\"inferred_socket\""
        )
        .unwrap_or(0.0)
            >= 2.0,
        "Node's memory-BIO calls were not tied to their sockets:\n{text}"
    );
    Ok(())
}

/// A Node HTTPS service that calls another HTTPS service while serving (the pattern where a
/// memory-BIO call could be tied to the wrong socket): each span must name its own connection,
/// and the call must be the child of the request it was made for.
#[test]
fn node_https_proxy_to_python_https_keeps_connections_apart() -> Result<()> {
    const CALLS: usize = 3;
    let dir = TempDir::new("tls-node-proxy")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let cert = peers::self_signed_cert(&dir)?;
    let backend_port = tracewire_tests::net::free_port()?;
    let backend = peers::python_https_server(&dir, "tw-python-https", &cert, backend_port)?;
    let proxy = peers::node_https_proxy(&dir, "tw-node-proxy", &cert, &https_url(&backend, "/ok"))?;
    let _agent = AgentGuard::start(
        Export::Otlp(&receiver),
        &[proxy.port, backend.port],
        dir.path(),
    )?;
    let urls: Vec<String> = (0..CALLS)
        .map(|i| https_url(&proxy, &format!("/front/{i}")))
        .collect();
    let client = peers::node_https_client(&dir, &cert, &urls)?;
    ensure!(client.stdout.lines().count() == CALLS, "{}", client.stdout);
    let mut queries = Vec::new();
    for i in 0..CALLS {
        queries.push(SpanQuery::server(proxy.serving.pid, &format!("/front/{i}")));
    }
    let fronts = receiver.wait_for_each(&queries)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let calls: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| {
                s.pid() == Some(proxy.serving.pid)
                    && s.kind() == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client
            })
            .collect();
        if calls.len() >= CALLS || Instant::now() > deadline {
            break calls;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        calls.len() == CALLS,
        "{} calls from the proxy\n{}",
        calls.len(),
        receiver.report()
    );
    for front in &fronts {
        ensure!(
            front.attr_int("server.port") == Some(i64::from(proxy.port)),
            "{front}"
        );
        ensure!(front.attr_str("url.scheme") == Some("https"), "{front}");
    }
    for call in &calls {
        ensure!(
            call.attr_str("url.full") == Some(https_url(&backend, "/ok").as_str()),
            "{call}"
        );
        ensure!(
            call.attr_int("server.port") == Some(i64::from(backend.port)),
            "{call}"
        );
        let parent = fronts
            .iter()
            .find(|f| f.span.span_id == call.span.parent_span_id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "call without its request as parent: {call}\n{}",
                    receiver.report()
                )
            })?;
        ensure!(parent.span.trace_id == call.span.trace_id, "{call}");
    }
    // The backend's spans are the proxy's calls seen from the other end.
    let backend_spans = receiver
        .spans()
        .into_iter()
        .filter(|s| s.pid() == Some(backend.serving.pid))
        .count();
    ensure!(
        backend_spans == CALLS,
        "{backend_spans} backend spans\n{}",
        receiver.report()
    );
    Ok(())
}
