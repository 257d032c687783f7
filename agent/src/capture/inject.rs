//! Trace-context injection (`--inject-cgroup`): the sock_ops and sk_msg programs, the
//! tail-called context stage, and the per-process threading marks the kernel keys its request
//! contexts by. Needs CAP_NET_ADMIN (the socket map, the cgroup attachment) and kernel >= 5.8.
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, ProgramArray, SockHash},
    programs::{CgroupAttachMode, SkMsg, SockOps, TracePoint},
};

use super::{CaptureConfig, CaptureError, fill_cgroup_ids, load_object, process, program};

/// Trace-context injection, attached.
pub struct Injection {
    pub modes: ModeMarker,
    /// The client-socket map sk_msg is attached to: kept open for the agent's life.
    pub socks: SockHash<MapData, [u32; 11]>,
    /// The `--inject-cgroup` directories, rescanned for new child cgroups every second.
    pub dirs: Vec<std::path::PathBuf>,
}

/// Tells the kernel how each process maps requests to threads (per thread, or per process for
/// Go), so that the contexts it keeps for injection are keyed right. Until a process is marked
/// the kernel gives its calls no parent.
pub struct ModeMarker {
    map: BpfHashMap<MapData, u32, u8>,
    seen: std::collections::HashSet<u32>,
}

impl ModeMarker {
    pub fn mark(&mut self, tgid: u32) {
        if !self.seen.insert(tgid) {
            return;
        }
        if self.seen.len() > 16384 {
            self.seen.clear();
        }
        let mode = if process::is_go_process(tgid) {
            agent_common::MODE_PER_PROCESS
        } else {
            agent_common::MODE_PER_THREAD
        };
        if let Err(err) = self.map.insert(tgid, mode, 0) {
            tracing::debug!(tgid, %err, "cannot mark process threading");
        }
    }
}

/// Detaches and unloads whatever of injection was loaded (after a failed start).
pub fn unload_injection(ebpf: &mut Ebpf) {
    if let Some(Ok(p)) = ebpf.program_mut("tw_sockops").map(<&mut SockOps>::try_from) {
        let _ = p.unload();
    }
    if let Some(Ok(p)) = ebpf.program_mut("tw_inject").map(<&mut SkMsg>::try_from) {
        let _ = p.unload();
    }
    if let Some(Ok(p)) = ebpf
        .program_mut("tw_data_ctx")
        .map(<&mut TracePoint>::try_from)
    {
        let _ = p.unload();
    }
}

fn inject_err(what: &str) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError {
    let what = what.to_string();
    move |source| CaptureError::Inject { what, source }
}

/// `tracewire check`: do the injection programs (sock_ops, sk_msg, the context stage) load on
/// this kernel? Nothing is attached.
pub fn check_injection(cfg: &CaptureConfig) -> Result<String, CaptureError> {
    let (mut ebpf, ..) = load_object(cfg, true)?;
    load_injection(&mut ebpf)?;
    Ok("sock_ops, sk_msg and the context stage load: --inject-cgroup works".into())
}

/// Loads (does not attach) the injection programs; returns the context stage's fd.
fn load_injection(ebpf: &mut Ebpf) -> Result<aya::programs::ProgramFd, CaptureError> {
    let stage: &mut TracePoint = program(ebpf, "tw_data_ctx")?;
    stage.load().map_err(inject_err("loading tw_data_ctx"))?;
    let stage_fd = stage
        .fd()
        .map_err(inject_err("tw_data_ctx"))?
        .try_clone()
        .map_err(|e| CaptureError::Inject {
            what: "tw_data_ctx".into(),
            source: aya::programs::ProgramError::IOError(e),
        })?;
    let sk_msg: &mut SkMsg = program(ebpf, "tw_inject")?;
    sk_msg
        .load()
        .map_err(inject_err("loading tw_inject (sk_msg)"))?;
    let sock_ops: &mut SockOps = program(ebpf, "tw_sockops")?;
    sock_ops
        .load()
        .map_err(inject_err("loading tw_sockops (sock_ops)"))?;
    Ok(stage_fd)
}

/// Loads and attaches injection: sk_msg on the client-socket map, sock_ops on each
/// `--inject-cgroup` cgroup (which is what scopes injection to those cgroups), then the
/// cgroup ids and the context stage, so the kernel starts keeping contexts last.
pub fn start_injection(
    ebpf: &mut Ebpf,
    dirs: &[std::path::PathBuf],
) -> Result<Injection, CaptureError> {
    let stage_fd = load_injection(ebpf)?;
    let socks: SockHash<MapData, [u32; 11]> = SockHash::try_from(
        ebpf.take_map("CLIENT_SOCKS")
            .ok_or(CaptureError::MissingMap {
                name: "CLIENT_SOCKS",
            })?,
    )
    .map_err(|source| CaptureError::Map {
        name: "CLIENT_SOCKS",
        source,
    })?;
    let sk_msg: &mut SkMsg = program(ebpf, "tw_inject")?;
    sk_msg
        .attach(socks.fd())
        .map_err(inject_err("attaching tw_inject to the client socket map"))?;
    let sock_ops: &mut SockOps = program(ebpf, "tw_sockops")?;
    for dir in dirs {
        let cgroup = std::fs::File::open(dir).map_err(|source| CaptureError::Cgroup {
            path: dir.display().to_string(),
            source,
        })?;
        sock_ops
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(inject_err(&format!(
                "attaching sock_ops to {}",
                dir.display()
            )))?;
    }
    fill_cgroup_ids(ebpf, "INJECT_CGROUPS", dirs)?;
    let mut stages = ProgramArray::try_from(
        ebpf.map_mut("STAGES")
            .ok_or(CaptureError::MissingMap { name: "STAGES" })?,
    )
    .map_err(|source| CaptureError::Map {
        name: "STAGES",
        source,
    })?;
    stages
        .set(0, &stage_fd, 0)
        .map_err(|source| CaptureError::Map {
            name: "STAGES",
            source,
        })?;
    let modes = BpfHashMap::try_from(
        ebpf.take_map("PROC_MODE")
            .ok_or(CaptureError::MissingMap { name: "PROC_MODE" })?,
    )
    .map_err(|source| CaptureError::Map {
        name: "PROC_MODE",
        source,
    })?;
    tracing::info!(cgroups = ?dirs, "trace-context injection on");
    Ok(Injection {
        modes: ModeMarker {
            map: modes,
            seen: std::collections::HashSet::new(),
        },
        socks,
        dirs: dirs.to_vec(),
    })
}
