//! The agent as a process: its stdout exporter, its metrics endpoint, and a clean stop that
//! leaves nothing attached to the kernel.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use tracewire_tests::bpf;
use tracewire_tests::metrics;
use tracewire_tests::peers;
use tracewire_tests::{AgentGuard, Export, OtlpProtocol, OtlpReceiver, SpanQuery, TempDir};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";
const WAIT: Duration = Duration::from_secs(20);

/// Words of a stdout line, split at whitespace and the punctuation a formatter puts around values.
fn tokens(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || "=,;:\"'{}()[]<>|".contains(c))
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn stdout_exporter_prints_a_line_per_span() -> Result<()> {
    let dir = TempDir::new("stdout")?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let agent = AgentGuard::start(Export::Stdout, &[python.port], dir.path())?;
    peers::curl_ok(&dir, &python, USER_AGENT)?;

    let deadline = Instant::now() + WAIT;
    loop {
        let stdout = agent.stdout()?;
        let line_of = |kind: &str| {
            stdout
                .lines()
                .find(|line| tokens(line).contains(&kind) && line.contains("/ok.html"))
        };
        if let (Some(server), Some(client)) = (line_of("SERVER"), line_of("CLIENT")) {
            for (line, service) in [(server, "tw-python"), (client, "curl")] {
                let words = tokens(line);
                for expected in ["GET", "200", service] {
                    ensure!(
                        words.contains(&expected),
                        "no {expected:?} in stdout line {line:?}"
                    );
                }
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "no SERVER and CLIENT lines for GET /ok.html on stdout within {WAIT:?}\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_count_exported_spans_events_and_drops() -> Result<()> {
    let dir = TempDir::new("metrics")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[python.port], dir.path())?;
    let run = peers::curl_ok(&dir, &python, USER_AGENT)?;
    receiver.wait_for_each(&[
        SpanQuery::server(python.serving.pid, "/ok.html"),
        SpanQuery::client(run.process.pid, "/ok.html"),
    ])?;
    // This receiver hears only this agent, so the agent exported at least what arrived here.
    let received = receiver.spans().len() as f64;

    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = agent.metrics()?;
        let exported = metrics::sum(&text, "tracewire_spans_exported_total");
        if exported.is_some_and(|n| n >= received) {
            break text;
        }
        if Instant::now() >= deadline {
            bail!(
                "tracewire_spans_exported_total is {exported:?}, expected >= {received} (spans \
                 received)\n/metrics:\n{text}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let events = metrics::sum(&text, "tracewire_events_total");
    ensure!(
        events.is_some_and(|n| n > 0.0),
        "tracewire_events_total is {events:?} after traffic\n/metrics:\n{text}"
    );
    let drop_reasons = metrics::label_sets(&text, "tracewire_dropped_total");
    ensure!(
        drop_reasons
            .iter()
            .any(|labels| labels.contains("reason=\"")),
        "tracewire_dropped_total has no series with a reason label ({drop_reasons:?})\n/metrics:\n{text}"
    );
    Ok(())
}

#[test]
fn sigint_exits_zero_and_detaches_every_probe() -> Result<()> {
    let dir = TempDir::new("stop")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let agent = AgentGuard::start(Export::Otlp(&receiver), &[python.port], dir.path())?;
    let run = peers::curl_ok(&dir, &python, USER_AGENT)?;
    receiver.wait_for_each(&[
        SpanQuery::server(python.serving.pid, "/ok.html"),
        SpanQuery::client(run.process.pid, "/ok.html"),
    ])?;
    // Programs loaded since the mark are this agent's; another agent on the host does not count.
    let mark = agent.programs_mark()?;
    let attached = bpf::agent_programs_since(mark)?;
    ensure!(
        !attached.is_empty(),
        "no BPF program named {}* is loaded while the agent traces",
        bpf::PROGRAM_PREFIX
    );

    let started = Instant::now();
    let status = agent.stop()?;
    ensure!(
        status.code() == Some(0),
        "the agent exited with {status} after SIGINT"
    );
    eprintln!("agent stopped in {:?}", started.elapsed());

    bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))?;
    let pins = bpf::tracewire_pins()?;
    ensure!(
        pins.is_empty(),
        "bpffs entries left after the agent exited: {pins:?}"
    );
    Ok(())
}
