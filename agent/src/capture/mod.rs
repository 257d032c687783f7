//! Capture: load and attach the kernel programs, then drain their ring buffer into decoded
//! events for reassembly.
//!
//! Needs: syscall tracepoints (tracefs, kernel >= 4.7), BPF ring buffer (>= 5.8), BTF
//! (>= 5.4 with CONFIG_DEBUG_INFO_BTF), bpf_probe_read_{user,kernel} (>= 5.5),
//! bpf_get_current_cgroup_id (>= 4.18). Unless injection is on, the syscalls are hooked by
//! fexit where the kernel allows it (x86-64, no lockdown), else by one program on the
//! `sys_exit` BTF tracepoint (>= 5.5; lockdown allows it), and by an enter and an exit
//! tracepoint per syscall otherwise (`--syscall-hooks`).
pub mod check;
pub mod container;
pub mod event;
pub mod inject;
pub mod kubernetes;
pub mod offsets;
pub mod process;
pub mod select;
pub mod tls;

use std::{os::fd::AsRawFd, path::Path, time::Duration};

use agent_common::{
    KERNEL_COUNTERS, KernelCounter, MAX_CAPTURE, ProbeConfig, SELECT_CGROUP, SELECT_PID,
    SELECT_PORT,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FExit, ProgramError, TracePoint},
};
use tokio::{io::unix::AsyncFd, sync::watch};

pub use event::{CaptureEvent, ConnKey};
pub use inject::check_injection;
use inject::{Injection, ModeMarker, start_injection, unload_injection};

use crate::{
    config::SyscallHooks,
    queue::BatchSender,
    telemetry::{Drop, TELEMETRY},
};

/// The compiled kernel programs, built by build.rs: tracing only, and tracing plus injection
/// (whose socket map needs CAP_NET_ADMIN, so the tracing-only agent does not load it).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
static EBPF_INJECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-inject"));

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Each program, its tracepoint category and the tracepoints it is attached to.
const ATTACHMENTS: &[(&str, &str, &[&str])] = &[
    (
        "tw_enter_read",
        "syscalls",
        &["sys_enter_read", "sys_enter_recvfrom"],
    ),
    (
        "tw_enter_write",
        "syscalls",
        &["sys_enter_write", "sys_enter_sendto"],
    ),
    ("tw_enter_readv", "syscalls", &["sys_enter_readv"]),
    ("tw_enter_writev", "syscalls", &["sys_enter_writev"]),
    ("tw_enter_recvmsg", "syscalls", &["sys_enter_recvmsg"]),
    ("tw_enter_sendmsg", "syscalls", &["sys_enter_sendmsg"]),
    ("tw_enter_sendfile", "syscalls", &["sys_enter_sendfile64"]),
    (
        "tw_exit_data",
        "syscalls",
        &[
            "sys_exit_read",
            "sys_exit_recvfrom",
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_readv",
            "sys_exit_writev",
            "sys_exit_recvmsg",
            "sys_exit_sendmsg",
            "sys_exit_sendfile64",
        ],
    ),
    (
        "tw_exit_accept",
        "syscalls",
        &["sys_exit_accept", "sys_exit_accept4"],
    ),
    ("tw_enter_connect", "syscalls", &["sys_enter_connect"]),
    ("tw_exit_connect", "syscalls", &["sys_exit_connect"]),
    ("tw_enter_close", "syscalls", &["sys_enter_close"]),
    ("tw_process_exit", "sched", &["sched_process_exit"]),
];

/// The fexit fast path: each program and the syscall entry point it goes on (x86-64 names).
const FEXITS: &[(&str, &str)] = &[
    ("tw_fx_read", "__x64_sys_read"),
    ("tw_fx_recvfrom", "__x64_sys_recvfrom"),
    ("tw_fx_write", "__x64_sys_write"),
    ("tw_fx_sendto", "__x64_sys_sendto"),
    ("tw_fx_readv", "__x64_sys_readv"),
    ("tw_fx_writev", "__x64_sys_writev"),
    ("tw_fx_recvmsg", "__x64_sys_recvmsg"),
    ("tw_fx_sendmsg", "__x64_sys_sendmsg"),
    ("tw_fx_sendfile", "__x64_sys_sendfile64"),
    ("tw_fx_accept", "__x64_sys_accept"),
    ("tw_fx_accept4", "__x64_sys_accept4"),
    ("tw_fx_connect", "__x64_sys_connect"),
    ("tw_fx_close", "__x64_sys_close"),
];

