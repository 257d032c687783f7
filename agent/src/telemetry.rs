//! The agent's own counters. Every dropped event, connection, request or span is counted here
//! with its reason, logged once in a while, and served on `/metrics`.
use std::{
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed},
    },
};

use crate::sampling::tail::TailStats;

/// Why something was dropped. The label is the `reason` on `tracewire_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The kernel could not reserve ring-buffer space (reader too slow).
    KernelRingFull,
    /// The capture stage's queue to reassembly was full.
    EventQueueFull,
    /// A record from the ring buffer was shorter than its header says.
    MalformedRecord,
    /// The connection table hit `--max-connections`.
    ConnectionTableFull,
    /// A connection was evicted after being idle.
    ConnectionIdle,
    /// Bytes of a connection that is not HTTP/1.x.
    NotHttp,
    /// A message head larger than the head buffer bound.
    HeadTooLarge,
    /// The capture size cut through a message head.
    TruncatedHead,
    /// The connection closed (or went idle) in the middle of a message head.
    IncompleteHead,
    /// A head that does not parse (garbage, smuggling attempts, binary data).
    InvalidHead,
    /// Body framing could not be followed (a capture gap over chunk-size lines).
    FramingLost,
    /// More pipelined requests in flight than the per-connection bound.
    TooManyPending,
    /// A response without a request (the request was missed, e.g. agent started mid-request).
    UnmatchedResponse,
    /// Requests still waiting for a response when their connection closed.
    NoResponse,
    /// The global bound on buffered bytes was reached.
    BufferBudget,
    /// The export queue was full.
    ExportQueueFull,
    /// The queue from reassembly to span building was full: the request's span is lost.
    NoticeQueueFull,
    /// The exporter returned an error for a batch.
    ExportFailed,
    /// A `traceparent` that breaks the W3C rules: ignored, the span starts a new trace.
    InvalidTraceparent,
    /// A call made while several requests were in flight on its thread (or, for Go, in its
    /// process): its parent cannot be told, so it starts a new trace.
    AmbiguousParent,
    /// More requests in flight than the context table holds: their parent links are lost.
    ContextOverflow,
    /// The kernel's request context disagrees with the request's own `traceparent` (the kernel
    /// did not see the header, e.g. past its scan window): calls it caused start a new trace.
    KernelContextMismatch,
    /// HTTP/2 header fields that could not be decoded (HPACK state unknown: a connection open
    /// before the agent started, or a capture gap): the span carries what is known.
    HeaderFieldsUnknown,
    /// A TLS connection whose plaintext the agent could not see (a TLS library other than
    /// OpenSSL: Go, Java, rustls, Node's memory BIOs): no spans for it.
    TlsOpaque,
    /// A connection that carried TLS handshake records and no encrypted data: a port probe, a
    /// failed handshake, a TLS client talking to a plaintext server.
    TlsHandshakeOnly,
    /// TLS plaintext written behind a memory BIO (Node) whose socket was never named (its
    /// ciphertext was not written right after, or another write came first on the thread).
    TlsUnbound,
    /// Spans still queued when the shutdown deadline passed (a collector down at shutdown).
    ShutdownDeadline,
    /// Spans the collector refused in a partial-success answer (OTLP says: log, do not retry).
    CollectorRejected,
    /// A stdout/stderr line written while its thread served no request (or several): not
    /// exported (`logs.enabled`).
    LogOutsideRequest,
    /// Log lines over a process's `logs.max_lines_per_second`.
    LogRateLimited,
    /// Log lines dropped because the log export queue was full.
    LogQueueFull,
    /// Log records the collector did not take (export failed).
    LogExportFailed,
}

