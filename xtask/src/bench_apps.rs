//! The overhead harness for application servers, and the alternative a user would pick:
//! a Flask app (served by waitress) and a Node `http` server under wrk at saturation, run with
//! no agent, with tracewire, and — for Flask — under the OpenTelemetry Python zero-code
//! instrumentation (`opentelemetry-instrument`), interleaved round by round to cancel drift.
//! Tracewire and the SDK export to the same OTLP/HTTP sink.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::bench::{Figure, Guard, WrkResult, agent_with, free_port, mean, wait_port, wrk};

/// The Flask app, the same in every mode.
const FLASK_APP: &str = r#"
from flask import Flask
app = Flask(__name__)

@app.route("/")
def hello():
    return "ok\n"

if __name__ == "__main__":
    import sys
    from waitress import serve
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8, _quiet=True)
"#;

const NODE_APP: &str = r#"
const port = Number(process.argv[2]);
require("http").createServer((req, res) => res.end("ok\n")).listen(port, "127.0.0.1");
"#;

/// Pinned top-level packages of the bench's own virtualenv (kept apart from the test venv,
/// whose OpenTelemetry SDK version the interop tests pin).
const BENCH_PACKAGES: [&str; 5] = [
    "flask==3.1.3",
    "waitress==3.0.2",
    "opentelemetry-distro==0.66b1",
    "opentelemetry-instrumentation-flask==0.66b1",
    "opentelemetry-exporter-otlp-proto-http",
];

fn bench_venv() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/tracewire/bench-venv")
}

/// The bench venv's python, created and filled on first use.
fn bench_python() -> Result<PathBuf> {
    let venv = bench_venv();
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args([
                "-c",
                "import flask, waitress, opentelemetry.instrumentation.flask",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(python);
    }
    eprintln!(
        "==> creating {} (Flask, waitress, OpenTelemetry zero-code)",
        venv.display()
    );
    crate::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "creating the bench virtualenv",
        "cargo xtask setup installs python3-venv",
    )?;
    crate::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(BENCH_PACKAGES),
        "installing Flask, waitress and the OpenTelemetry Python distro",
        "check that PyPI is reachable",
    )?;
    if !ready() {
        bail!(
            "Flask or its OpenTelemetry instrumentation does not import from {}",
            python.display()
        );
    }
    Ok(python)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoAgent,
    Tracewire,
    /// `opentelemetry-instrument`, exporting to the sink.
    OtelZeroCode,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NoAgent => "no agent",
            Mode::Tracewire => "tracewire",
            Mode::OtelZeroCode => "OpenTelemetry zero-code",
        }
    }
}

#[derive(Clone, Copy)]
enum App {
    Flask,
    Node,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Flask => "Flask (waitress)",
            App::Node => "Node http",
        }
    }

    fn modes(self) -> &'static [Mode] {
        match self {
            App::Flask => &[Mode::NoAgent, Mode::Tracewire, Mode::OtelZeroCode],
            App::Node => &[Mode::NoAgent, Mode::Tracewire],
        }
    }

    /// Starts the server on CPU 0 (wrk runs on CPU 1).
    fn start(self, dir: &Path, port: u16, mode: Mode, sink: u16) -> Result<Guard> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]);
        match self {
            App::Flask => {
                let python = bench_python()?;
                let app = dir.join("flask_app.py");
                std::fs::write(&app, FLASK_APP)?;
                if mode == Mode::OtelZeroCode {
                    cmd.arg(python.with_file_name("opentelemetry-instrument"))
                        .env("OTEL_SERVICE_NAME", "bench-flask")
                        .env("OTEL_TRACES_EXPORTER", "otlp")
                        .env("OTEL_METRICS_EXPORTER", "none")
                        .env("OTEL_LOGS_EXPORTER", "none")
                        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                        .env(
                            "OTEL_EXPORTER_OTLP_ENDPOINT",
                            format!("http://127.0.0.1:{sink}"),
                        );
                }
                cmd.arg(&python).arg(&app).arg(port.to_string());
            }
            App::Node => {
                let app = dir.join("node_app.js");
                std::fs::write(&app, NODE_APP)?;
                cmd.arg("node").arg(&app).arg(port.to_string());
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("app.log"))?)
            .spawn()
            .with_context(|| format!("starting the {} server", self.name()))?;
        let guard = Guard(child);
        wait_port(port)?;
        Ok(guard)
    }
}

