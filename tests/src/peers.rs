//! The programs the agent traces: servers on a free loopback port, clients that run to completion.
//! The servers are checked-in programs under `tests/peers/` (plus python's stock `http.server` and
//! nginx); every one answers `/ok` 200, `/fail` 500 and anything else 404.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::net::{free_port, wait_for_port};
use crate::process::{ChildGuard, Shutdown, run_to_completion};
use crate::tempdir::TempDir;

/// JVM start-up plus compiling the single-file source takes a few seconds on a 2-core machine.
const LISTEN_WAIT: Duration = Duration::from_secs(30);
const CLIENT_WAIT: Duration = Duration::from_secs(60);

/// What the agent should report as the resource of the process that made or served a request.
#[derive(Clone, Debug)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub service_name: String,
    /// Base name of `/proc/<pid>/exe`, as semconv defines `process.executable.name`.
    pub executable_name: String,
}

/// A server peer listening on `127.0.0.1:port`; `serving` is the process that handles requests
/// (for nginx the worker, not the master the test started).
#[derive(Debug)]
pub struct PeerServer {
    pub guard: ChildGuard,
    pub port: u16,
    pub serving: ProcessIdentity,
}

impl PeerServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A client peer that ran to completion.
#[derive(Debug)]
pub struct ClientRun {
    pub process: ProcessIdentity,
    pub stdout: String,
}

/// `name` on PATH (or in an sbin directory, which a non-login root PATH may lack).
pub fn require_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            anyhow!(
                "`{name}` is not installed (not on PATH): the end-to-end tests need it; \
                 `cargo xtask test` installs it"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The base name a binary will have in `/proc/<pid>/exe`: symlinks resolved, as the kernel does.
pub(crate) fn executable_name(binary: &Path) -> Result<String> {
    let real = binary
        .canonicalize()
        .with_context(|| format!("resolving {}", binary.display()))?;
    base_name(&real)
}

pub(crate) fn executable_name_of_pid(pid: u32) -> Result<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .with_context(|| format!("reading /proc/{pid}/exe"))?;
    base_name(&exe)
}

fn base_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// The real interpreter behind `python3`, symlinks resolved: a pyenv shim is a shell script (the
/// tests want the pid they hold to be python's own from the start), and running the resolved file
/// makes the process's `comm` and the base name of its `/proc/<pid>/exe` the same (`python3.11`).
pub fn python_interpreter() -> Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python3 = require_tool("python3").map_err(|e| format!("{e:#}"))?;
            let output = Command::new(&python3)
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .map_err(|e| format!("running {}: {e}", python3.display()))?;
            let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !output.status.success() || path.is_empty() {
                return Err(format!(
                    "{} could not name its interpreter",
                    python3.display()
                ));
            }
            PathBuf::from(&path)
                .canonicalize()
                .map_err(|e| format!("resolving {path}: {e}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Spawns `command` (a server about to listen on `port`) with `OTEL_SERVICE_NAME`, and waits
/// until it listens.
pub(crate) fn serve(
    dir: &TempDir,
    name: &str,
    mut command: Command,
    port: u16,
    service_name: &str,
) -> Result<PeerServer> {
    command.env("OTEL_SERVICE_NAME", service_name);
    let guard = ChildGuard::spawn(name, &mut command, dir.path(), Shutdown::Kill)?;
    listening(guard, port, service_name)
}

/// Starts `server`, waits until it listens on `port`, and names the serving process.
pub(crate) fn listening(
    mut guard: ChildGuard,
    port: u16,
    service_name: &str,
) -> Result<PeerServer> {
    wait_for_port(port, &mut guard, LISTEN_WAIT)?;
    let pid = guard.pid();
    let serving = ProcessIdentity {
        pid,
        service_name: service_name.to_string(),
        executable_name: executable_name_of_pid(pid)?,
    };
    Ok(PeerServer {
        guard,
        port,
        serving,
    })
}

/// `python3 -m http.server` serving a directory with `ok.html`, with `OTEL_SERVICE_NAME` set.
/// It speaks HTTP/1.0 (the module's default), and answers 404 for anything but `/ok.html`.
pub fn python_http_server(dir: &TempDir, service_name: &str) -> Result<PeerServer> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("ok.html"), "ok\n")?;
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&root)
        .env("OTEL_SERVICE_NAME", service_name)
        .env("PYTHONUNBUFFERED", "1");
    let guard = ChildGuard::spawn(
        "python-http-server",
        &mut command,
        dir.path(),
        Shutdown::Kill,
    )?;
    listening(guard, port, service_name)
}

