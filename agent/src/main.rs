//! `tracewire`: CLI, logging, runtime and signals — the rest lives in the library.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracewire::{
    capture::{CaptureConfig, check, process, select::ExeSelector},
    export::{BatchConfig, Sink, otlp, stdout::StdoutSink},
    pipeline::{self, Settings},
    reassembly::Limits,
    span::{http::SpanOptions, rpc::RpcConventions, sampler::Sampler},
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExporterKind {
    /// One line per span on stdout.
    Stdout,
    /// OTLP to the collector named by OTEL_EXPORTER_OTLP_* (gRPC :4317 by default).
    Otlp,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
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
    #[arg(long, default_value_t = agent_common::DEFAULT_CAPTURE)]
    capture_bytes: u32,
    /// Size of the kernel ring buffer (rounded up to a power of two).
    #[arg(long, default_value_t = 8 << 20)]
    ring_buffer_bytes: u32,
    /// Connections tracked at once, in the kernel and in the agent.
    #[arg(long, default_value_t = 65536)]
    max_connections: u32,
    /// Export query strings (url.query, and in url.full). Off: they often carry secrets.
    #[arg(long)]
    capture_query: bool,
    /// Export process.command_line. Off: command lines often carry secrets.
    #[arg(long)]
    export_command_line: bool,
    /// Do not attach the OpenSSL probes (HTTPS is then not traced).
    #[arg(long)]
    no_tls: bool,
}

fn capture_config(args: &RunArgs) -> anyhow::Result<CaptureConfig> {
    Ok(CaptureConfig {
        capture_bytes: args.capture_bytes,
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_connections: args.max_connections,
        pids: args.pids.clone(),
        exes: ExeSelector::new(&args.exes)?,
        cgroups: args.cgroups.clone(),
        ports: args.ports.clone(),
        inject_cgroups: args.inject_cgroups.clone(),
        tls: !args.no_tls,
        sampler: Sampler::from_env()?,
        drain_interval: Duration::from_millis(10),
    })
}

fn check_host(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let findings = check::run(&capture_config(args)?);
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let exporter = match args.exporter {
        Some(e) => e,
        None if otlp::endpoint_configured() => ExporterKind::Otlp,
        None => ExporterKind::Stdout,
    };
    let sink = match exporter {
        ExporterKind::Stdout => {
            tracing::info!(
                "printing spans to stdout; set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector"
            );
            Sink::Stdout(StdoutSink::new())
        }
        ExporterKind::Otlp => {
            let transport = otlp::Transport::from_env()?;
            tracing::info!(?transport, "exporting spans over OTLP");
            Sink::Otlp(Box::new(otlp::OtlpSink::new(
                transport,
                process::host_name(),
            )?))
        }
    };
    let settings = Settings {
        capture: capture_config(&args)?,
        limits: Limits {
            max_connections: args.max_connections as usize,
            ..Limits::default()
        },
        span: SpanOptions {
            capture_query: args.capture_query,
            rpc: RpcConventions::from_opt_in(
                std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN")
                    .ok()
                    .as_deref(),
            ),
        },
        sampler: Sampler::from_env()?,
        batch: BatchConfig::from_env(),
        metrics_addr: args.metrics_addr,
        export_command_line: args.export_command_line,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => check_host(&args),
        Some(Command::Run(args)) => runtime()
            .and_then(|rt| rt.block_on(run(args)))
            .map(|()| ExitCode::SUCCESS),
        None => runtime()
            .and_then(|rt| rt.block_on(run(cli.run)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracewire: {err:#}");
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
