//! `cargo xtask bench`: criterion benchmarks of the hot user-space stages, and an overhead
//! harness (nginx under wrk, with and without the agent, interleaved rounds; application
//! servers and the OpenTelemetry zero-code alternative in `bench_apps`), written to
//! `target/bench/report.md` and `report.json`. Every figure is a ratio against a baseline from
//! the same run; absolute numbers are shown, never asserted.
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{agent_binary, cargo, run, workspace_root};

/// One line of the report.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<f64>,
    /// value / baseline.
    pub ratio: Option<f64>,
    /// The goal, as a human-readable condition, and whether it is met.
    pub target: Option<(&'static str, bool)>,
}

impl Figure {
    pub fn plain(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
            baseline: None,
            ratio: None,
            target: None,
        }
    }

    /// `value` next to the `baseline` it is a ratio of, with no target.
    pub fn against(name: impl Into<String>, value: f64, unit: &'static str, baseline: f64) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
            baseline: Some(baseline),
            ratio: Some(value / baseline),
            target: None,
        }
    }

    /// The agent's resident memory in MiB, against the issue's bound (64 MiB; Beyla documents
    /// 75-120 MB), compared with `baseline` (the idle agent) when given.
    pub fn memory(name: impl Into<String>, mib: f64, baseline: Option<f64>) -> Self {
        Figure {
            name: name.into(),
            value: mib,
            unit: "MiB",
            baseline,
            ratio: baseline.map(|b| mib / b),
            target: Some(("<= 64 MiB", mib <= 64.0)),
        }
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process stopped by pid when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 30 s")
}

fn nginx(dir: &Path, port: u16) -> Result<Guard> {
    nginx_with(dir, port, 1024)
}

/// nginx on CPU 0 answering `200 ok` to everything, up to `connections` at once.
pub fn nginx_with(dir: &Path, port: u16, connections: u32) -> Result<Guard> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\nmaster_process off;\nuser root;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             worker_rlimit_nofile {files};\n\
             events {{ worker_connections {connections}; }}\n\
             http {{ access_log off;\n client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n \
             fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n \
             keepalive_requests 1000000;\n server {{ listen 127.0.0.1:{port};\n  \
             location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            dir = dir.display(),
            files = connections + 1024,
        ),
    )?;
    // The server on CPU 0, the load generator on CPU 1, as in the issue's measurements.
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (cargo xtask setup --test-peers installs it)")?;
    let guard = Guard(child);
    wait_port(port)?;
    Ok(guard)
}

pub struct WrkResult {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The mean of one measure over rounds.
pub fn mean(v: &[WrkResult], f: fn(&WrkResult) -> f64) -> f64 {
    v.iter().map(f).sum::<f64>() / v.len() as f64
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

pub fn wrk(port: u16, secs: u64) -> Result<WrkResult> {
    wrk_in(port, secs, 32, None)
}

/// wrk with `connections`, started inside `cgroup` when given (before it opens a connection).
pub fn wrk_in(port: u16, secs: u64, connections: u32, cgroup: Option<&Path>) -> Result<WrkResult> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"[ -z "$1" ] || echo $$ > "$1/cgroup.procs" || exit 1; shift; exec "$@""#)
        .arg("sh")
        .arg(cgroup.map(Path::as_os_str).unwrap_or_default())
        .args(["taskset", "-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg(format!("http://127.0.0.1:{port}/"));
    let out = cmd
        .output()
        .context("running wrk (cargo xtask bench installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix(p).and_then(parse_duration_us)
            })
            .unwrap_or(f64::NAN)
    };
    Ok(WrkResult {
        rps,
        p50_us: pct("50%"),
        p99_us: pct("99%"),
    })
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(after_comm) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from after the comm field (which is field 2).
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// A memory field of /proc/PID/status (`VmHWM`: peak resident, `VmRSS`: resident now), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Sum of run_time_ns and run_cnt over the agent's programs (`kernel.bpf_stats_enabled`).
fn bpf_stats() -> (f64, f64) {
    let Ok(out) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    else {
        return (f64::NAN, f64::NAN);
    };
    let Ok(progs) = serde_json::from_slice::<Value>(&out.stdout) else {
        return (f64::NAN, f64::NAN);
    };
    let mut ns = 0.0;
    let mut cnt = 0.0;
    for p in progs.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| n.starts_with("tw_")) {
            ns += p["run_time_ns"].as_f64().unwrap_or(0.0);
            cnt += p["run_cnt"].as_f64().unwrap_or(0.0);
        }
    }
    (ns, cnt)
}

/// How many tracewire (tw_) programs are loaded.
fn tracewire_programs() -> usize {
    Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
        .and_then(|v| {
            v.as_array().map(|progs| {
                progs
                    .iter()
                    .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("tw_")))
                    .count()
            })
        })
        .unwrap_or(0)
}

