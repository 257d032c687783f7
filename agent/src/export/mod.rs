//! Export: batches spans from a bounded queue and hands them to a sink (OTLP or the terminal).
pub mod metrics;
pub mod otlp;
pub mod stdout;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{
    span::Span,
    telemetry::{Drop, TELEMETRY},
};

/// Batch settings, from the standard `OTEL_BSP_*` variables.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000): longest a span waits for its batch.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (default 512).
    pub max_batch: usize,
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (default 2048): spans waiting for export; past it, dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_EXPORT_TIMEOUT` (ms, default 30000).
    pub export_timeout: Duration,
}

impl BatchConfig {
    pub fn from_env() -> Self {
        let ms = |name: &str, default: u64| {
            Duration::from_millis(
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(default),
            )
        };
        let n = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &usize| *v > 0)
                .unwrap_or(default)
        };
        BatchConfig {
            schedule_delay: ms("OTEL_BSP_SCHEDULE_DELAY", 5000),
            max_batch: n("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            max_queue: n("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            export_timeout: ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000),
        }
    }
}

/// Where spans go.
pub enum Sink {
    Stdout(stdout::StdoutSink),
    Otlp(Box<otlp::OtlpSink>),
}

impl Sink {
    async fn export(&mut self, batch: Vec<Span>, timeout: Duration) {
        let n = batch.len() as u64;
        let result = match self {
            Sink::Stdout(s) => s.export(&batch),
            Sink::Otlp(s) => match tokio::time::timeout(timeout, s.export(batch)).await {
                Ok(r) => r,
                Err(_) => Err(format!("export timed out after {timeout:?}")),
            },
        };
        match result {
            Ok(()) => {
                TELEMETRY
                    .spans_exported
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(err) => {
                let errors = TELEMETRY
                    .export_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                TELEMETRY.drop_n(Drop::ExportFailed, n);
                // The first failure, then one in a hundred: a collector outage must not flood
                // the agent's own log.
                if errors.is_multiple_of(100) {
                    tracing::warn!(spans = n, %err, "span export failed; spans dropped");
                }
            }
        }
    }

    async fn shutdown(self) {
        if let Sink::Otlp(s) = self {
            s.shutdown();
        }
    }
}

/// Queues a span for export without ever waiting: a full queue drops it (counted).
pub fn enqueue(tx: &mpsc::Sender<Span>, span: Span) {
    if tx.try_send(span).is_err() {
        TELEMETRY.drop(Drop::ExportQueueFull);
    }
}

/// Runs until the span queue closes, then flushes what is left.
pub async fn run(mut rx: mpsc::Receiver<Span>, mut sink: Sink, cfg: BatchConfig) {
    let mut batch = Vec::with_capacity(cfg.max_batch);
    let mut open = true;
    while open {
        let deadline = tokio::time::sleep(cfg.schedule_delay);
        tokio::pin!(deadline);
        while batch.len() < cfg.max_batch {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        // The terminal shows spans as they come: what is queued now, at once.
                        if matches!(sink, Sink::Stdout(_)) {
                            while batch.len() < cfg.max_batch {
                                match rx.try_recv() {
                                    Ok(span) => batch.push(span),
                                    Err(_) => break,
                                }
                            }
                            break;
                        }
                    }
                    None => {
                        open = false;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(cfg.max_batch));
            sink.export(full, cfg.export_timeout).await;
        }
    }
    sink.shutdown().await;
}
