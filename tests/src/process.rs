//! Child processes owned by the test that started them. A guard signals only its own child, by
//! the pid it was spawned with; since the guard reaps the child itself, that pid cannot be reused
//! by an unrelated process while the guard still holds it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static NEXT_LOG: AtomicU32 = AtomicU32::new(0);

/// How a guard ends its child.
#[derive(Clone, Copy, Debug)]
pub enum Shutdown {
    /// SIGKILL, for peers that hold no state worth a clean exit.
    Kill,
    /// `signal`, then SIGKILL if the child is still there after `grace`: nginx's master must take
    /// its worker down with it, and the agent must detach its probes.
    Signal {
        signal: libc::c_int,
        grace: Duration,
    },
}

impl Shutdown {
    fn signal(self) -> libc::c_int {
        match self {
            Self::Kill => libc::SIGKILL,
            Self::Signal { signal, .. } => signal,
        }
    }
}

/// A spawned process, stopped per its [`Shutdown`] in `Drop`. Its stdout and stderr go to files in
/// the test's log directory; `Drop` prints their tails to stderr, which libtest captures and shows
/// only for a failed test (a test returning `Err` does not panic, so `Drop` cannot tell).
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    shutdown: Shutdown,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    /// Set once the logs are known to be uninteresting (a client that succeeded).
    quiet: bool,
}

impl ChildGuard {
    pub fn spawn(
        name: &str,
        command: &mut Command,
        logs: &Path,
        shutdown: Shutdown,
    ) -> Result<Self> {
        let seq = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
        let stdout = logs.join(format!("{name}.{seq}.stdout"));
        let stderr = logs.join(format!("{name}.{seq}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(
                File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?,
            )
            .stderr(
                File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?,
            );
        let death_signal = shutdown.signal();
        // If the test runner itself is killed, no Drop runs: the kernel then sends the child the
        // same signal its guard would have, so nothing outlives the run.
        // SAFETY: prctl is async-signal-safe and the closure touches no state of the parent.
        unsafe {
            command.pre_exec(move || {
                #[allow(clippy::cast_sign_loss)]
                let signal = death_signal as libc::c_ulong;
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            shutdown,
            stdout,
            stderr,
            status: None,
            quiet: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the child, if it has not been reaped yet.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.try_exit_status()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory effects; the pid is our unreaped child (see module docs).
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling {} (pid {pid})", self.name));
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Stops the child per its [`Shutdown`] and reaps it.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        match self.shutdown {
            Shutdown::Kill => self.kill(),
            Shutdown::Signal { signal, grace } => {
                self.signal(signal)?;
                match self.wait_timeout(grace)? {
                    Some(status) => Ok(status),
                    None => {
                        eprintln!(
                            "tracewire-tests: {} ignored signal {signal} for {grace:?}; killing it",
                            self.name
                        );
                        self.kill()
                    }
                }
            }
        }
    }

    pub fn stdout_text(&self) -> Result<String> {
        read_lossy(&self.stdout)
    }

    pub fn stderr_text(&self) -> Result<String> {
        read_lossy(&self.stderr)
    }

    /// The last lines of stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} (pid {pid}) stdout:\n{out}--- {name} stderr:\n{err}",
            name = self.name,
            pid = self.pid(),
            out = tail(&self.stdout, 60),
            err = tail(&self.stderr, 60),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("tracewire-tests: stopping {}: {error:#}", self.name);
        }
        if !self.quiet {
            eprintln!("{}", self.logs());
        }
    }
}

fn read_lossy(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn tail(path: &Path, lines: usize) -> String {
    match read_lossy(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let mut out = all[all.len().saturating_sub(lines)..].join("\n");
            out.push('\n');
            out
        }
        Err(error) => format!("({error:#})\n"),
    }
}

/// A client process that ran to completion.
#[derive(Debug)]
pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a process until it exits, SIGKILLing it after `timeout`; whether its exit status is a
/// failure is the caller's to judge.
pub fn run_to_exit(
    name: &str,
    command: &mut Command,
    logs: &Path,
    timeout: Duration,
) -> Result<Finished> {
    let mut guard = ChildGuard::spawn(name, command, logs, Shutdown::Kill)?;
    let Some(status) = guard.wait_timeout(timeout)? else {
        guard.kill()?;
        bail!("{name} did not finish within {timeout:?}\n{}", guard.logs());
    };
    guard.quiet = true;
    Ok(Finished {
        pid: guard.pid(),
        status,
        stdout: guard.stdout_text()?,
        stderr: guard.stderr_text()?,
    })
}

/// Runs a client to completion, SIGKILLing it after `timeout`. A non-zero exit is an error.
pub fn run_to_completion(
    name: &str,
    command: &mut Command,
    logs: &Path,
    timeout: Duration,
) -> Result<Finished> {
    let finished = run_to_exit(name, command, logs, timeout)?;
    if !finished.status.success() {
        bail!(
            "{name} failed ({})\n--- {name} (pid {}) stdout:\n{}--- {name} stderr:\n{}",
            finished.status,
            finished.pid,
            finished.stdout,
            finished.stderr
        );
    }
    Ok(finished)
}

/// Raises this process's RLIMIT_NOFILE soft limit (and the hard one, which root may) to at least
/// `wanted`, so a test can hold that many sockets; children started afterwards inherit it.
pub fn raise_open_files_limit(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == -1 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == -1 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "raising RLIMIT_NOFILE from {}/{} to {wanted}",
                limit.rlim_cur, limit.rlim_max
            )
        });
    }
    Ok(())
}