/// `peers/logging_server.py`: a ThreadingHTTPServer whose handler writes one line to stderr per
/// request (`handling PATH for user=bob password=hunter2`), then http.server's access line.
pub fn python_logging_server(dir: &TempDir, service_name: &str) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("logging_server.py"))
        .arg(port.to_string())
        .env("OTEL_SERVICE_NAME", service_name)
        .env("PYTHONUNBUFFERED", "1");
    let guard = ChildGuard::spawn("python-logging", &mut command, dir.path(), Shutdown::Kill)?;
    listening(guard, port, service_name)
}

/// `peers/python_front.py`: a ThreadingHTTPServer whose `GET /front/N` calls
/// `http://127.0.0.1:{backend_port}/back/N` on the handling thread, then answers 200.
pub fn python_front_server(
    dir: &TempDir,
    service_name: &str,
    backend_port: u16,
) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("python_front.py"))
        .args([port.to_string(), backend_port.to_string()])
        .env("OTEL_SERVICE_NAME", service_name)
        .env("PYTHONUNBUFFERED", "1");
    let guard = ChildGuard::spawn("python-front", &mut command, dir.path(), Shutdown::Kill)?;
    listening(guard, port, service_name)
}

/// `peers/python_load.py`: `n` concurrent `GET {prefix}/{i}`; fails unless every answer is 200.
pub fn python_load(dir: &TempDir, prefix: &str, n: usize) -> Result<()> {
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("python_load.py"))
        .args([prefix.to_string(), n.to_string()]);
    crate::process::run_to_completion(
        "python-load",
        &mut command,
        dir.path(),
        std::time::Duration::from_secs(60),
    )?;
    Ok(())
}

/// nginx from `peers/nginx.conf.template`: a master and one worker. nginx rewrites its
/// environment when it sets the process title, so no `OTEL_SERVICE_NAME` is set and the service
/// name is the executable's, `nginx`.
pub fn nginx_server(dir: &TempDir) -> Result<PeerServer> {
    nginx_server_with(dir, None)
}

/// nginx as [`nginx_server`], serving HTTPS with `cert` when given.
pub fn nginx_server_with(dir: &TempDir, cert: Option<&SelfSigned>) -> Result<PeerServer> {
    let nginx = require_tool("nginx")?;
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let template_path = crate::peers_dir().join("nginx.conf.template");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let prefix_text = prefix
        .to_str()
        .context("temporary directory is not UTF-8")?;
    let config = template
        .replace("@PORT@", &port.to_string())
        .replace(
            "@TLS@",
            &cert.map_or_else(String::new, |c| {
                format!(
                    " ssl;\n        ssl_certificate {};\n        ssl_certificate_key {}",
                    c.cert.display(),
                    c.key.display()
                )
            }),
        )
        .replace("@DIR@", prefix_text);
    let config_path = prefix.join("nginx.conf");
    std::fs::write(&config_path, config)?;

    let mut command = Command::new(&nginx);
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .env_remove("OTEL_SERVICE_NAME");
    // SIGTERM makes the master take its worker down; a SIGKILLed master would orphan it.
    let shutdown = Shutdown::Signal {
        signal: libc::SIGTERM,
        grace: Duration::from_secs(5),
    };
    let mut guard = ChildGuard::spawn("nginx", &mut command, dir.path(), shutdown)?;
    wait_for_port(port, &mut guard, LISTEN_WAIT)?;
    let worker = nginx_worker(guard.pid())?;
    let serving = ProcessIdentity {
        pid: worker,
        service_name: "nginx".to_string(),
        executable_name: executable_name_of_pid(worker)?,
    };
    Ok(PeerServer {
        guard,
        port,
        serving,
    })
}

