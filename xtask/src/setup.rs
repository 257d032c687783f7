//! Idempotent machine set-up: each step checks first and only installs what is missing.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

const BPF_LINKER_VERSION: &str = "0.13.0";

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory first, where bpf-linker and cargo-fuzz are installed.
pub fn path_with_cargo_bin() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    format!("{}:{current}", cargo_bin().display())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Is `program` on PATH?
pub fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.is_empty() {
        run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            "installing the nightly toolchain (builds the kernel programs)",
            "check that rustup can reach its distribution server",
        )?;
    }
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "adding rust-src to nightly (needed for -Z build-std=core)",
            "check that rustup can reach its distribution server",
        )?;
    }
    Ok(())
}

/// bpf-linker links the kernel programs with nightly's own LLVM: it is built against a folder
/// that exposes nightly's libLLVM, and loads it from there at run time, so that folder lives
/// in a stable place under the home directory.
fn bpf_linker() -> Result<()> {
    let linker = cargo_bin().join("bpf-linker");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed; is the nightly toolchain installed?")?;
    let lib_dir = Path::new(&sysroot).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("listing {}", lib_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let works = output(Command::new(&linker).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if works {
        return Ok(());
    }
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"])).unwrap_or_default();
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read nightly's LLVM version from `rustc +nightly -vV`")?
        .to_string();
    let prefix = home().join(".local/share/tracewire/llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so".to_string(), libllvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
                "--force",
            ])
            .env("LLVM_PREFIX", &prefix),
        &format!(
            "building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} (about 2 minutes)"
        ),
        "check that crates.io is reachable and that nightly ships libLLVM",
    )
}

/// Debian packages, installed only when their command is missing.
fn apt(test_peers: bool) -> Result<()> {
    let mut wanted: Vec<&str> = Vec::new();
    // A non-login root PATH may lack the sbin directories (mariadbd is in /usr/sbin).
    let needs = |cmd: &str| {
        !has(cmd)
            && !["/usr/local/sbin", "/usr/sbin", "/sbin"]
                .iter()
                .any(|dir| Path::new(dir).join(cmd).is_file())
    };
    if test_peers {
        for (cmd, pkg) in [
            ("bpftool", "bpftool"),
            ("nginx", "nginx-light"),
            ("go", "golang-go"),
            ("curl", "curl"),
            ("node", "nodejs"),
            ("npm", "npm"),
            ("javac", "openjdk-17-jdk-headless"),
            ("python3", "python3"),
            ("openssl", "openssl"),
            ("ip", "iproute2"),
            ("wrk", "wrk"),
            // The database tests' servers and stock clients.
            ("psql", "postgresql-client"),
            ("mariadbd", "mariadb-server"),
            ("mariadb-install-db", "mariadb-server"),
            ("mariadb", "mariadb-client"),
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            // The deploy tests: the unit's checker, and the system calls the agent makes.
            ("systemd-analyze", "systemd"),
            ("strace", "strace"),
            // `cargo xtask image`, which the test run builds once.
            ("buildah", "buildah"),
            // The `tracewire watch` terminal view is driven in tmux.
            ("tmux", "tmux"),
        ] {
            if needs(cmd) && !wanted.contains(&pkg) {
                wanted.push(pkg);
            }
        }
        if !has_postgres_server() {
            wanted.push("postgresql");
        }
        // The database tests' Python clients run on Debian's own interpreter, where these
        // packages install (a pyenv `python3` first on PATH does not see them).
        for (module, pkg) in [
            ("psycopg", "python3-psycopg"),
            ("pymysql", "python3-pymysql"),
            ("redis", "python3-redis"),
        ] {
            if !system_python_imports(module) {
                wanted.push(pkg);
            }
        }
    }
    apt_install(&wanted, "")
}

/// Debian installs the PostgreSQL server's programs (`initdb`, `postgres`, `pg_ctl`) under
/// `/usr/lib/postgresql/<version>/bin`, off PATH.
fn has_postgres_server() -> bool {
    std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .flatten()
            .any(|version| version.path().join("bin/initdb").is_file())
    })
}

/// Does Debian's `/usr/bin/python3` import `module`?
fn system_python_imports(module: &str) -> bool {
    output(Command::new("/usr/bin/python3").args(["-c", &format!("import {module}")])).is_some()
}

