//! Who a process is, from /proc: the resource its spans carry. Read once per process (on its
//! first connection) and cached with a bound; a process already gone falls back to the thread
//! name the kernel recorded.
use std::{path::Path, sync::Arc};

use foldhash::{HashMap, HashMapExt};

use super::container::ContainerInfo;
use crate::span::context::Threading;

/// Go binaries carry a `.go.buildinfo` section; their goroutines move between OS threads. Only
/// the ELF and section headers are read (a `node` binary is ~100 MB), through a read cache.
fn is_go_binary(path: &Path) -> bool {
    use object::{Object as _, ReadCache, read::elf::ElfFile64};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let cache = ReadCache::new(file);
    ElfFile64::<object::Endianness, _>::parse(&cache)
        .is_ok_and(|elf| elf.section_by_name(".go.buildinfo").is_some())
}

/// Is the running process `pid` a Go program? False when its executable cannot be read.
pub fn is_go_process(pid: u32) -> bool {
    is_go_binary(Path::new(&format!("/proc/{pid}/exe")))
}

/// The resource of one traced process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) from the process's
    /// environment, else the executable's name.
    pub service_name: String,
    pub executable_name: String,
    pub executable_path: Option<String>,
    /// Only with `--export-command-line`: command lines hold secrets too.
    pub command_line: Option<String>,
    /// How the runtime maps requests to threads, for in-process parent links.
    pub threading: Threading,
    /// `container.id` and `k8s.pod.uid`, from the process's cgroup.
    pub container: ContainerInfo,
}

impl ProcessInfo {
    /// A process of pid 1 named `service`, for unit tests of the later stages.
    #[cfg(test)]
    pub fn for_test(service: &str) -> std::sync::Arc<Self> {
        std::sync::Arc::new(ProcessInfo {
            pid: 1,
            service_name: service.into(),
            executable_name: service.into(),
            executable_path: None,
            command_line: None,
            threading: crate::span::context::Threading::PerThread,
            container: ContainerInfo::default(),
        })
    }
}

/// Bounded cache of [`ProcessInfo`] by pid.
pub struct ProcessCache {
    entries: HashMap<u32, Arc<ProcessInfo>>,
    /// Service names from the kernel's copy of environment blocks, by tgid.
    from_kernel: HashMap<u32, Option<String>>,
    capacity: usize,
    with_command_line: bool,
}

impl ProcessCache {
    pub fn new(capacity: usize, with_command_line: bool) -> Self {
        ProcessCache {
            entries: HashMap::new(),
            from_kernel: HashMap::new(),
            capacity: capacity.max(1),
            with_command_line,
        }
    }

    /// Records what the environment block the kernel copied says (it arrives before the
    /// process's first connection). A pid seen again is a new process: forget the old one.
    pub fn learn_service(&mut self, pid: u32, service_name: Option<String>) {
        if self.from_kernel.len() >= self.capacity {
            self.from_kernel.clear();
        }
        self.from_kernel.insert(pid, service_name);
        self.entries.remove(&pid);
    }

    /// The process's resource, reading /proc on first sight.
    pub fn get(&mut self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        if let Some(info) = self.entries.get(&pid) {
            return Arc::clone(info);
        }
        if self.entries.len() >= self.capacity {
            // Rare (more live traced processes than the bound): start over rather than track
            // recency on the hot path.
            self.entries.clear();
        }
        let mut info = load(pid, comm, self.with_command_line);
        if let Some(Some(name)) = self.from_kernel.get(&pid) {
            info.service_name = name.clone();
        }
        let info = Arc::new(info);
        self.entries.insert(pid, Arc::clone(&info));
        info
    }

    /// Forgets a process whose last connection is gone (the pid may be reused).
    pub fn forget(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }
}

