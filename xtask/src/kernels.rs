//! `cargo xtask kernels`: boots the release agent on other kernels under qemu (TCG) and checks
//! that it traces HTTP there.
//!
//! Each kernel is a Debian cloud kernel (virtio built in), fetched with a private apt
//! configuration under `target/kernels/apt` (the system's apt configuration is never touched)
//! and cached at `target/kernels/<version>/vmlinuz`. One initramfs serves every kernel:
//! static busybox, the agent and the libraries `ldd` lists, and `tests/kernels/init.sh` as
//! `/init`. The guest has loopback only; it prints `tracewire check` and the spans between
//! markers on the serial console, which is all the host reads.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::setup::{apt_install, has};
use crate::{agent_binary, run, workspace_root};

const INIT: &str = include_str!("../../tests/kernels/init.sh");

/// A kernel line to test: the newest Debian cloud image whose package name starts with `prefix`.
struct KernelLine {
    version: &'static str,
    prefix: &'static str,
    /// The path `--syscall-hooks auto` must choose here: `fexit`, or where it is refused (for
    /// the reason in the README) `tp_btf`, else `tracepoints`.
    hooks: &'static str,
}

const KERNELS: &[KernelLine] = &[
    KernelLine {
        version: "5.10",
        prefix: "linux-image-5.10.0-",
        // Its BTF declares struct pt_regs only forward in net/socket.c, so the verifier
        // refuses the socket syscalls' fexit argument; the sys_exit tracepoint's is complete.
        hooks: "tp_btf",
    },
    KernelLine {
        version: "6.1",
        prefix: "linux-image-6.1.0-",
        hooks: "fexit",
    },
    KernelLine {
        version: "6.12",
        prefix: "linux-image-6.12.",
        hooks: "fexit",
    },
];

/// Suites the private apt configuration knows: together they carry every line in `KERNELS`.
const SUITES: &[&str] = &["bullseye", "bookworm", "bookworm-backports"];

const CHECK_OK: &str = "tracewire can run on this host";
/// The span of `openssl s_client` asking the guest's `openssl s_server` for its page.
const TLS_CLIENT_SPAN: &str = "openssl CLIENT GET https://127.0.0.1:8443/ 200";

pub struct Options {
    /// Kernel versions to test (empty: all).
    pub only: Vec<String>,
    /// Seconds one boot-and-test may take.
    pub timeout: Duration,
    /// Seconds all boots together may take.
    pub budget: Duration,
    /// Rewrite the README's kernel table from this run.
    pub update_readme: bool,
}

impl Default for Options {
    /// Every kernel, as `cargo xtask test` runs them.
    fn default() -> Self {
        Options {
            only: Vec::new(),
            timeout: Duration::from_secs(60),
            budget: Duration::from_secs(600),
            update_readme: false,
        }
    }
}

#[derive(Debug)]
struct Outcome {
    version: String,
    package: String,
    seconds: f64,
    check: String,
    spans: String,
    /// The same exchange with the syscalls hooked as `--syscall-hooks auto` chose: the path,
    /// then the spans.
    auto_hooks: String,
    /// The path `auto` must choose on this kernel.
    expect_hooks: &'static str,
    /// An HTTPS request by OpenSSL's s_client, seen through the OpenSSL uprobes.
    tls: String,
    /// Trace-context injection in the guest: a client in the injection cgroup sent a
    /// traceparent, one outside did not.
    inject: String,
    /// `tracewire check` rows in the guest: feature name and whether it is available.
    features: Vec<(String, bool)>,
    failure: Option<String>,
}