/// The single worker of the nginx master `master`.
fn nginx_worker(master: u32) -> Result<u32> {
    let children = format!("/proc/{master}/task/{master}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed =
            std::fs::read_to_string(&children).with_context(|| format!("reading {children}"))?;
        let pids: Vec<u32> = listed
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        match pids.as_slice() {
            [worker] => return Ok(*worker),
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => bail!("nginx master {master} has workers {pids:?}, expected exactly one"),
        }
    }
}

/// `curl` for one request: status code and the client's local port, as curl itself reports them.
#[derive(Debug)]
pub struct CurlRun {
    pub process: ProcessIdentity,
    pub status: u16,
    pub local_port: u16,
}

/// One `GET /ok.html` from curl to a python http.server, HTTP/1.0 as python speaks it; fails
/// unless the answer is 200.
pub fn curl_ok(dir: &TempDir, python: &PeerServer, user_agent: &str) -> Result<CurlRun> {
    let run = curl(
        dir,
        &python.url("/ok.html"),
        &["--http1.0", "--user-agent", user_agent],
    )?;
    anyhow::ensure!(
        run.status == 200,
        "curl GET /ok.html: {} instead of 200",
        run.status
    );
    Ok(run)
}

/// Runs `curl URL` with `extra` options; curl's service name is its executable's, `curl`.
pub fn curl(dir: &TempDir, url: &str, extra: &[&str]) -> Result<CurlRun> {
    let binary = require_tool("curl")?;
    let mut command = Command::new(&binary);
    command
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--output",
            "/dev/null",
        ])
        .args(["--write-out", "%{http_code} %{local_port}"])
        .args(extra)
        .arg(url)
        .env_remove("OTEL_SERVICE_NAME");
    let finished = run_to_completion("curl", &mut command, dir.path(), CLIENT_WAIT)?;
    let (status, local_port) = finished
        .stdout
        .trim()
        .split_once(' ')
        .and_then(|(status, port)| Some((status.parse().ok()?, port.parse().ok()?)))
        .with_context(|| format!("curl printed {:?}, expected \"CODE PORT\"", finished.stdout))?;
    Ok(CurlRun {
        process: ProcessIdentity {
            pid: finished.pid,
            service_name: "curl".to_string(),
            executable_name: executable_name(&binary)?,
        },
        status,
        local_port,
    })
}

