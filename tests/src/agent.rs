//! The agent under test, started the way an operator would start it and stopped with SIGINT.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

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

/// A running agent that has reported ready. `Drop` sends SIGINT and waits (then SIGKILLs after
/// [`STOP_WAIT`]); [`AgentGuard::stop`] does the same and hands back the exit status.
pub struct AgentGuard {
    // Field order is drop order: the process is stopped before the slot is released.
    child: ChildGuard,
    metrics_addr: std::net::SocketAddr,
    _slot: MutexGuard<'static, ()>,
}

impl AgentGuard {
    /// Starts `tracewire run` scoped to `ports` and waits for `/ready`. Its stdout and stderr go
    /// to `logs`.
    pub fn start(export: Export<'_>, ports: &[u16], logs: &Path) -> Result<Self> {
        ensure!(
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() } == 0,
            "the end-to-end tests load eBPF programs and must run as root (`cargo xtask test` does)"
        );
        let slot = crate::serial();
        let binary = agent_binary()?;
        let metrics_port = net::free_port()?;
        let metrics_addr = net::loopback(metrics_port);

        let mut command = Command::new(&binary);
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
            .env("RUST_LOG", "info");
        for port in ports {
            command.arg("--port").arg(port.to_string());
        }

        let shutdown = Shutdown::Signal {
            signal: libc::SIGINT,
            grace: STOP_WAIT,
        };
        let child = ChildGuard::spawn("tracewire", &mut command, logs, shutdown)?;
        let mut agent = Self {
            child,
            metrics_addr,
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