pub fn kernels(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let lines: Vec<&KernelLine> = KERNELS
        .iter()
        .filter(|k| opts.only.is_empty() || opts.only.iter().any(|o| o == k.version))
        .collect();
    if lines.is_empty() {
        let known: Vec<&str> = KERNELS.iter().map(|k| k.version).collect();
        bail!(
            "no kernel matches {:?}; known versions: {}",
            opts.only,
            known.join(", ")
        );
    }
    tools()?;
    let dir = workspace_root().join("target/kernels");
    let initramfs = initramfs(&dir)?;
    let mut apt = Apt::new(&dir.join("apt"));
    let mut outcomes = Vec::new();
    let boots_started = Instant::now();
    for line in lines {
        let mut outcome = Outcome {
            version: line.version.to_string(),
            package: String::new(),
            seconds: 0.0,
            check: "-".into(),
            spans: "-".into(),
            auto_hooks: "-".into(),
            expect_hooks: line.hooks,
            tls: "-".into(),
            inject: "-".into(),
            features: Vec::new(),
            failure: None,
        };
        match kernel(&mut apt, &dir, line) {
            Err(e) => outcome.failure = Some(format!("{e:#}")),
            Ok((package, vmlinuz)) => {
                outcome.package = package;
                let left = opts.budget.saturating_sub(boots_started.elapsed());
                if left < Duration::from_secs(5) {
                    outcome.failure = Some(format!(
                        "not booted: the total budget of {} s is spent; raise --budget-secs",
                        opts.budget.as_secs()
                    ));
                } else {
                    boot_and_test(&vmlinuz, &initramfs, opts.timeout.min(left), &mut outcome);
                }
            }
        }
        outcomes.push(outcome);
    }
    let matrix = matrix_table(&outcomes, &host_features());
    let path = dir.join("matrix.md");
    fs::write(&path, &matrix).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("==> kernel × feature table written to {}", path.display());
    if opts.update_readme && outcomes.iter().all(|o| o.failure.is_none()) {
        let readme = workspace_root().join("README.md");
        let text = fs::read_to_string(&readme)?;
        fs::write(
            &readme,
            replace_between(&text, MATRIX_BEGIN, MATRIX_END, &matrix)?,
        )?;
        eprintln!("==> README's kernel table updated from this run");
    }
    report(&outcomes, started.elapsed())
}

const MATRIX_BEGIN: &str = "<!-- kernel-matrix:begin (cargo xtask kernels --update-readme) -->";
const MATRIX_END: &str = "<!-- kernel-matrix:end -->";

/// `tracewire check` rows: `ok  `/`no  `/`FAIL`, a 20-column name, the detail.
fn check_features(check: &str) -> Vec<(String, bool)> {
    check
        .lines()
        .filter_map(|line| {
            let (mark, rest) = (line.get(..4)?, line.get(5..)?);
            let ok = match mark {
                "ok  " => true,
                "no  " | "FAIL" => false,
                _ => return None,
            };
            let name = rest.get(..20).unwrap_or(rest).trim();
            (!name.is_empty()).then(|| (name.to_string(), ok))
        })
        .collect()
}

/// `tracewire check` on this host (root): the row of the host kernel.
fn host_features() -> Option<(String, Vec<(String, bool)>)> {
    let out = Command::new(agent_binary()).arg("check").output().ok()?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut features = check_features(&text);
    // The path the check's agent ran on, named in its `fexit fast path` row.
    if let Some(path) = HOOK_PATHS
        .into_iter()
        .find(|p| text.contains(&format!("syscalls hooked by {p} ")))
    {
        features.push((format!("syscall hooks {path}"), true));
    }
    Some((release.trim().to_string(), features))
}

/// The syscall hook paths, fastest first.
const HOOK_PATHS: [&str; 3] = ["fexit", "tp_btf", "tracepoints"];

/// The kernel × feature × path table: which path each feature takes on each kernel, and what
/// the kernel offers that no feature uses yet.
fn matrix_table(outcomes: &[Outcome], host: &Option<(String, Vec<(String, bool)>)>) -> String {
    let has = |features: &[(String, bool)], name: &str| {
        features
            .iter()
            .find(|(n, _)| n == name)
            .map_or("?", |(_, ok)| if *ok { "yes" } else { "no" })
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| kernel | syscall hooks (auto) | e2e with them | TLS: OpenSSL uprobes | \
         syscall tracepoints | injection: sock_ops + sk_msg | e2e, tracepoints + injection | \
         kprobes | boot + test |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let (path, spans) = o
            .auto_hooks
            .split_once(": ")
            .unwrap_or(("?", &o.auto_hooks));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {}; {} | {} | {:.0} s |",
            o.version,
            path,
            spans.split(" (").next().unwrap_or_default(),
            o.tls,
            has(&o.features, "agent programs"),
            has(&o.features, "injection"),
            o.spans.split(" (").next().unwrap_or_default(),
            o.inject,
            has(&o.features, "kprobes"),
            o.seconds
        );
    }
    if let Some((release, features)) = host {
        let path = HOOK_PATHS
            .into_iter()
            .find(|p| has(features, &format!("syscall hooks {p}")) == "yes")
            .unwrap_or("?");
        let _ = writeln!(
            t,
            "| {release} (the CI host, lockdown) | {path} | every end-to-end test | \
             every end-to-end test ({}) | {} | {} | every end-to-end test | {} | - |",
            has(features, "TLS (OpenSSL)"),
            has(features, "agent programs"),
            has(features, "injection"),
            has(features, "kprobes"),
        );
    }
    t
}