fn agent(metrics_port: u16, log: &Path) -> Result<Guard> {
    agent_with(metrics_port, log, &[], &[])
}

/// How the bench's agents hooked the syscalls (`fexit`, `tp_btf`, `tracepoints`), from their
/// logs: an agent that fell back to another path measures another thing, and the report says so.
static HOOK_PATHS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The path an agent's log names ("syscalls are hooked by PATH"), remembered for the report.
fn note_hook_path(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let path = text
        .split("syscalls are hooked by ")
        .nth(1)
        .and_then(|rest| rest.split([':', ' ', '\n']).next())
        .unwrap_or("unknown")
        .to_string();
    HOOK_PATHS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(path);
}

/// The highest peak RSS of an agent while it loaded its programs, in KiB.
static STARTUP_PEAK_KIB: AtomicU64 = AtomicU64::new(0);

/// Bytes and requests the bench's OTLP receiver got.
static SINK_BYTES: AtomicU64 = AtomicU64::new(0);
static SINK_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The port of the bench's OTLP/HTTP receiver, started on first use: it reads each export
/// request whole and answers 200 with an empty body, so the agent pays its whole export path
/// (batching, protobuf encoding, HTTP) while the receiver costs next to nothing on the CPUs the
/// measured servers share. Its threads live as long as the bench.
pub fn otlp_sink() -> Result<u16> {
    static PORT: OnceLock<u16> = OnceLock::new();
    if let Some(port) = PORT.get() {
        return Ok(*port);
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the OTLP receiver")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = sink_connection(conn);
            });
        }
    });
    Ok(*PORT.get_or_init(|| port))
}

/// Serves one keep-alive connection of OTLP/HTTP exports until the client closes it.
fn sink_connection(conn: TcpStream) -> std::io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        SINK_BYTES.fetch_add(length as u64, Relaxed);
        SINK_REQUESTS.fetch_add(1, Relaxed);
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// What the OTLP receiver got so far: (requests, bytes).
pub fn sink_received() -> (u64, u64) {
    (SINK_REQUESTS.load(Relaxed), SINK_BYTES.load(Relaxed))
}

/// The agent with `extra` arguments and `env`, once `/ready`. Unless `extra` names an
/// `--exporter`, spans go over OTLP/HTTP to the bench's receiver (`otlp_sink`): the full
/// export path, as deployed.
pub fn agent_with(
    metrics_port: u16,
    log: &Path,
    extra: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> Result<Guard> {
    let mut cmd = Command::new(agent_binary());
    cmd.arg("run");
    if !extra.iter().any(|a| *a == "--exporter") {
        cmd.args(["--exporter", "otlp"])
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", otlp_sink()?),
            );
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting the agent")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/ready")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            // Peak RSS (VmHWM) from here on: the figures are about the agent at work, not the
            // transient of loading its programs (BTF parsing; the heap is given back after).
            let loading = status_mib(guard.0.id(), "VmHWM");
            STARTUP_PEAK_KIB.fetch_max((loading * 1024.0) as u64, Relaxed);
            let _ = std::fs::write(format!("/proc/{}/clear_refs", guard.0.id()), "5");
            note_hook_path(log);
            return Ok(guard);
        }
        if Instant::now() > deadline {
            bail!("the agent was not ready after 30 s; see {}", log.display());
        }
        sleep(Duration::from_millis(100));
    }
}

