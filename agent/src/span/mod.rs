//! Spans: the one type that flows from reassembly to export, built from exchanges with the
//! OpenTelemetry semantic conventions, and the clock that dates them.
pub mod analysis;
pub mod context;
pub mod db;
pub mod http;
pub mod logs;
pub mod rpc;
pub mod semconv;

use std::sync::Arc;

pub use compact_str::CompactString;

use crate::capture::process::ProcessInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(CompactString),
    Int(i64),
    StrArray(Vec<String>),
    IntArray(Vec<i64>),
}

impl AttrValue {
    /// Bytes on the heap, for memory accounting.
    pub fn heap_len(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            AttrValue::Int(_) => 0,
            AttrValue::StrArray(v) => v.iter().map(|s| s.len() + 24).sum(),
            AttrValue::IntArray(v) => v.len() * 8,
        }
    }
}

/// Strings as they are, numbers in decimal, arrays comma-separated.
impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::StrArray(v) => f.write_str(&v.join(",")),
            AttrValue::IntArray(v) => {
                for (n, i) in v.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{i}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: AttrValue,
}

impl Attribute {
    pub fn str(key: &'static str, value: impl Into<CompactString>) -> Self {
        Attribute {
            key,
            value: AttrValue::Str(value.into()),
        }
    }

    pub fn int(key: &'static str, value: i64) -> Self {
        Attribute {
            key,
            value: AttrValue::Int(value),
        }
    }

    pub fn strs(key: &'static str, value: Vec<String>) -> Self {
        Attribute {
            key,
            value: AttrValue::StrArray(value),
        }
    }

    pub fn ints(key: &'static str, value: Vec<i64>) -> Self {
        Attribute {
            key,
            value: AttrValue::IntArray(value),
        }
    }
}

/// Something that happened during a span (OpenTelemetry span event): here, the findings of
/// [`analysis`].
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: &'static str,
    /// Nanoseconds since the Unix epoch.
    pub time_unix_ns: u64,
    pub attributes: Vec<Attribute>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Error,
}

/// A finished span with the ids and wall-clock times the agent computed.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent came in a `traceparent` from another process.
    pub parent_is_remote: bool,
    /// W3C `tracestate` carried over from the incoming request.
    pub tracestate: Option<String>,
    pub kind: SpanKind,
    pub name: CompactString,
    /// Nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<Attribute>,
    /// Findings about its children (N+1, serial fan-out) or itself (cold start).
    pub events: Vec<SpanEvent>,
    pub status: Status,
    /// The process that served or made the request: the span's resource.
    pub process: Arc<ProcessInfo>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| key_eq(a.key, key))
            .map(|a| &a.value)
    }
}

/// `a == b` for attribute keys, which are the `semconv` constants: most pairs differ in
/// length or in their first eight bytes, and equal ones are mostly the same bytes, so the
/// byte-by-byte comparison (a libc call) is rarely reached. RED and sampling look attributes
/// up by key for every span.
#[inline]
fn key_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if std::ptr::eq(a.as_ptr(), b.as_ptr()) {
        return true;
    }
    if let (Some(x), Some(y)) = (
        a.as_bytes().first_chunk::<8>(),
        b.as_bytes().first_chunk::<8>(),
    ) && x != y
    {
        return false;
    }
    a == b
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time. The offset is taken
/// once at start, between two monotonic reads, so conversion is exact to the microsecond and
/// free of syscalls; a later wall-clock step (NTP) is not followed, like the kernel's own
/// bpf_ktime_get_ns.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        let before = clock_ns(libc::CLOCK_MONOTONIC);
        let wall = clock_ns(libc::CLOCK_REALTIME);
        let after = clock_ns(libc::CLOCK_MONOTONIC);
        Clock {
            offset_ns: wall - (before + (after - before) / 2),
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    pub fn to_unix_ns(&self, monotonic_ns: u64) -> u64 {
        let v = i128::from(monotonic_ns) + self.offset_ns;
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Random ids from the thread's CSPRNG, drawn as one integer: `rand::random::<[u8; N]>()`
/// draws every byte on its own (a 32-bit word each), which was 4% of the agent at load.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id.to_le_bytes();
        }
    }
}

pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id.to_le_bytes();
        }
    }
}

/// Lower-case hex, without the formatting machinery (it runs twice per span on stdout).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// What the span stage does besides building spans.
pub struct Stage {
    pub opts: http::SpanOptions,
    pub sampler: crate::sampling::head::Sampler,
    pub red: Option<std::sync::Arc<std::sync::Mutex<crate::export::red::Red>>>,
    pub findings: analysis::FindingsConfig,
    /// `tracewire watch`'s store, when its socket is served.
    pub recent: Option<std::sync::Arc<crate::watch::Recent>>,
    /// Logs tied to traces (`--export-logs`).
    pub logs: Option<logs::LogTap>,
}

/// The span stage: notices in, spans out to the export queue, until the input closes. Trace
/// contexts are decided as requests start, in the order reassembly saw them. With RED metrics
/// on, every finished request is measured, sampled or not. Exported spans go through
/// [`analysis`] first; log lines are tied to the requests their threads serve.
pub async fn run(
    mut notices: crate::queue::BatchReceiver<crate::reassembly::Notice>,
    spans: crate::queue::BatchSender<Span>,
    stage: Stage,
) {
    let Stage {
        opts,
        sampler,
        red,
        findings,
        recent,
        mut logs,
    } = stage;
    // Spans ready for export, handed over once per batch of notices (or tick).
    let send = |ready: &mut Vec<Span>| {
        if let Some(recent) = &recent {
            ready.iter().for_each(|span| recent.record(span));
        }
        crate::export::enqueue(&spans, std::mem::take(ready));
    };
    use crate::reassembly::Notice;
    use std::sync::atomic::Ordering::Relaxed;
    let clock = Clock::new();
    let mut contexts = context::ContextTracker::with_sampler(65536, sampler);
    let mut analyzer = analysis::Analyzer::new(findings);
    let mut ready: Vec<Span> = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Notices come in batches (those of one batch of events): one wakeup and one poll of
        // the timer per batch rather than per notice.
        let batch = tokio::select! {
            batch = notices.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = tick.tick() => {
                analyzer.tick(std::time::Instant::now(), &mut ready);
                crate::telemetry::TELEMETRY
                    .analysis_orphans
                    .store(analyzer.orphans, Relaxed);
                send(&mut ready);
                continue;
            }
        };
        for notice in batch {
            match notice {
                Notice::Started(req) => contexts.start(&req),
                Notice::Abandoned { id, tgid } => {
                    contexts.finish(id, tgid);
                }
                Notice::Log(line) => {
                    if let Some(tap) = logs.as_mut() {
                        tap.write(line, &contexts, &clock);
                    }
                }
                Notice::Finished(ex) => {
                    let ctx = contexts
                        .finish(ex.id, ex.conn.process.pid)
                        .unwrap_or_else(context::SpanContext::new_root);
                    if !ctx.sampled && red.is_none() {
                        crate::telemetry::TELEMETRY
                            .spans_sampled_out
                            .fetch_add(1, Relaxed);
                        continue;
                    }
                    let sampled = ctx.sampled;
                    let span = http::build(&ex, ctx, &clock, opts);
                    if let Some(red) = &red {
                        red.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .record(&span);
                    }
                    if !sampled {
                        crate::telemetry::TELEMETRY
                            .spans_sampled_out
                            .fetch_add(1, Relaxed);
                        continue;
                    }
                    crate::telemetry::TELEMETRY
                        .spans_built
                        .fetch_add(1, Relaxed);
                    analyzer.process(span, std::time::Instant::now(), &mut ready);
                }
            }
        }
        send(&mut ready);
    }
    analyzer.drain(&mut ready);
    send(&mut ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_matches_wall_time() {
        let clock = Clock::new();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = clock_ns(libc::CLOCK_REALTIME) as u64;
        let converted = clock.to_unix_ns(mono);
        assert!(
            converted.abs_diff(wall) < 1_000_000,
            "{converted} vs {wall}"
        );
    }

    #[test]
    fn ids_are_nonzero_and_hex() {
        assert_ne!(new_trace_id(), [0; 16]);
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
