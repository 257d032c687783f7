//! `tracewire check`: on this host, as root, it must find everything the agent needs and really
//! load and attach the agent's programs — with every combination of selection flags, since each
//! one makes the kernel verify a different path through the selection code. As an unprivileged
//! user it must refuse, naming the missing capabilities. Either way nothing stays attached.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tracewire_tests::agent::{AgentGuard, Export, agent_binary};
use tracewire_tests::cgroup::cgroup2_mount;
use tracewire_tests::peers::require_tool;
use tracewire_tests::process::{Finished, run_to_exit};
use tracewire_tests::{Selection, TempDir, bpf};

/// Loading, attaching and detaching every program takes a few seconds on a 2-core machine.
const CHECK_WAIT: Duration = Duration::from_secs(60);
/// What the agent cannot run without; each must be reported `ok` on this host.
const REQUIRED: [&str; 6] = [
    "capabilities",
    "tracefs",
    "syscall tracepoints",
    "BTF",
    "ring buffer",
    "agent programs",
];
const CAN_RUN: &str = "tracewire can run on this host";
const CANNOT_RUN: &str = "tracewire cannot run on this host:";
/// The `nobody` user and group.
const NOBODY: u32 = 65534;

/// One line of the report: `MARK NAME(padded to 20) DETAIL`.
#[derive(Debug)]
struct Finding<'a> {
    mark: &'a str,
    name: &'a str,
    detail: &'a str,
}

fn findings(stdout: &str) -> Vec<Finding<'_>> {
    stdout
        .lines()
        .filter_map(|line| {
            let mark = line.get(..4)?.trim_end();
            let rest = line.get(5..)?;
            let name = rest.get(..20).unwrap_or(rest).trim();
            let detail = rest.get(20..).unwrap_or("").trim();
            matches!(mark, "ok" | "no" | "FAIL").then_some(Finding { mark, name, detail })
        })
        .collect()
}

fn report(run: &Finished) -> String {
    format!(
        "exit {}\n--- stdout:\n{}--- stderr:\n{}",
        run.status, run.stdout, run.stderr
    )
}

/// Runs `binary check` with `selection`'s flags, after `wrapper` (a command that runs the rest
/// of its arguments) when there is one.
fn run_check(
    dir: &TempDir,
    wrapper: &[OsString],
    binary: &Path,
    selection: &Selection,
) -> Result<Finished> {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .arg("check")
        .args(selection.args())
        .env("RUST_LOG", "info");
    run_to_exit("tracewire-check", &mut command, dir.path(), CHECK_WAIT)
}

/// `tracewire check` as root with `selection`: exit 0, every required capability `ok`, and
/// nothing left loaded afterwards.
fn check_passes(dir: &TempDir, selection: &Selection) -> Result<()> {
    let run = {
        let _slot = tracewire_tests::serial();
        let mark = bpf::mark()?;
        let run = run_check(dir, &[], &agent_binary()?, selection)?;
        bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))
            .with_context(|| format!("after `tracewire check {:?}`", selection.args()))?;
        run
    };
    let what = format!("`tracewire check {:?}`", selection.args());
    ensure!(
        run.status.success(),
        "{what} failed on a host that runs the agent\n{}",
        report(&run)
    );
    let found = findings(&run.stdout);
    for name in REQUIRED {
        ensure!(
            found.iter().any(|f| f.name == name && f.mark == "ok"),
            "{what} does not report `ok` for {name}\n{}",
            report(&run)
        );
    }
    ensure!(
        !found.iter().any(|f| f.mark == "FAIL"),
        "{what} reports a failure\n{}",
        report(&run)
    );
    ensure!(
        run.stdout.lines().last() == Some(CAN_RUN),
        "{what} does not end with {CAN_RUN:?}\n{}",
        report(&run)
    );
    Ok(())
}

#[test]
fn check_passes_as_root() -> Result<()> {
    let dir = TempDir::new("check")?;
    check_passes(&dir, &Selection::default())
}

#[test]
fn check_loads_the_programs_with_every_selection_combination() -> Result<()> {
    let dir = TempDir::new("check-selection")?;
    let cgroup = cgroup2_mount()?;
    for combination in 1..8_u8 {
        let mut selection = Selection::default();
        if combination & 1 != 0 {
            selection.pids.push(1);
        }
        if combination & 2 != 0 {
            selection.ports.push(80);
        }
        if combination & 4 != 0 {
            selection.cgroups.push(cgroup.clone());
        }
        check_passes(&dir, &selection)?;
    }
    Ok(())
}