/// The middle path: one program on the `sys_exit` BTF tracepoint.
const TP_BTF: &[(&str, &str)] = &[("tw_sys_exit", "sys_exit")];

/// What the fexit and tp_btf paths still attach as a tracepoint: process exit is not a
/// syscall.
const FEXIT_TRACEPOINTS: &[(&str, &str, &[&str])] =
    &[("tw_process_exit", "sched", &["sched_process_exit"])];

/// How the syscalls ended up hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPath {
    /// One fexit program per syscall (the fast path).
    Fexit,
    /// One program on the `sys_exit` BTF tracepoint, for every syscall (where fexit is
    /// refused, as under lockdown).
    TpBtf,
    /// An enter and an exit syscall tracepoint per syscall.
    Tracepoints,
}

impl HookPath {
    pub fn name(self) -> &'static str {
        match self {
            HookPath::Fexit => "fexit",
            HookPath::TpBtf => "tp_btf",
            HookPath::Tracepoints => "tracepoints",
        }
    }

    /// Its code in `Telemetry::syscall_hooks`.
    pub fn code(self) -> u8 {
        match self {
            HookPath::Tracepoints => 0,
            HookPath::Fexit => 1,
            HookPath::TpBtf => 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed: {source}; run as root or \
         mount it: `mount -t tracefs nodev {TRACEFS}`"
    )]
    Tracefs {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "tracefs at {TRACEFS} is not readable by this user ({source}); run as root or grant \
         CAP_DAC_READ_SEARCH"
    )]
    TracefsDenied {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetError),
    #[error(
        "loading the kernel programs failed: {source}; run `tracewire check` to see what this \
         kernel supports (root or CAP_BPF+CAP_PERFMON is needed)"
    )]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("kernel program {name} is missing from the embedded object (build problem)")]
    MissingProgram { name: &'static str },
    #[error("kernel map {name} is missing from the embedded object (build problem)")]
    MissingMap { name: &'static str },
    #[error("loading program {name} failed: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "attaching {name} to tracepoint {tracepoint} failed: {source}; is tracefs \
         mounted and the kernel built with CONFIG_FTRACE_SYSCALLS?"
    )]
    Attach {
        name: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "the fexit fast path is unavailable: {what}: {source} (`--syscall-hooks auto` or \
         `tracepoints` work without it)"
    )]
    Fexit {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "--syscall-hooks fexit cannot be used with --inject-cgroup: injection needs the \
         write's entry, which only the tracepoint path sees; use --syscall-hooks auto"
    )]
    FexitWithInjection,
    #[error(
        "the sys_exit BTF tracepoint path is unavailable: {what}: {source} (`--syscall-hooks \
         auto` or `tracepoints` work without it)"
    )]
    TpBtf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot watch the ring buffer: {source}")]
    Poll {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "trace-context injection (--inject-cgroup) could not start: {what}: {source}; this \
         kernel may lack sock_ops/sk_msg support (see `tracewire check`)"
    )]
    Inject {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cgroup {path}: {source}; give a cgroup v2 directory (e.g. under /sys/fs/cgroup)")]
    Cgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to capture and with which bounds.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub capture_bytes: u32,
    pub ring_buffer_bytes: u32,
    pub max_connections: u32,
    pub pids: Vec<u32>,
    pub cgroups: Vec<std::path::PathBuf>,
    pub ports: Vec<u16>,
    /// `--exe`: kept in sync with the running processes every second.
    pub exes: select::ExeSelector,
    /// `--inject-cgroup`: cgroups whose outgoing HTTP/1.x requests get `traceparent`.
    pub inject_cgroups: Vec<std::path::PathBuf>,
    /// Attach the OpenSSL uprobes (TLS plaintext).
    pub tls: bool,
    /// `--syscall-hooks`: fexit, tp_btf, tracepoints, or the best this kernel allows.
    pub syscall_hooks: SyscallHooks,
    /// Send traced processes' stdout/stderr writes (`logs.enabled`).
    pub logs: bool,
    /// The sampler, whose root rule the kernel applies to traces it starts.
    pub sampler: crate::sampling::head::Sampler,
    /// Drain period of the ring buffer when nothing woke the reader.
    pub drain_interval: Duration,
}

