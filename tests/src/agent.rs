//! The agent under test, started the way an operator would start it and stopped with SIGINT.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::bpf::{self, ProgramMark};
use crate::collector::OtlpReceiver;
use crate::net::{self, HttpReply};
use crate::process::{ChildGuard, Shutdown};

/// The agent must report ready (every probe attached) within this.
pub const READY_WAIT: Duration = Duration::from_secs(30);
/// The agent must exit after SIGINT within this.
pub const STOP_WAIT: Duration = Duration::from_secs(10);
/// Milliseconds between export batches, via `OTEL_BSP_SCHEDULE_DELAY`.
pub const BATCH_DELAY_MS: u32 = 200;

/// Where the agent sends spans.
#[derive(Clone, Copy)]
pub enum Export<'a> {
    /// `--exporter otlp` to this receiver, over the receiver's protocol.
    Otlp(&'a OtlpReceiver),
    /// No exporter flag and no OTLP environment: one line per span on stdout.
    Stdout,
}

/// The agent binary: `TRACEWIRE_BIN` (set by `cargo xtask test`), else the workspace's release build.
pub fn agent_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("TRACEWIRE_BIN") {
        Some(path) => PathBuf::from(path),
        None => crate::target_dir().join("release").join("tracewire"),
    };
    ensure!(
        path.is_file(),
        "agent binary {} not found: run the suite with `cargo xtask test`, which builds the agent \
         and sets TRACEWIRE_BIN, or build it with `cargo build --release -p tracewire`",
        path.display()
    );
    Ok(path)
}

/// Which processes and connections the agent traces, as its selection flags: a process is traced
/// when it matches any of `pids`, `exes` and `cgroups` (or when all three are empty), and then
/// only its connections with a local or remote port in `ports` (when that is not empty).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub ports: Vec<u16>,
    /// `--inject-cgroup` directories.
    pub inject_cgroups: Vec<PathBuf>,
    /// Extra environment for the agent (e.g. `OTEL_TRACES_SAMPLER`), set after the harness's own.
    pub env: Vec<(String, String)>,
    /// A command that execs the agent (e.g. `setpriv --reuid=… --ambient-caps=…`), and the
    /// binary to give it instead of [`agent_binary`]. The pid stays the agent's.
    pub launcher: Vec<OsString>,
    pub binary: Option<PathBuf>,
    /// More `tracewire run` arguments (e.g. `--config FILE`).
    pub extra_args: Vec<OsString>,
}

impl Selection {
    pub fn ports(ports: &[u16]) -> Self {
        Self {
            ports: ports.to_vec(),
            ..Self::default()
        }
    }

