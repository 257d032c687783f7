//! Export: batches spans from a bounded queue and hands them to a sink (OTLP or the terminal).
pub mod metrics;
pub mod otlp;
pub mod otlp_logs;
pub mod otlp_metrics;
pub mod red;
pub mod resource;
pub mod stdout;
pub mod tls;

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::{
    queue::{BatchReceiver, BatchSender},
    sampling::tail::TailSampler,
    span::Span,
    telemetry::{Drop, Queue, TELEMETRY},
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
            Sink::Otlp(s) => {
                let started = Instant::now();
                let r = match tokio::time::timeout(timeout, s.export(batch)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("export timed out after {timeout:?}")),
                };
                TELEMETRY.record_export(started.elapsed());
                r
            }
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
}

/// Queues spans for export without ever waiting: a full queue drops them (counted).
pub fn enqueue(tx: &BatchSender<Span>, spans: Vec<Span>) {
    if let Err(refused) = tx.try_send(spans) {
        TELEMETRY.drop_n(Drop::ExportQueueFull, refused.len() as u64);
    }
}

/// How long the exporter keeps trying after shutdown begins: a collector that is down must
/// not hold the agent (and a node drain) for the export timeout times the batches queued.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// How often buffered traces are checked for a tail-sampling decision.
const TAIL_TICK: Duration = Duration::from_millis(100);

/// Runs until the span queue closes, then flushes what is left (within [`SHUTDOWN_DEADLINE`]
/// of `shutdown` flipping). With a tail sampler, spans wait in it for their trace's decision
/// and only kept ones are batched.
pub async fn run(
    mut rx: BatchReceiver<Span>,
    mut sink: Sink,
    cfg: BatchConfig,
    mut tail: Option<TailSampler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(cfg.max_batch);
    let mut open = true;
    let mut deadline_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(TAIL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while open {
        let deadline = tokio::time::sleep(cfg.schedule_delay);
        tokio::pin!(deadline);
        while batch.len() < cfg.max_batch {
            tokio::select! {
                spans = rx.recv() => match spans {
                    Some(spans) => {
                        match tail.as_mut() {
                            Some(t) => {
                                let now = Instant::now();
                                for span in spans {
                                    t.push(span, now, &mut batch);
                                }
                            }
                            None => batch.extend(spans),
                        }
                        // The terminal shows spans as they come: what is queued now, at once.
                        if matches!(sink, Sink::Stdout(_)) && tail.is_none() {
                            break;
                        }
                    }
                    None => {
                        open = false;
                        break;
                    }
                },
                _ = tick.tick(), if tail.is_some() => {
                    if let Some(t) = tail.as_mut() {
                        t.expire(Instant::now(), &mut batch);
                        TELEMETRY.set_tail(t.stats());
                    }
                    if matches!(sink, Sink::Stdout(_)) && !batch.is_empty() {
                        break;
                    }
                }
                _ = shutdown.changed(), if deadline_at.is_none() => {
                    deadline_at = Some(Instant::now() + SHUTDOWN_DEADLINE);
                }
                _ = &mut deadline => break,
            }
        }
        let (queued, bound) = rx.depth();
        TELEMETRY.set_queue(Queue::Spans, queued, bound);
        if !open && let Some(t) = tail.as_mut() {
            t.flush(&mut batch);
            TELEMETRY.set_tail(t.stats());
        }
        while !batch.is_empty() {
            let take = batch.len().min(cfg.max_batch);
            let rest = batch.split_off(take);
            let full = std::mem::replace(&mut batch, rest);
            export_within(&mut sink, full, cfg.export_timeout, deadline_at).await;
            if batch.len() < cfg.max_batch && open {
                break;
            }
        }
    }
}

/// Exports one batch, or drops it (counted) once the shutdown deadline has passed.
async fn export_within(
    sink: &mut Sink,
    batch: Vec<Span>,
    timeout: Duration,
    deadline_at: Option<Instant>,
) {
    let timeout = match deadline_at {
        None => timeout,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                TELEMETRY.drop_n(Drop::ShutdownDeadline, batch.len() as u64);
                return;
            }
            timeout.min(left)
        }
    };
    sink.export(batch, timeout).await;
}