/// Loaded and attached kernel programs. Dropping it detaches and unloads everything.
pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    drain_interval: Duration,
    pids: Vec<u32>,
    exes: select::ExeSelector,
    /// `--cgroup` directories, rescanned every second for cgroups made below them since.
    cgroups: Vec<std::path::PathBuf>,
    injection: Option<Injection>,
    tls: Option<tls::TlsProbes>,
    hooks: HookPath,
    /// Why the fast path was not taken, when it was not.
    hooks_note: Option<String>,
}

/// Mounts tracefs where the tracepoint attach code looks for it, if it is not there.
pub fn ensure_tracefs() -> Result<(), CaptureError> {
    match std::fs::metadata(Path::new(TRACEFS).join("events")) {
        Ok(m) if m.is_dir() => return Ok(()),
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(CaptureError::TracefsDenied { source });
        }
        _ => {}
    }
    let target = std::ffi::CString::new(TRACEFS).map_err(|e| CaptureError::Tracefs {
        source: std::io::Error::other(e),
    })?;
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(CaptureError::Tracefs {
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memory cgroups.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::warn!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11, older kernels may \
             refuse to create maps",
            std::io::Error::last_os_error()
        );
    }
}

impl Capture {
    /// Loads the kernel programs, attaches every tracepoint and fills the selection maps.
    pub fn start(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        let inject = !cfg.inject_cgroups.is_empty();
        let (mut ebpf, probe_config, ring_bytes, max_conns, inject) = match load_object(cfg, inject)
        {
            Ok((ebpf, probe, ring, conns)) => (ebpf, probe, ring, conns, inject),
            Err(err) if inject => {
                tracing::error!(
                    "{}; tracing continues WITHOUT trace-context injection (it needs \
                     CAP_NET_ADMIN besides the tracing capabilities)",
                    check::chain(&err)
                );
                let (ebpf, probe, ring, conns) = load_object(cfg, false)?;
                (ebpf, probe, ring, conns, false)
            }
            Err(err) => return Err(err),
        };
        fill_selection(&mut ebpf, cfg)?;
        let injection = if !inject {
            None
        } else {
            match start_injection(&mut ebpf, &cfg.inject_cgroups) {
                Ok(injection) => Some(injection),
                Err(err) => {
                    // Tracing is worth having without propagation: say so loudly, undo what
                    // was attached, and go on.
                    tracing::error!(
                        "{}; tracing continues WITHOUT trace-context injection",
                        check::chain(&err)
                    );
                    unload_injection(&mut ebpf);
                    None
                }
            }
        };
        TELEMETRY
            .injection_active
            .store(injection.is_some(), std::sync::atomic::Ordering::Relaxed);
        let (hooks, hooks_note) =
            attach_syscall_hooks(&mut ebpf, cfg.syscall_hooks, injection.is_some())?;
        TELEMETRY
            .syscall_hooks
            .store(hooks.code(), std::sync::atomic::Ordering::Relaxed);
        let tls = if cfg.tls { start_tls(&mut ebpf) } else { None };
        let ring = ebpf
            .take_map("EVENTS")
            .ok_or(CaptureError::MissingMap { name: "EVENTS" })?;
        let ring = RingBuf::try_from(ring).map_err(|source| CaptureError::Map {
            name: "EVENTS",
            source,
        })?;
        tracing::info!(
            capture_bytes = probe_config.capture_bytes,
            ring_buffer_bytes = ring_bytes,
            max_connections = max_conns,
            syscall_hooks = hooks.name(),
            "kernel programs attached"
        );
        if let Some(note) = &hooks_note {
            tracing::info!("syscalls are hooked by {}: {note}", hooks.name());
        }
        release_startup_heap();
        Ok(Capture {
            ebpf,
            ring,
            drain_interval: cfg.drain_interval,
            pids: cfg.pids.clone(),
            exes: cfg.exes.clone(),
            cgroups: cfg.cgroups.clone(),
            injection,
            tls,
            hooks,
            hooks_note,
        })
    }

    /// How the syscalls are hooked, and why not by fexit when they are not.
    pub fn hooks(&self) -> (HookPath, Option<&str>) {
        (self.hooks, self.hooks_note.as_deref())
    }