    /// `--pid`, `--exe`, `--cgroup` and `--port` flags, as `tracewire run` and `tracewire check`
    /// take them.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            args.push(OsString::from(name));
            args.push(value);
        };
        for pid in &self.pids {
            flag("--pid", pid.to_string().into());
        }
        for exe in &self.exes {
            flag("--exe", exe.into());
        }
        for cgroup in &self.cgroups {
            flag("--cgroup", cgroup.into());
        }
        for port in &self.ports {
            flag("--port", port.to_string().into());
        }
        for cgroup in &self.inject_cgroups {
            flag("--inject-cgroup", cgroup.into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running agent that has reported ready. `Drop` sends SIGINT and waits (then SIGKILLs after
/// [`STOP_WAIT`]); [`AgentGuard::stop`] does the same and hands back the exit status.
pub struct AgentGuard {
    // Field order is drop order: the process is stopped before the slot is released.
    child: ChildGuard,
    metrics_addr: std::net::SocketAddr,
    /// Taken while holding the slot, so no other agent of this binary loads programs after it.
    /// An error (no bpftool) matters only to the tests that ask for the mark.
    programs: Result<ProgramMark, String>,
    _slot: MutexGuard<'static, ()>,
}

impl AgentGuard {
    /// Starts `tracewire run` scoped to `ports` and waits for `/ready`. Its stdout and stderr go
    /// to `logs`.
    pub fn start(export: Export<'_>, ports: &[u16], logs: &Path) -> Result<Self> {
        Self::start_selecting(export, &Selection::ports(ports), logs)
    }

    /// Starts `tracewire run` with `selection`'s flags and waits for `/ready`.
    pub fn start_selecting(export: Export<'_>, selection: &Selection, logs: &Path) -> Result<Self> {
        ensure!(
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() } == 0,
            "the end-to-end tests load eBPF programs and must run as root (`cargo xtask test` does)"
        );
        let slot = crate::serial();
        let binary = match &selection.binary {
            Some(binary) => binary.clone(),
            None => agent_binary()?,
        };
        let metrics_port = net::free_port()?;
        let metrics_addr = net::loopback(metrics_port);

        let mut command = match selection.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command.arg("run");
        // The runner's own OTEL_* settings must not leak into the agent under test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        if let Export::Otlp(receiver) = export {
            command
                .args(["--exporter", "otlp"])
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
                .env(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    receiver.protocol().env_value(),
                );
        }
        command
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .env("OTEL_BSP_SCHEDULE_DELAY", BATCH_DELAY_MS.to_string())
            .env("RUST_LOG", "info")
            .envs(selection.env.iter().map(|(k, v)| (k, v)))
            .args(selection.args());
        // The watch socket in the test's own directory, unless the test names one: nothing
        // of the run is left in /run.
        if !selection.extra_args.iter().any(|a| a == "--watch-socket") {
            command.arg("--watch-socket").arg(logs.join("watch.sock"));
        }

        let shutdown = Shutdown::Signal {
            signal: libc::SIGINT,
            grace: STOP_WAIT,
        };
        let programs = bpf::mark().map_err(|error| format!("{error:#}"));
        let child = ChildGuard::spawn("tracewire", &mut command, logs, shutdown)?;
        let mut agent = Self {
            child,
            metrics_addr,
            programs,
            _slot: slot,
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Some(status) = self.child.try_exit_status()? {
                bail!(
                    "the agent exited ({status}) before it was ready\n{}",
                    self.child.logs()
                );
            }
            let last = match net::http_get(self.metrics_addr, "/ready", Duration::from_secs(1)) {
                Ok(HttpReply { status: 200, .. }) => return Ok(()),
                Ok(reply) => format!("/ready answered {}: {}", reply.status, reply.body.trim()),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the agent was not ready within {READY_WAIT:?} ({last})\n{}",
                    self.child.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Fails, with the agent's logs, if the agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_exit_status()? {
            None => Ok(()),
            Some(status) => bail!("the agent exited ({status})\n{}", self.child.logs()),
        }
    }

    /// The kernel's programs as they were just before this agent started: what it loads is newer.
    pub fn programs_mark(&self) -> Result<ProgramMark> {
        self.programs.clone().map_err(anyhow::Error::msg)
    }

    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics_addr
    }

    /// `GET /metrics`, which must answer 200.
    pub fn metrics(&self) -> Result<String> {
        let reply = net::http_get(self.metrics_addr, "/metrics", Duration::from_secs(5))?;
        ensure!(
            reply.status == 200,
            "/metrics answered {}: {}",
            reply.status,
            reply.body
        );
        Ok(reply.body)
    }

    /// Everything the agent has printed on stdout so far.
    pub fn stdout(&self) -> Result<String> {
        self.child.stdout_text()
    }

    /// Everything the agent has logged on stderr so far.
    pub fn stderr(&self) -> Result<String> {
        self.child.stderr_text()
    }

    /// The agent's stdout and stderr tails, for failure messages.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    /// SIGINT, then waits up to [`STOP_WAIT`]. Failing to exit in time is an error (the agent is
    /// then SIGKILLed); the exit status is the caller's to judge.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.child.signal(libc::SIGINT)?;
        match self.child.wait_timeout(STOP_WAIT)? {
            Some(status) => Ok(status),
            None => {
                let logs = self.child.logs();
                self.child
                    .kill()
                    .context("killing the agent after SIGINT was ignored")?;
                bail!("the agent did not exit within {STOP_WAIT:?} of SIGINT\n{logs}")
            }
        }
    }
}