/// `text` with what lies between the `begin` and `end` markers replaced by `body`.
fn replace_between(text: &str, begin: &str, end: &str, body: &str) -> Result<String> {
    let start = text
        .find(begin)
        .with_context(|| format!("no {begin} marker"))?
        + begin.len();
    let stop = start
        + text[start..]
            .find(end)
            .with_context(|| format!("no {end} marker"))?;
    Ok(format!("{}\n{}{}", &text[..start], body, &text[stop..]))
}

fn report(outcomes: &[Outcome], total: Duration) -> Result<()> {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| kernel | package | boot+test s | check | spans (auto hooks) | spans (tracepoints) | injection | result |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let _ = writeln!(
            table,
            "| {} | {} | {:.1} | {} | {}; TLS {} | {} | {} | {} |",
            o.version,
            o.package,
            o.seconds,
            o.check,
            o.auto_hooks,
            o.tls,
            o.spans,
            o.inject,
            if o.failure.is_some() { "FAIL" } else { "ok" }
        );
    }
    eprintln!(
        "\n==> kernels ({:.0} s in all)\n{table}",
        total.as_secs_f64()
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    for o in &failed {
        eprintln!(
            "--- {} failed ---\n{}\n",
            o.version,
            o.failure.as_deref().unwrap_or_default()
        );
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|o| o.version.as_str()).collect();
        bail!(
            "the agent failed on kernel(s) {}: see each failure and console tail above",
            names.join(", ")
        );
    }
    Ok(())
}

/// qemu, static busybox and cpio, installed with apt only when missing.
fn tools() -> Result<()> {
    let mut wanted = Vec::new();
    if !has("qemu-system-x86_64") {
        wanted.push("qemu-system-x86");
    }
    if !installed("busybox-static") {
        wanted.push("busybox-static");
    }
    if !has("cpio") {
        wanted.push("cpio");
    }
    apt_install(&wanted, " (to boot other kernels)")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// apt-get and apt-cache over a private configuration: its own sources.list, lists and cache,
/// pointing at the mirror the system uses.
struct Apt {
    dir: PathBuf,
    updated: bool,
}

impl Apt {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            updated: false,
        }
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            format!("-oDir::Etc::SourceParts={d}/sources.list.d"),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oDir::Cache::pkgcache=".into(),
            "-oDir::Cache::srcpkgcache=".into(),
            "-oDir::State::status=/dev/null".into(),
            "-oAcquire::Languages=none".into(),
            // The download folder is under target/, which apt's sandbox user cannot write.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        let mirror = system_mirror();
        for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            let p = self.dir.join(sub);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let mut list = String::new();
        for suite in SUITES {
            let _ = writeln!(
                list,
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} main"
            );
        }
        let path = self.dir.join("sources.list");
        fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
        run(
            Command::new("apt-get").args(self.options()).arg("update"),
            &format!("refreshing the private kernel package lists ({mirror})"),
            "the Debian mirror must be reachable and debian-archive-keyring installed",
        )?;
        self.updated = true;
        Ok(())
    }

    /// The newest package whose name starts with `prefix` and ends in `-cloud-amd64`.
    fn newest(&mut self, prefix: &str) -> Result<String> {
        self.update()?;
        let out = Command::new("apt-cache")
            .args(self.options())
            .arg("pkgnames")
            .arg(prefix)
            .output()
            .context("running apt-cache pkgnames")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.ends_with("-cloud-amd64"))
            .max_by_key(|n| version_key(n))
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "no {prefix}*-cloud-amd64 package in {}: is the suite still on the mirror?",
                    SUITES.join(", ")
                )
            })
    }

    fn download(&mut self, package: &str, into: &Path) -> Result<PathBuf> {
        self.update()?;
        run(
            Command::new("apt-get")
                .args(self.options())
                .args(["download", package])
                .current_dir(into),
            &format!("downloading {package}"),
            "the Debian mirror must be reachable",
        )?;
        fs::read_dir(into)
            .with_context(|| format!("listing {}", into.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(package))
            })
            .with_context(|| {
                format!(
                    "apt-get download left no {package}*.deb in {}",
                    into.display()
                )
            })
    }
}

