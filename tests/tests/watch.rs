//! `tracewire watch`, end to end: a 3-hop trace (Python -> Java -> Go, one trace through the
//! kernel's `traceparent` injection) as `watch --once` prints it, and the terminal view driven
//! in tmux (80×24): the trace in the list, its waterfall, a filter key, and `q`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tracewire_tests::net::{http_get, loopback};
use tracewire_tests::peers::{self, Runtime, require_tool};
use tracewire_tests::process::run_to_completion;
use tracewire_tests::{
    AgentGuard, CgroupGuard, Export, OtlpProtocol, OtlpReceiver, PeerServer, Selection, SpanQuery,
    TempDir, agent_binary,
};

/// Python front -> Java proxy -> Go leaf, all in a cgroup the agent traces and injects in.
struct Chain {
    python: PeerServer,
    java: PeerServer,
    go: PeerServer,
    socket: PathBuf,
    receiver: OtlpReceiver,
    // Drop order: the agent stops before the peers and the cgroup go.
    _agent: AgentGuard,
    _cgroup: CgroupGuard,
}

fn chain(dir: &TempDir) -> Result<Chain> {
    let cgroup = CgroupGuard::create()?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let go = Runtime::Go.start_server(dir, "tw-go")?;
    // GET /front/ok -> /back/ok -> Go's /ok: 200 all the way.
    let java = Runtime::Java.start_proxy(dir, "tw-java", &go.url(""))?;
    let python = peers::python_front_server(dir, "tw-python", java.port)?;
    for pid in [go.serving.pid, java.serving.pid, python.serving.pid] {
        cgroup.add(pid)?;
    }
    let socket = dir.join("watch.sock");
    let selection = Selection {
        cgroups: vec![cgroup.path().to_path_buf()],
        inject_cgroups: vec![cgroup.path().to_path_buf()],
        extra_args: vec!["--watch-socket".into(), socket.clone().into()],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    // The agent learns each process's threading from its first connection: one request first,
    // before anyone watches (so it is not recorded).
    get(&python, "/front/warm")?;
    // ... and hands what it learned to the kernel's injection programs on a later tick; until
    // then a call right after the first request may start a trace of its own (as in `inject`).
    std::thread::sleep(Duration::from_millis(1500));
    Ok(Chain {
        python,
        java,
        go,
        socket,
        receiver,
        _agent: agent,
        _cgroup: cgroup,
    })
}

fn get(server: &PeerServer, path: &str) -> Result<()> {
    let reply = http_get(loopback(server.port), path, Duration::from_secs(20))?;
    ensure!(reply.status == 200, "GET {path}: {}", reply.status);
    Ok(())
}

/// What `watch` does first: ask the agent for its spans, which makes it record from now on.
fn arm(socket: &Path) -> Result<()> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the agent's watch socket {}",
            socket.display()
        )
    })?;
    stream.write_all(b"spans\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    ensure!(line.starts_with('['), "the watch socket answered {line:?}");
    Ok(())
}

/// The labels of the waterfall's span lines (between the mark and the bar), in order.
fn labels(text: &str) -> Vec<(char, String)> {
    text.lines()
        .filter(|l| l.contains('█'))
        .map(|l| {
            let mark = l.chars().next().unwrap_or(' ');
            let label: String = l.chars().skip(2).take_while(|c| *c != '█').collect();
            (mark, label.trim_end().to_string())
        })
        .collect()
}

fn expected(c: &Chain) -> Vec<String> {
    vec![
        "SERVER tw-python GET /front/ok 200".to_string(),
        format!(
            "  CLIENT tw-python GET http://127.0.0.1:{}/back/ok 200",
            c.java.port
        ),
        "    SERVER tw-java GET /back/ok 200".to_string(),
        format!(
            "      CLIENT tw-java GET http://127.0.0.1:{}/ok 200",
            c.go.port
        ),
        "        SERVER tw-go GET /ok 200".to_string(),
    ]
}