impl Drop {
    pub const ALL: [Drop; 32] = [
        Drop::KernelRingFull,
        Drop::EventQueueFull,
        Drop::MalformedRecord,
        Drop::ConnectionTableFull,
        Drop::ConnectionIdle,
        Drop::NotHttp,
        Drop::HeadTooLarge,
        Drop::TruncatedHead,
        Drop::IncompleteHead,
        Drop::InvalidHead,
        Drop::FramingLost,
        Drop::TooManyPending,
        Drop::UnmatchedResponse,
        Drop::NoResponse,
        Drop::BufferBudget,
        Drop::ExportQueueFull,
        Drop::NoticeQueueFull,
        Drop::ExportFailed,
        Drop::InvalidTraceparent,
        Drop::AmbiguousParent,
        Drop::ContextOverflow,
        Drop::KernelContextMismatch,
        Drop::HeaderFieldsUnknown,
        Drop::TlsOpaque,
        Drop::TlsHandshakeOnly,
        Drop::TlsUnbound,
        Drop::ShutdownDeadline,
        Drop::CollectorRejected,
        Drop::LogOutsideRequest,
        Drop::LogRateLimited,
        Drop::LogQueueFull,
        Drop::LogExportFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Drop::KernelRingFull => "kernel_ring_full",
            Drop::EventQueueFull => "event_queue_full",
            Drop::MalformedRecord => "malformed_record",
            Drop::ConnectionTableFull => "connection_table_full",
            Drop::ConnectionIdle => "connection_idle",
            Drop::NotHttp => "not_http",
            Drop::HeadTooLarge => "head_too_large",
            Drop::TruncatedHead => "truncated_head",
            Drop::IncompleteHead => "incomplete_head",
            Drop::InvalidHead => "invalid_head",
            Drop::FramingLost => "framing_lost",
            Drop::TooManyPending => "too_many_pending",
            Drop::UnmatchedResponse => "unmatched_response",
            Drop::NoResponse => "no_response",
            Drop::BufferBudget => "buffer_budget",
            Drop::ExportQueueFull => "export_queue_full",
            Drop::NoticeQueueFull => "notice_queue_full",
            Drop::ExportFailed => "export_failed",
            Drop::InvalidTraceparent => "invalid_traceparent",
            Drop::AmbiguousParent => "ambiguous_parent",
            Drop::ContextOverflow => "context_overflow",
            Drop::KernelContextMismatch => "kernel_context_mismatch",
            Drop::HeaderFieldsUnknown => "header_fields_unknown",
            Drop::TlsOpaque => "tls_opaque",
            Drop::TlsHandshakeOnly => "tls_handshake_only",
            Drop::TlsUnbound => "tls_unbound",
            Drop::ShutdownDeadline => "shutdown_deadline",
            Drop::LogOutsideRequest => "log_outside_request",
            Drop::LogRateLimited => "log_rate_limited",
            Drop::LogQueueFull => "log_queue_full",
            Drop::LogExportFailed => "log_export_failed",
            Drop::CollectorRejected => "collector_rejected",
        }
    }
}

/// The bounded queues between stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Events,
    Notices,
    Spans,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Events, Queue::Notices, Queue::Spans];

    pub fn label(self) -> &'static str {
        match self {
            Queue::Events => "events",
            Queue::Notices => "notices",
            Queue::Spans => "spans",
        }
    }
}

/// Counters, all monotonic.
pub struct Telemetry {
    drops: [AtomicU64; Drop::ALL.len()],
    pub events_open: AtomicU64,
    pub events_data: AtomicU64,
    pub events_close: AtomicU64,
    pub events_process: AtomicU64,
    pub events_log: AtomicU64,
    pub bytes_captured: AtomicU64,
    pub bytes_seen: AtomicU64,
    pub requests_parsed: AtomicU64,
    pub spans_built: AtomicU64,
    pub spans_exported: AtomicU64,
    /// Spans not exported because their trace is not sampled (incoming sampled flag 0).
    pub spans_sampled_out: AtomicU64,
    pub export_errors: AtomicU64,
    pub connections_tracked: AtomicU64,
    /// Set once every probe is attached (`/ready`).
    pub ready: AtomicBool,
    /// `--inject-cgroup` was given and its programs are attached.
    pub injection_active: AtomicBool,
    /// The syscalls are hooked by fexit (the fast path), not by tracepoints.
    /// The syscall hook path in use: 0 tracepoints, 1 fexit, 2 tp_btf
    /// (`capture::HookPath::code`).
    pub syscall_hooks: AtomicU8,
    /// Findings by kind: N+1, serial fan-out, cold start.
    findings: [AtomicU64; 3],
    /// Children whose parent span never came (or the family table was full).
    pub analysis_orphans: AtomicU64,
    /// The kernel's counters (agent_common::KernelCounter), copied from the kernel.
    kernel: [AtomicU64; agent_common::KERNEL_COUNTERS as usize],
    /// Export requests by how long they took: counts per [`EXPORT_BUCKETS`] bound (+Inf last).
    export_buckets: [AtomicU64; EXPORT_BUCKETS.len() + 1],
    export_nanos: AtomicU64,
    /// Items waiting in each queue between stages, and the queues' bounds ([`Queue`]).
    queue_depth: [AtomicU64; Queue::ALL.len()],
    queue_capacity: [AtomicU64; Queue::ALL.len()],
    /// OTLP metric export requests that succeeded, and that failed.
    pub metric_exports: AtomicU64,
    pub metric_export_errors: AtomicU64,
    /// Pods of this node known from the Kubernetes API (a gauge).
    pub kubernetes_pods: AtomicU64,
    /// Connections the reassembly stage holds state for (a gauge).
    pub connections_open: AtomicU64,
    /// The tail sampler's last reported state, when one runs.
    tail: Mutex<Option<TailStats>>,
}