    /// Drains the ring buffer into `events` until `shutdown` flips. Records arrive without
    /// wakeups while the buffer is under a quarter full, so the reader also drains on a timer.
    pub async fn run(
        self,
        events: BatchSender<CaptureEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let Capture {
            mut ebpf,
            ring,
            drain_interval,
            pids,
            exes,
            cgroups,
            injection,
            mut tls,
            ..
        } = self;
        let (mut modes, client_socks, inject_dirs) = match injection {
            Some(Injection { modes, socks, dirs }) => (Some(modes), Some(socks), dirs),
            None => (None, None, Vec::new()),
        };
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long
        // as the RingBuf lives, and the AsyncFd owns the RingBuf.
        let mut ring =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::Poll { source: e.into() })?;
        // The drain period adapts: `drain_interval` while records flow, so that the agent's
        // work comes in short bursts (a traced server waits for the CPU the agent holds: a
        // 10 ms period made 2 ms bursts and +2 ms of p99 latency at half an nginx's
        // saturation), and ten times longer on a quiet host, where an empty ring is not worth
        // 500 wakeups a second.
        let quiet_interval = drain_interval * 10;
        let mut period = drain_interval;
        let tick = tokio::time::sleep(period);
        tokio::pin!(tick);
        let mut last_counters = std::time::Instant::now();
        let mut last_rescan = std::time::Instant::now();
        loop {
            let more = tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| CaptureError::Poll { source })?;
                    let taken = drain(guard.get_inner_mut(), &events, &mut modes);
                    guard.clear_ready();
                    period = drain_interval;
                    taken == DRAIN_BUDGET
                }
                _ = &mut tick => {
                    let taken = drain(ring.get_mut(), &events, &mut modes);
                    period = if taken > 0 {
                        drain_interval
                    } else {
                        (period * 2).min(quiet_interval)
                    };
                    tick.as_mut().reset(tokio::time::Instant::now() + period);
                    let more = taken == DRAIN_BUDGET;
                    if last_counters.elapsed() >= Duration::from_millis(500) {
                        last_counters = std::time::Instant::now();
                        publish_kernel_counters(&ebpf);
                    }
                    if last_rescan.elapsed() >= Duration::from_secs(1) {
                        last_rescan = std::time::Instant::now();
                        if !exes.is_empty() {
                            sync_exe_pids(&mut ebpf, &pids, &exes);
                        }
                        if let Some(tls) = tls.as_mut() {
                            tls.scan(&mut ebpf);
                        }
                        // New cgroups below the selected ones (a pod started after the
                        // agent): selected, and in injection scope. The sock_ops attachment
                        // covers them by itself; the kernel's request contexts need their ids.
                        if !cgroups.is_empty()
                            && let Err(err) = fill_cgroup_ids(&mut ebpf, "SELECT_CGROUPS", &cgroups)
                        {
                            tracing::debug!(%err, "rescanning the selected cgroups");
                        }
                        if !inject_dirs.is_empty()
                            && let Err(err) = fill_cgroup_ids(&mut ebpf, "INJECT_CGROUPS", &inject_dirs)
                        {
                            tracing::debug!(%err, "rescanning the injection cgroups");
                        }
                    }
                    more
                }
                _ = shutdown.changed() => break,
            };
            if more {
                drain_rest(ring.get_mut(), &events, &mut modes).await;
            }
        }
        // A last drain so that what the kernel already sent is not lost on shutdown.
        drain_rest(ring.get_mut(), &events, &mut modes).await;
        publish_kernel_counters(&ebpf);
        tracing::debug!(fd = ring.get_ref().as_raw_fd(), "capture stopped");
        drop(ring);
        drop(client_socks);
        drop(ebpf);
        Ok(())
    }
}