/// A language runtime with a server mode and a client mode in `tests/peers/`.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    /// `node_http.js` (core `http` module).
    Node,
    /// `JavaHttp.java` (com.sun.net.httpserver and java.net.http.HttpClient), single-file source.
    Java,
    /// `go_http/` (net/http), built once per run into the target directory.
    Go,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Java => "java",
            Self::Go => "go",
        }
    }

    /// The program to run and the arguments that select server or client mode.
    fn command(self, mode_args: &[String]) -> Result<(Command, PathBuf)> {
        let (binary, mut leading) = match self {
            Self::Node => (
                require_tool("node")?,
                vec![crate::peers_dir().join("node_http.js")],
            ),
            Self::Java => {
                require_tool("javac")?;
                (
                    require_tool("java")?,
                    vec![crate::peers_dir().join("JavaHttp.java")],
                )
            }
            Self::Go => (go_peer_binary()?, Vec::new()),
        };
        leading.extend(mode_args.iter().map(PathBuf::from));
        let mut command = Command::new(&binary);
        command.args(leading);
        Ok((command, binary))
    }

    /// Starts the runtime's server on a free port with `OTEL_SERVICE_NAME=service_name`.
    pub fn start_server(self, dir: &TempDir, service_name: &str) -> Result<PeerServer> {
        let port = free_port()?;
        let (command, _) = self.command(&["server".to_string(), port.to_string()])?;
        serve(
            dir,
            &format!("{}-server", self.name()),
            command,
            port,
            service_name,
        )
    }

    /// Starts the runtime's proxy: `GET /x/N` calls `{downstream}/N` while serving, then answers
    /// 200 (Java: thread per request, HttpURLConnection; Node: the event loop, http.get).
    pub fn start_proxy(
        self,
        dir: &TempDir,
        service_name: &str,
        downstream: &str,
    ) -> Result<PeerServer> {
        ensure!(!matches!(self, Self::Go), "the Go peer has no proxy mode");
        let port = free_port()?;
        let (mut command, _) = self.command(&[
            "proxy".to_string(),
            port.to_string(),
            downstream.to_string(),
        ])?;
        command.env("OTEL_SERVICE_NAME", service_name);
        let name = format!("{}-proxy", self.name());
        let guard = ChildGuard::spawn(&name, &mut command, dir.path(), Shutdown::Kill)?;
        listening(guard, port, service_name)
    }

    /// Starts the runtime in another server `mode` (`node_http.js fanout`, `JavaHttp.java
    /// cold`) on a free port: its arguments are `mode PORT args...`.
    pub fn start_mode(
        self,
        dir: &TempDir,
        service_name: &str,
        mode: &str,
        args: &[String],
    ) -> Result<PeerServer> {
        let port = free_port()?;
        let mut mode_args = vec![mode.to_string(), port.to_string()];
        mode_args.extend_from_slice(args);
        let (mut command, _) = self.command(&mode_args)?;
        command.env("OTEL_SERVICE_NAME", service_name);
        let name = format!("{}-{mode}", self.name());
        let guard = ChildGuard::spawn(&name, &mut command, dir.path(), Shutdown::Kill)?;
        listening(guard, port, service_name)
    }

    /// Runs the runtime's client over `urls` in order (one process, so connections may be
    /// reused), sending `user_agent`; every response must have arrived.
    pub fn run_client(
        self,
        dir: &TempDir,
        service_name: &str,
        user_agent: &str,
        urls: &[String],
    ) -> Result<ClientRun> {
        let mut args = vec!["client".to_string(), user_agent.to_string()];
        args.extend_from_slice(urls);
        let (mut command, binary) = self.command(&args)?;
        command.env("OTEL_SERVICE_NAME", service_name);
        let name = format!("{}-client", self.name());
        let finished = run_to_completion(&name, &mut command, dir.path(), CLIENT_WAIT)?;
        ensure!(
            finished.stdout.lines().count() == urls.len(),
            "{name} answered {} of {} requests:\n{}{}",
            finished.stdout.lines().count(),
            urls.len(),
            finished.stdout,
            finished.stderr
        );
        Ok(ClientRun {
            process: ProcessIdentity {
                pid: finished.pid,
                service_name: service_name.to_string(),
                executable_name: executable_name(&binary)?,
            },
            stdout: finished.stdout,
        })
    }
}

