//! HTTPS through the OpenSSL probes: curl (libcurl + OpenSSL) to Python's `ssl` server and to
//! nginx with TLS, every process started after the agent. Each request must give exactly one
//! SERVER and one CLIENT span with `url.scheme` https, and the ciphertext the syscall probes
//! also see must give nothing (no span, no `not_http`). Node's TLS (OpenSSL behind memory
//! BIOs) is not decrypted: its connections must be counted as `tls_opaque`, never garbled.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
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
fn node_https_is_counted_opaque_never_garbled() -> Result<()> {
    let dir = TempDir::new("tls-node")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let cert = peers::self_signed_cert(&dir)?;
    let server = peers::node_https_server(&dir, "tw-node-https", &cert)?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    let urls = vec![https_url(&server, "/ok"), https_url(&server, "/ok")];
    let client = peers::node_https_client(&dir, &cert, &urls)?;
    ensure!(
        client.stdout.lines().count() == 2,
        "node client: {}",
        client.stdout
    );
    // The client closed its connection when it exited: the agent counts it then.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = agent.metrics()?;
        let opaque = metrics::value(&text, "tracewire_dropped_total", "reason=\"tls_opaque\"")
            .unwrap_or(0.0);
        if opaque >= 1.0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("no tls_opaque count for Node's HTTPS connection:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let from_node: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.pid() == Some(server.serving.pid) || s.pid() == Some(client.process.pid))
        .collect();
    ensure!(
        from_node.is_empty(),
        "spans made from Node's ciphertext:\n{}",
        receiver.report()
    );
    let text = agent.metrics()?;
    ensure!(
        metrics::value(&text, "tracewire_dropped_total", "reason=\"not_http\"").unwrap_or(0.0)
            == 0.0,
        "ciphertext counted as not_http instead of tls_opaque:\n{text}"
    );
    Ok(())
}
