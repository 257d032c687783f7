//! Cgroup v2 directories a test creates to select processes for `--cgroup`. Each is removed in
//! `Drop`, after whatever is still in it has been killed, so a failing test leaves no cgroup behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long the processes of a cgroup may take to die after `cgroup.kill`.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// Where cgroup2 is mounted: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .context("no cgroup2 mount in /proc/mounts")
}

/// A cgroup `tracewire-test-<test pid>-<n>` directly under the cgroup2 mount.
///
/// Declare it before the guards of the processes put in it: locals drop in reverse order, so
/// those processes are stopped and reaped before the cgroup is removed.
#[derive(Debug)]
pub struct CgroupGuard {
    path: PathBuf,
    removed: bool,
}

impl CgroupGuard {
    pub fn create() -> Result<Self> {
        let path = cgroup2_mount()?.join(format!(
            "tracewire-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self {
            path,
            removed: false,
        })
    }

    /// A cgroup below this one, removed when its guard drops: declare it after its parent.
    pub fn child(&self, name: &str) -> Result<Self> {
        let path = self.path.join(name);
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self {
            path,
            removed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid`, all its threads, and the children it starts from now on into this
    /// cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("writing {pid} to {}", procs.display()))
    }

    /// The processes in this cgroup (not in cgroups below it, of which there are none).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let procs = self.path.join("cgroup.procs");
        let listed = std::fs::read_to_string(&procs)
            .with_context(|| format!("reading {}", procs.display()))?;
        Ok(listed
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect())
    }

    /// Kills whatever is still in the cgroup, waits until it is empty, and removes it.
    pub fn remove(mut self) -> Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let left = self.pids()?;
        if !left.is_empty() {
            eprintln!(
                "tracewire-tests: processes {left:?} still in {}; killing them",
                self.path.display()
            );
            self.kill_members()?;
        }
        let deadline = Instant::now() + EMPTY_WAIT;
        loop {
            // A cgroup whose last process is dying answers EBUSY for a moment.
            match std::fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(error) if Instant::now() >= deadline => {
                    return Err(error).with_context(|| {
                        format!(
                            "removing cgroup {} (holds {:?})",
                            self.path.display(),
                            self.pids()
                        )
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.removed = true;
        Ok(())
    }

    /// `cgroup.kill` (Linux 5.14) SIGKILLs exactly the processes in this cgroup and below it, all
    /// put there by this test; on older kernels they are moved back to the root cgroup, where the
    /// guards that own them stop them.
    fn kill_members(&self) -> Result<()> {
        let kill = self.path.join("cgroup.kill");
        if kill.exists() {
            return std::fs::write(&kill, "1")
                .with_context(|| format!("writing {}", kill.display()));
        }
        let root = cgroup2_mount()?.join("cgroup.procs");
        for pid in self.pids()? {
            if let Err(error) = std::fs::write(&root, pid.to_string()) {
                bail!("moving {pid} out of {}: {error}", self.path.display());
            }
        }
        Ok(())
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(error) = self.remove_now() {
            eprintln!("tracewire-tests: {error:#}");
        }
    }
}