fn criterion(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "--package",
        "tracewire",
        "--bench",
        "pipeline",
        "--",
    ]);
    if quick {
        cmd.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    run(
        &mut cmd,
        "criterion benchmarks",
        "see the benchmark output above",
    )?;
    let root = workspace_root().join("target/criterion");
    let mut pipeline_ns = None;
    let mut encode_ns = None;
    for (group, bench, per) in [
        ("http1_parse", "request_curl", 1.0),
        ("http1_parse", "request_python_requests", 1.0),
        ("http1_parse", "response_nginx", 1.0),
        ("pipeline", "events_to_spans_keepalive", 1000.0),
        ("export", "otlp_encode", 512.0),
        ("export", "otlp_via_structs", 512.0),
        ("after_span", "red_record", 1000.0),
        ("after_span", "tail_push_and_decide", 1000.0),
    ] {
        let path = root.join(group).join(bench).join("new/estimates.json");
        let est: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let ns = est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN) / per;
        figures.push(Figure::plain(format!("{group}/{bench} per item"), ns, "ns"));
        if group == "after_span" {
            // What RED metrics or tail sampling add to the user-space cost of one span.
            let base = pipeline_ns.unwrap_or(f64::NAN);
            figures.push(Figure::against(
                format!("{bench}: added to the span pipeline's cost per span"),
                ns,
                "ns",
                base,
            ));
        }
        if group == "pipeline" {
            pipeline_ns = Some(ns);
        }
        if (group, bench) == ("export", "otlp_via_structs") {
            let direct = encode_ns.unwrap_or(f64::NAN);
            figures.push(Figure {
                name: "OTLP encoding per span, straight to bytes vs through protobuf structs"
                    .into(),
                value: direct,
                unit: "ns",
                baseline: Some(ns),
                ratio: Some(direct / ns),
                target: None,
            });
        }
        if (group, bench) == ("export", "otlp_encode") {
            encode_ns = Some(ns);
            // The whole user-space path of a span: captured events in, OTLP bytes out.
            let per_sec = 1e9 / (pipeline_ns.unwrap_or(f64::NAN) + ns);
            figures.push(Figure {
                name: "user-space pipeline (events in, OTLP bytes out), spans/s on one core".into(),
                value: per_sec,
                unit: "spans/s",
                baseline: Some(90_000.0),
                ratio: Some(per_sec / 90_000.0),
                target: Some((
                    ">= 300k spans/s (DeepFlow: 90k req/s per core)",
                    per_sec >= 300_000.0,
                )),
            });
        }
    }
    Ok(())
}