/// Builds `peers/go_http` once per test binary into `<target>/go/bin`, with Go's caches under
/// `<target>/go` so the build neither needs nor touches anything outside the workspace.
fn go_peer_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build_go_peer().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_go_peer() -> Result<PathBuf> {
    let go = require_tool("go")?;
    let root = crate::target_dir().join("go");
    let output_path = root.join("bin").join("go_http");
    let output = Command::new(&go)
        .args(["build", "-o"])
        .arg(&output_path)
        .arg(".")
        .current_dir(crate::peers_dir().join("go_http"))
        .env("GOCACHE", root.join("cache"))
        .env("GOPATH", root.join("path"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0")
        .output()
        .with_context(|| format!("running {} build", go.display()))?;
    ensure!(
        output.status.success(),
        "go build of tests/peers/go_http failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output_path)
}

/// `peers/inject_integrity.py echo`: a TCP echo server (not HTTP).
pub fn integrity_echo_server(dir: &TempDir) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("inject_integrity.py"))
        .args(["echo", &port.to_string()])
        .env("OTEL_SERVICE_NAME", "tw-echo");
    let guard = ChildGuard::spawn("integrity-echo", &mut command, dir.path(), Shutdown::Kill)?;
    listening(guard, port, "tw-echo")
}

/// One case of `peers/inject_integrity.py client`: what was sent, what came back, and the
/// `traceparent` lines that were inserted (None: something else changed).
#[derive(Debug, serde::Deserialize)]
pub struct IntegrityCase {
    pub case: String,
    pub sent: u64,
    pub echoed: u64,
    pub sent_sha256: String,
    pub echoed_sha256: String,
    pub added: Option<Vec<String>>,
}

/// Runs `peers/inject_integrity.py client` against the echo server, in `cgroup` when given
/// (the process moves itself there before it opens a connection).
pub fn integrity_client(
    dir: &TempDir,
    echo_port: u16,
    cgroup: Option<&Path>,
) -> Result<Vec<IntegrityCase>> {
    let script = crate::peers_dir().join("inject_integrity.py");
    let python = python_interpreter()?;
    let mut command = match cgroup {
        Some(cgroup) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
                .arg("sh")
                .arg(cgroup)
                .arg(&python);
            c
        }
        None => Command::new(&python),
    };
    command
        .arg(&script)
        .args(["client", &echo_port.to_string()])
        .env("OTEL_SERVICE_NAME", "tw-integrity");
    let finished = run_to_completion(
        "integrity-client",
        &mut command,
        dir.path(),
        Duration::from_secs(120),
    )?;
    finished
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("integrity client printed {line}"))
        })
        .collect()
}

/// The interpreter of the OpenTelemetry SDK virtualenv `cargo xtask setup --test-peers` makes
/// (`TRACEWIRE_OTEL_PYTHON`, or its default place).
pub fn otel_sdk_python() -> Result<PathBuf> {
    let python = std::env::var_os("TRACEWIRE_OTEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".local/share/tracewire/otel-sdk-venv/bin/python")
        });
    ensure!(
        python.is_file(),
        "no OpenTelemetry SDK interpreter at {}: run `cargo xtask setup --test-peers`",
        python.display()
    );
    Ok(python)
}

/// `peers/otel_sdk_service.py`: a service instrumented with the official OpenTelemetry Python
/// SDK, exporting to `otlp_endpoint` over OTLP/HTTP; `GET /x/N` calls `{downstream}/N`.
pub fn otel_sdk_service(
    dir: &TempDir,
    otlp_endpoint: &str,
    downstream: &str,
) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(otel_sdk_python()?);
    command
        .arg(crate::peers_dir().join("otel_sdk_service.py"))
        .args([port.to_string(), downstream.to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("PYTHONUNBUFFERED", "1");
    let guard = ChildGuard::spawn("otel-sdk-service", &mut command, dir.path(), Shutdown::Kill)?;
    listening(guard, port, "tw-sdk")
}

/// A gRPC implementation with a server and a client in `tests/peers/`, serving and calling
/// `tracewire.test.Echo` the same way.
#[derive(Clone, Copy, Debug)]
pub enum GrpcPeer {
    /// `grpc_service.py` on grpcio (C-core), from the peer virtualenv.
    Grpcio,
    /// `grpc_node.js` on @grpc/grpc-js (pure JS over Node's http2), from the npm folder.
    GrpcJs,
}

/// The `node_modules` holding the Node peers' npm packages (`TRACEWIRE_NODE_MODULES`, or the
/// place `cargo xtask setup --test-peers` installs them).
pub fn node_peer_modules() -> Result<PathBuf> {
    let modules = std::env::var_os("TRACEWIRE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".local/share/tracewire/node-peers/node_modules")
        });
    ensure!(
        modules.join("@grpc/grpc-js").is_dir(),
        "@grpc/grpc-js is not installed in {}: run `cargo xtask setup --test-peers`",
        modules.display()
    );
    Ok(modules)
}

