//! A collector that goes away, answers garbage, then comes back slow, then well: the agent stays
//! up, its memory stays bounded, the traced requests are never slowed, every lost span is
//! counted with its reason, and export resumes by itself.
//!
//! `TRACEWIRE_OUTAGE_SECS` (default 10) sets how long the collector stays down under steady
//! load; the 10-minute measurement is this test with 600.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_tests::agent::Selection;
use tracewire_tests::metrics::{scalar, scrape};
use tracewire_tests::peers::{self, LoadReport};
use tracewire_tests::{AgentGuard, Export, OtlpProtocol, OtlpReceiver, TempDir};

/// A traced request must never wait for the collector: the slow collector stalls 10 s per
/// export, a request through an agent that blocked would take that long.
const REQUEST_BOUND_S: f64 = 2.0;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Something on the collector's port that accepts and answers every connection with bytes
/// that are neither HTTP/2 nor HTTP/1.
struct GarbageServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GarbageServer {
    fn start(port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding the garbage server on {port}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(&[0x5a; 4096]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_load(phase: &str, load: &LoadReport, n: u64) -> Result<()> {
    ensure!(
        load.count(200) == n,
        "{phase}: not every request answered 200: {load:?}"
    );
    ensure!(
        load.slowest_s < REQUEST_BOUND_S,
        "{phase}: a traced request took {:.2} s: the agent slowed the application",
        load.slowest_s
    );
    Ok(())
}

#[test]
fn collector_down_garbage_slow_then_back_export_resumes_and_nothing_blocks() -> Result<()> {
    let outage = Duration::from_secs(
        std::env::var("TRACEWIRE_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let dir = TempDir::new("export-faults")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let port = receiver.port();
    let server = peers::mixed_server(&dir, "tw-faults")?;
    let selection = Selection {
        ports: vec![server.port],
        env: vec![
            // The collector's slowness must be cut short by the exporter's own timeout.
            ("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "2000".into()),
            ("OTEL_BSP_EXPORT_TIMEOUT".into(), "3000".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE".into(), "2048".into()),
        ],
        ..Selection::default()
    };
    let mut agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let pid = agent.pid();

    // 1. Healthy.
    let load = peers::steady_load(&dir, server.port, "/users", 1..51, 2, 0)?;
    check_load("healthy collector", &load, 50)?;
    receiver.wait_for_span("a span from the healthy phase", |s| {
        s.kind() == SpanKind::Server && s.request_path() == Some("/users/1")
    })?;
    let baseline = rss_kib(pid)?;
    drop(receiver);

    // 2. Down, at steady load: ~100 requests/s.
    let started = Instant::now();
    let mut peak = baseline;
    let mut first = 1000;
    while started.elapsed() < outage {
        let load = peers::steady_load(&dir, server.port, "/users", first..first + 200, 2, 15)?;
        check_load("collector down", &load, 200)?;
        first += 200;
        agent.ensure_running()?;
        peak = peak.max(rss_kib(pid)?);
    }
    let m = scrape(&agent.metrics()?)?;
    let lost = scalar(
        &m,
        "tracewire_dropped_total",
        &[("reason", "export_failed")],
    ) + scalar(
        &m,
        "tracewire_dropped_total",
        &[("reason", "export_queue_full")],
    );
    ensure!(
        lost > 0.0,
        "the collector was down for {outage:?} and no span was counted as lost"
    );

    // 3. Garbage on the collector's port.
    {
        let _garbage = GarbageServer::start(port)?;
        let load = peers::steady_load(&dir, server.port, "/users", 50_000..50_300, 2, 10)?;
        check_load("garbage collector", &load, 300)?;
        agent.ensure_running()?;
        peak = peak.max(rss_kib(pid)?);
    }

    // 4. Back, but 10 s per export.
    let receiver = OtlpReceiver::start_on(OtlpProtocol::Grpc, port)?;
    receiver.set_delay(Duration::from_secs(10));
    let load = peers::steady_load(&dir, server.port, "/users", 60_000..60_300, 2, 10)?;
    check_load("slow collector", &load, 300)?;
    agent.ensure_running()?;
    peak = peak.max(rss_kib(pid)?);

    // 5. Healthy again: new spans arrive without a restart.
    receiver.set_delay(Duration::ZERO);
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(40);
    loop {
        let load = peers::steady_load(&dir, server.port, "/users", 70_000..70_010, 1, 0)?;
        check_load("collector back", &load, 10)?;
        if receiver
            .spans()
            .iter()
            .any(|s| s.request_path() == Some("/users/70000"))
        {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "export did not resume within 40 s of the collector's return\n{}\n{}",
                receiver.report(),
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let text = agent.metrics()?;
    let m = scrape(&text)?;
    ensure!(
        scalar(&m, "tracewire_export_errors_total", &[]) > 0.0,
        "export errors were not counted:\n{text}"
    );
    // Bounded: the export queue (2048 spans) and the kernel ring are the only buffers that
    // grow with an outage; 64 MiB over the healthy baseline is far above both.
    ensure!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB during the faults"
    );
    eprintln!(
        "collector faults: outage {outage:?}; RSS {baseline} KiB healthy, peak {peak} KiB; \
         export resumed {:.1} s after the collector came back; {lost} spans counted lost while down",
        resumed.elapsed().as_secs_f64()
    );
    // Shutdown with a healthy collector is prompt.
    let stopping = Instant::now();
    let status = agent.stop()?;
    ensure!(status.success(), "the agent exited with {status}");
    ensure!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );
    Ok(())
}

/// OTLP partial success: the collector took the request but refused some spans. The
/// specification says not to retry; the agent counts those spans as lost and logs it.
#[test]
fn partial_success_is_counted_and_logged_over_grpc_and_http() -> Result<()> {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let dir = TempDir::new("partial-success")?;
        let receiver = OtlpReceiver::start(protocol)?;
        receiver.set_rejected_spans(2);
        let server = peers::mixed_server(&dir, "tw-partial")?;
        let agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
        let load = peers::steady_load(&dir, server.port, "/users", 1..4, 1, 0)?;
        check_load("partial success", &load, 3)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = scrape(&agent.metrics()?)?;
            let rejected = scalar(
                &m,
                "tracewire_dropped_total",
                &[("reason", "collector_rejected")],
            );
            if rejected >= 2.0 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{protocol:?}: a partial success rejecting 2 spans was not counted ({rejected})\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            agent.logs().contains("partial success"),
            "{protocol:?}: the partial success was not logged\n{}",
            agent.logs()
        );
    }
    Ok(())
}