fn overhead(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    let dir = workspace_root().join("target/bench/nginx");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let _nginx = nginx(&dir, port)?;
    let (rounds, secs) = if quick { (2, 3) } else { (3, 10) };
    let stats_before =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let mut base = Vec::new();
    let mut traced = Vec::new();
    let mut agent_cpu = 0.0;
    let mut agent_requests = 0.0;
    let mut rss: f64 = 0.0;
    let mut bpf_ns = 0.0;
    let mut bpf_runs = 0.0;
    eprintln!(
        "==> overhead: nginx on CPU 0, wrk -t1 -c32 on CPU 1, {rounds} interleaved rounds of {secs} s"
    );
    let warm = wrk(port, 2)?; // warm-up, and the saturation rate the fixed rate is half of
    let half = (warm.rps / 2.0).round();
    // Half of the no-agent saturation can be more than a traced server sustains; a quarter
    // shows the latency the agent adds below its own saturation.
    let quarter = (warm.rps / 4.0).round();
    let (mut base_quarter, mut traced_quarter) = (Vec::new(), Vec::new());
    let mut base_fixed = Vec::new();
    let mut traced_fixed = Vec::new();
    let mut idle_fixed = Vec::new();
    let mut idle_dropped = 0.0;
    for round in 0..rounds {
        let b = wrk(port, secs)?;
        eprintln!(
            "    round {round}: no agent   {:>9.0} req/s  p50 {:.0} us  p99 {:.0} us",
            b.rps, b.p50_us, b.p99_us
        );
        base.push(b);
        base_fixed.push(fixed_rate(port, half, secs, round, "no agent")?);
        base_quarter.push(fixed_rate(port, quarter, secs, round, "no agent")?);
        let metrics = free_port()?;
        let guard = agent(metrics, &dir.join(format!("agent-{round}.log")))?;
        let pid = guard.0.id();
        let (ns0, cnt0) = bpf_stats();
        let cpu0 = cpu_secs(pid);
        let sink0 = sink_received();
        let t = wrk(port, secs)?;
        let cpu1 = cpu_secs(pid);
        let (ns1, cnt1) = bpf_stats();
        // The batches of the round's last second leave on the exporter's timer.
        sleep(Duration::from_millis(1500));
        let sink1 = sink_received();
        rss = rss.max(status_mib(pid, "VmHWM"));
        agent_cpu += cpu1 - cpu0;
        agent_requests += t.rps * secs as f64;
        bpf_ns += ns1 - ns0;
        bpf_runs += cnt1 - cnt0;
        eprintln!(
            "    round {round}: agent      {:>9.0} req/s  p50 {:.0} us  p99 {:.0} us  \
             (OTLP receiver: {} requests, {:.1} MB)",
            t.rps,
            t.p50_us,
            t.p99_us,
            sink1.0 - sink0.0,
            (sink1.1 - sink0.1) as f64 / 1e6
        );
        traced.push(t);
        traced_fixed.push(fixed_rate(port, half, secs, round, "agent")?);
        traced_quarter.push(fixed_rate(port, quarter, secs, round, "agent")?);
        drop(guard);
        // The same fixed rate with the agent at idle CPU priority (SCHED_IDLE).
        let metrics = free_port()?;
        let guard = agent_with(
            metrics,
            &dir.join(format!("agent-idle-{round}.log")),
            &["--cpu-priority".as_ref(), "idle".as_ref()],
            &[],
        )?;
        idle_fixed.push(fixed_rate(port, half, secs, round, "agent idle")?);
        let dropped = dropped_total(metrics);
        eprintln!("    round {round}: agent idle dropped {dropped:.0} things (counted)");
        idle_dropped += dropped;
        drop(guard);
    }
    if !stats_before.trim().is_empty() {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    }
    injection(&dir, port, rounds, secs, figures)?;
    untraced_syscalls(&dir, figures)?;
    let (b_rps, t_rps) = (mean(&base, |r| r.rps), mean(&traced, |r| r.rps));
    let ratio = t_rps / b_rps;
    figures.push(Figure {
        name: "nginx saturation throughput, full tracing".into(),
        value: t_rps,
        unit: "req/s",
        baseline: Some(b_rps),
        ratio: Some(ratio),
        target: Some((">= 0.85 of no agent", ratio >= 0.85)),
    });
    let (b99, t99) = (mean(&base, |r| r.p99_us), mean(&traced, |r| r.p99_us));
    figures.push(Figure::against(
        "nginx p99 latency at saturation",
        t99,
        "us",
        b99,
    ));
    let (b50, t50) = (mean(&base, |r| r.p50_us), mean(&traced, |r| r.p50_us));
    figures.push(Figure::against(
        "nginx p50 latency at saturation",
        t50,
        "us",
        b50,
    ));
    let avg = |v: &[crate::loadgen::LoadResult], f: fn(&crate::loadgen::LoadResult) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
    };
    let (b99, t99) = (
        avg(&base_fixed, |r| r.p99_us),
        avg(&traced_fixed, |r| r.p99_us),
    );
    figures.push(Figure::against(
        format!("nginx p99 latency at a fixed {half:.0} req/s (half saturation, open loop)"),
        t99,
        "us",
        b99,
    ));
    figures.push(Figure {
        name: "p99 latency added by the agent at half saturation".into(),
        value: t99 - b99,
        unit: "us",
        baseline: None,
        ratio: None,
        target: Some(("<= 50 us", t99 - b99 <= 50.0)),
    });
    let (bq, tq) = (
        avg(&base_quarter, |r| r.p99_us),
        avg(&traced_quarter, |r| r.p99_us),
    );
    figures.push(Figure {
        name: format!(
            "p99 latency added by the agent at a quarter of saturation ({quarter:.0} req/s)"
        ),
        value: tq - bq,
        unit: "us",
        baseline: Some(bq),
        ratio: Some(tq / bq),
        target: None,
    });
    let i99 = avg(&idle_fixed, |r| r.p99_us);
    // No target: an idle-priority agent drops what it cannot keep up with (next figure), so
    // this is not the full tracing the target is about.
    figures.push(Figure::plain(
        "p99 latency added at half saturation, agent at --cpu-priority idle (drops, counted)",
        i99 - b99,
        "us",
    ));
    figures.push(Figure::plain(
        "things dropped at half saturation, agent at --cpu-priority idle (all rounds)",
        idle_dropped,
        "count",
    ));
    let (b50, t50) = (
        avg(&base_fixed, |r| r.p50_us),
        avg(&traced_fixed, |r| r.p50_us),
    );
    figures.push(Figure {
        name: "p50 latency added by the agent at half saturation".into(),
        value: t50 - b50,
        unit: "us",
        baseline: Some(b50),
        ratio: None,
        target: None,
    });
    let (b_done, t_done) = (avg(&base_fixed, |r| r.rps), avg(&traced_fixed, |r| r.rps));
    figures.push(Figure {
        name: format!("fixed-rate answers per second (asked: {half:.0})"),
        value: t_done,
        unit: "req/s",
        baseline: Some(b_done),
        ratio: Some(t_done / b_done),
        target: None,
    });
    let per_req_us = agent_cpu / agent_requests * 1e6;
    figures.push(Figure::plain(
        "agent CPU per traced request (user space)",
        per_req_us,
        "us",
    ));
    figures.push(Figure::plain(
        "agent peak RSS while loading its programs (before the heap is trimmed)",
        STARTUP_PEAK_KIB.load(Relaxed) as f64 / 1024.0,
        "MiB",
    ));
    figures.push(Figure::memory(
        "agent peak RSS under nginx saturation",
        rss,
        None,
    ));
    if bpf_runs > 0.0 {
        let per_event = bpf_ns / bpf_runs;
        figures.push(Figure::plain(
            "in-kernel cost per program run",
            per_event,
            "ns",
        ));
        let per_request = bpf_ns / agent_requests;
        figures.push(Figure {
            name: "in-kernel cost per traced request (all probes, both ends)".into(),
            value: per_request,
            unit: "ns",
            baseline: None,
            ratio: None,
            target: Some(("<= 1500 ns", per_request <= 1500.0)),
        });
    }
    Ok(())
}

