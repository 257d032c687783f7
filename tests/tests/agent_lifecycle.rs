//! The agent as a process: its stdout exporter, its metrics endpoint, and a clean stop that
//! leaves nothing attached to the kernel.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use tracewire_tests::bpf;
use tracewire_tests::metrics;
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, TempDir,
};

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

/// The scheduling policy of every thread of `pid` (field 41 of /proc/PID/task/TID/stat).
fn thread_policies(pid: u32) -> Result<Vec<u32>> {
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(entry?.path().join("stat"))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let policy = after_comm
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|f| f.parse().ok());
        let Some(policy) = policy else {
            bail!("no policy field in /proc/{pid}/task/…/stat: {stat}");
        };
        policies.push(policy);
    }
    Ok(policies)
}

/// `--cpu-priority idle` puts every agent thread in SCHED_IDLE and the agent still traces;
/// `tracewire_connections_open` counts the traced connection's state and drops back to 0 once
/// the connection is closed.
#[test]
fn idle_cpu_priority_still_traces_and_the_connection_gauge_drains() -> Result<()> {
    const SCHED_IDLE: u32 = 5;
    let dir = TempDir::new("idle")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let selection = Selection {
        extra_args: vec!["--cpu-priority".into(), "idle".into()],
        ..Selection::ports(&[python.port])
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let deadline = Instant::now() + WAIT;
    loop {
        let policies = thread_policies(agent.pid())?;
        if !policies.is_empty() && policies.iter().all(|p| *p == SCHED_IDLE) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "agent threads' policies are {policies:?}, expected all SCHED_IDLE ({SCHED_IDLE})\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = peers::curl_ok(&dir, &python, USER_AGENT)?;
    receiver.wait_for_each(&[
        SpanQuery::server(python.serving.pid, "/ok.html"),
        SpanQuery::client(run.process.pid, "/ok.html"),
    ])?;
    // A connection held open with half a request is counted; once closed, its state (both
    // ends: this test's socket and the server's) is gone by the next refresh (every second).
    let gauge_until = |want: &dyn Fn(f64) -> bool, what: &str| -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = agent.metrics()?;
            let open = metrics::sum(&text, "tracewire_connections_open");
            if open.is_some_and(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("tracewire_connections_open is {open:?}, expected {what}\n/metrics:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut held = std::net::TcpStream::connect(("127.0.0.1", python.port))?;
    std::io::Write::write_all(&mut held, b"GET /ok.html HTTP/1.1\r\nHost: e2e\r\n")?;
    gauge_until(&|n| n >= 1.0, "at least 1 while a connection is open")?;
    drop(held);
    gauge_until(&|n| n == 0.0, "0 once every traced connection closed")
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
