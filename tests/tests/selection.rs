//! Selecting processes with `--pid`, `--cgroup` and `--exe`: the python server is selected, curl
//! (which talks to it) is not. The server's SERVER span must arrive, and no span of curl's —
//! checked after the server span arrived and a further second of batches, long enough for a
//! CLIENT span made at the same moment to have been exported too.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_tests::peers::{self, PeerServer};
use tracewire_tests::semconv::{self, ServerSpanExpectation};
use tracewire_tests::{
    AgentGuard, CgroupGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, TempDir,
    Window, bpf,
};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";
/// Five export batches: a CLIENT span of curl's, had it been captured, would be in one of them.
const NEGATIVE_WAIT: Duration = Duration::from_secs(1);

/// Starts the agent with `selection`, has curl GET `/ok.html` from `python`, and checks that
/// python's SERVER span arrives and nothing of curl's does.
fn only_python_is_traced(
    dir: &TempDir,
    receiver: &OtlpReceiver,
    python: &PeerServer,
    selection: &Selection,
) -> Result<()> {
    let agent = AgentGuard::start_selecting(Export::Otlp(receiver), selection, dir.path())?;
    let window = Window::open();
    let run = peers::curl_ok(dir, python, USER_AGENT)?;

    let query = SpanQuery::server(python.serving.pid, "/ok.html");
    let server = receiver
        .wait_for(&query)
        .with_context(|| format!("python selected by {selection:?}"))?;
    semconv::check_server_span(
        &server,
        &ServerSpanExpectation {
            method: "GET",
            path: "/ok.html",
            status: 200,
            server_port: python.port,
            client_port: Some(run.local_port),
            protocol_version: "1.0",
            user_agent: USER_AGENT,
            process: &python.serving,
        },
        window,
    )?;

    std::thread::sleep(NEGATIVE_WAIT);
    let spans = receiver.spans();
    ensure!(
        spans.iter().filter(|s| query.matches(s)).count() == 1,
        "expected exactly one {query}\n{}",
        receiver.report()
    );
    ensure!(
        !spans.iter().any(|s| s.pid() == Some(run.process.pid)
            || (s.kind() == SpanKind::Client && s.request_path() == Some("/ok.html"))),
        "curl (pid {}) is not selected by {selection:?}, yet a span of its request arrived\n{}",
        run.process.pid,
        receiver.report()
    );

    let mark = agent.programs_mark()?;
    let status = agent.stop()?;
    ensure!(
        status.success(),
        "the agent exited with {status} after SIGINT"
    );
    bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))
}

#[test]
fn pid_selects_the_server_and_not_its_client() -> Result<()> {
    let dir = TempDir::new("select-pid")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let selection = Selection {
        pids: vec![python.serving.pid],
        ..Selection::default()
    };
    only_python_is_traced(&dir, &receiver, &python, &selection)
}

#[test]
fn cgroup_selects_the_processes_in_it_and_not_others() -> Result<()> {
    let dir = TempDir::new("select-cgroup")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    // Declared before python, so python is stopped before the cgroup is removed.
    let cgroup = CgroupGuard::create()?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    cgroup.add(python.serving.pid)?;
    ensure!(
        cgroup.pids()? == [python.serving.pid],
        "{} holds {:?}, expected only python ({})",
        cgroup.path().display(),
        cgroup.pids()?,
        python.serving.pid
    );
    let selection = Selection {
        cgroups: vec![cgroup.path().to_path_buf()],
        ..Selection::default()
    };
    only_python_is_traced(&dir, &receiver, &python, &selection)?;

    let path = cgroup.path().to_path_buf();
    drop(python);
    cgroup.remove()?;
    ensure!(!path.exists(), "{} is still there", path.display());
    Ok(())
}

#[test]
fn exe_glob_selects_the_server_and_not_its_client() -> Result<()> {
    let dir = TempDir::new("select-exe")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    ensure!(
        python.serving.executable_name.contains("python3"),
        "python's executable is {:?}; the glob below would not match it",
        python.serving.executable_name
    );
    let selection = Selection {
        exes: vec!["*python3*".to_string()],
        ..Selection::default()
    };
    only_python_is_traced(&dir, &receiver, &python, &selection)
}