/// One fixed-rate run of 32 connections against nginx, logged as `who`'s in `round`.
fn fixed_rate(
    port: u16,
    rate: f64,
    secs: u64,
    round: usize,
    who: &str,
) -> Result<crate::loadgen::LoadResult> {
    let r = crate::loadgen::spawn(port, rate, secs as f64, 32, false)?;
    eprintln!(
        "    round {round}: {who:<10} fixed {rate:.0} req/s: {:.0} done/s  p50 {:.0} us  p99 {:.0} us",
        r.rps, r.p50_us, r.p99_us
    );
    Ok(r)
}

/// What the probes cost a syscall they do not capture, from `bpf_stats`: the kernel time of
/// every tw_ program over a loop of N syscalls of one kind made by this process, divided by N
/// (other processes' syscalls in that window count against us).
fn untraced_syscalls(dir: &Path, figures: &mut Vec<Figure>) -> Result<()> {
    use std::net::UdpSocket;
    const N: usize = 200_000;
    let stats_before =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let guard = agent(free_port()?, &dir.join("agent-untraced.log"))?;
    let receiver = UdpSocket::bind(("127.0.0.1", 0))?;
    let sender = UdpSocket::bind(("127.0.0.1", 0))?;
    let to = receiver.local_addr()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let mut buf = [0u8; 64];
    // `body` makes `per_body` syscalls; it runs N times.
    let per_syscall = |what: &str, per_body: usize, body: &mut dyn FnMut()| -> f64 {
        body(); // first sight: the classification, not measured
        let (ns0, _) = bpf_stats();
        for _ in 0..N {
            body();
        }
        let (ns1, _) = bpf_stats();
        let ns = (ns1 - ns0) / (N * per_body) as f64;
        eprintln!("    {what}: {ns:.0} ns of probe time per syscall");
        ns
    };
    eprintln!("==> untraced syscalls: {N} of each kind, with the agent attached");
    let udp = per_syscall("UDP sendto + recvfrom on loopback", 2, &mut || {
        let _ = sender.send_to(b"0123456789abcdef", to);
        let _ = receiver.recv(&mut buf);
    });
    let file = per_syscall("write to /dev/null", 1, &mut || {
        use std::io::Write as _;
        let _ = (&null).write(b"x");
    });
    let floor = per_syscall("getppid (a syscall no probe captures)", 1, &mut || {
        // SAFETY: no arguments, no side effects.
        let _ = unsafe { libc::getppid() };
    });
    drop(guard);
    if !stats_before.trim().is_empty() {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    }
    figures.push(Figure {
        name: "in-kernel cost per syscall on a socket we do not trace (UDP)".into(),
        value: udp,
        unit: "ns",
        baseline: Some(floor),
        ratio: Some(udp / floor),
        target: Some(("<= 120 ns", udp <= 120.0)),
    });
    figures.push(Figure::plain(
        "in-kernel cost per write to a file (/dev/null)",
        file,
        "ns",
    ));
    figures.push(Figure::plain(
        "in-kernel cost per syscall no probe captures (getppid)",
        floor,
        "ns",
    ));
    Ok(())
}