#[test]
fn check_refuses_an_unprivileged_user() -> Result<()> {
    let dir = TempDir::new("check-unprivileged")?;
    let setpriv = require_tool("setpriv")?;
    // TRACEWIRE_BIN may live where `nobody` cannot reach (under /root); a copy in the test's
    // directory (0755 under /tmp) is one it can run.
    let binary = dir.join("tracewire");
    std::fs::copy(agent_binary()?, &binary).context("copying the agent binary")?;
    for path in [dir.path(), binary.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let wrapper: Vec<OsString> = [
        setpriv.into_os_string(),
        format!("--reuid={NOBODY}").into(),
        format!("--regid={NOBODY}").into(),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
    ]
    .into();
    let run = {
        let _slot = tracewire_tests::serial();
        let mark = bpf::mark()?;
        let run = run_check(&dir, &wrapper, &binary, &Selection::default())?;
        bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))?;
        run
    };

    ensure!(
        !run.status.success() && run.status.code().is_some(),
        "`tracewire check` as nobody did not exit with a failure code\n{}",
        report(&run)
    );
    let found = findings(&run.stdout);
    ensure!(
        found
            .iter()
            .any(|f| f.name == "capabilities" && f.mark == "FAIL"),
        "`tracewire check` as nobody does not report capabilities as FAIL\n{}",
        report(&run)
    );
    let last = run.stdout.lines().last().unwrap_or_default();
    ensure!(
        last.starts_with(CANNOT_RUN) && last.contains("capabilities"),
        "`tracewire check` as nobody does not end saying it cannot run for lack of \
         capabilities\n{}",
        report(&run)
    );
    Ok(())
}

/// `--syscall-hooks`: the path `tracewire check` names is the one the agent runs on, and
/// /metrics says so. Where the kernel refuses fexit (this host: lockdown), `auto` runs on the
/// sys_exit BTF tracepoint (or on syscall tracepoints where that is refused too), `fexit`
/// stops the agent with the reason, leaving nothing attached, and `tracepoints` is honoured;
/// where fexit is allowed, both run on fexit.
#[test]
fn syscall_hooks_follow_what_the_kernel_allows() -> Result<()> {
    let dir = TempDir::new("check-hooks")?;
    let check = {
        let _slot = tracewire_tests::serial();
        run_check(&dir, &[], &agent_binary()?, &Selection::default())?
    };
    let found = findings(&check.stdout);
    let row = found
        .iter()
        .find(|f| f.name == "fexit fast path")
        .with_context(|| format!("no `fexit fast path` row\n{}", report(&check)))?;
    let fexit = row.mark == "ok";
    let path = ["fexit", "tp_btf", "tracepoints"]
        .into_iter()
        .find(|p| row.detail.starts_with(&format!("syscalls hooked by {p} ")))
        .with_context(|| {
            format!(
                "the `fexit fast path` row names no path\n{}",
                report(&check)
            )
        })?;
    ensure!(fexit == (path == "fexit"), "{}", report(&check));
    let port = tracewire_tests::net::free_port()?;
    let gauge = |path: &str| format!("tracewire_syscall_hooks{{path=\"{path}\"}} 1");
    let hooks_lines = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.contains("syscall_hooks"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let agent = AgentGuard::start(Export::Stdout, &[port], dir.path())?;
    let metrics = agent.metrics()?;
    let want = gauge(path);
    ensure!(
        metrics.contains(&want),
        "`tracewire check` says the syscalls are hooked by {path}, but the agent's /metrics \
         lacks {want}:\n{}",
        hooks_lines(&metrics)
    );
    agent.stop()?;

    let tracepoints = Selection {
        ports: vec![port],
        extra_args: vec!["--syscall-hooks".into(), "tracepoints".into()],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Stdout, &tracepoints, dir.path())?;
    let metrics = agent.metrics()?;
    ensure!(
        metrics.contains(&gauge("tracepoints")),
        "--syscall-hooks tracepoints was not honoured:\n{}",
        hooks_lines(&metrics)
    );
    agent.stop()?;

    let forced = Selection {
        ports: vec![port],
        extra_args: vec!["--syscall-hooks".into(), "fexit".into()],
        ..Selection::default()
    };
    if fexit {
        let agent = AgentGuard::start_selecting(Export::Stdout, &forced, dir.path())?;
        let metrics = agent.metrics()?;
        ensure!(metrics.contains(&gauge("fexit")), "{metrics}");
        agent.stop()?;
        return Ok(());
    }
    let _slot = tracewire_tests::serial();
    let mark = bpf::mark()?;
    let mut command = Command::new(agent_binary()?);
    command.arg("run").args(forced.args());
    let run = run_to_exit("tracewire-fexit", &mut command, dir.path(), CHECK_WAIT)?;
    bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))
        .context("after the agent refused --syscall-hooks fexit")?;
    ensure!(
        !run.status.success() && run.stderr.contains("the fexit fast path is unavailable"),
        "`tracewire run --syscall-hooks fexit` on a host that refuses fexit must stop with the \
         reason\n{}",
        report(&run)
    );
    Ok(())
}