/// `apt-get update` then install `packages` (nothing when empty); `why` ends the step's title.
pub fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "refreshing Debian's package lists",
        "apt-get needs root and access to Debian's mirrors",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("installing {}{why}", packages.join(" ")),
        "apt-get needs root and access to Debian's mirrors",
    )
}

fn cargo_fuzz() -> Result<()> {
    if output(Command::new(cargo_bin().join("cargo-fuzz")).arg("--version")).is_some() {
        return Ok(());
    }
    run(
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        "installing cargo-fuzz (bounded fuzzing of every parser)",
        "check that crates.io is reachable",
    )
}

/// The Python peers' packages, in a virtualenv kept at a stable place (pinned versions; nothing
/// installed system-wide): the official OpenTelemetry Python SDK for the interop tests, and
/// grpcio for the gRPC tests.
pub const OTEL_SDK_PACKAGES: [&str; 5] = [
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
    "grpcio==1.76.0",
    // The official Prometheus client's text-format parser reads the agent's /metrics in tests.
    "prometheus-client==0.26.0",
    // The Kubernetes OpenAPI schemas, offline: the deploy tests validate deploy/kubernetes.
    "kubernetes-validate==1.37.0",
];

pub fn otel_sdk_venv() -> PathBuf {
    home().join(".local/share/tracewire/otel-sdk-venv")
}

/// The interpreter of [`otel_sdk_venv`].
pub fn otel_sdk_python() -> PathBuf {
    otel_sdk_venv().join("bin/python")
}

fn otel_sdk() -> Result<()> {
    let python = otel_sdk_python();
    let ready = || {
        output(Command::new(&python).args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, grpc, \
             prometheus_client.parser, kubernetes_validate",
        ]))
        .is_some()
    };
    if ready() {
        return Ok(());
    }
    let venv = otel_sdk_venv();
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's python3 needs its venv module as a package.
        apt_install(
            &["python3-venv"],
            " (for the OpenTelemetry SDK interop tests)",
        )?;
        run(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "creating a virtualenv for the OpenTelemetry SDK",
            "python3 -m venv must work",
        )?;
    }
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(OTEL_SDK_PACKAGES),
        "installing the OpenTelemetry Python SDK and grpcio (interop and gRPC tests)",
        "check that PyPI is reachable",
    )?;
    if !ready() {
        bail!(
            "the OpenTelemetry SDK does not import from {}",
            python.display()
        );
    }
    Ok(())
}

/// npm packages of the Node peers, pinned, in a folder kept at a stable place.
pub const NODE_PEER_PACKAGES: [&str; 1] = ["@grpc/grpc-js@1.14.7"];

/// The `node_modules` the Node peers load their npm packages from (their NODE_PATH).
pub fn node_peer_modules() -> PathBuf {
    home().join(".local/share/tracewire/node-peers/node_modules")
}

fn node_peers() -> Result<()> {
    let modules = node_peer_modules();
    let installed = std::fs::read_to_string(modules.join("@grpc/grpc-js/package.json"))
        .is_ok_and(|p| p.contains("\"version\": \"1.14.7\""));
    if installed {
        return Ok(());
    }
    let prefix = modules.parent().unwrap_or(&modules).to_path_buf();
    std::fs::create_dir_all(&prefix)?;
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .args(NODE_PEER_PACKAGES),
        "installing @grpc/grpc-js (Node gRPC tests)",
        "check that the npm registry is reachable",
    )
}

/// The agent mounts tracefs itself; set-up does it too so that tools like bpftool see it.
fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    run(
        Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]),
        "mounting tracefs at /sys/kernel/tracing",
        "run as root",
    )
}

pub fn setup(test_peers: bool) -> Result<()> {
    if !has("rustup") {
        bail!(
            "rustup is not installed: the kernel programs need a nightly toolchain managed by rustup"
        );
    }
    nightly_rust_src()?;
    bpf_linker()?;
    apt(test_peers)?;
    if test_peers {
        cargo_fuzz()?;
        otel_sdk()?;
        node_peers()?;
    }
    // Not fatal: without root the agent cannot run anyway, and says so.
    if let Err(e) = tracefs() {
        eprintln!("    warning: {e:#}");
    }
    eprintln!("==> set-up complete");
    Ok(())
}