/// A cgroup v2 directory for the bench's injected client, removed on drop.
struct BenchCgroup(PathBuf);

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn bench_cgroup() -> Result<BenchCgroup> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let root = mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_d, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "cgroup2").then(|| PathBuf::from(dir))
        })
        .context("no cgroup2 mount: injection needs cgroup v2")?;
    let dir = root.join(format!("tracewire-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(BenchCgroup(dir))
}

/// What trace-context injection adds: wrk in an `--inject-cgroup` cgroup (every request gets a
/// traceparent written by sk_msg, through the sockmap path) against wrk outside it, both with
/// the agent tracing. One connection for latency, 32 for throughput.
fn injection(
    dir: &Path,
    port: u16,
    rounds: usize,
    secs: u64,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let cgroup = bench_cgroup()?;
    eprintln!("==> injection: wrk inside vs outside an --inject-cgroup cgroup, agent tracing both");
    let mut plain = (Vec::new(), Vec::new());
    let mut injected = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for inject in [false, true] {
            let metrics = free_port()?;
            let mut extra: Vec<&std::ffi::OsStr> = Vec::new();
            if inject {
                extra.push("--inject-cgroup".as_ref());
                extra.push(cgroup.0.as_os_str());
            }
            let log = dir.join(format!("agent-inject-{inject}-{round}.log"));
            let guard = agent_with(metrics, &log, &extra, &[])?;
            let client = inject.then_some(cgroup.0.as_path());
            let one = wrk_in(port, secs, 1, client)?;
            let many = wrk_in(port, secs, 32, client)?;
            drop(guard);
            eprintln!(
                "    round {round}: {}  1 conn p50 {:.0} us p99 {:.0} us | 32 conns {:.0} req/s",
                if inject { "injected" } else { "plain   " },
                one.p50_us,
                one.p99_us,
                many.rps
            );
            let slot = if inject { &mut injected } else { &mut plain };
            slot.0.push(one);
            slot.1.push(many);
        }
    }
    let (p50_plain, p50_inj) = (
        mean(&plain.0, |r| r.p50_us),
        mean(&injected.0, |r| r.p50_us),
    );
    figures.push(Figure::against(
        "injection: request latency p50, one connection",
        p50_inj,
        "us",
        p50_plain,
    ));
    figures.push(Figure::plain(
        "injection: latency added per request (p50 difference)",
        p50_inj - p50_plain,
        "us",
    ));
    let (rps_plain, rps_inj) = (mean(&plain.1, |r| r.rps), mean(&injected.1, |r| r.rps));
    figures.push(Figure {
        name: "injection: saturation throughput, 32 connections".into(),
        value: rps_inj,
        unit: "req/s",
        baseline: Some(rps_plain),
        ratio: Some(rps_inj / rps_plain),
        target: None,
    });
    Ok(())
}