/// Gives the heap that start-up used back to the system. Loading parses the kernel's BTF
/// (several MiB of type data, into tens of MiB of structures) for the offsets, the loader's
/// relocations and each attach by BTF name; all of it is freed once the programs are attached,
/// but glibc keeps freed heap pages mapped, so the agent's resident memory stayed ~25 MiB above
/// what it uses for as long as it ran.
fn release_startup_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hooks the syscalls: by fexit when `wanted` allows it and the kernel takes it, else by the
/// `sys_exit` BTF tracepoint, by syscall tracepoints otherwise. Returns the path and, when it
/// is not fexit under `auto`, why.
fn attach_syscall_hooks(
    ebpf: &mut Ebpf,
    wanted: SyscallHooks,
    injecting: bool,
) -> Result<(HookPath, Option<String>), CaptureError> {
    if injecting {
        return match wanted {
            SyscallHooks::Fexit | SyscallHooks::TpBtf => Err(CaptureError::FexitWithInjection),
            SyscallHooks::Auto | SyscallHooks::Tracepoints => {
                attach_tracepoints(ebpf, ATTACHMENTS)?;
                Ok((
                    HookPath::Tracepoints,
                    Some("injection (--inject-cgroup) needs the write's entry tracepoint".into()),
                ))
            }
        };
    }
    let mut why = Vec::new();
    // Parsed once for both BTF-attached paths: each parse of vmlinux's BTF costs time and a
    // few tens of MiB of heap while it lives.
    let btf = if wanted == SyscallHooks::Tracepoints {
        Err("not needed".to_string())
    } else {
        aya::Btf::from_sys_fs().map_err(|e| e.to_string())
    };
    if matches!(wanted, SyscallHooks::Auto | SyscallHooks::Fexit) {
        match attach_btf_path::<FExit>(ebpf, &btf, FEXITS, |what, source| CaptureError::Fexit {
            what,
            source,
        }) {
            Ok(()) => {
                attach_tracepoints(ebpf, FEXIT_TRACEPOINTS)?;
                return Ok((HookPath::Fexit, None));
            }
            Err(CaptureError::Fexit { what, source }) if wanted == SyscallHooks::Auto => {
                unload_btf_path::<FExit>(ebpf, FEXITS);
                why.push(format!(
                    "fexit refused ({what}: {})",
                    verifier_gist(&source.to_string())
                ));
            }
            Err(err) => return Err(err),
        }
    }
    if matches!(wanted, SyscallHooks::Auto | SyscallHooks::TpBtf) {
        match attach_btf_path::<BtfTracePoint>(ebpf, &btf, TP_BTF, |what, source| {
            CaptureError::TpBtf { what, source }
        }) {
            Ok(()) => {
                attach_tracepoints(ebpf, FEXIT_TRACEPOINTS)?;
                return Ok((HookPath::TpBtf, (!why.is_empty()).then(|| why.join("; "))));
            }
            Err(CaptureError::TpBtf { what, source }) if wanted == SyscallHooks::Auto => {
                unload_btf_path::<BtfTracePoint>(ebpf, TP_BTF);
                why.push(format!(
                    "tp_btf refused ({what}: {})",
                    verifier_gist(&source.to_string())
                ));
            }
            Err(err) => return Err(err),
        }
    }
    if wanted == SyscallHooks::Tracepoints {
        why.push("--syscall-hooks tracepoints".into());
    }
    attach_tracepoints(ebpf, ATTACHMENTS)?;
    Ok((HookPath::Tracepoints, Some(why.join("; "))))
}

fn attach_tracepoints(
    ebpf: &mut Ebpf,
    attachments: &[(&'static str, &'static str, &'static [&'static str])],
) -> Result<(), CaptureError> {
    for (name, category, tracepoints) in attachments {
        let program: &mut TracePoint = program(ebpf, name)?;
        program
            .load()
            .map_err(|source| CaptureError::Program { name, source })?;
        for tracepoint in *tracepoints {
            program
                .attach(category, tracepoint)
                .map_err(|source| CaptureError::Attach {
                    name,
                    tracepoint,
                    source,
                })?;
        }
    }
    Ok(())
}

/// A program attached by BTF name: fexit on a kernel function, tp_btf on a tracepoint.
trait BtfHook {
    fn load_for(&mut self, target: &str, btf: &aya::Btf) -> Result<(), ProgramError>;
    fn attach_now(&mut self) -> Result<(), ProgramError>;
    fn unload_now(&mut self) -> Result<(), ProgramError>;
}

/// fexit and tp_btf programs load, attach and unload alike; only their types differ.
macro_rules! btf_hook {
    ($($program:ty),*) => {$(
        impl BtfHook for $program {
            fn load_for(&mut self, target: &str, btf: &aya::Btf) -> Result<(), ProgramError> {
                self.load(target, btf)
            }
            fn attach_now(&mut self) -> Result<(), ProgramError> {
                self.attach().map(drop)
            }
            fn unload_now(&mut self) -> Result<(), ProgramError> {
                self.unload()
            }
        }
    )*};
}
btf_hook!(FExit, BtfTracePoint);

