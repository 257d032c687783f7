//! The wiring, and only the wiring: capture -> reassembly -> span -> export, each stage a task
//! joined to the next by a named bounded queue. Shutdown flows the same way: capture stops and
//! drains, then each queue closes behind it and the exporter flushes last.
use std::net::SocketAddr;

use tokio::sync::{mpsc, watch};

use crate::{
    capture::{Capture, CaptureConfig, CaptureError, process::ProcessCache},
    export::{self, BatchConfig, Sink},
    reassembly::{self, ConnTable, Limits},
    span::{self, http::SpanOptions, sampler::Sampler},
    telemetry::TELEMETRY,
};

/// Events between the ring-buffer reader and reassembly. The reader yields every 1024 records,
/// so this only absorbs bursts; the kernel ring buffer is the real buffer.
const EVENT_QUEUE: usize = 8192;
/// Request starts and exchanges between reassembly and span building.
const NOTICE_QUEUE: usize = 16384;

pub struct Settings {
    pub capture: CaptureConfig,
    pub limits: Limits,
    pub span: SpanOptions,
    pub sampler: Sampler,
    pub batch: BatchConfig,
    pub metrics_addr: Option<SocketAddr>,
    pub export_command_line: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
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
    sink: Sink,
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
    if let Some(listener) = metrics {
        tokio::spawn(export::metrics::serve(listener, shutdown.clone()));
    }

    let capture = Capture::start(&settings.capture)?;
    TELEMETRY
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let (notice_tx, notice_rx) = mpsc::channel(NOTICE_QUEUE);
    let (span_tx, span_rx) = mpsc::channel(settings.batch.max_queue);

    let table = ConnTable::new(
        settings.limits,
        ProcessCache::new(4096, settings.export_command_line),
    );
    let reassembly = tokio::spawn(reassembly::run(event_rx, notice_tx, table));
    let spans = tokio::spawn(span::run(
        notice_rx,
        span_tx,
        settings.span,
        settings.sampler,
    ));
    let exporter = tokio::spawn(export::run(span_rx, sink, settings.batch));

    let captured = capture.run(event_tx, shutdown).await;
    let _ = reassembly.await;
    let _ = spans.await;
    let _ = exporter.await;
    captured?;
    Ok(())
}
