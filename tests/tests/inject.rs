//! Trace context injected by the kernel (`--inject-cgroup`): one trace across services that
//! nobody instrumented, the bytes of everything else left exactly as they were, and nothing
//! changed outside the selected cgroup.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use tracewire_tests::peers::{self, IntegrityCase, Runtime};
use tracewire_tests::{
    AgentGuard, CgroupGuard, Export, OtlpProtocol, OtlpReceiver, Selection, SpanQuery, SpanRecord,
    TempDir,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Traces and injects in `cgroup` only.
fn inject_selection(cgroup: &CgroupGuard) -> Selection {
    Selection {
        cgroups: vec![cgroup.path().to_path_buf()],
        inject_cgroups: vec![cgroup.path().to_path_buf()],
        ..Selection::default()
    }
}

/// Moves `pids` into `cgroup`, then starts an agent that traces and injects there.
fn inject_agent(
    receiver: &OtlpReceiver,
    cgroup: &CgroupGuard,
    pids: &[u32],
    dir: &TempDir,
) -> Result<AgentGuard> {
    for pid in pids {
        cgroup.add(*pid)?;
    }
    AgentGuard::start_selecting(
        Export::Otlp(receiver),
        &inject_selection(cgroup),
        dir.path(),
    )
}

/// One request first: the agent learns each process's threading from its first connection, and
/// until then gives its calls no parent.
fn warm_up(port: u16, path: &str) -> Result<()> {
    let warm = tracewire_tests::net::http_get(
        tracewire_tests::net::loopback(port),
        path,
        std::time::Duration::from_secs(20),
    )?;
    ensure!(warm.status == 200, "warm-up request: {}", warm.status);
    Ok(())
}

fn by_case(cases: Vec<IntegrityCase>) -> BTreeMap<String, IntegrityCase> {
    cases.into_iter().map(|c| (c.case.clone(), c)).collect()
}

/// A W3C level-1 traceparent line as the kernel writes it.
fn is_traceparent_line(line: &str) -> bool {
    let Some(value) = line
        .strip_prefix("traceparent: ")
        .and_then(|v| v.strip_suffix("\r\n"))
    else {
        return false;
    };
    let parts: Vec<&str> = value.split('-').collect();
    let lower_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && parts[0] == "00"
        && lower_hex(parts[1], 32)
        && lower_hex(parts[2], 16)
        && lower_hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

#[test]
fn injection_changes_nothing_but_whole_request_heads() -> Result<()> {
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("inject-integrity")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let echo = peers::integrity_echo_server(&dir)?;
    let agent = AgentGuard::start_selecting(
        Export::Otlp(&receiver),
        &inject_selection(&cgroup),
        dir.path(),
    )?;

    let cases = by_case(peers::integrity_client(
        &dir,
        echo.port,
        Some(cgroup.path()),
    )?);
    // How many traceparent lines each case may gain: one per whole request head at the start
    // of a write; none for anything else.
    let expected: &[(&str, usize)] = &[
        ("binary-1", 0),
        ("binary-7", 0),
        ("binary-100", 0),
        ("binary-4096", 0),
        ("binary-65536", 0),
        ("binary-1048576", 0),
        ("binary-4194304", 0),
        ("post-with-body", 1),
        ("body-that-looks-like-a-request", 1),
        ("pipelined-separate-writes", 3),
        ("pipelined-one-write", 1),
        ("head-in-3-pieces", 0),
        ("head-split-over-writev", 0),
        ("already-has-traceparent", 0),
        ("chunked-then-next-request", 1),
        ("plain-get", 1),
    ];
    let mut failures = Vec::new();
    for (name, lines) in expected {
        let case = cases
            .get(*name)
            .with_context(|| format!("the client did not run case {name}"))?;
        let Some(added) = &case.added else {
            failures.push(format!(
                "{name}: bytes other than whole traceparent lines changed ({} sent, {} echoed)",
                case.sent, case.echoed
            ));
            continue;
        };
        if added.len() != *lines {
            failures.push(format!(
                "{name}: {} lines added, {lines} expected: {added:?}",
                added.len()
            ));
        }
        if let Some(bad) = added.iter().find(|l| !is_traceparent_line(l)) {
            failures.push(format!("{name}: malformed line added: {bad:?}"));
        }
        let growth: u64 = added.iter().map(|l| l.len() as u64).sum();
        if case.echoed != case.sent + growth {
            failures.push(format!(
                "{name}: {} bytes sent + {growth} added, {} echoed",
                case.sent, case.echoed
            ));
        }
        if *lines == 0 && case.sent_sha256 != case.echoed_sha256 {
            failures.push(format!("{name}: checksum differs"));
        }
    }
    ensure!(
        failures.is_empty(),
        "integrity failures:\n{}",
        failures.join("\n")
    );

    // Every case where the kernel chose not to inject was counted with its reason. The agent
    // copies the kernel's counters about every 0.6 s.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let metrics = agent.metrics()?;
    for (outcome, at_least) in [
        ("injected", 8.0),
        ("skipped_split_head", 2.0),
        ("skipped_has_traceparent", 1.0),
        ("skipped_unknown_body_framing", 1.0),
        ("skipped_pipelined", 1.0),
    ] {
        let labels = format!("outcome=\"{outcome}\"");
        let value = tracewire_tests::metrics::value(&metrics, "tracewire_injection_total", &labels)
            .with_context(|| format!("no tracewire_injection_total{{{labels}}}"))?;
        ensure!(
            value >= at_least,
            "tracewire_injection_total{{{labels}}} is {value}, expected at least {at_least}"
        );
    }
    let failed = tracewire_tests::metrics::value(
        &metrics,
        "tracewire_injection_total",
        "outcome=\"failed\"",
    );
    ensure!(failed == Some(0.0), "injections failed: {failed:?}");
    Ok(())
}

#[test]
fn nothing_is_injected_outside_the_selected_cgroup() -> Result<()> {
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("inject-scope")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let echo = peers::integrity_echo_server(&dir)?;
    // The client runs outside the cgroup but is traced (by port): it must see no header.
    let selection = Selection {
        ports: vec![echo.port],
        inject_cgroups: vec![cgroup.path().to_path_buf()],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let cases = peers::integrity_client(&dir, echo.port, None)?;
    ensure!(cases.len() >= 16, "only {} cases ran", cases.len());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for case in &cases {
        ensure!(
            case.added.as_ref().is_some_and(Vec::is_empty)
                && case.sent_sha256 == case.echoed_sha256,
            "{}: a process outside the cgroup had its bytes changed: {case:?}",
            case.case
        );
    }
    let injected = tracewire_tests::metrics::value(
        &agent.metrics()?,
        "tracewire_injection_total",
        "outcome=\"injected\"",
    );
    ensure!(injected == Some(0.0), "injections counted: {injected:?}");

    // The injection programs were there, and leave with the agent (sock_ops link, sk_msg).
    let mark = agent.programs_mark()?;
    let loaded: Vec<String> = tracewire_tests::bpf::agent_programs_since(mark)?
        .into_iter()
        .map(|p| p.name)
        .collect();
    for wanted in ["tw_sockops", "tw_inject", "tw_data_ctx"] {
        ensure!(
            loaded.iter().any(|name| name == wanted),
            "{wanted} is not loaded while injecting: {loaded:?}"
        );
    }
    ensure!(
        agent.stop()?.code() == Some(0),
        "the agent did not exit cleanly"
    );
    tracewire_tests::bpf::wait_until_agent_programs_gone(mark, std::time::Duration::from_secs(3))?;
    Ok(())
}

/// The span of `path` of kind server in `pid`, and the client span that `pid` made for
/// `child_path`.
fn pair(
    receiver: &OtlpReceiver,
    pid: u32,
    path: &str,
    child_path: &str,
) -> Result<(SpanRecord, SpanRecord)> {
    Ok((
        receiver.wait_for(&SpanQuery::server(pid, path))?,
        receiver.wait_for(&SpanQuery::client(pid, child_path))?,
    ))
}

fn child_of(child: &SpanRecord, parent: &SpanRecord) -> bool {
    child.span.trace_id == parent.span.trace_id && child.span.parent_span_id == parent.span.span_id
}

fn encloses(outer: &SpanRecord, inner: &SpanRecord) -> bool {
    outer.start() <= inner.start() && inner.end() <= outer.end()
}

/// curl-like load → Python (ThreadingHTTPServer + urllib) → Java (HttpServer thread pool +
/// HttpURLConnection) → Go net/http, all in the injection cgroup (Java in a child cgroup made
/// after the agent started), 50 requests at once: every request is one trace with the full
/// tree, exactly.
#[test]
fn one_trace_across_python_java_and_go_at_50_concurrent() -> Result<()> {
    const REQUESTS: usize = 50;
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("inject-chain")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let go = Runtime::Go.start_server(&dir, "tw-go")?;
    let java = Runtime::Java.start_proxy(&dir, "tw-java", &go.url("/leaf"))?;
    let python = peers::python_front_server(&dir, "tw-python", java.port)?;
    let _agent = inject_agent(
        &receiver,
        &cgroup,
        &[go.serving.pid, python.serving.pid],
        &dir,
    )?;
    // Java goes into a cgroup made below the selected one after the agent started (as a new
    // pod's would be): the agent picks it up within a second, for tracing and injection.
    let late = cgroup.child("late")?;
    late.add(java.serving.pid)?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    warm_up(python.port, "/front/warm")?;
    peers::python_load(&dir, &python.url("/front"), REQUESTS)?;

    let mut correct = 0;
    let mut wrong = Vec::new();
    for i in 0..REQUESTS {
        let (front, front_call) = pair(
            &receiver,
            python.serving.pid,
            &format!("/front/{i}"),
            &format!("/back/{i}"),
        )?;
        let (middle, middle_call) = pair(
            &receiver,
            java.serving.pid,
            &format!("/back/{i}"),
            &format!("/leaf/{i}"),
        )?;
        let leaf = receiver.wait_for(&SpanQuery::server(go.serving.pid, &format!("/leaf/{i}")))?;
        let checks = [
            (
                "python call is a child of the python request",
                child_of(&front_call, &front),
            ),
            (
                "java request is a child of the python call",
                child_of(&middle, &front_call),
            ),
            (
                "java call is a child of the java request",
                child_of(&middle_call, &middle),
            ),
            (
                "go request is a child of the java call",
                child_of(&leaf, &middle_call),
            ),
            (
                "python request is the root",
                front.span.parent_span_id.is_empty(),
            ),
            (
                "parents enclose their children",
                encloses(&front, &front_call) && encloses(&middle, &middle_call),
            ),
        ];
        let failed: Vec<&str> = checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| *what)
            .collect();
        if failed.is_empty() {
            correct += 1;
        } else {
            wrong.push(format!(
                "request {i}: {}\n  {front}\n  {front_call}\n  {middle}\n  {middle_call}\n  {leaf}",
                failed.join(", ")
            ));
        }
    }
    // One trace per request: no span of one request in another's trace.
    let mut traces = std::collections::HashSet::new();
    for i in 0..REQUESTS {
        let front = receiver.wait_for(&SpanQuery::server(
            python.serving.pid,
            &format!("/front/{i}"),
        ))?;
        traces.insert(hex(&front.span.trace_id));
    }
    eprintln!("correct trees (python -> java -> go): {correct}/{REQUESTS}");
    ensure!(
        traces.len() == REQUESTS,
        "{} distinct traces for {REQUESTS} requests",
        traces.len()
    );
    ensure!(
        wrong.is_empty(),
        "{} of {REQUESTS} trees are wrong (thread-per-request must be exact):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// Node's event loop serves many requests on one thread, so a call cannot always be tied to
/// the request that caused it. The rule: linked when exactly one request is in flight on the
/// loop, a new trace otherwise, never a wrong parent; and the next hop always joins the call.
/// Node's proxy calls `/back/{path with '/' as '-'}`.
#[test]
fn node_proxy_links_when_it_can_and_never_to_the_wrong_request() -> Result<()> {
    const REQUESTS: usize = 50;
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("inject-node")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let backend = peers::python_http_server(&dir, "tw-backend")?;
    let node = Runtime::Node.start_proxy(&dir, "tw-node", &backend.url("/back"))?;
    let _agent = inject_agent(
        &receiver,
        &cgroup,
        &[backend.serving.pid, node.serving.pid],
        &dir,
    )?;
    warm_up(node.port, "/front/warm")?;
    // Sequential: one request in flight at a time, so every call is linked.
    for i in 0..5 {
        peers::python_load(&dir, &node.url(&format!("/seq{i}")), 1)?;
    }
    peers::python_load(&dir, &node.url("/front"), REQUESTS)?;

    for i in 0..5 {
        let (server, call) = pair(
            &receiver,
            node.serving.pid,
            &format!("/seq{i}/0"),
            &format!("/back/seq{i}-0"),
        )?;
        ensure!(
            child_of(&call, &server),
            "with one request in flight the call must be linked:\n  {server}\n  {call}"
        );
    }
    let mut linked = 0;
    let mut wrong = Vec::new();
    for i in 0..REQUESTS {
        let (server, call) = pair(
            &receiver,
            node.serving.pid,
            &format!("/front/{i}"),
            &format!("/back/front-{i}"),
        )?;
        let next = receiver.wait_for(&SpanQuery::server(
            backend.serving.pid,
            &format!("/back/front-{i}"),
        ))?;
        if !child_of(&next, &call) {
            wrong.push(format!(
                "request {i}: the backend did not join the call\n  {call}\n  {next}"
            ));
        }
        if child_of(&call, &server) {
            linked += 1;
        } else if !call.span.parent_span_id.is_empty() {
            wrong.push(format!(
                "request {i}: the call has a parent that is not its request\n  {server}\n  {call}"
            ));
        }
    }
    eprintln!(
        "node proxy at {REQUESTS} concurrent: {linked}/{REQUESTS} calls linked, the rest new traces"
    );
    ensure!(wrong.is_empty(), "wrong links:\n{}", wrong.join("\n"));
    Ok(())
}

/// A service instrumented with the official OpenTelemetry SDK in the middle of the chain:
/// Python (agent, injected) → SDK service → python http.server (agent). Its spans and ours
/// form one trace in both directions: it continues the traceparent the kernel wrote, and the
/// agent's next server span continues the one the SDK wrote.
#[test]
fn spans_of_the_opentelemetry_sdk_and_ours_form_one_trace() -> Result<()> {
    const REQUESTS: usize = 10;
    let cgroup = CgroupGuard::create()?;
    let dir = TempDir::new("inject-sdk")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::HttpProtobuf)?;
    let leaf = peers::python_http_server(&dir, "tw-leaf")?;
    // Outside the cgroup: the SDK instruments it, not the agent.
    let sdk = peers::otel_sdk_service(&dir, &receiver.endpoint(), &leaf.url("/leaf"))?;
    let front = peers::python_front_server(&dir, "tw-front", sdk.port)?;
    let _agent = inject_agent(
        &receiver,
        &cgroup,
        &[leaf.serving.pid, front.serving.pid],
        &dir,
    )?;
    warm_up(front.port, "/front/warm")?;
    peers::python_load(&dir, &front.url("/front"), REQUESTS)?;

    let mut wrong = Vec::new();
    for i in 0..REQUESTS {
        let (ours, our_call) = pair(
            &receiver,
            front.serving.pid,
            &format!("/front/{i}"),
            &format!("/back/{i}"),
        )?;
        let (theirs, their_call) = pair(
            &receiver,
            sdk.serving.pid,
            &format!("/back/{i}"),
            &format!("/leaf/{i}"),
        )?;
        let last =
            receiver.wait_for(&SpanQuery::server(leaf.serving.pid, &format!("/leaf/{i}")))?;
        for (what, ok) in [
            (
                "our call is a child of our request",
                child_of(&our_call, &ours),
            ),
            (
                "the SDK's server span continues our call",
                child_of(&theirs, &our_call),
            ),
            (
                "the SDK's call is a child of its server span",
                child_of(&their_call, &theirs),
            ),
            (
                "our server span continues the SDK's call",
                child_of(&last, &their_call),
            ),
        ] {
            if !ok {
                wrong.push(format!(
                    "request {i}: {what}\n  {ours}\n  {our_call}\n  {theirs}\n  {their_call}\n  {last}"
                ));
            }
        }
    }
    ensure!(wrong.is_empty(), "broken links:\n{}", wrong.join("\n"));
    Ok(())
}