impl GrpcPeer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpcio => "grpcio",
            Self::GrpcJs => "grpc-js",
        }
    }

    fn command(self, args: &[String]) -> Result<(Command, PathBuf)> {
        let (binary, script) = match self {
            Self::Grpcio => (otel_sdk_python()?, "grpc_service.py"),
            Self::GrpcJs => (require_tool("node")?, "grpc_node.js"),
        };
        let mut command = Command::new(&binary);
        command.arg(crate::peers_dir().join(script)).args(args);
        match self {
            Self::Grpcio => {
                command.env("PYTHONUNBUFFERED", "1");
            }
            Self::GrpcJs => {
                command.env("NODE_PATH", node_peer_modules()?);
            }
        }
        Ok((command, binary))
    }

    /// The server, on a free loopback port.
    pub fn start_server(self, dir: &TempDir, service_name: &str) -> Result<PeerServer> {
        let port = free_port()?;
        let (command, _) = self.command(&["server".into(), port.to_string()])?;
        serve(
            dir,
            &format!("{}-server", self.name()),
            command,
            port,
            service_name,
        )
    }

    /// The grpcio client that makes 3 calls, prints `first`, waits for `go_file`, then makes 5
    /// more on the same connection: a connection older than an agent started in between.
    pub fn spawn_late_client(self, dir: &TempDir, port: u16, go_file: &Path) -> Result<ChildGuard> {
        ensure!(
            matches!(self, Self::Grpcio),
            "only the grpcio peer has the late client"
        );
        let (mut command, _) = self.command(&[
            "late".into(),
            port.to_string(),
            go_file.display().to_string(),
        ])?;
        ChildGuard::spawn("grpcio-late", &mut command, dir.path(), Shutdown::Kill)
    }

    /// `n` sequential `Proxy(url)` calls (grpc-js only): the server GETs `url` while serving
    /// each. Returns the client run; it printed the downstream status per call.
    pub fn run_proxy_client(
        self,
        dir: &TempDir,
        port: u16,
        url: &str,
        n: usize,
    ) -> Result<ClientRun> {
        ensure!(
            matches!(self, Self::GrpcJs),
            "only the grpc-js peer has Proxy"
        );
        let (mut command, binary) = self.command(&[
            "proxy".into(),
            port.to_string(),
            url.to_string(),
            n.to_string(),
        ])?;
        let finished = run_to_completion(
            "grpc-js-proxy-client",
            &mut command,
            dir.path(),
            CLIENT_WAIT,
        )?;
        Ok(ClientRun {
            process: ProcessIdentity {
                pid: finished.pid,
                service_name: "node".to_string(),
                executable_name: executable_name(&binary)?,
            },
            stdout: finished.stdout,
        })
    }

    /// The test's calls to the server on `port`, over one channel; `traceparent` goes in the
    /// first call's metadata.
    pub fn run_client(
        self,
        dir: &TempDir,
        service_name: &str,
        port: u16,
        traceparent: &str,
    ) -> Result<ClientRun> {
        let (mut command, binary) =
            self.command(&["client".into(), port.to_string(), traceparent.to_string()])?;
        command.env("OTEL_SERVICE_NAME", service_name);
        let name = format!("{}-client", self.name());
        let finished = run_to_completion(&name, &mut command, dir.path(), CLIENT_WAIT)?;
        Ok(ClientRun {
            process: ProcessIdentity {
                pid: finished.pid,
                service_name: service_name.to_string(),
                executable_name: executable_name(&binary)?,
            },
            stdout: finished.stdout,
        })
    }
}

