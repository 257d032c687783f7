//! `tracewire`: CLI, logging, runtime and signals — the rest lives in the library.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracewire::{
    capture::{CaptureConfig, check, process, select::ExeSelector},
    config::{self, Exporter, FileConfig},
    export::{
        BatchConfig, Sink, otlp,
        otlp_metrics::MetricsExportConfig,
        red::RedConfig,
        stdout::StdoutSink,
        tls::{Signal, TlsFiles, install_crypto_provider},
    },
    pipeline::{self, Settings},
    reassembly::Limits,
    sampling::head::Sampler,
    span::{http::SpanOptions, rpc::RpcConventions},
};

/// Zero-code distributed tracing: every HTTP/1.x request on this host becomes an OpenTelemetry
/// span, with no change to any program.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace until SIGINT/SIGTERM (the default).
    Run(RunArgs),
    /// Report which capture paths this host supports; exits non-zero if the agent cannot run.
    Check(RunArgs),
    /// Print the configuration in effect (flags > environment > --config file > defaults) as
    /// YAML, which `--config` accepts back; exits non-zero if it is not valid.
    Config(RunArgs),
    /// A live view of the traces the running agent exports: recent traces, and the selected
    /// one's waterfall with its critical path and findings (root only: it reads the agent's
    /// socket). `--once` prints one waterfall as text.
    Watch(WatchArgs),
    /// Install this binary, the hardened systemd unit and /etc/tracewire/config.yaml (kept if
    /// present), then enable and start the service. Run once, as root.
    InstallSystemd(InstallArgs),
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// The agent's socket (its --watch-socket).
    #[arg(long, default_value = tracewire::watch::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the newest matching trace once it is complete, as plain text, and exit.
    #[arg(long)]
    once: bool,
    /// Only traces with a span of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only traces at least this long, in milliseconds.
    #[arg(long, default_value_t = 0)]
    min_ms: u64,
    /// Only traces with an error.
    #[arg(long)]
    errors: bool,
    /// Only this trace (32 hex digits).
    #[arg(long)]
    trace: Option<String>,
    /// --once: columns of the output.
    #[arg(long, default_value_t = 100)]
    width: usize,
    /// --once: how long to wait for a matching trace, in seconds.
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// Install under this directory instead of / (and start nothing): for images and packages.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Install the files but do not enable or start the service.
    #[arg(long)]
    no_start: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExporterKind {
    /// One line per span on stdout.
    Stdout,
    /// OTLP to the collector named by OTEL_EXPORTER_OTLP_* (gRPC :4317 by default).
    Otlp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PriorityKind {
    Normal,
    Idle,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HooksKind {
    /// Without injection: fexit where the kernel allows it, else the sys_exit BTF tracepoint;
    /// syscall tracepoints otherwise.
    Auto,
    /// fexit or fail (for testing a kernel).
    Fexit,
    /// The sys_exit BTF tracepoint or fail (for testing a kernel).
    #[value(name = "tp_btf")]
    TpBtf,
    /// Syscall tracepoints only.
    Tracepoints,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// A YAML file with any of these settings, the OTEL_* ones and the tail-sampling policies
    /// (see deploy/tracewire.yaml). Flags win over the environment, which wins over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where spans go. Default: otlp when OTEL_EXPORTER_OTLP_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, stdout otherwise.
    #[arg(long, value_enum)]
    exporter: Option<ExporterKind>,
    /// Trace only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Trace only processes in this cgroup v2 directory or below it (repeatable).
    #[arg(long = "cgroup", value_name = "DIR")]
    cgroups: Vec<PathBuf>,
    /// Trace only processes whose executable path or name matches (repeatable; processes
    /// started later are picked up within a second).
    #[arg(long = "exe", value_name = "GLOB")]
    exes: Vec<String>,
    /// Propagate trace context: outgoing HTTP/1.x requests of processes in this cgroup v2
    /// directory (or below it) get a `traceparent` header written by the kernel (repeatable).
    /// Nothing outside these cgroups is ever changed.
    #[arg(long = "inject-cgroup", value_name = "DIR")]
    inject_cgroups: Vec<PathBuf>,
    /// Trace only connections whose local or remote port is this (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Serve /metrics (Prometheus) and /ready on this address.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Payload bytes copied per read/write syscall (max 8192). Message heads longer than what
    /// one syscall carries within this are dropped (counted as truncated_head).
    /// [default: 4096]
    #[arg(long)]
    capture_bytes: Option<u32>,
    /// Size of the kernel ring buffer (rounded up to a power of two). [default: 8388608]
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Connections tracked at once, in the kernel and in the agent. [default: 65536]
    #[arg(long)]
    max_connections: Option<u32>,
    /// Export query strings (url.query, and in url.full). Off: they often carry secrets.
    #[arg(long)]
    capture_query: bool,
    /// Export process.command_line. Off: command lines often carry secrets.
    #[arg(long)]
    export_command_line: bool,
    /// Do not attach the OpenSSL probes (HTTPS is then not traced).
    #[arg(long)]
    no_tls: bool,
    /// How syscalls are hooked: fexit (one program per syscall, no syscall tracepoint slow
    /// path for the host), tp_btf (one program on sys_exit; lockdown allows it) or syscall
    /// tracepoints (any kernel, needed by injection).
    /// [default: auto]
    #[arg(long, value_enum)]
    syscall_hooks: Option<HooksKind>,
    /// CPU priority of the agent: normal, or idle (SCHED_IDLE: only CPU time the applications
    /// leave; a saturated host drops spans, counted, rather than slow its applications).
    /// [default: normal]
    #[arg(long, value_enum)]
    cpu_priority: Option<PriorityKind>,
    /// Export what traced processes write to stdout/stderr while serving a request as OTLP log
    /// records with that request's trace id (needs the OTLP exporter; `logs:` in the config
    /// file tunes rate, size and redaction). Off: lines can hold anything.
    #[arg(long)]
    export_logs: bool,
    /// The root-only unix socket `tracewire watch` reads recent spans from.
    /// [default: /run/tracewire/watch.sock]
    #[arg(long, value_name = "PATH")]
    watch_socket: Option<PathBuf>,
}

/// The command line in the config file's shape, so that one overlay gives flags precedence.
fn flags(args: &RunArgs) -> FileConfig {
    FileConfig {
        exporter: args.exporter.map(|e| match e {
            ExporterKind::Stdout => Exporter::Stdout,
            ExporterKind::Otlp => Exporter::Otlp,
        }),
        pids: args.pids.clone(),
        cgroups: args.cgroups.clone(),
        exes: args.exes.clone(),
        ports: args.ports.clone(),
        inject_cgroups: args.inject_cgroups.clone(),
        metrics_addr: args.metrics_addr,
        capture_bytes: args.capture_bytes,
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_connections: args.max_connections,
        capture_query: args.capture_query.then_some(true),
        export_command_line: args.export_command_line.then_some(true),
        tls: args.no_tls.then_some(false),
        syscall_hooks: args.syscall_hooks.map(|h| match h {
            HooksKind::Auto => config::SyscallHooks::Auto,
            HooksKind::Fexit => config::SyscallHooks::Fexit,
            HooksKind::TpBtf => config::SyscallHooks::TpBtf,
            HooksKind::Tracepoints => config::SyscallHooks::Tracepoints,
        }),
        cpu_priority: args.cpu_priority.map(|p| match p {
            PriorityKind::Normal => config::CpuPriority::Normal,
            PriorityKind::Idle => config::CpuPriority::Idle,
        }),
        watch_socket: args.watch_socket.clone(),
        logs: config::LogsFile {
            enabled: args.export_logs.then_some(true),
            ..config::LogsFile::default()
        },
        ..FileConfig::default()
    }
}

/// Reads `--config`, lets the flags override it and writes its `OTEL_*` values into the
/// environment where unset. Runs before the async runtime starts: no other thread exists yet.
fn configure(args: &RunArgs) -> anyhow::Result<FileConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let merged = file.overlaid_by(flags(args));
    // SAFETY: called from main before the runtime (or any thread) is started.
    unsafe { merged.export_to_env() };
    let effective = merged.effective();
    // Fail now, with the variable's name, rather than half-way through start-up.
    Sampler::from_env()?;
    otlp::Transport::from_env()?;
    Ok(effective)
}

fn capture_config(c: &FileConfig) -> anyhow::Result<CaptureConfig> {
    Ok(CaptureConfig {
        capture_bytes: c.capture_bytes.unwrap_or(config::DEFAULT_CAPTURE_BYTES),
        ring_buffer_bytes: c
            .ring_buffer_bytes
            .unwrap_or(config::DEFAULT_RING_BUFFER_BYTES),
        max_connections: c.max_connections.unwrap_or(config::DEFAULT_MAX_CONNECTIONS),
        pids: c.pids.clone(),
        exes: ExeSelector::new(&c.exes)?,
        cgroups: c.cgroups.clone(),
        ports: c.ports.clone(),
        inject_cgroups: c.inject_cgroups.clone(),
        tls: c.tls.unwrap_or(true),
        syscall_hooks: c.syscall_hooks.unwrap_or_default(),
        logs: c.logs.enabled.unwrap_or(false) && c.exporter == Some(Exporter::Otlp),
        sampler: Sampler::from_env()?,
        drain_interval: Duration::from_millis(2),
    })
}

fn check_host(c: &FileConfig) -> anyhow::Result<ExitCode> {
    let findings = check::run(&capture_config(c)?);
    let mut fatal = Vec::new();
    for f in &findings {
        let mark = match (f.ok, f.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "no  ",
        };
        println!("{mark} {:<20} {}", f.name, f.detail);
        if !f.ok && f.required {
            fatal.push(f.name);
        }
    }
    if fatal.is_empty() {
        println!("tracewire can run on this host");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "tracewire cannot run on this host: {} failed",
            fatal.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn run(c: FileConfig) -> anyhow::Result<()> {
    install_crypto_provider();
    let sink = match c.exporter {
        Some(Exporter::Otlp) => {
            let transport = otlp::Transport::from_env()?;
            tracing::info!(?transport, "exporting spans over OTLP");
            Sink::Otlp(Box::new(otlp::OtlpSink::new(
                process::host_name(),
                &TlsFiles::from_env(Signal::Traces)?,
            )?))
        }
        _ => {
            tracing::info!(
                "printing spans to stdout; set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector"
            );
            Sink::Stdout(StdoutSink::new())
        }
    };
    let max_connections = c.max_connections.unwrap_or(config::DEFAULT_MAX_CONNECTIONS);
    // RED histograms cost a lookup per request: kept only where someone reads them.
    let red_read = c.metrics_addr.is_some() || c.exporter == Some(Exporter::Otlp);
    let red = (c.metrics.red.unwrap_or(true) && red_read).then(|| RedConfig {
        max_series: c.metrics.max_series.unwrap_or(config::DEFAULT_MAX_SERIES),
        max_routes_per_service: c
            .metrics
            .max_routes_per_service
            .unwrap_or(config::DEFAULT_MAX_ROUTES_PER_SERVICE),
    });
    // Metrics go over OTLP where the spans do.
    let metrics_export = match (c.exporter, &red) {
        (Some(Exporter::Otlp), Some(_)) => Some((
            MetricsExportConfig::from_env()?,
            TlsFiles::from_env(Signal::Metrics)?,
        )),
        _ => None,
    };
    let settings = Settings {
        capture: capture_config(&c)?,
        limits: Limits {
            max_connections: max_connections as usize,
            ..Limits::default()
        },
        span: SpanOptions {
            capture_query: c.capture_query.unwrap_or(false),
            rpc: RpcConventions::from_opt_in(c.semconv_stability_opt_in.as_deref()),
        },
        sampler: Sampler::from_env()?,
        tail: c.sampling.tail.clone(),
        batch: BatchConfig::from_env(),
        metrics_addr: c.metrics_addr,
        red,
        metrics_export,
        host_name: process::host_name(),
        export_command_line: c.export_command_line.unwrap_or(false),
        kubernetes: c.kubernetes.unwrap_or_default(),
        findings: c.findings.config(),
        watch_socket: c.watch_socket.clone(),
        logs: if logs_on(&c) {
            Some((
                c.logs.config()?,
                MetricsExportConfig::logs_from_env()?,
                TlsFiles::from_env(Signal::Logs)?,
            ))
        } else {
            None
        },
        cpu_priority: c.cpu_priority.unwrap_or_default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: detaching probes and flushing spans");
        let _ = stop_tx.send(true);
    });
    pipeline::run(settings, sink, stop_rx).await?;
    Ok(())
}

/// Logs are exported only over OTLP: stdout is for spans.
fn logs_on(c: &FileConfig) -> bool {
    let wanted = c.logs.enabled.unwrap_or(false);
    if wanted && c.exporter != Some(Exporter::Otlp) {
        tracing::warn!(
            "logs.enabled needs the OTLP exporter (--exporter otlp): no logs are exported"
        );
    }
    wanted && c.exporter == Some(Exporter::Otlp)
}

fn watch_traces(args: &WatchArgs) -> ExitCode {
    use tracewire::watch;
    let filter = watch::Filter {
        service: args.service.clone(),
        min_duration: Duration::from_millis(args.min_ms),
        errors_only: args.errors,
        trace_id: args.trace.clone(),
    };
    let result = if args.once {
        watch::once(
            &args.socket,
            &filter,
            args.width,
            Duration::from_secs(args.wait_secs),
        )
        .map(|text| print!("{text}"))
    } else {
        watch::tui::run(&args.socket, filter)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracewire watch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
}

fn main() -> ExitCode {
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube's client logs an error per failed request (every retry of the pod watch): an
        // outage would flood the log. The agent logs that failure itself, once per outage, as
        // it does failed and partial exports (rate-limited).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .init();
    let cli = Cli::parse();
    let (command, args) = match cli.command {
        Some(Command::InstallSystemd(args)) => return install_systemd(&args),
        Some(Command::Watch(args)) => return watch_traces(&args),
        Some(Command::Check(args)) => ("check", args),
        Some(Command::Config(args)) => ("config", args),
        Some(Command::Run(args)) => ("run", args),
        None => ("run", cli.run),
    };
    let result = configure(&args).and_then(|c| match command {
        "check" => check_host(&c),
        "config" => {
            print!("{}", c.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        _ => runtime()
            .and_then(|rt| rt.block_on(run(c)))
            .map(|()| ExitCode::SUCCESS),
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracewire: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn install_systemd(args: &InstallArgs) -> ExitCode {
    match tracewire::install::install(&args.root, !args.no_start) {
        Ok(done) => {
            for line in done.lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("tracewire: {:#}", anyhow::Error::new(err));
            ExitCode::FAILURE
        }
    }
}

/// One thread runs every stage: they are sequential anyway, a single thread wakes its tasks
/// without futexes or cross-CPU cache traffic (a multi-threaded runtime cost ~20% of the
/// agent's CPU in thread switches under nginx load), and the agent never takes more than one
/// CPU from the applications it traces.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
