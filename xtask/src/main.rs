//! `cargo xtask`: every set-up, build and test step of Tracewire, so that a fresh machine needs
//! nothing but `cargo xtask run` or `cargo xtask test`.
mod bench;
mod bench_apps;
mod image;
mod kernels;
mod loadgen;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Tracewire's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent): nightly rust-src, bpf-linker built
    /// against nightly's LLVM, Debian packages, and tracefs mounted.
    Setup {
        /// Also install the test peers (nginx, Go, Node, Java, curl, bpftool) and cargo-fuzz.
        #[arg(long)]
        test_peers: bool,
    },
    /// Build the agent (kernel programs included).
    Build {
        /// Optimised build at target/release/tracewire.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build in release, and run the agent as root; arguments after `--` go to it.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks: criterion for the hot user-space stages, and the overhead harness (nginx
    /// under wrk with and without the agent); writes target/bench/report.{md,json}.
    Bench {
        /// A short run (under 5 minutes).
        #[arg(long)]
        quick: bool,
    },
    /// Boot the release agent on Debian's 5.10, 6.1 and 6.12 cloud kernels under qemu (TCG)
    /// and check that it runs and traces HTTP over loopback there; kernels are cached under
    /// target/kernels.
    Kernels {
        /// Only these kernel versions (repeatable): 5.10, 6.1, 6.12.
        #[arg(long)]
        only: Vec<String>,
        /// Seconds one kernel's boot and test may take.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Seconds all boots together may take.
        #[arg(long, default_value_t = 600)]
        budget_secs: u64,
        /// Rewrite the README's kernel × feature table from this run (when every kernel passed).
        #[arg(long)]
        update_readme: bool,
    },
    /// The bench's fixed-rate HTTP/1.1 load generator against 127.0.0.1:PORT (prints JSON).
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        port: u16,
        /// Requests per second, due on schedule whatever the answers do.
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// A new connection per request.
        #[arg(long)]
        close: bool,
    },
    /// Build the container image (deploy/container/Containerfile) from the release binary,
    /// offline, with buildah, podman or docker: `localhost/tracewire:VERSION`.
    Image,
    /// Set up with every test peer, build once, run unit tests, bounded fuzzing, end-to-end
    /// tests against the real agent, the kernel matrix (5.10, 6.1, 6.12 under qemu), and lints.
    Test {
        /// Seconds each fuzz target runs (default 30, or TRACEWIRE_FUZZ_SECS).
        #[arg(long)]
        fuzz_secs: Option<u64>,
        /// Skip clippy and rustfmt.
        #[arg(long)]
        no_lint: bool,
    },
}

/// Prints the step, runs it, and fails with what failed and what to do.
pub fn run(cmd: &mut Command, what: &str, fix: &str) -> Result<()> {
    eprintln!("==> {what}");
    eprintln!("    $ {}", render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start `{}`; {fix}", render(cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status}); {fix}");
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd.env("PATH", setup::path_with_cargo_bin());
    cmd
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "tracewire"]);
    if release {
        cmd.arg("--release");
    }
    run(
        &mut cmd,
        "building the agent and its kernel programs",
        "read the compiler output above; `cargo xtask setup` installs the eBPF toolchain",
    )
}

pub fn agent_binary() -> PathBuf {
    workspace_root().join("target/release/tracewire")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn fuzz(secs: u64) -> Result<()> {
    let fuzz_dir = workspace_root().join("agent/fuzz");
    let targets_dir = fuzz_dir.join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&targets_dir)
        .with_context(|| format!("listing {}", targets_dir.display()))?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "rs" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    targets.sort();
    for target in targets {
        let corpus = workspace_root().join("target/fuzz-corpus").join(&target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = workspace_root()
            .join("agent/src/protocol/fixtures")
            .join(&target);
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz_dir)
            .env("PATH", setup::path_with_cargo_bin())
            .env("CARGO_TARGET_DIR", workspace_root().join("target/fuzz"))
            .args(["+nightly", "fuzz", "run", &target])
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args([
            "--",
            &format!("-max_total_time={secs}"),
            "-rss_limit_mb=2048",
        ]);
        run(
            &mut cmd,
            &format!("fuzzing {target} for {secs} s"),
            "a crash input was written under agent/fuzz/artifacts: add it as a unit test and fix the parser",
        )?;
    }
    Ok(())
}

fn test(fuzz_secs: Option<u64>, no_lint: bool) -> Result<()> {
    let started = Instant::now();
    setup::setup(true)?;
    build(true)?;
    run(
        cargo().args([
            // Not the eBPF crate: it only builds for the BPF target (build.rs does that).
            "test",
            "--release",
            "--package",
            "tracewire",
            "--package",
            "agent-common",
            "--package",
            "xtask",
            // Compiles the benchmarks too, and runs each once as a test.
            "--all-targets",
        ]),
        "unit tests (and the benchmarks, once each)",
        "a unit test failed: see its output above",
    )?;
    let secs = fuzz_secs
        .or_else(|| std::env::var("TRACEWIRE_FUZZ_SECS").ok()?.parse().ok())
        .unwrap_or(30);
    fuzz(secs)?;
    run(
        cargo()
            .args([
                "test",
                "--release",
                "--package",
                "tracewire-tests",
                "--",
                "--test-threads=1",
            ])
            .env("TRACEWIRE_BIN", agent_binary())
            .env("TRACEWIRE_OTEL_PYTHON", setup::otel_sdk_python())
            .env("TRACEWIRE_NODE_MODULES", setup::node_peer_modules()),
        "end-to-end tests (real agent, real eBPF, real peers)",
        "an end-to-end test failed: its output above shows the agent's log and what the receiver got",
    )?;
    kernels::kernels(&kernels::Options::default())?;
    image::check()?;
    if !no_lint {
        run(
            cargo().args(["fmt", "--all", "--", "--check"]),
            "rustfmt",
            "run `cargo fmt --all`",
        )?;
        run(
            cargo().args([
                "clippy",
                "--release",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "clippy",
            "fix the lints above",
        )?;
    }
    eprintln!(
        "==> all tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { test_peers } => setup::setup(test_peers),
        Task::Build { release } => {
            setup::setup(false)?;
            build(release)
        }
        Task::Run { args } => {
            setup::setup(false)?;
            build(true)?;
            let mut cmd = if is_root() {
                Command::new(agent_binary())
            } else {
                eprintln!("==> not root: running the agent with sudo (eBPF needs root)");
                let mut c = Command::new("sudo");
                c.arg("-E").arg(agent_binary());
                c
            };
            cmd.args(&args);
            run(
                &mut cmd,
                "running tracewire (Ctrl-C stops it)",
                "see the agent's message above; `tracewire check` tells what this host supports",
            )
        }
        Task::Kernels {
            only,
            timeout_secs,
            budget_secs,
            update_readme,
        } => {
            setup::setup(false)?;
            build(true)?;
            kernels::kernels(&kernels::Options {
                only,
                timeout: std::time::Duration::from_secs(timeout_secs),
                budget: std::time::Duration::from_secs(budget_secs),
                update_readme,
            })
        }
        Task::Test { fuzz_secs, no_lint } => test(fuzz_secs, no_lint),
        Task::Image => {
            setup::setup(false)?;
            build(true)?;
            image::image()
        }
        Task::Loadgen {
            port,
            rate,
            secs,
            connections,
            close,
        } => {
            let result = loadgen::run(port, rate, secs, connections, close)?;
            println!("{}", result.to_json());
            Ok(())
        }
        Task::Bench { quick } => {
            setup::setup(true)?;
            build(true)?;
            bench::bench(quick)
        }
    }
}
