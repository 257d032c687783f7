//! Least privilege: the agent runs as an unprivileged user holding only CAP_BPF (load programs,
//! create maps), CAP_PERFMON (attach tracepoints, read kernel memory) and CAP_DAC_READ_SEARCH
//! (read tracefs), and still traces: spans of a root-owned python server (whose environment it
//! cannot read through /proc: service.name comes from the kernel's copy) and of curl arrive.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context as _, Result, ensure};
use tracewire_tests::peers::{self, require_tool};
use tracewire_tests::{
    AgentGuard, CgroupGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, TempDir,
    agent_binary,
};

const NOBODY: u32 = 65534;
const CAPS: &str = "+bpf,+perfmon,+dac_read_search";

#[test]
fn traces_as_nobody_with_bpf_perfmon_and_dac_read_search_only() -> Result<()> {
    // Injection is asked for too: it needs CAP_NET_ADMIN, so the agent must say so and trace
    // without it rather than fail.
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("least-privilege")?;
    let setpriv = require_tool("setpriv")?;
    // The agent binary may live where `nobody` cannot reach: run a copy from the test dir.
    let binary = dir.join("tracewire");
    std::fs::copy(agent_binary()?, &binary).context("copying the agent binary")?;
    for path in [dir.path(), binary.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let selection = Selection {
        ports: vec![python.port],
        inject_cgroups: vec![cgroup.path().to_path_buf()],
        launcher: vec![
            setpriv.into_os_string(),
            format!("--reuid={NOBODY}").into(),
            format!("--regid={NOBODY}").into(),
            OsString::from("--clear-groups"),
            format!("--inh-caps={CAPS}").into(),
            format!("--ambient-caps={CAPS}").into(),
        ],
        binary: Some(binary),
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))?;
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "the agent does not run as nobody:\n{status}"
    );

    let run = peers::curl(&dir, &python.url("/ok.html"), &["--http1.0"])?;
    ensure!(run.status == 200, "curl: {} instead of 200", run.status);
    let server = receiver.wait_for(&SpanQuery::server(python.serving.pid, "/ok.html"))?;
    ensure!(
        server.resource_str("service.name") == Some("tw-python"),
        "service.name of the server span is not python's OTEL_SERVICE_NAME: {server}"
    );
    receiver.wait_for(&SpanQuery::client(run.process.pid, "/ok.html"))?;
    let active =
        tracewire_tests::metrics::value(&agent.metrics()?, "tracewire_injection_active", "");
    ensure!(
        active == Some(0.0),
        "injection without CAP_NET_ADMIN: tracewire_injection_active is {active:?}"
    );
    ensure!(
        agent.logs().contains("WITHOUT trace-context injection"),
        "the agent did not say that injection is off:\n{}",
        agent.logs()
    );
    let stopped = agent.stop()?;
    ensure!(
        stopped.success(),
        "the agent did not exit cleanly: {stopped}"
    );
    Ok(())
}