/// Each app at saturation in each of its modes, `rounds` interleaved rounds of `secs`.
pub fn app_servers(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    let dir = crate::workspace_root().join("target/bench/apps");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Each round starts every server afresh (Python with the OpenTelemetry SDK takes seconds
    // to import): one round in the quick run, which must stay under 5 minutes.
    let (rounds, secs) = if quick { (1, 3) } else { (3, 10) };
    // Both tracewire and the OpenTelemetry SDK export to the same receiver.
    let sink_port = crate::bench::otlp_sink()?;
    for app in [App::Flask, App::Node] {
        let mut results: Vec<(Mode, Vec<WrkResult>)> =
            app.modes().iter().map(|m| (*m, Vec::new())).collect();
        eprintln!(
            "==> overhead: {} on CPU 0, wrk -t1 -c32 on CPU 1, {rounds} interleaved rounds of {secs} s",
            app.name()
        );
        for round in 0..rounds {
            for (mode, runs) in &mut results {
                let port = free_port()?;
                let _server = app.start(&dir, port, *mode, sink_port)?;
                let _agent = match mode {
                    Mode::Tracewire => {
                        let endpoint = format!("http://127.0.0.1:{sink_port}");
                        let log = dir.join(format!("agent-{round}.log"));
                        Some(agent_with(
                            free_port()?,
                            &log,
                            &[
                                "--exporter".as_ref(),
                                "otlp".as_ref(),
                                "--port".as_ref(),
                                port.to_string().as_ref(),
                            ],
                            &[
                                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                            ],
                        )?)
                    }
                    _ => None,
                };
                let _ = wrk(port, 1)?; // warm-up: imports, JIT
                let r = wrk(port, secs)?;
                eprintln!(
                    "    round {round}: {:<24} {:>8.0} req/s  p50 {:.0} us  p99 {:.0} us",
                    mode.label(),
                    r.rps,
                    r.p50_us,
                    r.p99_us
                );
                runs.push(r);
            }
        }
        let base = results
            .iter()
            .find(|(m, _)| *m == Mode::NoAgent)
            .map(|(_, r)| mean(r, |w| w.rps))
            .unwrap_or(f64::NAN);
        for (mode, runs) in results.iter().filter(|(m, _)| *m != Mode::NoAgent) {
            let rps = mean(runs, |w| w.rps);
            let ratio = rps / base;
            figures.push(Figure {
                name: format!("{} saturation throughput, {}", app.name(), mode.label()),
                value: rps,
                unit: "req/s",
                baseline: Some(base),
                ratio: Some(ratio),
                target: (*mode == Mode::Tracewire)
                    .then_some((">= 0.97 of no agent", ratio >= 0.97)),
            });
        }
    }
    Ok(())
}

/// Lets this process (and wrk and nginx, which inherit it) hold up to `n` sockets, or as many
/// as the hard limit allows; returns the limit now in force.
fn raise_open_files(n: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    limit.rlim_cur = n.min(limit.rlim_max);
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!(
            "setrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(limit.rlim_cur)
}

/// Scale: nginx with 10 000 keep-alive connections under wrk, then 10 000 idle connections
/// held open after one request each. The agent's memory must stay bounded and flat: each
/// connection costs one table entry (addresses, process, two stream states with bounded head
/// buffers) in user space and one map entry in the kernel.
pub fn scale(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    const CONNS: u32 = 10_000;
    let dir = crate::workspace_root().join("target/bench/scale");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let files = raise_open_files(65_536)?;
    if files < u64::from(CONNS) + 512 {
        bail!(
            "the scale bench needs {} open files; the hard limit is {files}",
            CONNS + 512
        );
    }
    let port = free_port()?;
    let _nginx = crate::bench::nginx_with(&dir, port, CONNS + 512)?;
    let secs = if quick { 4 } else { 10 };
    let metrics_port = free_port()?;
    let agent = agent_with(
        metrics_port,
        &dir.join("agent.log"),
        &["--port".as_ref(), port.to_string().as_ref()],
        &[],
    )?;
    let pid = agent.0.id();
    let before = crate::bench::status_mib(pid, "VmRSS");
    eprintln!("==> scale: wrk -c{CONNS} against nginx for {secs} s, then {CONNS} idle connections");
    let cpu0 = crate::bench::cpu_secs(pid);
    let busy = crate::bench::wrk_in(port, secs, CONNS, None)?;
    let cpu1 = crate::bench::cpu_secs(pid);
    let busy_peak = crate::bench::status_mib(pid, "VmHWM");
    let (busy_rss, busy_pss) = (crate::bench::status_mib(pid, "VmRSS"), pss_mib(pid));
    eprintln!(
        "    {CONNS} busy connections: {:.0} req/s, agent peak RSS {busy_peak:.1} MiB (idle agent {before:.1} MiB)",
        busy.rps
    );
    // Idle: one request on each connection, then nothing.
    let mut idle = Vec::with_capacity(CONNS as usize);
    for _ in 0..CONNS {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf)?;
        idle.push(s);
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let idle_rss = crate::bench::status_mib(pid, "VmRSS");
    eprintln!("    {CONNS} idle connections held: agent RSS {idle_rss:.1} MiB");
    drop(idle);
    // Churn: a fixed rate of short connections (one request each), after the idle ones are
    // gone. Flat means RSS at the end is RSS at the start, and the connection table drains.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let churn_rate = 1000.0;
    let churn_secs = if quick { 5.0 } else { 30.0 };
    let rss0 = crate::bench::status_mib(pid, "VmRSS");
    let churn_cpu0 = crate::bench::cpu_secs(pid);
    let churn = crate::loadgen::spawn(port, churn_rate, churn_secs, 32, true)?;
    let churn_cpu1 = crate::bench::cpu_secs(pid);
    let rss1 = crate::bench::status_mib(pid, "VmRSS");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let open_after = crate::bench::metric(metrics_port, "tracewire_connections_open");
    eprintln!(
        "    {churn_rate:.0} new connections/s for {churn_secs:.0} s: {} answered, {} errors, \
         agent RSS {rss0:.1} -> {rss1:.1} MiB, {open_after} connections still held 3 s later",
        churn.completed, churn.errors
    );
    figures.push(Figure::memory(
        format!("agent RSS after {churn_secs:.0} s of {churn_rate:.0} new connections/s"),
        rss1,
        Some(rss0),
    ));
    figures.push(Figure::plain(
        "agent CPU per new connection (one request each)",
        (churn_cpu1 - churn_cpu0) / churn.completed.max(1) as f64 * 1e6,
        "us",
    ));
    figures.push(Figure::plain(
        "connections the agent still holds 3 s after the churn",
        open_after,
        "connections",
    ));
    figures.push(Figure::memory(
        format!("agent peak RSS, {CONNS} keep-alive connections under wrk"),
        busy_peak,
        Some(before),
    ));
    figures.push(Figure::plain(
        format!(
            "agent PSS after {CONNS} connections under wrk (RSS then {busy_rss:.1} MiB; PSS counts \
             the ring buffer's pages once, RSS twice: the kernel maps them twice so records wrap)"
        ),
        busy_pss,
        "MiB",
    ));
    figures.push(Figure::memory(
        format!("agent RSS, {CONNS} idle connections"),
        idle_rss,
        Some(before),
    ));
    let per_req = (cpu1 - cpu0) / (busy.rps * secs as f64) * 1e6;
    figures.push(Figure::plain(
        format!("agent CPU per request, {CONNS} connections"),
        per_req,
        "us",
    ));
    Ok(())
}

/// Proportional set size (MiB) from /proc/PID/smaps_rollup: a page mapped twice counts once.
fn pss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Pss:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
