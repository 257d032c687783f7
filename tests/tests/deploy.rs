//! The deployment artefacts are real, tested things:
//! - `tracewire install-systemd` installs the binary, the unit and the configuration; systemd's
//!   own checker accepts the unit, its exposure score stays low, and the system-call filter and
//!   address families it sets allow every call the agent makes while it traces (the agent runs
//!   under strace here, exporting to a real receiver);
//! - the Kubernetes manifests validate against the Kubernetes OpenAPI schemas (offline, strict),
//!   and the agent accepts the configuration its ConfigMap carries;
//! - a process in a container's cgroup gets `container.id` and `k8s.pod.uid`, and the agent's
//!   own `OTEL_RESOURCE_ATTRIBUTES` reach every resource; without Kubernetes credentials the
//!   agent says so in one line and exports all the same;
//! - with a (fake) Kubernetes API in a kubeconfig, the process's resource names its pod,
//!   namespace, node and Deployment.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tracewire_tests::agent::Selection;
use tracewire_tests::peers::{self, otel_sdk_python, require_tool};
use tracewire_tests::{
    AgentGuard, CgroupGuard, Export, OtlpProtocol, OtlpReceiver, SpanQuery, TempDir, agent_binary,
    workspace_dir,
};

fn run(command: &mut Command, what: &str) -> Result<std::process::Output> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// The unit's value of `key` (the last assignment wins, as in systemd).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

#[test]
fn install_systemd_writes_a_unit_that_systemd_accepts() -> Result<()> {
    let dir = TempDir::new("install-systemd")?;
    let root = dir.join("root");
    let out = run(
        Command::new(agent_binary()?)
            .args(["install-systemd", "--no-start", "--root"])
            .arg(&root),
        "tracewire install-systemd --root",
    )?;
    let said = String::from_utf8_lossy(&out.stdout);
    let binary = root.join("usr/local/bin/tracewire");
    let unit_path = root.join("etc/systemd/system/tracewire.service");
    let config = root.join("etc/tracewire/config.yaml");
    for (path, mode) in [(&binary, 0o755), (&unit_path, 0o644), (&config, 0o600)] {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("install-systemd did not write {}: {said}", path.display()))?;
        ensure!(
            meta.permissions().mode() & 0o777 == mode,
            "{} has mode {:o}, not {mode:o}",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    // The installed binary is the agent, and it accepts the installed configuration.
    run(
        Command::new(&binary)
            .arg("config")
            .arg("--config")
            .arg(&config),
        "the installed agent reading the installed config",
    )?;
    // A second run keeps the operator's configuration.
    std::fs::write(&config, "exporter: stdout\n")?;
    run(
        Command::new(agent_binary()?)
            .args(["install-systemd", "--no-start", "--root"])
            .arg(&root),
        "install-systemd again",
    )?;
    ensure!(
        std::fs::read_to_string(&config)? == "exporter: stdout\n",
        "install-systemd overwrote the existing configuration"
    );

    // systemd's checker, on the unit as installed: only the binary's place is this test's.
    let unit = std::fs::read_to_string(&unit_path)?;
    let checked = dir.join("tracewire.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/local/bin/tracewire", &binary.to_string_lossy()),
    )?;
    let analyze = require_tool("systemd-analyze")?;
    let verify = run(
        Command::new(&analyze).arg("verify").arg(&checked),
        "systemd-analyze verify",
    )?;
    // It warns (unknown keys, bad values) on stderr and still exits 0.
    let complaints = String::from_utf8_lossy(&verify.stderr);
    ensure!(
        complaints.trim().is_empty(),
        "systemd-analyze verify complained about the unit:\n{complaints}"
    );
    let security = run(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&checked),
        "systemd-analyze security",
    )?;
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("tracewire.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no exposure level in:\n{report}"))?;
    ensure!(
        exposure <= 3.0,
        "the unit's exposure level is {exposure} (was 2.5): a hardening option was lost\n{report}"
    );
    Ok(())
}

/// Every system call of `@group` and nested groups, from systemd's own table.
fn syscall_groups(analyze: &Path) -> Result<std::collections::HashMap<String, Vec<String>>> {
    let out = run(
        Command::new(analyze).arg("syscall-filter"),
        "systemd-analyze syscall-filter",
    )?;
    let mut groups = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            let name = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            groups.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(group) = current.as_ref().and_then(|g| groups.get_mut(g)) {
            let member = line.trim();
            if !member.is_empty() && !member.starts_with('#') {
                group.push(member.to_string());
            }
        }
    }
    Ok(groups)
}