fn load(pid: u32, comm: &str, with_command_line: bool) -> ProcessInfo {
    let proc_ = procfs::process::Process::new(pid as i32).ok();
    let exe = proc_.as_ref().and_then(|p| p.exe().ok());
    let executable_name = exe
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| comm.to_string());
    let env_service = proc_
        .as_ref()
        .and_then(|p| p.environ().ok())
        .and_then(|env| service_name_from_env(&env));
    let threading = match &exe {
        Some(path) if is_go_binary(path) => Threading::Migrating,
        _ => Threading::PerThread,
    };
    let command_line = if with_command_line {
        proc_
            .as_ref()
            .and_then(|p| p.cmdline().ok())
            .map(|args| args.join(" "))
    } else {
        None
    };
    let container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| super::container::of_proc_cgroup(&text))
        .unwrap_or_default();
    ProcessInfo {
        pid,
        service_name: env_service.unwrap_or_else(|| executable_name.clone()),
        executable_name,
        executable_path: exe.map(|p| p.to_string_lossy().into_owned()),
        command_line,
        threading,
        container,
    }
}

/// The service name in a raw environment block (`K=V\0K=V\0...`, possibly cut short).
pub fn service_name_from_environ(block: &[u8]) -> Option<String> {
    let mut env = std::collections::HashMap::new();
    for var in block.split(|b| *b == 0) {
        for key in ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"] {
            if let Some(value) = var
                .strip_prefix(key.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                env.insert(
                    std::ffi::OsString::from(key),
                    std::ffi::OsString::from(String::from_utf8_lossy(value).into_owned()),
                );
            }
        }
    }
    service_name_from_env(&env)
}

/// `OTEL_SERVICE_NAME` wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, as in the SDKs.
fn service_name_from_env(
    env: &std::collections::HashMap<std::ffi::OsString, std::ffi::OsString>,
) -> Option<String> {
    let get = |k: &str| {
        env.get(std::ffi::OsStr::new(k))
            .map(|v| v.to_string_lossy().trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(name) = get("OTEL_SERVICE_NAME") {
        return Some(name);
    }
    get("OTEL_RESOURCE_ATTRIBUTES").and_then(|attrs| {
        attrs.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "service.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

/// This host's name, for `host.name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(
        pairs: &[(&str, &str)],
    ) -> std::collections::HashMap<std::ffi::OsString, std::ffi::OsString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn service_name_precedence() {
        assert_eq!(
            service_name_from_env(&env(&[
                ("OTEL_RESOURCE_ATTRIBUTES", "a=b,service.name=from-attrs"),
                ("OTEL_SERVICE_NAME", "from-name"),
            ])),
            Some("from-name".into())
        );
        assert_eq!(
            service_name_from_env(&env(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "a=b, service.name = from-attrs"
            )])),
            Some("from-attrs".into())
        );
        assert_eq!(
            service_name_from_env(&env(&[("OTEL_SERVICE_NAME", " ")])),
            None
        );
    }

    #[test]
    fn service_name_from_kernel_copy() {
        let block = b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0HOME=/root\0OTEL_SERVICE_NAME_X=no\0";
        assert_eq!(service_name_from_environ(block), Some("checkout".into()));
        assert_eq!(service_name_from_environ(b"A=1\0OTEL_SERVICE_NAM"), None);
        let mut cache = ProcessCache::new(4, false);
        cache.learn_service(u32::MAX - 2, Some("from-kernel".into()));
        assert_eq!(cache.get(u32::MAX - 2, "x").service_name, "from-kernel");
    }

    #[test]
    fn reads_own_process_and_falls_back_to_comm() {
        let mut cache = ProcessCache::new(2, false);
        let me = cache.get(std::process::id(), "x");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.executable_name.is_empty());
        assert!(me.command_line.is_none());
        assert_eq!(
            me.threading,
            Threading::PerThread,
            "a Rust test binary is not Go"
        );
        // A pid that cannot exist: the kernel's thread name is all there is.
        let gone = cache.get(u32::MAX - 1, "curl");
        assert_eq!(gone.service_name, "curl");
        assert_eq!(gone.executable_name, "curl");
    }
}
