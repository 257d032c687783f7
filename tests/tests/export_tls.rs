//! Spans and metrics to a collector that requires TLS and a client certificate (mutual TLS),
//! with the CA, certificate and key given in the `--config` file's `otlp` section (the
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` / `_CLIENT_CERTIFICATE` / `_CLIENT_KEY` variables); and the
//! same agent without a client certificate is refused, counted, and stays up.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_tests::agent::Selection;
use tracewire_tests::metrics::{scalar, scrape};
use tracewire_tests::peers;
use tracewire_tests::{AgentGuard, Export, OtlpReceiver, TempDir};

#[test]
fn mutual_tls_to_the_collector_from_the_config_file() -> Result<()> {
    let dir = TempDir::new("export-tls")?;
    let pki = peers::test_pki(&dir)?;
    let receiver = OtlpReceiver::start_grpc_tls(&pki.server_cert, &pki.server_key, &pki.ca)?;
    ensure!(receiver.endpoint().starts_with("https://"));
    let server = peers::mixed_server(&dir, "tw-tls-export")?;

    let config = dir.join("tracewire.yaml");
    std::fs::write(
        &config,
        format!(
            "otlp:\n  certificate: {}\n  client_certificate: {}\n  client_key: {}\n\
             metrics:\n  export_interval: 500ms\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )?;
    let selection = Selection {
        ports: vec![server.port],
        extra_args: vec![OsString::from("--config"), config.into_os_string()],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let load = peers::steady_load(&dir, server.port, "/users", 1..6, 1, 0)?;
    ensure!(load.count(200) == 5, "{load:?}");
    receiver.wait_for_span("a server span over mutual TLS", |s| {
        s.kind() == SpanKind::Server && s.request_path() == Some("/users/1")
    })?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while receiver.metrics().is_empty() {
        ensure!(
            Instant::now() < deadline,
            "no OTLP metrics over mutual TLS within 15 s\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);

    // Without a client certificate the collector refuses the handshake.
    let refused_before = receiver.spans().len();
    let selection = Selection {
        ports: vec![server.port],
        env: vec![(
            "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
            pki.ca.display().to_string(),
        )],
        ..Selection::default()
    };
    let mut agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let load = peers::steady_load(&dir, server.port, "/users", 100..105, 1, 0)?;
    ensure!(load.count(200) == 5, "{load:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(&agent.metrics()?)?;
        if scalar(&m, "tracewire_export_errors_total", &[]) > 0.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "an agent without a client certificate exported without error\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    agent.ensure_running()?;
    ensure!(
        receiver.spans().len() == refused_before,
        "spans arrived without a client certificate:\n{}",
        receiver.report()
    );
    Ok(())
}
