//! The wiring, and only the wiring: capture -> reassembly -> span -> export, each stage a task
//! joined to the next by a named bounded queue. Shutdown flows the same way: capture stops and
//! drains, then each queue closes behind it and the exporter flushes last.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::{mpsc, watch};

use crate::{
    capture::{Capture, CaptureConfig, CaptureError, kubernetes, process::ProcessCache},
    config::Kubernetes,
    export::{
        self, BatchConfig, Sink,
        otlp_metrics::MetricsExportConfig,
        red::{Red, RedConfig},
        tls::TlsFiles,
    },
    reassembly::{self, ConnTable, Limits},
    sampling::{
        head::Sampler,
        tail::{TailConfig, TailError, TailSampler},
    },
    span::{self, http::SpanOptions},
    telemetry::TELEMETRY,
};

/// Events between the ring-buffer reader and reassembly. The reader yields every 1024 records,
/// so this only absorbs bursts; the kernel ring buffer is the real buffer.
const EVENT_QUEUE: usize = 8192;
/// Request starts and exchanges between reassembly and span building.
const NOTICE_QUEUE: usize = 16384;
/// Log records waiting for the log exporter.
const LOG_QUEUE: usize = 4096;

pub struct Settings {
    pub capture: CaptureConfig,
    pub limits: Limits,
    pub span: SpanOptions,
    pub sampler: Sampler,
    /// Tail sampling in the agent (`sampling.tail` in the config file), if configured.
    pub tail: Option<TailConfig>,
    pub batch: BatchConfig,
    pub metrics_addr: Option<SocketAddr>,
    /// RED histograms (on `/metrics`), if on.
    pub red: Option<RedConfig>,
    /// Where the RED histograms go over OTLP, if they do.
    pub metrics_export: Option<(MetricsExportConfig, TlsFiles)>,
    /// `host.name` on the metrics' resources.
    pub host_name: String,
    pub export_command_line: bool,
    /// Pod names, namespaces and owners from the Kubernetes API (`kubernetes:` in the file).
    pub kubernetes: Kubernetes,
    /// N+1, serial fan-out, cold start and critical path on the spans (`findings:`).
    pub findings: span::analysis::FindingsConfig,
    /// Where `tracewire watch` reads recent spans, if anywhere.
    pub watch_socket: Option<std::path::PathBuf>,
    /// Logs tied to traces: the tap's settings and where the records go (OTLP only).
    pub logs: Option<(span::logs::LogsConfig, MetricsExportConfig, TlsFiles)>,
    /// The agent's CPU priority, taken once its probes are attached.
    pub cpu_priority: crate::config::CpuPriority,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("sampling.tail in the config file: {0}")]
    Tail(#[from] TailError),
    #[error("cannot serve metrics on {addr}: {source}; pick another --metrics-addr")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` flips to true.
pub async fn run(
    settings: Settings,
    mut sink: Sink,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let metrics = match settings.metrics_addr {
        Some(addr) => Some(
            export::metrics::bind(addr)
                .await
                .map_err(|source| PipelineError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let red = settings.red.map(|cfg| {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Arc::new(Mutex::new(Red::new(cfg, start)))
    });
    if let Some(listener) = metrics {
        tokio::spawn(export::metrics::serve(
            listener,
            red.clone(),
            shutdown.clone(),
        ));
    }
    let metrics_exporter = match (settings.metrics_export, &red) {
        (Some((cfg, tls)), Some(red)) => Some(tokio::spawn(export::otlp_metrics::run(
            cfg,
            tls,
            Arc::clone(red),
            settings.host_name.clone(),
            shutdown.clone(),
        ))),
        _ => None,
    };

    let tail = settings.tail.map(TailSampler::new).transpose()?;
    // Only OTLP resources carry pod metadata: with stdout there is no one to tell. Started
    // before the probes, so that the first list is usually in before the first span.
    let pod_watch = match &mut sink {
        Sink::Otlp(otlp) => match kubernetes::connect(settings.kubernetes).await {
            Ok(watch) => {
                tracing::info!(
                    "kubernetes: watching the pods of node {} at {}: resources get k8s.pod.name, \
                     k8s.namespace.name and the pod's owner",
                    watch.node(),
                    watch.url()
                );
                otlp.set_pods(watch.directory());
                Some(tokio::spawn(watch.run(shutdown.clone())))
            }
            Err(why) => {
                tracing::info!("{why}");
                None
            }
        },
        Sink::Stdout(_) => None,
    };
    let capture = Capture::start(&settings.capture)?;
    // After the probes are in: loading them at idle priority could take long on a busy host.
    if settings.cpu_priority == crate::config::CpuPriority::Idle {
        yield_cpu_to_applications();
    }
    // The watch socket is a convenience: failing to bind it is said, never fatal. Bound once
    // the probes are attached, so an agent that cannot start leaves no socket behind.
    let recent = settings
        .watch_socket
        .and_then(|path| match crate::watch::server::bind(&path) {
            Ok(bound) => {
                let recent = Arc::new(crate::watch::Recent::default());
                tokio::spawn(crate::watch::server::serve(
                    bound,
                    Arc::clone(&recent),
                    shutdown.clone(),
                ));
                Some(recent)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot serve `tracewire watch` on {}: {e}; pass --watch-socket with a \
                     writable path",
                    path.display()
                );
                None
            }
        });
    TELEMETRY
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let (event_tx, event_rx) = crate::queue::channel(EVENT_QUEUE);
    let (notice_tx, notice_rx) = crate::queue::channel(NOTICE_QUEUE);
    let (span_tx, span_rx) = crate::queue::channel(settings.batch.max_queue);
    let (log_tap, log_exporter) = match settings.logs {
        Some((cfg, export, tls)) => {
            let (tx, rx) = mpsc::channel(LOG_QUEUE);
            let exporter = tokio::spawn(export::otlp_logs::run(
                export,
                tls,
                rx,
                settings.host_name.clone(),
                shutdown.clone(),
            ));
            (Some(span::logs::LogTap::new(cfg, tx)), Some(exporter))
        }
        None => (None, None),
    };

    let table = ConnTable::new(
        settings.limits,
        ProcessCache::new(4096, settings.export_command_line),
    );
    let reassembly = tokio::spawn(reassembly::run(event_rx, notice_tx, table));
    let spans = tokio::spawn(span::run(
        notice_rx,
        span_tx,
        span::Stage {
            opts: settings.span,
            sampler: settings.sampler,
            red,
            findings: settings.findings,
            recent,
            logs: log_tap,
        },
    ));
    let exporter = tokio::spawn(export::run(
        span_rx,
        sink,
        settings.batch,
        tail,
        shutdown.clone(),
    ));

    let captured = capture.run(event_tx, shutdown).await;
    let _ = reassembly.await;
    let _ = spans.await;
    let _ = exporter.await;
    if let Some(m) = metrics_exporter {
        let _ = m.await;
    }
    if let Some(w) = pod_watch {
        let _ = w.await;
    }
    if let Some(l) = log_exporter {
        let _ = l.await;
    }
    captured?;
    Ok(())
}

/// `--cpu-priority idle`: every thread of the agent (and every thread it starts later, which
/// inherits the policy) becomes `SCHED_IDLE`. Best effort: a thread that refuses is said.
fn yield_cpu_to_applications() {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let param = libc::sched_param { sched_priority: 0 };
    let mut refused = 0;
    for tid in &threads {
        // SAFETY: sched_setscheduler on a thread of this process with a valid parameter.
        if unsafe { libc::sched_setscheduler(*tid, libc::SCHED_IDLE, &param) } != 0 {
            refused += 1;
        }
    }
    if refused == 0 {
        tracing::info!(
            threads = threads.len(),
            "cpu priority idle (SCHED_IDLE): the agent runs on CPU time the applications leave; \
             when they saturate the host, spans are dropped and counted in \
             tracewire_dropped_total"
        );
    } else {
        tracing::warn!(
            refused,
            error = %std::io::Error::last_os_error(),
            "could not make every agent thread SCHED_IDLE; they keep the normal priority"
        );
    }
}