fn expand(
    item: &str,
    groups: &std::collections::HashMap<String, Vec<String>>,
    out: &mut BTreeSet<String>,
) {
    match groups.get(item) {
        Some(members) => {
            for m in members {
                expand(m, groups, out);
            }
        }
        None => {
            out.insert(item.to_string());
        }
    }
}

#[test]
fn the_units_system_call_filter_allows_what_the_agent_does() -> Result<()> {
    let dir = TempDir::new("syscall-filter")?;
    let unit = std::fs::read_to_string(workspace_dir().join("deploy/systemd/tracewire.service"))?;
    let analyze = require_tool("systemd-analyze")?;
    let strace = require_tool("strace")?;
    let groups = syscall_groups(&analyze)?;
    let mut allowed = BTreeSet::new();
    let filter =
        unit_value(&unit, "SystemCallFilter").context("the unit has no SystemCallFilter")?;
    for item in filter.split_whitespace() {
        expand(item, &groups, &mut allowed);
    }
    let families = unit_value(&unit, "RestrictAddressFamilies")
        .context("the unit has no RestrictAddressFamilies")?;

    // The agent traces a request end to end under strace: load, attach, capture, export over
    // OTLP/gRPC, serve /metrics, stop.
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::python_http_server(&dir, "syscalls")?;
    let trace = dir.join("agent.strace");
    let selection = Selection {
        ports: vec![server.port],
        launcher: vec![
            strace.into_os_string(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            trace.clone().into_os_string(),
        ],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let run_ = peers::curl(&dir, &server.url("/ok.html"), &[])?;
    receiver.wait_for(&SpanQuery::server(server.serving.pid, "/ok.html"))?;
    receiver.wait_for(&SpanQuery::client(run_.process.pid, "/ok.html"))?;
    agent.metrics()?;
    // SIGINT to the agent itself (strace's child) so its shutdown is traced too; strace ends
    // with it.
    let strace_pid = agent.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .context("reading strace's children")?;
    let agent_pid: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("strace {strace_pid} has no child"))?;
    // SAFETY: kill(2) on the pid of the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGINT) };
    agent.stop()?;

    let text = std::fs::read_to_string(&trace)?;
    let mut used = BTreeSet::new();
    let mut socket_families = BTreeSet::new();
    for line in text.lines() {
        // `PID name(args) = result`, or `PID <... name resumed>`.
        let Some(call) = line.split_whitespace().nth(1) else {
            continue;
        };
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        used.insert(name.to_string());
        if name == "socket" {
            socket_families.insert(args.split(',').next().unwrap_or_default().to_string());
        }
    }
    ensure!(
        used.contains("bpf") && used.contains("perf_event_open"),
        "strace saw no bpf/perf_event_open: the trace is not the agent's\n{}",
        text.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // execve is strace starting the agent; exit_group ends it.
    let refused: Vec<&String> = used
        .iter()
        .filter(|s| !allowed.contains(*s) && *s != "execve")
        .collect();
    ensure!(
        refused.is_empty(),
        "SystemCallFilter={filter} would refuse {refused:?}: the agent made these calls"
    );
    let refused_families: Vec<&String> = socket_families
        .iter()
        .filter(|f| {
            !families
                .split_whitespace()
                .any(|allowed| allowed == f.as_str())
        })
        .collect();
    ensure!(
        refused_families.is_empty(),
        "RestrictAddressFamilies={families} would refuse sockets of {refused_families:?}"
    );
    Ok(())
}

/// Each resource of a Kustomization, recursively.
fn kustomize_resources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let file = dir.join("kustomization.yaml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut in_resources = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_resources = line.trim_end() == "resources:";
            continue;
        }
        if in_resources && let Some(item) = line.trim().strip_prefix("- ") {
            let path = dir.join(item.trim());
            ensure!(
                path.exists(),
                "{} lists {item}, which does not exist",
                file.display()
            );
            if path.is_dir() {
                kustomize_resources(&path, out)?;
            } else {
                out.push(path);
            }
        }
    }
    Ok(())
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() -> Result<()> {
    let base = workspace_dir().join("deploy/kubernetes");
    let mut files = Vec::new();
    kustomize_resources(&base, &mut files)?;
    kustomize_resources(&base.join("collector"), &mut files)?;
    ensure!(files.len() >= 5, "too few manifests found: {files:?}");
    let validate = otel_sdk_python()?
        .parent()
        .context("the venv's bin directory")?
        .join("kubernetes-validate");
    // The oldest Kubernetes with every field used (appArmorProfile: 1.30) and the newest.
    for version in ["1.30.0", "1.37.0"] {
        let out = run(
            Command::new(&validate)
                .args(["--strict", "-k", version])
                .args(&files),
            &format!("kubernetes-validate --strict -k {version}"),
        )?;
        let said = String::from_utf8_lossy(&out.stdout);
        let passed = said.lines().filter(|l| l.contains(" passed ")).count();
        ensure!(
            passed >= files.len() && !said.contains("ERROR") && !said.contains("WARN"),
            "kubernetes-validate {version}:\n{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The agent accepts the configuration the ConfigMap carries.
    let configmap = std::fs::read_to_string(base.join("configmap.yaml"))?;
    let body: String = configmap
        .split_once("tracewire.yaml: |\n")
        .map(|(_, rest)| rest)
        .context("configmap.yaml has no tracewire.yaml")?
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or_default()))
        .collect();
    let dir = TempDir::new("k8s-config")?;
    let config = dir.join("tracewire.yaml");
    std::fs::write(&config, &body)?;
    let out = run(
        Command::new(agent_binary()?)
            .arg("config")
            .arg("--config")
            .arg(&config),
        "tracewire config on the ConfigMap's file",
    )?;
    let effective = String::from_utf8_lossy(&out.stdout);
    ensure!(
        effective.contains("otel-collector.tracewire.svc:4317"),
        "the ConfigMap's endpoint is not in effect:\n{effective}"
    );
    Ok(())
}

/// A pod's and a container's cgroups as the kubelet's systemd driver and containerd name them
/// (`kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`), under this test's own
/// cgroup.
struct PodCgroups {
    container: CgroupGuard,
    pod: CgroupGuard,
    root: CgroupGuard,
}

impl PodCgroups {
    fn create(pod_uid: &str, container_id: &str) -> Result<Self> {
        let root = CgroupGuard::create()?;
        let pod = root.child(&format!(
            "kubepods-besteffort-pod{}.slice",
            pod_uid.replace('-', "_")
        ))?;
        let container = pod.child(&format!("cri-containerd-{container_id}.scope"))?;
        Ok(Self {
            container,
            pod,
            root,
        })
    }

    fn add(&self, pid: u32) -> Result<()> {
        self.container.add(pid)
    }

    /// Removes the three, innermost first (their processes must have ended).
    fn remove(self) -> Result<()> {
        self.container.remove()?;
        self.pod.remove()?;
        self.root.remove()
    }
}

#[test]
fn a_process_in_a_pods_container_cgroup_carries_its_ids() -> Result<()> {
    const ID: &str = "5d3c2b1a09f8e7d6c5b4a3928171605f4e3d2c1b0a9f8e7d6c5b4a3928171605";
    const UID: &str = "0b6ac3f2-51d4-4e6b-8f0e-2c7d9a1b3e45";
    let dir = TempDir::new("container-ids")?;
    let container = PodCgroups::create(UID, ID)?;

    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::python_http_server(&dir, "in-a-pod")?;
    container.add(server.serving.pid)?;
    let selection = Selection {
        ports: vec![server.port],
        env: vec![(
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "k8s.node.name=node-7,k8s.cluster.name=test%20cluster,service.name=not-this".into(),
        )],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let run_ = peers::curl(&dir, &server.url("/ok.html"), &[])?;
    let served = receiver.wait_for(&SpanQuery::server(server.serving.pid, "/ok.html"))?;
    let made = receiver.wait_for(&SpanQuery::client(run_.process.pid, "/ok.html"))?;

    for (key, want) in [
        ("container.id", Some(ID)),
        ("k8s.pod.uid", Some(UID)),
        ("k8s.node.name", Some("node-7")),
        ("k8s.cluster.name", Some("test cluster")),
        ("service.name", Some("in-a-pod")),
    ] {
        ensure!(
            served.resource_str(key) == want,
            "the server's resource has {key}={:?}, not {want:?}",
            served.resource_str(key)
        );
    }
    // curl runs outside any container: no ids, but the node's attributes.
    if made.resource_str("container.id").is_some() || made.resource_str("k8s.pod.uid").is_some() {
        bail!(
            "curl, outside any container, got container ids: {:?}",
            made.resource
        );
    }
    ensure!(
        made.resource_str("k8s.node.name") == Some("node-7"),
        "curl's resource lacks k8s.node.name"
    );
    // No Kubernetes API here: one line says what is not enriched and why, and nothing else
    // about it (the spans above were exported all the same).
    if served.resource_str("k8s.pod.name").is_some() {
        bail!("a pod name without an API: {:?}", served.resource);
    }
    let stderr = agent.stderr()?;
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("kubernetes:"))
        .collect();
    ensure!(
        lines.len() == 1
            && lines
                .iter()
                .all(|l| l.contains("container.id and k8s.pod.uid only")),
        "without Kubernetes credentials the agent should log one line saying so, not {lines:?}"
    );
    drop(server);
    container.remove()?;
    Ok(())
}

/// `tracewire_kubernetes_pods` reaches `want` within a few seconds.
fn wait_for_pods(agent: &AgentGuard, want: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = agent.metrics()?;
        let got = tracewire_tests::metrics::value(&text, "tracewire_kubernetes_pods", "");
        if got == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "tracewire_kubernetes_pods is {got:?}, not {want}, after 15 s\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pods_process_gets_its_name_namespace_and_owner_from_the_kubernetes_api() -> Result<()> {
    const ID: &str = "8e7d6c5b4a3928171605f4e3d2c1b0a95d3c2b1a09f8e7d6c5b4a3928171605f";
    const UID: &str = "7c1e9a4d-2b3f-4c5d-8e6f-0a1b2c3d4e5f";
    let dir = TempDir::new("kube-api")?;
    let container = PodCgroups::create(UID, ID)?;

    let api = peers::fake_kube_api(&dir, UID)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = peers::python_http_server(&dir, "checkout")?;
    container.add(server.serving.pid)?;
    let selection = Selection {
        ports: vec![server.port],
        env: vec![
            ("KUBECONFIG".into(), api.kubeconfig.display().to_string()),
            ("K8S_NODE_NAME".into(), "node-7".into()),
        ],
        ..Selection::default()
    };
    let agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    wait_for_pods(&agent, 1.0)?;
    let run_ = peers::curl(&dir, &server.url("/ok.html"), &[])?;
    let served = receiver.wait_for(&SpanQuery::server(server.serving.pid, "/ok.html"))?;
    let made = receiver.wait_for(&SpanQuery::client(run_.process.pid, "/ok.html"))?;

    for (key, want) in [
        ("k8s.pod.name", Some("checkout-7d9f8b6c5-x2x4q")),
        ("k8s.namespace.name", Some("shop")),
        ("k8s.node.name", Some("node-7")),
        ("k8s.deployment.name", Some("checkout")),
        ("k8s.replicaset.name", Some("checkout-7d9f8b6c5")),
        ("k8s.statefulset.name", None),
        ("container.id", Some(ID)),
        ("k8s.pod.uid", Some(UID)),
        ("service.name", Some("checkout")),
    ] {
        ensure!(
            served.resource_str(key) == want,
            "the server's resource has {key}={:?}, not {want:?}: {:?}\n{}",
            served.resource_str(key),
            served.resource,
            agent.logs()
        );
    }
    // curl is in no pod: nothing from the API.
    if made.resource_str("k8s.pod.name").is_some() || made.resource_str("k8s.pod.uid").is_some() {
        bail!("curl, in no pod, got pod metadata: {:?}", made.resource);
    }
    // One list and a watch, both of this node's pods only.
    let requests = api.requests()?;
    let of_node = |r: &&String| r.contains("fieldSelector=spec.nodeName%3Dnode-7");
    ensure!(
        requests
            .iter()
            .filter(of_node)
            .any(|r| !r.contains("watch=")),
        "no list of node-7's pods: {requests:?}"
    );
    ensure!(
        requests
            .iter()
            .filter(of_node)
            .any(|r| r.contains("watch=true")),
        "no watch of node-7's pods: {requests:?}"
    );
    ensure!(
        requests.iter().all(|r| of_node(&r)),
        "a request not scoped to node-7: {requests:?}"
    );
    ensure!(
        agent
            .stderr()?
            .contains("kubernetes: watching the pods of node node-7"),
        "the agent does not say it watches node-7's pods\n{}",
        agent.logs()
    );
    drop(agent);
    drop(server);
    drop(api);
    container.remove()?;
    Ok(())
}
