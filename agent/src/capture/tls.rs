//! OpenSSL uprobes: find the `libssl` files processes map, and the executables that link
//! OpenSSL statically and export it (Node's `node`), and attach to each file once.
//!
//! A uprobe is set on a file (its inode), so one attachment covers every process that maps the
//! file, now or later: the common case, one distribution `libssl.so.3`, is covered for
//! processes started after the agent without doing anything. Other copies (a container's own
//! libssl, a second OpenSSL version) are found by scanning the memory maps of processes the
//! agent has not looked at yet, every second, and attached to within that second. Files are
//! bounded ([`MAX_FILES`]).
//!
//! Needs the uprobe PMU (kernel >= 4.17 for perf_event uprobes by path).
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

use super::{CaptureError, program};

/// Distinct OpenSSL files attached at most.
pub const MAX_FILES: usize = 64;
/// Processes remembered as scanned; past this the set starts over (a rescan is harmless).
const MAX_SCANNED: usize = 65536;

/// Entry probes and the symbol each goes on; every symbol also gets the return probe.
const ENTRIES: [(&str, &str); 4] = [
    ("tw_ssl_write", "SSL_write"),
    ("tw_ssl_write_ex", "SSL_write_ex"),
    ("tw_ssl_read", "SSL_read"),
    ("tw_ssl_read_ex", "SSL_read_ex"),
];
const RETURN: &str = "tw_ssl_ret";
/// On SSL_free, without a return probe: an `SSL *` freed may come back for another connection.
const FREE: (&str, &str) = ("tw_ssl_free", "SSL_free");

/// The TLS probes, loaded, and the files they are attached to.
pub struct TlsProbes {
    /// (device, inode) of each attached file.
    attached: HashSet<(u64, u64)>,
    /// Files that could not be attached (or have no OpenSSL symbols): not tried again.
    refused: HashSet<(u64, u64)>,
    scanned: HashSet<u32>,
}

impl TlsProbes {
    /// Loads the five programs (nothing is attached yet).
    pub fn load(ebpf: &mut Ebpf) -> Result<Self, CaptureError> {
        for name in ENTRIES.map(|(p, _)| p).into_iter().chain([RETURN, FREE.0]) {
            let probe: &mut UProbe = program(ebpf, name)?;
            probe
                .load()
                .map_err(|source| CaptureError::Program { name, source })?;
        }
        Ok(TlsProbes {
            attached: HashSet::new(),
            refused: HashSet::new(),
            scanned: HashSet::new(),
        })
    }

    pub fn files(&self) -> usize {
        self.attached.len()
    }

    /// Attaches to the OpenSSL files that processes not scanned before have mapped (and to
    /// the system's libssl the first time).
    pub fn scan(&mut self, ebpf: &mut Ebpf) {
        if self.scanned.is_empty() {
            for path in system_libssl() {
                self.try_attach(ebpf, &path);
            }
            // A short-lived `node` client can be gone before the first scan sees it: the
            // installed runtimes that carry OpenSSL are attached up front.
            for path in installed_runtimes() {
                if exports_openssl(&path) {
                    self.try_attach(ebpf, &path);
                }
            }
        }
        if self.scanned.len() > MAX_SCANNED {
            self.scanned.clear();
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if !self.scanned.insert(pid) {
                continue;
            }
            for path in openssl_files(pid) {
                self.try_attach(ebpf, &path);
            }
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            if let Ok(meta) = std::fs::metadata(&exe) {
                let id = (meta.dev(), meta.ino());
                if !self.attached.contains(&id) && !self.refused.contains(&id) {
                    if exports_openssl(&exe) {
                        self.try_attach(ebpf, &exe);
                    } else {
                        // Not OpenSSL: remembered so that the file is read once.
                        self.refused.insert(id);
                    }
                }
            }
        }
    }

    fn try_attach(&mut self, ebpf: &mut Ebpf, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        if self.attached.contains(&id) || self.refused.contains(&id) {
            return;
        }
        if self.attached.len() >= MAX_FILES {
            tracing::warn!(
                path = %path.display(),
                "not attaching TLS probes: {MAX_FILES} OpenSSL files are attached already"
            );
            self.refused.insert(id);
            return;
        }
        match attach_file(ebpf, path) {
            Ok(0) => {
                self.refused.insert(id);
            }
            Ok(symbols) => {
                tracing::info!(path = %path.display(), symbols, "TLS probes attached");
                self.attached.insert(id);
            }
            Err(err) => {
                tracing::warn!(
                    path = %path.display(),
                    "TLS probes could not attach: {}; HTTPS from this library is not traced",
                    super::check::chain(&err)
                );
                self.refused.insert(id);
            }
        }
    }
}

