//! `tracewire check`: which capture paths this host supports, and whether the agent can run.
use std::path::Path;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use super::{CaptureConfig, TRACEFS, ensure_tracefs, offsets};

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub name: &'static str,
    pub ok: bool,
    /// Required by the agent as it runs today (a failure means it cannot run).
    pub required: bool,
    pub detail: String,
}

/// An error with its causes, `a: b: c`, so that the kernel's own errno reaches the operator.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = e.source();
    }
    s
}

fn finding(name: &'static str, required: bool, result: Result<String, String>) -> Finding {
    match result {
        Ok(detail) => Finding {
            name,
            ok: true,
            required,
            detail,
        },
        Err(detail) => Finding {
            name,
            ok: false,
            required,
            detail,
        },
    }
}

fn pmu(name: &str) -> Result<String, String> {
    let path = format!("/sys/bus/event_source/devices/{name}/type");
    if Path::new(&path).exists() {
        Ok(format!("{path} present"))
    } else {
        Err(format!("no {name} PMU ({path} missing)"))
    }
}

fn prog(t: ProgramType) -> Result<String, String> {
    match is_program_supported(t) {
        Ok(true) => Ok("program type loads".into()),
        Ok(false) => Err("program type not supported by this kernel".into()),
        Err(e) => Err(format!("probe failed: {e}")),
    }
}

/// Effective capabilities of this process, from /proc/self/status.
fn capabilities() -> Result<String, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| eff & (1 << c) != 0;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        return Err(format!(
            "CapEff={eff:#x}: needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), and \
             CAP_DAC_READ_SEARCH for tracefs; run as root"
        ));
    }
    let mut notes = Vec::new();
    if !has(CAP_DAC_READ_SEARCH) {
        notes.push("no CAP_DAC_READ_SEARCH: tracefs must be readable some other way");
    }
    const CAP_NET_ADMIN: u32 = 12;
    if !(has(CAP_SYS_ADMIN) || has(CAP_NET_ADMIN)) {
        notes.push("no CAP_NET_ADMIN: --inject-cgroup (trace-context injection) cannot attach");
    }
    if !has(CAP_SYS_PTRACE) {
        notes.push(
            "no CAP_SYS_PTRACE: other users' /proc/PID/exe is unreadable, \
             process.executable.path falls back to the thread name",
        );
    }
    Ok(format!("CapEff={eff:#x} {}", notes.join("; "))
        .trim_end()
        .to_string())
}

fn cgroup2_mount() -> Result<String, String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| format!("mounted at {dir}"))
        })
        .ok_or_else(|| "no cgroup2 mount (needed for --cgroup and sock_ops)".to_string())
}

fn lockdown() -> String {
    std::fs::read_to_string("/sys/kernel/security/lockdown")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the agent can name pods: credentials found by config inference, and the node name.
/// Never fatal: without them spans carry `container.id` and `k8s.pod.uid` only.
fn kubernetes_metadata() -> Result<String, String> {
    use super::kubernetes::{NODE_NAME_VAR, node_name};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to look for credentials: {e}"))?;
    let credentials = runtime.block_on(kube::Config::infer());
    match (credentials, node_name()) {
        (Ok(config), Some(node)) => Ok(format!(
            "credentials for {} found, {NODE_NAME_VAR}={node}: resources get pod names, \
             namespaces and owners (the API itself is not called here)",
            config.cluster_url
        )),
        (Ok(config), None) => Err(format!(
            "credentials for {} found, but {NODE_NAME_VAR} is not set (set it from \
             spec.nodeName with the downward API): resources carry container.id and \
             k8s.pod.uid only",
            config.cluster_url
        )),
        (Err(e), node) => Err(format!(
            "no in-cluster credentials or KUBECONFIG ({}), {NODE_NAME_VAR} {}: resources carry \
             container.id and k8s.pod.uid only",
            chain(&e),
            node.map_or_else(|| "not set".to_string(), |n| format!("= {n}"))
        )),
    }
}

/// Runs every check. The last one really loads and attaches the agent's programs.
pub fn run(capture: &CaptureConfig) -> Vec<Finding> {
    let mut out = vec![
        finding("capabilities", true, capabilities()),
        finding(
            "tracefs",
            true,
            ensure_tracefs()
                .map(|()| format!("{TRACEFS}/events present"))
                .map_err(|e| e.to_string()),
        ),
        finding(
            "syscall tracepoints",
            true,
            match std::fs::metadata(Path::new(TRACEFS).join("events/syscalls/sys_enter_read")) {
                Ok(_) => Ok("syscalls:sys_enter_read present".into()),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
                    "{TRACEFS} is not readable by this user ({e}); run as root or grant \
                     CAP_DAC_READ_SEARCH"
                )),
                Err(_) => Err("no syscalls:* tracepoints (CONFIG_FTRACE_SYSCALLS)".into()),
            },
        ),
        finding(
            "BTF",
            true,
            offsets::resolve(offsets::VMLINUX_BTF)
                .map(|_| format!("{} resolves every offset", offsets::VMLINUX_BTF))
                .map_err(|e| e.to_string()),
        ),
        finding(
            "ring buffer",
            true,
            match is_map_supported(MapType::RingBuf) {
                Ok(true) => Ok("BPF_MAP_TYPE_RINGBUF".into()),
                Ok(false) => Err("no BPF ring buffer (kernel < 5.8)".into()),
                Err(e) => Err(format!("probe failed: {e}")),
            },
        ),
        finding("raw tracepoints", false, prog(ProgramType::RawTracePoint)),
        finding(
            "uprobes",
            false,
            pmu("uprobe").and_then(|p| prog(ProgramType::KProbe).map(|_| p)),
        ),
        finding(
            "kprobes",
            false,
            pmu("kprobe").and_then(|p| prog(ProgramType::KProbe).map(|_| p)),
        ),
        finding(
            "fentry/fexit",
            false,
            prog(ProgramType::Tracing).map(|d| format!("{d} (lockdown: {})", lockdown())),
        ),
        finding("sock_ops", false, prog(ProgramType::SockOps)),
        finding("sk_msg", false, prog(ProgramType::SkMsg)),
        finding("cgroup v2", false, cgroup2_mount()),
    ];
    out.push(finding(
        "injection",
        false,
        super::check_injection(capture).map_err(|e| chain(&e)),
    ));
    out.push(finding(
        "TLS (OpenSSL)",
        false,
        super::check_tls(capture).map_err(|e| chain(&e)),
    ));
    out.push(finding("kubernetes metadata", false, kubernetes_metadata()));
    let (programs, hooks) = match super::Capture::start(capture) {
        Ok(c) => {
            let (path, note) = c.hooks();
            let hooks = match path {
                super::HookPath::Fexit => {
                    Ok("syscalls hooked by fexit (one program per syscall)".to_string())
                }
                super::HookPath::TpBtf => Err(format!(
                    "syscalls hooked by tp_btf (one sys_exit program): {} (lockdown: {})",
                    note.unwrap_or("fexit not tried"),
                    lockdown()
                )),
                super::HookPath::Tracepoints => Err(format!(
                    "syscalls hooked by tracepoints: {} (lockdown: {})",
                    note.unwrap_or("fexit not tried"),
                    lockdown()
                )),
            };
            drop(c);
            (
                Ok(format!(
                    "loaded, attached and detached every program (syscalls: {})",
                    path.name()
                )),
                hooks,
            )
        }
        Err(e) => (
            Err(chain(&e)),
            Err("the agent's programs did not load".to_string()),
        ),
    };
    out.push(finding("fexit fast path", false, hooks));
    out.push(finding("agent programs", true, programs));
    out
}