/// Loads and attaches the `programs` (name, BTF target) of one BTF-attached path (fexit or
/// tp_btf), whose error `err` builds from what failed and why; on error, what is attached stays
/// so (the caller unloads it with [`unload_btf_path`]).
fn attach_btf_path<P: BtfHook>(
    ebpf: &mut Ebpf,
    btf: &Result<aya::Btf, String>,
    programs: &[(&'static str, &'static str)],
    err: fn(String, Box<dyn std::error::Error + Send + Sync>) -> CaptureError,
) -> Result<(), CaptureError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    if !cfg!(target_arch = "x86_64") {
        return Err(err(
            "the programs read x86-64 syscall registers".into(),
            std::env::consts::ARCH.into(),
        ));
    }
    let btf = btf
        .as_ref()
        .map_err(|e| err("reading the kernel's BTF".into(), e.clone().into()))?;
    for (name, target) in programs {
        let program: &mut P = program(ebpf, name)?;
        program
            .load_for(target, btf)
            .map_err(|e| err(format!("loading {name} for {target}"), e.into()))?;
        program
            .attach_now()
            .map_err(|e| err(format!("attaching {name} to {target}"), e.into()))?;
    }
    Ok(())
}

/// Detaches and unloads whatever of a BTF-attached path got loaded.
fn unload_btf_path<P: BtfHook>(ebpf: &mut Ebpf, programs: &[(&'static str, &'static str)])
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    for (name, _) in programs {
        if let Ok(program) = program::<P>(ebpf, name) {
            let _ = program.unload_now();
        }
    }
}

/// An aya load error without the whole verifier log: the lines where the verifier says why it
/// refused (right before its statistics), or nothing when the kernel refused outright.
fn verifier_gist(error: &str) -> String {
    let Some((head, log)) = error.split_once("Verifier output:") else {
        return error.trim().to_string();
    };
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("verification time") || l.starts_with("processed "))
        .unwrap_or(lines.len());
    let why = lines[end.saturating_sub(2)..end].join("; ");
    if why.is_empty() {
        head.trim().to_string()
    } else {
        format!("{} verifier: {why}", head.trim())
    }
}

/// Loads the OpenSSL probes and attaches them to the libssl files in use. Without uprobes the
/// agent goes on: plaintext HTTP is still traced, HTTPS is not, and the log says so.
fn start_tls(ebpf: &mut Ebpf) -> Option<tls::TlsProbes> {
    match tls::TlsProbes::load(ebpf) {
        Ok(mut probes) => {
            probes.scan(ebpf);
            tracing::info!(files = probes.files(), "TLS (OpenSSL) probes loaded");
            Some(probes)
        }
        Err(err) => {
            tracing::warn!(
                "{}; HTTPS is not traced (plaintext HTTP still is); `tracewire check` shows \
                 whether this kernel has uprobes",
                check::chain(&err)
            );
            None
        }
    }
}

/// Copies the kernel's per-CPU counters (summed) into the agent's telemetry.
fn publish_kernel_counters(ebpf: &Ebpf) {
    let Some(map) = ebpf.map("COUNTERS") else {
        return;
    };
    let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
        return;
    };
    let mut totals = [0u64; KERNEL_COUNTERS as usize];
    for (i, total) in totals.iter_mut().enumerate() {
        *total = array
            .get(&(i as u32), 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0);
    }
    TELEMETRY.set_kernel_ring_full(totals[KernelCounter::RingFull as usize]);
    TELEMETRY.set_kernel_counters(&totals);
}

/// Loads the kernel object (with injection or not) with the run-time configuration: the
/// programs are not loaded yet.
fn load_object(
    cfg: &CaptureConfig,
    inject: bool,
) -> Result<(Ebpf, ProbeConfig, u32, u32), CaptureError> {
    ensure_tracefs()?;
    raise_memlock();
    let offsets = offsets::resolve(offsets::VMLINUX_BTF)?;
    let mut select = 0;
    if !cfg.pids.is_empty() || !cfg.exes.is_empty() {
        select |= SELECT_PID;
    }
    if !cfg.cgroups.is_empty() {
        select |= SELECT_CGROUP;
    }
    if !cfg.ports.is_empty() {
        select |= SELECT_PORT;
    }
    let ring_bytes = cfg.ring_buffer_bytes.next_power_of_two().max(1 << 16);
    let (parent_based, root_sample_bound) = cfg.sampler.kernel_rule();
    let probe_config = ProbeConfig {
        agent_tgid: std::process::id(),
        capture_bytes: cfg.capture_bytes.min(MAX_CAPTURE as u32),
        select,
        // A quarter of the ring, shared by the CPUs (each counts its own submits).
        wakeup_bytes: (ring_bytes / 4 / aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32)
            .max(16 << 10),
        offsets,
        inject: u32::from(inject),
        parent_based: u32::from(parent_based),
        root_sample_bound,
        logs: u32::from(cfg.logs),
        _pad_logs: 0,
    };
    let max_conns = cfg.max_connections.max(1024);
    let ebpf = EbpfLoader::new()
        .override_global("CONFIG", &probe_config, true)
        .map_max_entries("EVENTS", ring_bytes)
        .map_max_entries("SOCKETS", max_conns)
        .load(if inject {
            EBPF_INJECT_OBJECT
        } else {
            EBPF_OBJECT
        })
        .map_err(|source| CaptureError::Load { source })?;
    Ok((ebpf, probe_config, ring_bytes, max_conns))
}