fn write_report(figures: &[Figure], started: Instant) -> Result<PathBuf> {
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let json: Vec<Value> = figures
        .iter()
        .map(|f| {
            json!({
                "name": f.name, "value": f.value, "unit": f.unit,
                "baseline": f.baseline, "ratio": f.ratio,
                "target": f.target.map(|(t, _)| t), "met": f.target.map(|(_, m)| m),
            })
        })
        .collect();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::from("# Tracewire benchmark report\n\n");
    let _ = writeln!(
        md,
        "One run on this machine ({} CPUs), {:.0} s. Ratios compare against a baseline measured in the same run.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    let paths: Vec<String> = HOOK_PATHS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let _ = writeln!(
        md,
        "The agents hooked the syscalls by: {} (the injection runs always use tracepoints; any other agent that fell back adds its path here).\n",
        paths.join(", ")
    );
    md.push_str(
        "| figure | value | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let _ = writeln!(
            md,
            "| {} | {:.2} {} | {} | {} | {} | {} |",
            f.name,
            f.value,
            f.unit,
            f.baseline.map_or("-".into(), |b| format!("{b:.2}")),
            f.ratio.map_or("-".into(), |r| format!("{r:.3}")),
            f.target.map_or("-", |(t, _)| t),
            f.target.map_or("-", |(_, m)| if m { "yes" } else { "no" }),
        );
    }
    std::fs::write(out.join("report.md"), &md)?;
    eprintln!("{md}");
    Ok(out)
}

pub fn bench(quick: bool) -> Result<()> {
    let started = Instant::now();
    // Another agent's probes would run on every syscall measured here and count in bpf_stats.
    if tracewire_programs() > 0 {
        bail!(
            "tracewire programs are already loaded (another agent is running: see `pgrep -a \
             tracewire` and `bpftool prog show`); stop it first, its probes would be measured too"
        );
    }
    let mut figures = Vec::new();
    let mut phase = Instant::now();
    let mut took = |what: &str| {
        eprintln!("==> {what} took {:.0} s", phase.elapsed().as_secs_f64());
        phase = Instant::now();
    };
    criterion(quick, &mut figures)?;
    took("criterion");
    overhead(quick, &mut figures)?;
    took("the nginx overhead harness");
    crate::bench_apps::app_servers(quick, &mut figures)?;
    took("the application servers");
    crate::bench_apps::scale(quick, &mut figures)?;
    took("the scale runs");
    let out = write_report(&figures, started)?;
    eprintln!(
        "==> report written to {}/report.md and report.json",
        out.display()
    );
    Ok(())
}

/// A metric's value from an agent's `/metrics`, summed over its label sets (0 when absent).
pub fn metric(metrics_port: u16, name: &str) -> f64 {
    let text = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.split_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Everything an agent dropped so far, whatever the reason.
fn dropped_total(metrics_port: u16) -> f64 {
    metric(metrics_port, "tracewire_dropped_total")
}