/// `peers/node_h2.js server`: Node's core `http2`, cleartext (h2c, prior knowledge).
pub fn node_h2c_server(dir: &TempDir, service_name: &str) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(require_tool("node")?);
    command
        .arg(crate::peers_dir().join("node_h2.js"))
        .args(["server", &port.to_string()]);
    serve(dir, "node-h2c", command, port, service_name)
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with the `openssl` tool.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn self_signed_cert(dir: &TempDir) -> Result<SelfSigned> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    self_signed_cert_at(&cert, &key, dir.path())?;
    Ok(SelfSigned { cert, key })
}

/// Writes a self-signed certificate and its key to `cert` and `key`; openssl's output goes to
/// `logs`.
pub fn self_signed_cert_at(cert: &Path, key: &Path, logs: &Path) -> Result<()> {
    let mut command = Command::new(require_tool("openssl")?);
    command
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]);
    run_to_completion("openssl-req", &mut command, logs, CLIENT_WAIT)?;
    Ok(())
}

/// `peers/https_server.py`: Python's `ssl` serving HTTP/1.1 over TLS.
pub fn python_https_server(
    dir: &TempDir,
    service_name: &str,
    cert: &SelfSigned,
    port: u16,
) -> Result<PeerServer> {
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("https_server.py"))
        .arg(port.to_string())
        .arg(&cert.cert)
        .arg(&cert.key)
        .env("PYTHONUNBUFFERED", "1");
    serve(dir, "python-https", command, port, service_name)
}

/// `peers/node_https.js server`.
pub fn node_https_server(
    dir: &TempDir,
    service_name: &str,
    cert: &SelfSigned,
) -> Result<PeerServer> {
    node_https_listener(dir, service_name, cert, "server", &[])
}

/// `peers/node_https.js proxy`: every request GETs `downstream` over HTTPS (trusting `cert`)
/// before it is answered.
pub fn node_https_proxy(
    dir: &TempDir,
    service_name: &str,
    cert: &SelfSigned,
    downstream: &str,
) -> Result<PeerServer> {
    let ca = cert.cert.display().to_string();
    node_https_listener(dir, service_name, cert, "proxy", &[&ca, downstream])
}

fn node_https_listener(
    dir: &TempDir,
    service_name: &str,
    cert: &SelfSigned,
    mode: &str,
    extra: &[&str],
) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(require_tool("node")?);
    command
        .arg(crate::peers_dir().join("node_https.js"))
        .args([mode, &port.to_string()])
        .arg(&cert.cert)
        .arg(&cert.key)
        .args(extra);
    serve(
        dir,
        &format!("node-https-{mode}"),
        command,
        port,
        service_name,
    )
}

/// `peers/node_https.js client`: GETs `urls` in turn over one keep-alive agent.
pub fn node_https_client(dir: &TempDir, cert: &SelfSigned, urls: &[String]) -> Result<ClientRun> {
    let node = require_tool("node")?;
    let mut command = Command::new(&node);
    command
        .arg(crate::peers_dir().join("node_https.js"))
        .arg("client")
        .arg(&cert.cert)
        .args(urls);
    let finished = run_to_completion("node-https-client", &mut command, dir.path(), CLIENT_WAIT)?;
    Ok(ClientRun {
        process: ProcessIdentity {
            pid: finished.pid,
            service_name: "node".to_string(),
            executable_name: executable_name(&node)?,
        },
        stdout: finished.stdout,
    })
}

/// `peers/mixed_server.py`: `GET /items/N` answers 500 when N % 100 == 0, 200 after 600 ms when
/// N % 100 == 50, and 200 at once otherwise.
pub fn mixed_server(dir: &TempDir, service_name: &str) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("mixed_server.py"))
        .arg(port.to_string())
        .env("PYTHONUNBUFFERED", "1");
    serve(dir, "mixed-server", command, port, service_name)
}