/// Numbers in a package name, in order, so that 6.12.90+deb12.1 < 6.12.95+deb12.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The Debian mirror of the system's apt sources (deb822 or one-line), else deb.debian.org.
fn system_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy();
            if name.ends_with(".list") || name.ends_with(".sources") {
                texts.extend(fs::read_to_string(&p).ok());
            }
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            let uris = l
                .strip_prefix("URIs:")
                .map(|u| u.split_whitespace().collect::<Vec<_>>());
            uris.unwrap_or_else(|| {
                if l.starts_with("deb ") {
                    l.split_whitespace()
                        .filter(|w| w.contains("://"))
                        .take(1)
                        .collect()
                } else {
                    Vec::new()
                }
            })
        })
        .find(|u| u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The cached kernel of `line`, fetched when missing: (package name, path of vmlinuz).
fn kernel(apt: &mut Apt, dir: &Path, line: &KernelLine) -> Result<(String, PathBuf)> {
    let kdir = dir.join(line.version);
    let vmlinuz = kdir.join("vmlinuz");
    let package_file = kdir.join("package");
    if vmlinuz.is_file() {
        let package = fs::read_to_string(&package_file).unwrap_or_default();
        return Ok((package.trim().to_string(), vmlinuz));
    }
    let package = apt
        .newest(line.prefix)
        .with_context(|| format!("finding the {} kernel", line.version))?;
    let download = kdir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    let deb = apt.download(&package, &download)?;
    let root = download.join("root");
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
        &format!("unpacking {}", deb.display()),
        "dpkg must be installed and the .deb intact; delete the folder to fetch it again",
    )?;
    let boot = root.join("boot");
    let image = fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    fs::copy(&image, &vmlinuz).with_context(|| format!("copying {}", image.display()))?;
    fs::write(&package_file, &package)?;
    // Modules are not needed (virtio is built in): keep only vmlinuz.
    let _ = fs::remove_dir_all(&download);
    Ok((package, vmlinuz))
}

/// Builds target/kernels/initramfs.cpio, or reuses it when the agent and /init are unchanged.
fn initramfs(dir: &Path) -> Result<PathBuf> {
    let agent = agent_binary();
    let meta = fs::metadata(&agent).with_context(|| {
        format!(
            "no agent at {}: `cargo xtask build --release` builds it",
            agent.display()
        )
    })?;
    let key = format!("{} {:?} {:x}", meta.len(), meta.modified().ok(), hash(INIT));
    let cpio = dir.join("initramfs.cpio");
    let key_file = dir.join("initramfs.key");
    if cpio.is_file() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        eprintln!("==> reusing {}", cpio.display());
        return Ok(cpio);
    }
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for sub in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "www", "root", "lib64",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    copy_into(Path::new("/bin/busybox"), &root, "bin/busybox")?;
    for applet in [
        "sh", "mount", "ip", "ifconfig", "httpd", "wget", "sleep", "cat", "grep", "poweroff",
        "kill", "uname", "echo", "ls", "dmesg", "mkdir", "ps", "nc", "reboot", "head", "sed",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .with_context(|| format!("linking the {applet} applet"))?;
    }
    // The agent without its debug info: a smaller initramfs boots faster.
    run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(root.join("tracewire"))
            .arg(&agent),
        "copying the agent without debug info into the initramfs",
        "binutils provides strip: `apt-get install binutils`",
    )?;
    for lib in libraries(&agent)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        copy_into(&lib, &root, &rel.to_string_lossy())?;
    }
    // OpenSSL's own client and server, with the libraries they load, for the TLS uprobes, and
    // a throwaway certificate.
    let openssl = Path::new("/usr/bin/openssl");
    copy_into(openssl, &root, "bin/openssl")?;
    for lib in libraries(openssl)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        copy_into(&lib, &root, &rel.to_string_lossy())?;
    }
    fs::create_dir_all(root.join("tls"))?;
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args([
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(root.join("tls/key.pem"))
            .arg("-out")
            .arg(root.join("tls/cert.pem"))
            .stderr(std::process::Stdio::null()),
        "making the guest's TLS certificate",
        "the openssl command line tool is needed: `apt-get install openssl`",
    )?;
    copy_into(Path::new("/etc/ld.so.cache"), &root, "etc/ld.so.cache")?;
    fs::write(root.join("www/ok.html"), "<html>ok</html>\n")?;
    fs::write(root.join("init"), INIT)?;
    set_executable(&root.join("init"))?;
    run(
        Command::new("sh")
            .arg("-c")
            .arg("find . | cpio --quiet -o -H newc -R 0:0 > ../initramfs.cpio")
            .current_dir(&root),
        "packing the initramfs",
        "cpio must be installed",
    )?;
    fs::write(&key_file, key)?;
    Ok(cpio)
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs, unlike std's RandomState.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn copy_into(from: &Path, root: &Path, rel: &str) -> Result<()> {
    let to = root.join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, &to)
        .with_context(|| format!("copying {} into the initramfs", from.display()))?;
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Absolute paths of the shared libraries `ldd` lists for `binary`.
pub(crate) fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (libc-bin)")?;
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l
                .split("=>")
                .last()?
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))?;
            Some(PathBuf::from(path))
        })
        .collect())
}