/// The program `name` of the object, as its type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::MissingProgram { name })?
        .try_into()
        .map_err(|source| CaptureError::Program { name, source })
}

/// `tracewire check`: do the OpenSSL uprobe programs load, and which libssl would they go on?
/// Nothing is attached.
pub fn check_tls(cfg: &CaptureConfig) -> Result<String, CaptureError> {
    let (mut ebpf, ..) = load_object(cfg, false)?;
    tls::TlsProbes::load(&mut ebpf)?;
    let files = tls::system_libssl();
    Ok(if files.is_empty() {
        "uprobes load; no system libssl found (libssl copies in containers are found at run time)"
            .to_string()
    } else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        format!("uprobes load; HTTPS through {} is traced", names.join(", "))
    })
}

/// Puts the ids of `dirs` and of every cgroup below them into the cgroup-id map `name`.
fn fill_cgroup_ids(
    ebpf: &mut Ebpf,
    name: &'static str,
    dirs: &[std::path::PathBuf],
) -> Result<(), CaptureError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(CaptureError::MissingMap { name })?;
    let mut ids = BpfHashMap::<_, u64, u8>::try_from(map)
        .map_err(|source| CaptureError::Map { name, source })?;
    for dir in dirs {
        for id in cgroup_ids(dir)? {
            ids.insert(id, 1, 0)
                .map_err(|source| CaptureError::Map { name, source })?;
        }
    }
    Ok(())
}

/// Makes the kernel's pid selection the `--pid` list plus the processes `--exe` matches now.
fn sync_exe_pids(ebpf: &mut Ebpf, fixed: &[u32], exes: &select::ExeSelector) {
    let mut wanted = exes.running();
    wanted.extend(fixed.iter().copied());
    let Some(map) = ebpf.map_mut("SELECT_PIDS") else {
        return;
    };
    let Ok(mut pids) = BpfHashMap::<_, u32, u8>::try_from(map) else {
        return;
    };
    let present: Vec<u32> = pids.keys().flatten().collect();
    for pid in &present {
        if !wanted.contains(pid) {
            let _ = pids.remove(pid);
        }
    }
    for pid in wanted {
        if !present.contains(&pid) {
            if let Err(err) = pids.insert(pid, 1, 0) {
                tracing::warn!(pid, %err, "cannot select process (--exe); is the 4096-process bound reached?");
            } else {
                tracing::info!(pid, "--exe selects a new process");
            }
        }
    }
}

const _: () = assert!((KernelCounter::ConnsOpened as u32) < KERNEL_COUNTERS);

/// Records taken from the ring buffer before the later stages get a turn: the agent runs on one
/// thread, so a drain of the whole buffer would first have to queue all of it.
const DRAIN_BUDGET: usize = 1024;

/// Keeps draining, yielding between budgets, until the ring buffer is empty.
async fn drain_rest(
    ring: &mut RingBuf<MapData>,
    events: &BatchSender<CaptureEvent>,
    modes: &mut Option<ModeMarker>,
) {
    loop {
        tokio::task::yield_now().await;
        if drain(ring, events, modes) < DRAIN_BUDGET {
            return;
        }
    }
}

/// Moves up to [`DRAIN_BUDGET`] records to the event queue, as one batch, and says how many it
/// took: the whole budget means more may be waiting.
fn drain(
    ring: &mut RingBuf<MapData>,
    events: &BatchSender<CaptureEvent>,
    modes: &mut Option<ModeMarker>,
) -> usize {
    let mut batch = Vec::new();
    let taken = drain_into(ring, &mut batch, modes);
    if let Err(refused) = events.try_send(batch) {
        TELEMETRY.drop_n(Drop::EventQueueFull, refused.len() as u64);
    }
    taken
}