/// What `peers/steady_load.py` reports.
#[derive(Debug, serde::Deserialize)]
pub struct LoadReport {
    /// Responses by status code.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// The slowest request, in seconds.
    pub slowest_s: f64,
}

impl LoadReport {
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }
}

/// `peers/steady_load.py`: `GET {prefix}/{first}` .. `{prefix}/{first+n-1}` to 127.0.0.1:`port`
/// from `threads` keep-alive connections, `pause_ms` between a thread's requests.
pub fn steady_load(
    dir: &TempDir,
    port: u16,
    prefix: &str,
    range: std::ops::Range<u64>,
    threads: u32,
    pause_ms: u32,
) -> Result<LoadReport> {
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("steady_load.py"))
        .args([
            "127.0.0.1".to_string(),
            port.to_string(),
            prefix.to_string(),
            range.start.to_string(),
            (range.end - range.start).to_string(),
            threads.to_string(),
            pause_ms.to_string(),
        ]);
    let finished = crate::process::run_to_completion(
        "steady-load",
        &mut command,
        dir.path(),
        std::time::Duration::from_secs(300),
    )?;
    serde_json::from_str(finished.stdout.trim())
        .with_context(|| format!("steady_load.py printed {:?}", finished.stdout))
}

/// A test certificate authority and two certificates it signed: the collector's (for
/// 127.0.0.1 and localhost) and a client's (for mutual TLS), all PEM files in `dir`.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a [`TestPki`] with the openssl command line (end-entity certificates signed by a CA,
/// as rustls requires: it refuses a self-signed CA certificate used as a server's).
pub fn test_pki(dir: &TempDir) -> Result<TestPki> {
    let openssl = require_tool("openssl")?;
    let run = |args: &[&str], what: &str| -> Result<()> {
        let mut command = Command::new(&openssl);
        command.args(args).current_dir(dir.path());
        run_to_completion(what, &mut command, dir.path(), CLIENT_WAIT)?;
        Ok(())
    };
    run(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=tracewire test CA",
        ],
        "openssl-ca",
    )?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, cert, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext)?;
        run(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=tracewire-{name}"),
            ],
            "openssl-csr",
        )?;
        run(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &extfile,
            ],
            "openssl-sign",
        )?;
    }
    Ok(TestPki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

/// `peers/fake_kube_api.py`: a Kubernetes API over plain HTTP on 127.0.0.1 serving one pod
/// (uid `pod_uid`, `checkout-7d9f8b6c5-x2x4q` in `shop` on `node-7`, of the Deployment
/// `checkout`), and a kubeconfig in `dir` naming it. Stopped (killed) on drop.
pub struct FakeKubeApi {
    pub guard: ChildGuard,
    pub port: u16,
    /// For `KUBECONFIG`: no TLS, no credentials.
    pub kubeconfig: PathBuf,
}

impl FakeKubeApi {
    /// The request lines it has logged (method, path and query).
    pub fn requests(&self) -> Result<Vec<String>> {
        Ok(self
            .guard
            .stderr_text()?
            .lines()
            .filter_map(|l| l.strip_prefix("fake-kube-api: "))
            .map(str::to_string)
            .collect())
    }
}

pub fn fake_kube_api(dir: &TempDir, pod_uid: &str) -> Result<FakeKubeApi> {
    let port = free_port()?;
    let mut command = Command::new(python_interpreter()?);
    command
        .arg(crate::peers_dir().join("fake_kube_api.py"))
        .args([port.to_string(), pod_uid.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    let mut guard = ChildGuard::spawn("fake-kube-api", &mut command, dir.path(), Shutdown::Kill)?;
    wait_for_port(port, &mut guard, LISTEN_WAIT)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    \
             server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: nobody\ncurrent-context: fake\nusers:\n- name: nobody\n  \
             user: {{}}\n"
        ),
    )?;
    Ok(FakeKubeApi {
        guard,
        port,
        kubeconfig,
    })
}