/// qemu, killed (by pid) and reaped when dropped, whatever happened.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Boots that crash before /init runs say nothing about the agent: they are retried, and
/// reported. So is a guest kernel oops during the test: one was seen once in about twenty 6.12
/// runs, in fork (the maple tree, busybox's clone), with no uprobe attached — most likely the
/// CMPXCHG16B emulation bug `boot` now avoids; a crash the agent caused would come back on the
/// next boot and fail it. The crashed console is kept. (Under TCG the 6.12 guest crashed in its ACPI set-up — a NULL dereference in
/// pci_acpi_setup — in about half the boots; the guests now boot with acpi=off, one vCPU, and
/// leave by reboot, which -no-reboot turns into qemu's exit: no crash in 12 boots since.)
const BOOT_ATTEMPTS: u32 = 3;

/// The marker /init prints first; a console without it is a boot that never reached /init.
const INIT_REACHED: &str = "==TW-CHECK-BEGIN==";

fn boot_and_test(vmlinuz: &Path, initramfs: &Path, timeout: Duration, outcome: &mut Outcome) {
    let console = vmlinuz.with_file_name("console.log");
    let started = Instant::now();
    let mut result = boot(vmlinuz, initramfs, &console, timeout);
    let mut text = String::new();
    for attempt in 1..=BOOT_ATTEMPTS {
        text = fs::read_to_string(&console)
            .unwrap_or_default()
            .replace('\r', "");
        let reached = text.contains(INIT_REACHED);
        let oops = kernel_oops(&text);
        if (reached && oops.is_none()) || attempt == BOOT_ATTEMPTS {
            break;
        }
        let kept = console.with_file_name(format!("console.crash{attempt}.log"));
        let _ = fs::copy(&console, &kept);
        match (reached, oops) {
            (true, Some(line)) => eprintln!(
                "==> {}: the guest crashed during the test (attempt {attempt}: {line}; \
                 console kept at {}), booting again",
                outcome.version,
                kept.display()
            ),
            _ => eprintln!(
                "==> {}: the guest crashed before /init (attempt {attempt}), booting again",
                outcome.version
            ),
        }
        result = boot(vmlinuz, initramfs, &console, timeout);
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    let failure = match result.and_then(|()| verify(&text, outcome)) {
        Ok(()) => {
            eprintln!(
                "==> {}: ok in {:.1} s ({})",
                outcome.version, outcome.seconds, outcome.spans
            );
            return;
        }
        Err(e) => e,
    };
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    outcome.failure = Some(format!(
        "{failure:#}\nconsole ({}), last lines:\n{}",
        console.display(),
        tail.join("\n")
    ));
    eprintln!(
        "==> {}: FAILED in {:.1} s",
        outcome.version, outcome.seconds
    );
}

/// The first line of a kernel oops or panic on the console, if any.
fn kernel_oops(console: &str) -> Option<&str> {
    console.lines().find(|l| {
        l.contains("BUG: ")
            || l.contains("Oops:")
            || l.contains("general protection fault")
            || l.contains("Kernel panic")
            // The guest's own web server died (once in a CI run on 6.12, without a trace on
            // the console: print-fatal-signals now shows the signal). It is outside every
            // cgroup the agent changes traffic in, and no probe writes to user memory.
            || l.contains("TW-NOTE httpd exited")
    })
}

fn boot(vmlinuz: &Path, initramfs: &Path, console: &Path, timeout: Duration) -> Result<()> {
    let log =
        fs::File::create(console).with_context(|| format!("creating {}", console.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // No CMPXCHG16B in the guest: QEMU 7.2's TCG sometimes leaves garbage in EFLAGS after a
    // %gs-prefixed CMPXCHG16B (6.12's SLUB fast path, this_cpu_try_cmpxchg128). With NT set
    // the next IRET double-faults: 3 of 3 boots in one CI run, 1 in 6 here, in
    // kmem_cache_alloc_noprof right after the instruction, before /init or during the test.
    // Without the feature the kernel takes its cmpxchg16b_emu path: 0 crashes in 10 boots.
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "qemu64,-cx16",
        "-m",
        "1024",
        "-smp",
        "1",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initramfs)
    .args([
        "-append",
        "console=ttyS0 panic=-1 loglevel=4 acpi=off print-fatal-signals=1",
    ])
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    eprintln!(
        "==> booting {} (console: {})",
        vmlinuz.display(),
        console.display()
    );
    let child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    let mut qemu = Qemu(child);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = qemu.0.try_wait()? {
            if !status.success() {
                bail!("qemu exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the guest did not power off within {} s (raise --timeout-secs if TCG is just slow)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = text.find(begin)? + begin.len();
    let len = text[start..].find(end)?;
    Some(text[start..start + len].trim())
}

/// Checks the console: `tracewire check` says the agent can run, and the spans of the ok
/// request (server and client) and of the 404 are there.
fn verify(text: &str, outcome: &mut Outcome) -> Result<()> {
    let check = between(text, "==TW-CHECK-BEGIN==", "==TW-CHECK-END==")
        .context("no `tracewire check` output on the console: the guest did not reach /init")?;
    let check_ok = check.lines().last().is_some_and(|l| l.contains(CHECK_OK));
    outcome.features = check_features(check);
    outcome.check = if check_ok { "can run" } else { "CANNOT run" }.into();
    let spans = between(text, "==TW-SPANS-BEGIN==", "==TW-SPANS-END==")
        .context("no span output on the console: /init did not finish")?;
    let (marks, mut missing) = expected_spans(spans);
    outcome.spans = marks;
    let auto = between(text, "==TW-AUTO-SPANS-BEGIN==", "==TW-AUTO-SPANS-END==")
        .context("no span output of the auto-hooks agent on the console: /init did not finish")?;
    let (marks, auto_missing) = expected_spans(auto);
    let path = HOOK_PATHS.into_iter().find(|p| {
        text.contains(&format!(
            "TW-HOOKS tracewire_syscall_hooks{{path=\"{p}\"}} 1"
        ))
    });
    outcome.auto_hooks = format!("{}: {marks}", path.unwrap_or("unknown path"));
    missing.extend(
        auto_missing
            .iter()
            .map(|m| format!("{m} with --syscall-hooks auto")),
    );
    // s_server -www reads and writes through BIO_f_ssl, which calls OpenSSL's internal
    // read/write rather than the exported SSL_read/SSL_write the uprobes hook: only the client
    // is checked (see the README).
    let tls_client = auto.lines().any(|l| l.contains(TLS_CLIENT_SPAN));
    outcome.tls = if tls_client {
        "client yes"
    } else {
        "client NO"
    }
    .to_string();
    if !tls_client {
        missing.push("the HTTPS client span (OpenSSL uprobes)".to_string());
    }
    if !check_ok {
        bail!(
            "`tracewire check` does not end with \"{CHECK_OK}\":\n{}\n(the whole verifier log is in the console file)",
            check_summary(check)
        );
    }
    if !missing.is_empty() {
        bail!(
            "missing {}; the spans were:\n{spans}\nwith --syscall-hooks auto:\n{auto}",
            missing.join(", ")
        );
    }
    let want = outcome.expect_hooks;
    ensure!(
        path == Some(want),
        "--syscall-hooks auto chose {} on this kernel, where {want} is expected \
         (tracewire_syscall_hooks on /metrics; `tracewire check` says why)",
        path.unwrap_or("no path")
    );
    verify_injection(text, outcome)
}

/// Marks for the three expected spans (server and client of the ok request, server of the
/// 404) in one agent's output, and what is missing.
fn expected_spans(spans: &str) -> (String, Vec<String>) {
    let expected = [
        (
            "httpd SERVER GET /ok.html 200",
            "server span of GET /ok.html",
        ),
        (
            "wget CLIENT GET http://127.0.0.1:8080/ok.html 200",
            "client span of GET /ok.html",
        ),
        (
            "httpd SERVER GET /missing.html 404",
            "server span of the 404",
        ),
    ];
    // busybox's applets are one binary: the agent names the process after its comm (httpd,
    // wget) or its executable (busybox), depending on whether /proc still had the process.
    let found: Vec<bool> = expected
        .iter()
        .map(|(needle, _)| {
            let applet = needle.split(' ').next().unwrap_or_default();
            let as_busybox = format!("busybox{}", &needle[applet.len()..]);
            spans
                .lines()
                .any(|l| l.contains(needle) || l.contains(&as_busybox))
        })
        .collect();
    let missing = expected
        .iter()
        .zip(&found)
        .filter(|(_, found)| !**found)
        .map(|((_, what), _)| what.to_string())
        .collect();
    let mark = |i: usize| if found[i] { "yes" } else { "NO" };
    (
        format!(
            "server 200 {}, client 200 {}, server 404 {} ({} lines)",
            mark(0),
            mark(1),
            mark(2),
            spans.lines().count()
        ),
        missing,
    )
}

/// The raw requests nc received: the one from inside the injection cgroup carries exactly one
/// traceparent line, the one from outside none.
fn verify_injection(text: &str, outcome: &mut Outcome) -> Result<()> {
    let section = between(text, "==TW-INJECT-BEGIN==", "==TW-INJECT-END==")
        .context("no injection output on the console: /init did not finish")?;
    let (inside, outside) = section
        .split_once("\nOUT")
        .context("injection output without its OUT part")?;
    let count = |part: &str| {
        part.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("traceparent:"))
            .count()
    };
    let valid = inside
        .lines()
        .any(|l| l.starts_with("traceparent: 00-") && l.trim_end().len() == 13 + 55);
    let (inn, out) = (count(inside), count(outside));
    outcome.inject = format!(
        "in cgroup {}, outside {}",
        if inn == 1 && valid { "yes" } else { "NO" },
        if out == 0 { "untouched" } else { "CHANGED" }
    );
    ensure!(
        inn == 1 && valid && out == 0,
        "injection: {} traceparent line(s) inside the cgroup (want 1, valid), {out} outside (want 0):\n{section}",
        inn
    );
    Ok(())
}

/// The table rows of `tracewire check` (first line of each), and the end of every verifier
/// log: the lines before "processed N insns", where the verifier says why it refused.
fn check_summary(check: &str) -> String {
    let lines: Vec<&str> = check.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let row = ["ok ", "FAIL", "warn", "WARN", "skip", "tracewire "]
            .iter()
            .any(|p| line.starts_with(p));
        if row {
            out.push(line.chars().take(300).collect::<String>());
        }
        if line.starts_with("processed ") && line.contains(" insns") {
            out.push("    verifier log ends with:".into());
            let from = i.saturating_sub(8);
            out.extend(lines[from..=i].iter().map(|l| format!("    {l}")));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oops_lines_are_found() {
        let console = "TW-READY\n[   15.002979] BUG: kernel NULL pointer dereference, address: 38\n[x] Oops: 0000";
        assert_eq!(
            kernel_oops(console),
            Some("[   15.002979] BUG: kernel NULL pointer dereference, address: 38")
        );
        assert_eq!(kernel_oops("==TW-CHECK-BEGIN==\nok\n"), None);
        assert_eq!(
            kernel_oops("TW-READY after 1 polls\nTW-NOTE httpd exited while the agent started\n"),
            Some("TW-NOTE httpd exited while the agent started")
        );
    }

    #[test]
    fn newest_package_by_numbers() {
        let names = [
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.95+deb12-cloud-amd64",
            "linux-image-6.12.9+deb12-cloud-amd64",
        ];
        let newest = names.iter().max_by_key(|n| version_key(n));
        assert_eq!(newest, Some(&"linux-image-6.12.95+deb12-cloud-amd64"));
    }

    fn outcome() -> Outcome {
        Outcome {
            version: "x".into(),
            package: String::new(),
            seconds: 0.0,
            check: String::new(),
            spans: String::new(),
            auto_hooks: String::new(),
            expect_hooks: "fexit",
            tls: String::new(),
            inject: String::new(),
            features: Vec::new(),
            failure: None,
        }
    }

    const CONSOLE: &str = "boot\n==TW-CHECK-BEGIN==\nok   BTF  fine\ntracewire can run on this host\n\
        ==TW-CHECK-END== rc=0\nTW-HOOKS tracewire_syscall_hooks{path=\"fexit\"} 1\n\
        ==TW-AUTO-SPANS-BEGIN==\n\
        t httpd SERVER GET /ok.html 200 1ms trace=a span=b\n\
        t wget CLIENT GET http://127.0.0.1:8080/ok.html 200 2ms trace=a span=c\n\
        t busybox SERVER GET /missing.html 404 1ms\n\
        t openssl CLIENT GET https://127.0.0.1:8443/ 200 9ms\n\
        ==TW-AUTO-SPANS-END==\n==TW-SPANS-BEGIN==\n\
        t httpd SERVER GET /ok.html 200 1ms trace=a span=b\n\
        t busybox CLIENT GET http://127.0.0.1:8080/ok.html 200 2ms trace=a span=c\n\
        ==TW-SPANS-END==\n==TW-INJECT-BEGIN==\nIN\nGET /in HTTP/1.1\r\n\
        traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
        Host: x\r\n\r\nOUT\nGET /out HTTP/1.1\r\nHost: x\r\n\r\n==TW-INJECT-END==\n";

    #[test]
    fn verify_accepts_either_applet_name_and_names_what_is_missing() {
        let mut o = outcome();
        let err = verify(CONSOLE, &mut o).unwrap_err().to_string();
        assert_eq!(o.check, "can run");
        assert!(
            o.spans
                .starts_with("server 200 yes, client 200 yes, server 404 NO")
        );
        assert!(err.contains("server span of the 404"), "{err}");
        let full = CONSOLE.replace(
            "==TW-SPANS-END==",
            "t httpd SERVER GET /missing.html 404 1ms\n==TW-SPANS-END==",
        );
        let mut o = outcome();
        assert!(verify(&full, &mut o).is_ok(), "{o:?}");
        assert_eq!(o.inject, "in cgroup yes, outside untouched");
        assert!(
            o.auto_hooks
                .starts_with("fexit: server 200 yes, client 200 yes, server 404 yes"),
            "{o:?}"
        );
        let fell_back = full.replace("path=\"fexit\"} 1", "path=\"tracepoints\"} 1");
        let mut o = outcome();
        let err = verify(&fell_back, &mut o).unwrap_err().to_string();
        assert!(err.contains("chose tracepoints"), "{err}");
        let mut o = outcome();
        o.expect_hooks = "tracepoints";
        assert!(verify(&fell_back, &mut o).is_ok(), "{o:?}");
        assert_eq!(o.tls, "client yes");
        let no_tls = full.replace("t openssl CLIENT", "t openssl x");
        let err = verify(&no_tls, &mut outcome()).unwrap_err().to_string();
        assert!(err.contains("HTTPS client span"), "{err}");
        let no_client = full.replace("t wget CLIENT", "t wget x");
        let err = verify(&no_client, &mut outcome()).unwrap_err().to_string();
        assert!(
            err.contains("client span of GET /ok.html with --syscall-hooks auto"),
            "{err}"
        );
        let leaked = full.replace(
            "OUT\nGET /out HTTP/1.1\r\n",
            "OUT\nGET /out HTTP/1.1\r\ntraceparent: 00-x\r\n",
        );
        assert!(verify(&leaked, &mut outcome()).is_err());
    }

    #[test]
    fn check_rows_become_features_and_the_readme_table_is_replaced() {
        let check = "ok   kprobes              /sys/bus/event_source/devices/kprobe/type present\n\
            no   fexit fast path      syscalls hooked by tracepoints\n\
            ok   injection            sock_ops, sk_msg and the context stage load\n\
            tracewire can run on this host";
        let features = check_features(check);
        assert_eq!(
            features,
            vec![
                ("kprobes".to_string(), true),
                ("fexit fast path".to_string(), false),
                ("injection".to_string(), true)
            ]
        );
        let mut o = outcome();
        o.version = "5.10".into();
        o.features = features;
        let table = matrix_table(&[o], &None);
        assert!(table.contains("| 5.10 | ? |"), "{table}");
        assert!(table.contains("| ? | yes |"), "{table}");
        assert!(table.contains("| yes | 0 s |"), "{table}");
        let readme = format!("a\n{MATRIX_BEGIN}\nold\n{MATRIX_END}\nb\n");
        let new = replace_between(&readme, MATRIX_BEGIN, MATRIX_END, "new\n").expect("markers");
        assert_eq!(new, format!("a\n{MATRIX_BEGIN}\nnew\n{MATRIX_END}\nb\n"));
        assert!(replace_between("none", MATRIX_BEGIN, MATRIX_END, "x").is_err());
    }

    #[test]
    fn markers() {
        let text = "x\n==A==\nhello\n==B== rc=0\n";
        assert_eq!(between(text, "==A==", "==B=="), Some("hello"));
    }
}