/// Upper bounds (seconds) of the export-duration histogram.
const EXPORT_BUCKETS: [f64; 8] = [0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

/// Outcomes of trace-context injection, by kernel counter, as `tracewire_injection_total`
/// labels.
const INJECTION_OUTCOMES: [(agent_common::KernelCounter, &str); 9] = {
    use agent_common::KernelCounter as K;
    [
        (K::Injected, "injected"),
        (K::InjectNoParent, "injected_new_trace"),
        (K::InjectHasTraceparent, "skipped_has_traceparent"),
        (K::InjectSplitHead, "skipped_split_head"),
        (K::InjectHeadTooLong, "skipped_head_too_long"),
        (K::InjectUnknownBody, "skipped_unknown_body_framing"),
        (K::InjectUntraced, "skipped_untraced_write"),
        (K::InjectPipelined, "skipped_pipelined"),
        (K::InjectFailed, "failed"),
    ]
};

/// The process-wide counters.
pub static TELEMETRY: Telemetry = Telemetry::new();

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

impl Telemetry {
    pub const fn new() -> Self {
        Telemetry {
            drops: [ZERO; Drop::ALL.len()],
            events_open: AtomicU64::new(0),
            events_data: AtomicU64::new(0),
            events_close: AtomicU64::new(0),
            events_process: AtomicU64::new(0),
            events_log: AtomicU64::new(0),
            bytes_captured: AtomicU64::new(0),
            bytes_seen: AtomicU64::new(0),
            requests_parsed: AtomicU64::new(0),
            spans_built: AtomicU64::new(0),
            spans_exported: AtomicU64::new(0),
            spans_sampled_out: AtomicU64::new(0),
            export_errors: AtomicU64::new(0),
            connections_tracked: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            injection_active: AtomicBool::new(false),
            syscall_hooks: AtomicU8::new(0),
            findings: [const { AtomicU64::new(0) }; 3],
            analysis_orphans: AtomicU64::new(0),
            kernel: [ZERO; agent_common::KERNEL_COUNTERS as usize],
            export_buckets: [ZERO; EXPORT_BUCKETS.len() + 1],
            export_nanos: AtomicU64::new(0),
            queue_depth: [ZERO; Queue::ALL.len()],
            queue_capacity: [ZERO; Queue::ALL.len()],
            metric_exports: AtomicU64::new(0),
            metric_export_errors: AtomicU64::new(0),
            kubernetes_pods: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            tail: Mutex::new(None),
        }
    }

    /// How full a queue is now.
    pub fn set_queue(&self, queue: Queue, depth: usize, capacity: usize) {
        if let (Some(d), Some(c)) = (
            self.queue_depth.get(queue as usize),
            self.queue_capacity.get(queue as usize),
        ) {
            d.store(depth as u64, Relaxed);
            c.store(capacity as u64, Relaxed);
        }
    }

    /// One export request (successful or not) took `took`.
    pub fn record_export(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let slot = EXPORT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(EXPORT_BUCKETS.len());
        if let Some(c) = self.export_buckets.get(slot) {
            c.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.export_nanos.fetch_add(nanos, Relaxed);
    }

    pub fn set_tail(&self, stats: TailStats) {
        *self.tail.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Sets the kernel's counters (their totals over CPUs).
    pub fn set_kernel_counters(&self, totals: &[u64]) {
        for (slot, total) in self.kernel.iter().zip(totals) {
            slot.store(*total, Relaxed);
        }
    }

    pub fn kernel_counter(&self, counter: agent_common::KernelCounter) -> u64 {
        self.kernel
            .get(counter as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    pub fn drop(&self, reason: Drop) {
        self.drop_n(reason, 1);
    }

    pub fn drop_n(&self, reason: Drop, n: u64) {
        if let Some(c) = self.drops.get(reason as usize) {
            c.fetch_add(n, Relaxed);
        }
    }

    pub fn dropped(&self, reason: Drop) -> u64 {
        self.drops
            .get(reason as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Kernel-side drops are per-CPU counters summed by user space; this sets their total.
    pub fn set_kernel_ring_full(&self, total: u64) {
        if let Some(c) = self.drops.get(Drop::KernelRingFull as usize) {
            c.store(total, Relaxed);
        }
    }

    pub fn count_finding(&self, finding: crate::span::analysis::Finding) {
        self.findings[finding as usize].fetch_add(1, Relaxed);
    }

    pub fn findings(&self, finding: crate::span::analysis::Finding) -> u64 {
        self.findings[finding as usize].load(Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        };
        counter(
            "tracewire_events_total",
            "Events read from the kernel ring buffer.",
            &[
                ("kind=\"open\"", self.events_open.load(Relaxed)),
                ("kind=\"data\"", self.events_data.load(Relaxed)),
                ("kind=\"close\"", self.events_close.load(Relaxed)),
                ("kind=\"process\"", self.events_process.load(Relaxed)),
                ("kind=\"log\"", self.events_log.load(Relaxed)),
            ],
        );
        counter(
            "tracewire_bytes_total",
            "Payload bytes moved by traced sockets (seen) and copied to the agent (captured).",
            &[
                ("kind=\"seen\"", self.bytes_seen.load(Relaxed)),
                ("kind=\"captured\"", self.bytes_captured.load(Relaxed)),
            ],
        );
        let drops: Vec<(String, u64)> = Drop::ALL
            .iter()
            .map(|d| (format!("reason=\"{}\"", d.label()), self.dropped(*d)))
            .collect();
        let drops: Vec<(&str, u64)> = drops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        counter(
            "tracewire_dropped_total",
            "Things dropped, by reason (events, connections, requests or spans).",
            &drops,
        );
        counter(
            "tracewire_connections_total",
            "TCP connections tracked.",
            &[("", self.connections_tracked.load(Relaxed))],
        );
        counter(
            "tracewire_requests_total",
            "HTTP requests parsed.",
            &[("", self.requests_parsed.load(Relaxed))],
        );
        counter(
            "tracewire_spans_built_total",
            "Spans built.",
            &[("", self.spans_built.load(Relaxed))],
        );
        counter(
            "tracewire_spans_exported_total",
            "Spans accepted by the exporter.",
            &[("", self.spans_exported.load(Relaxed))],
        );
        counter(
            "tracewire_spans_sampled_out_total",
            "Spans not exported because their trace was not sampled upstream.",
            &[("", self.spans_sampled_out.load(Relaxed))],
        );
        counter(
            "tracewire_export_errors_total",
            "Export calls that failed.",
            &[("", self.export_errors.load(Relaxed))],
        );
        {
            use crate::span::analysis::Finding;
            counter(
                "tracewire_findings_total",
                "Findings added to spans as events: N+1 calls, serial fan-out, cold starts.",
                &[
                    ("finding=\"n_plus_one\"", self.findings(Finding::NPlusOne)),
                    (
                        "finding=\"serial_fan_out\"",
                        self.findings(Finding::SerialFanOut),
                    ),
                    ("finding=\"cold_start\"", self.findings(Finding::ColdStart)),
                ],
            );
        }
        counter(
            "tracewire_analysis_orphans_total",
            "Spans not judged with their siblings: their parent span never came within 30 s \
             (sampled out, lost, or on another host) or too many parents were pending.",
            &[("", self.analysis_orphans.load(Relaxed))],
        );
        let injection: Vec<(String, u64)> = INJECTION_OUTCOMES
            .iter()
            .map(|(c, label)| (format!("outcome=\"{label}\""), self.kernel_counter(*c)))
            .collect();
        let injection: Vec<(&str, u64)> = injection.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        counter(
            "tracewire_injection_total",
            "HTTP/1 request heads written in --inject-cgroup cgroups, by what the kernel did: \
             injected (joining the server request being handled), injected_new_trace (no single \
             request in flight on the thread), or why it left the bytes alone.",
            &injection,
        );
        counter(
            "tracewire_kernel_contexts_total",
            "Server request contexts the kernel created for injection.",
            &[(
                "",
                self.kernel_counter(agent_common::KernelCounter::ServerContexts),
            )],
        );
        counter(
            "tracewire_tls_records_total",
            "OpenSSL reads and writes seen by the TLS probes: plaintext (sent as the socket's \
             data), inferred_socket (a memory-BIO call, e.g. Node, tied to its socket by the \
             thread's adjacent socket read or write) or no_socket (not tied to any socket).",
            &[
                (
                    "outcome=\"plaintext\"",
                    self.kernel_counter(agent_common::KernelCounter::TlsEvents),
                ),
                (
                    "outcome=\"no_socket\"",
                    self.kernel_counter(agent_common::KernelCounter::TlsNoSocket),
                ),
                (
                    "outcome=\"inferred_socket\"",
                    self.kernel_counter(agent_common::KernelCounter::TlsInferred),
                ),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP tracewire_injection_active 1 when --inject-cgroup is set and its kernel \
             programs are attached.\n# TYPE tracewire_injection_active gauge\n\
             tracewire_injection_active {}",
            u8::from(self.injection_active.load(Relaxed))
        );
        let hooks = self.syscall_hooks.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP tracewire_syscall_hooks How the kernel programs hook the syscalls they \
             capture: fexit (fast path), tp_btf (one sys_exit program) or tracepoints.\n\
             # TYPE tracewire_syscall_hooks gauge\n\
             tracewire_syscall_hooks{{path=\"fexit\"}} {}\n\
             tracewire_syscall_hooks{{path=\"tp_btf\"}} {}\n\
             tracewire_syscall_hooks{{path=\"tracepoints\"}} {}",
            u8::from(hooks == 1),
            u8::from(hooks == 2),
            u8::from(hooks == 0)
        );
        let _ = writeln!(
            out,
            "# HELP tracewire_connections_open TCP connections whose reassembly state the \
             agent holds now (bounded by --max-connections).\n\
             # TYPE tracewire_connections_open gauge\n\
             tracewire_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tracewire_kubernetes_pods Pods of this node known from the Kubernetes API, \
             whose names, namespaces and owners the resources carry.\n\
             # TYPE tracewire_kubernetes_pods gauge\n\
             tracewire_kubernetes_pods {}",
            self.kubernetes_pods.load(Relaxed)
        );
        self.render_export(&mut out);
        self.render_tail(&mut out);
        render_process(&mut out);
        out
    }

    fn render_export(&self, out: &mut String) {
        let name = "tracewire_export_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time each OTLP span export request took, retries included.\n\
             # TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, c) in self.export_buckets.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match EXPORT_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.export_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
        let _ = writeln!(
            out,
            "# HELP tracewire_queue_items Items waiting in each queue between stages (events: \
             capture to reassembly, notices: reassembly to spans, spans: to export), and each \
             queue's bound.\n# TYPE tracewire_queue_items gauge"
        );
        for q in Queue::ALL {
            let i = q as usize;
            let load = |a: &[AtomicU64]| a.get(i).map_or(0, |v| v.load(Relaxed));
            let _ = writeln!(
                out,
                "tracewire_queue_items{{queue=\"{0}\",state=\"queued\"}} {1}\n\
                 tracewire_queue_items{{queue=\"{0}\",state=\"capacity\"}} {2}",
                q.label(),
                load(&self.queue_depth),
                load(&self.queue_capacity)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tracewire_metric_exports_total OTLP metric export requests by outcome.\n\
             # TYPE tracewire_metric_exports_total counter\n\
             tracewire_metric_exports_total{{outcome=\"ok\"}} {}\n\
             tracewire_metric_exports_total{{outcome=\"failed\"}} {}",
            self.metric_exports.load(Relaxed),
            self.metric_export_errors.load(Relaxed),
        );
    }

    fn render_tail(&self, out: &mut String) {
        let Some(t) = *self.tail.lock().unwrap_or_else(PoisonError::into_inner) else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP tracewire_tail_sampling_traces_total Traces the tail sampler decided.\n\
             # TYPE tracewire_tail_sampling_traces_total counter\n\
             tracewire_tail_sampling_traces_total{{decision=\"kept\"}} {}\n\
             tracewire_tail_sampling_traces_total{{decision=\"dropped\"}} {}\n\
             # HELP tracewire_tail_sampling_spans_total Spans by their trace's decision; late \
             spans came after it.\n\
             # TYPE tracewire_tail_sampling_spans_total counter\n\
             tracewire_tail_sampling_spans_total{{decision=\"kept\",late=\"false\"}} {}\n\
             tracewire_tail_sampling_spans_total{{decision=\"dropped\",late=\"false\"}} {}\n\
             tracewire_tail_sampling_spans_total{{decision=\"kept\",late=\"true\"}} {}\n\
             tracewire_tail_sampling_spans_total{{decision=\"dropped\",late=\"true\"}} {}\n\
             # HELP tracewire_tail_sampling_decided_early_total Traces decided before \
             decision_wait because the buffer hit num_traces or max_buffered_bytes.\n\
             # TYPE tracewire_tail_sampling_decided_early_total counter\n\
             tracewire_tail_sampling_decided_early_total {}\n\
             # HELP tracewire_tail_sampling_buffered What the tail sampler holds now.\n\
             # TYPE tracewire_tail_sampling_buffered gauge\n\
             tracewire_tail_sampling_buffered{{unit=\"traces\"}} {}\n\
             tracewire_tail_sampling_buffered{{unit=\"spans\"}} {}\n\
             tracewire_tail_sampling_buffered{{unit=\"bytes\"}} {}",
            t.traces_kept,
            t.traces_dropped,
            t.spans_kept,
            t.spans_dropped,
            t.late_kept,
            t.late_dropped,
            t.decided_early,
            t.buffered_traces,
            t.buffered_spans,
            t.buffered_bytes,
        );
    }
}

/// The agent's own memory and CPU, with the names Prometheus client libraries use.
fn render_process(out: &mut String) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised comm: utime and stime are the 12th and 13th.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes The agent's resident memory.\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes {}\n\
         # HELP process_cpu_seconds_total CPU time the agent used, user and system.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {}",
        rss_pages * page,
        cpu_ticks as f64 / ticks
    );
}

/// Counts the spans a collector refused in a partial-success answer: they are lost, so
/// counted as `collector_rejected`, and logged (the first time, then once per thousand spans;
/// an outage must not flood the log).
pub fn collector_rejected(rejected: u64, message: &str) {
    let before = TELEMETRY.dropped(Drop::CollectorRejected);
    TELEMETRY.drop_n(Drop::CollectorRejected, rejected);
    if before == 0 || before / 1000 != (before + rejected) / 1000 {
        tracing::warn!(
            rejected_spans = rejected,
            collector_says = message,
            "the collector refused part of an export (partial success); those spans are lost \
             and counted as collector_rejected"
        );
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_drop_reason() {
        let t = Telemetry::new();
        t.drop(Drop::HeadTooLarge);
        t.drop_n(Drop::NotHttp, 3);
        let text = t.render_prometheus();
        assert!(text.contains("tracewire_dropped_total{reason=\"head_too_large\"} 1"));
        assert!(text.contains("tracewire_dropped_total{reason=\"not_http\"} 3"));
        for d in Drop::ALL {
            assert!(text.contains(d.label()), "{} missing", d.label());
        }
        assert!(text.contains("tracewire_spans_exported_total 0"));
        assert!(text.contains("tracewire_kubernetes_pods 0"));
    }
}