fn drain_into(
    ring: &mut RingBuf<MapData>,
    batch: &mut Vec<CaptureEvent>,
    modes: &mut Option<ModeMarker>,
) -> usize {
    for taken in 0..DRAIN_BUDGET {
        let Some(record) = ring.next() else {
            return taken;
        };
        match event::decode(&record) {
            Ok(ev) => {
                match &ev {
                    CaptureEvent::Open(open) => {
                        if let Some(modes) = modes.as_mut() {
                            modes.mark(open.key.tgid);
                        }
                        &TELEMETRY.events_open
                    }
                    CaptureEvent::Data(d) | CaptureEvent::TlsUnbound(d) => {
                        TELEMETRY.bytes_seen.fetch_add(
                            u64::from(d.total_len),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        TELEMETRY.bytes_captured.fetch_add(
                            d.payload.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        &TELEMETRY.events_data
                    }
                    CaptureEvent::TlsBind { .. } => &TELEMETRY.events_data,
                    CaptureEvent::Close { .. } => &TELEMETRY.events_close,
                    CaptureEvent::ProcessService { .. } | CaptureEvent::ProcessExit { .. } => {
                        &TELEMETRY.events_process
                    }
                    CaptureEvent::Log(_) => &TELEMETRY.events_log,
                }
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                batch.push(ev);
            }
            Err(err) => {
                tracing::debug!(%err, "skipping ring-buffer record");
                TELEMETRY.drop(Drop::MalformedRecord);
            }
        }
    }
    DRAIN_BUDGET
}

fn fill_selection(ebpf: &mut Ebpf, cfg: &CaptureConfig) -> Result<(), CaptureError> {
    fn map<'a, K: aya::Pod, V: aya::Pod>(
        ebpf: &'a mut Ebpf,
        name: &'static str,
    ) -> Result<BpfHashMap<&'a mut MapData, K, V>, CaptureError> {
        let m = ebpf
            .map_mut(name)
            .ok_or(CaptureError::MissingMap { name })?;
        BpfHashMap::try_from(m).map_err(|source| CaptureError::Map { name, source })
    }
    {
        let mut pids = map::<u32, u8>(ebpf, "SELECT_PIDS")?;
        let mut selected: Vec<u32> = cfg.pids.clone();
        selected.extend(cfg.exes.running());
        if !cfg.exes.is_empty() && selected.len() == cfg.pids.len() {
            tracing::warn!("--exe matches no running process yet; checking again every second");
        }
        for pid in &selected {
            pids.insert(pid, 1, 0).map_err(|source| CaptureError::Map {
                name: "SELECT_PIDS",
                source,
            })?;
        }
    }
    {
        let mut ports = map::<u16, u8>(ebpf, "SELECT_PORTS")?;
        for port in &cfg.ports {
            ports
                .insert(port, 1, 0)
                .map_err(|source| CaptureError::Map {
                    name: "SELECT_PORTS",
                    source,
                })?;
        }
    }
    fill_cgroup_ids(ebpf, "SELECT_CGROUPS", &cfg.cgroups)
}

/// A cgroup v2 id is its directory's inode number; a selected cgroup includes its descendants
/// (rescanned every second).
fn cgroup_ids(dir: &Path) -> Result<Vec<u64>, CaptureError> {
    use std::os::unix::fs::MetadataExt;
    let err = |source| CaptureError::Cgroup {
        path: dir.display().to_string(),
        source,
    };
    let mut ids = vec![std::fs::metadata(dir).map_err(err)?.ino()];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) && ids.len() < 4096 {
                if let Ok(meta) = entry.metadata() {
                    ids.push(meta.ino());
                }
                stack.push(entry.path());
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_gist_keeps_the_reason_not_the_log() {
        let error = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
            Verifier output: arg#0 type is not a struct\n; fun()\n R0=inv(id=1)\n\
            func '__x64_sys_recvfrom' arg0 type FWD is not a struct\n\
            invalid bpf_context access off=0 size=8\nverification time 7130 usec\n\
            processed 17 insns (limit 1000000)\n";
        assert_eq!(
            verifier_gist(error),
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). verifier: \
             func '__x64_sys_recvfrom' arg0 type FWD is not a struct; invalid bpf_context \
             access off=0 size=8"
        );
        let refused = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). \
            Verifier output: ";
        assert_eq!(
            verifier_gist(refused),
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)."
        );
    }
}