/// Attaches the entry and return probes to each OpenSSL symbol `path` has; how many symbols.
fn attach_file(ebpf: &mut Ebpf, path: &Path) -> Result<usize, CaptureError> {
    let mut symbols = 0;
    for (name, symbol) in ENTRIES {
        let entry: &mut UProbe = program(ebpf, name)?;
        match entry.attach(symbol, path, UProbeScope::AllProcesses) {
            Ok(_) => {}
            // SSL_*_ex are OpenSSL >= 1.1.1 only: a missing symbol is not an error.
            Err(aya::programs::ProgramError::UProbeError(
                aya::programs::uprobe::UProbeError::SymbolError { .. },
            )) => continue,
            Err(source) => return Err(CaptureError::Program { name, source }),
        }
        let ret: &mut UProbe = program(ebpf, RETURN)?;
        ret.attach(symbol, path, UProbeScope::AllProcesses)
            .map_err(|source| CaptureError::Program {
                name: RETURN,
                source,
            })?;
        symbols += 1;
    }
    if symbols > 0 {
        let free: &mut UProbe = program(ebpf, FREE.0)?;
        free.attach(FREE.1, path, UProbeScope::AllProcesses)
            .map_err(|source| CaptureError::Program {
                name: FREE.0,
                source,
            })?;
    }
    Ok(symbols)
}

/// The distribution's libssl, wherever the usual library directories have it.
pub fn system_libssl() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/lib/x86_64-linux-gnu",
        "/lib64",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !is_libssl_name(&e.file_name().to_string_lossy()) {
                continue;
            }
            // /lib is /usr/lib on merged-/usr systems: one file, listed once.
            let path = e.path().canonicalize().unwrap_or_else(|_| e.path());
            if !found.contains(&path) {
                found.push(path);
            }
        }
    }
    found
}

/// Does the executable export OpenSSL's `SSL_write` in its dynamic symbol table (OpenSSL linked
/// statically and exported, as in `node`)? Only the symbol tables are read, through a cache.
fn exports_openssl(path: &Path) -> bool {
    use object::{Object as _, ObjectSymbol as _, ReadCache, read::elf::ElfFile64};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&cache) else {
        return false;
    };
    elf.dynamic_symbols()
        .any(|s| s.is_definition() && s.name() == Ok("SSL_write"))
}

/// Runtimes installed in the usual places that may link OpenSSL statically.
fn installed_runtimes() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        for name in ["node", "nodejs"] {
            let path = Path::new(dir).join(name);
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !found.contains(&real) {
                found.push(real);
            }
        }
    }
    found
}

fn is_libssl_name(name: &str) -> bool {
    name.starts_with("libssl.so.")
}

/// OpenSSL files mapped by `pid`: its `libssl.so.*`, seen through the process's root (a
/// container's files are not at the same path on the host).
fn openssl_files(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let is_ssl = Path::new(path)
            .file_name()
            .is_some_and(|n| is_libssl_name(&n.to_string_lossy()));
        if !is_ssl {
            continue;
        }
        let through_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
        if !files.contains(&through_root) {
            files.push(through_root);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_libssl_name("libssl.so.3"));
        assert!(is_libssl_name("libssl.so.1.1"));
        assert!(!is_libssl_name("libssl3.so"));
        assert!(!is_libssl_name("libcrypto.so.3"));
    }

    #[test]
    fn node_exports_openssl_and_this_binary_does_not() {
        assert!(!exports_openssl(Path::new("/proc/self/exe")));
        if let Ok(node) = which("node") {
            assert!(exports_openssl(&node), "{} links OpenSSL", node.display());
        }
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        std::env::split_paths(&std::env::var_os("PATH").ok_or(())?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }

    #[test]
    fn this_process_maps_are_readable() {
        // The test binary does not link OpenSSL: nothing found, and no panic on real maps.
        assert!(openssl_files(std::process::id()).is_empty());
    }
}