#[test]
fn watch_once_prints_the_waterfall_of_a_three_hop_trace() -> Result<()> {
    let dir = TempDir::new("watch-once")?;
    let c = chain(&dir)?;
    arm(&c.socket)?;
    get(&c.python, "/front/ok")?;
    let front = c
        .receiver
        .wait_for(&SpanQuery::server(c.python.serving.pid, "/front/ok"))?;
    let trace_id: String = front
        .span
        .trace_id
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut command = Command::new(agent_binary()?);
    command.args(["watch", "--once", "--width", "120", "--wait-secs", "30"]);
    command.arg("--socket").arg(&c.socket);
    command.args(["--trace", &trace_id]);
    let run = run_to_completion(
        "tracewire-watch",
        &mut command,
        dir.path(),
        Duration::from_secs(60),
    )?;
    let text = run.stdout;
    ensure!(
        text.lines().next() == Some(format!("trace {trace_id}").as_str()),
        "watch --once printed another trace:\n{text}"
    );
    let got = labels(&text);
    let want = expected(&c);
    ensure!(
        got.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>() == want,
        "the waterfall's tree is not the 3-hop chain:\n{text}\nwant:\n{}",
        want.join("\n")
    );
    // One request after another all the way down: every span is on the critical path.
    ensure!(
        got.iter().all(|(mark, _)| *mark == '*'),
        "not every span of the chain is marked critical:\n{text}"
    );
    for line in text.lines() {
        ensure!(
            line.chars().count() <= 120,
            "wider than --width 120: {line:?}"
        );
    }
    Ok(())
}

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
    tmux: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.tmux);
        c.args(["-L", &self.socket]);
        c
    }

    fn pane(&self) -> Result<String> {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "w"])
            .output()?;
        ensure!(out.status.success(), "tmux capture-pane failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn keys(&self, keys: &str) -> Result<()> {
        let status = self.cmd().args(["send-keys", "-t", "w", keys]).status()?;
        ensure!(status.success(), "tmux send-keys {keys} failed");
        Ok(())
    }

    /// Waits until the pane shows what `ok` accepts.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pane = self.pane()?;
            if ok(&pane) {
                return Ok(pane);
            }
            if Instant::now() >= deadline {
                bail!("the watch pane never showed {what}:\n{pane}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "w"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn the_terminal_view_lists_the_trace_draws_its_waterfall_and_quits_on_q() -> Result<()> {
    let dir = TempDir::new("watch-tui")?;
    let c = chain(&dir)?;
    let tmux = Tmux {
        socket: format!("tracewire-test-{}", std::process::id()),
        tmux: require_tool("tmux")?,
    };
    let watch = format!(
        "{} watch --socket {}",
        agent_binary()?.display(),
        c.socket.display()
    );
    let status = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "80",
            "-y",
            "24",
            &watch,
        ])
        .env("TERM", "xterm-256color")
        .status()?;
    ensure!(status.success(), "tmux new-session failed");
    tmux.wait_for("its header", |p| p.contains("tracewire watch"))?;
    get(&c.python, "/front/ok")?;
    let want = expected(&c);
    let pane = tmux.wait_for("the chain's waterfall", |p| {
        p.contains("tw-python") && p.contains("SERVER tw-go GET /ok 200")
    })?;
    // The selected (newest) trace's waterfall: each hop on its own line, indented by parent.
    for label in [&want[0], &want[2], &want[4]] {
        ensure!(
            pane.lines().any(|l| l.contains(label.as_str())),
            "no line {label:?} in the pane:\n{pane}"
        );
    }
    // `e`: errors only; the chain has none, so the list empties and the waterfall goes.
    tmux.keys("e")?;
    tmux.wait_for("an empty list under the errors filter", |p| {
        p.contains("0 traces") && p.contains("[errors]") && !p.contains("SERVER tw-go")
    })?;
    tmux.keys("e")?;
    tmux.wait_for("the trace again", |p| {
        p.contains("SERVER tw-go GET /ok 200")
    })?;
    tmux.keys("q")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(!tmux.alive(), "watch did not quit on q");
    Ok(())
}
