//! Tail sampling: spans are held per trace until the trace's decision time, then the whole
//! trace is kept or dropped by policies written exactly as the OpenTelemetry Collector's
//! `tail_sampling` processor writes them, so a policy moves between the collector and the
//! agent unchanged. Decisions follow the collector: a trace is kept when any policy says so;
//! the decision is made `decision_wait` after the trace's first span arrived; spans arriving
//! after it follow the remembered decision.
//!
//! Memory is bounded three ways: the number of buffered traces, the estimated bytes of their
//! spans (the oldest traces are decided early, on what they have, to stay under both), and the
//! number of remembered decisions (oldest forgotten first).
mod policy;

pub use policy::{
    LatencyConfig, PolicyConfig, ProbabilisticConfig, StatusCodeConfig, TailConfig, TailError,
    format_duration, parse_duration,
};
use policy::{Policy, StatusSet};

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::span::Span;

/// A span's share of `max_buffered_bytes`: its struct, a fixed allowance for allocator and
/// table overhead, and the lengths of its strings (attribute keys counted too, as they are
/// exported). Cheap, and close enough to bound memory.
fn estimate_bytes(span: &Span) -> usize {
    const OVERHEAD: usize = std::mem::size_of::<Span>() + 64;
    let attrs: usize = span
        .attributes
        .iter()
        .map(|a| std::mem::size_of::<crate::span::Attribute>() + a.key.len() + a.value.heap_len())
        .sum();
    let events: usize = span
        .events
        .iter()
        .map(|e| {
            std::mem::size_of::<crate::span::SpanEvent>()
                + e.attributes
                    .iter()
                    .map(|a| std::mem::size_of::<crate::span::Attribute>() + a.value.heap_len())
                    .sum::<usize>()
        })
        .sum();
    OVERHEAD + span.name.len() + span.tracestate.as_ref().map_or(0, String::len) + attrs + events
}

/// A trace waiting for its decision, with what the policies look at kept up to date.
#[derive(Debug)]
pub(super) struct Pending {
    spans: Vec<Span>,
    bytes: usize,
    min_start: u64,
    max_end: u64,
    statuses: StatusSet,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            spans: Vec::new(),
            bytes: 0,
            min_start: u64::MAX,
            max_end: 0,
            statuses: StatusSet::default(),
        }
    }
}

impl Pending {
    fn add(&mut self, span: Span, bytes: usize) {
        self.min_start = self.min_start.min(span.start_unix_ns);
        self.max_end = self.max_end.max(span.end_unix_ns);
        self.statuses.add(span.status);
        self.bytes = self.bytes.saturating_add(bytes);
        self.spans.push(span);
    }
}

/// Remembered decisions, oldest forgotten first.
#[derive(Debug)]
struct DecisionCache {
    capacity: usize,
    order: VecDeque<[u8; 16]>,
    keep: HashMap<[u8; 16], bool>,
}

impl DecisionCache {
    fn new(capacity: usize) -> Self {
        DecisionCache {
            capacity,
            order: VecDeque::new(),
            keep: HashMap::new(),
        }
    }

    fn get(&self, trace_id: &[u8; 16]) -> Option<bool> {
        self.keep.get(trace_id).copied()
    }

    fn insert(&mut self, trace_id: [u8; 16], keep: bool) {
        if self.capacity == 0 {
            return;
        }
        if let Some(k) = self.keep.get_mut(&trace_id) {
            *k = keep;
            return;
        }
        while self.order.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.keep.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(trace_id);
        self.keep.insert(trace_id, keep);
    }
}

/// Counters (monotonic) and gauges of a [`TailSampler`], for `/metrics`. Spans of a decided
/// trace count in `spans_kept`/`spans_dropped`; spans arriving after their trace's decision
/// count only in `late_kept`/`late_dropped`. `decided_early` counts traces (kept or dropped)
/// decided before their time because a bound was reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    pub traces_kept: u64,
    pub traces_dropped: u64,
    pub spans_kept: u64,
    pub spans_dropped: u64,
    pub decided_early: u64,
    pub late_kept: u64,
    pub late_dropped: u64,
    pub buffered_traces: u64,
    pub buffered_spans: u64,
    pub buffered_bytes: u64,
}

/// Buffers spans by trace and releases the traces the policies keep. Single-threaded: the
/// span stage owns it and calls [`TailSampler::expire`] on a timer (see
/// [`TailSampler::next_deadline`]).
#[derive(Debug)]
pub struct TailSampler {
    policies: Vec<Policy>,
    decision_wait: Duration,
    num_traces: usize,
    max_buffered_bytes: usize,
    pending: HashMap<[u8; 16], Pending>,
    /// Buffered traces in arrival order with their decision time (`None`: beyond what an
    /// `Instant` holds, decided only by a bound or `flush`). Always the same set as `pending`.
    order: VecDeque<(Option<Instant>, [u8; 16])>,
    decisions: DecisionCache,
    buffered_spans: usize,
    buffered_bytes: usize,
    stats: TailStats,
}

impl TailSampler {
    pub fn new(cfg: TailConfig) -> Result<Self, TailError> {
        let policies = cfg.compile()?;
        Ok(TailSampler {
            policies,
            decision_wait: cfg.decision_wait,
            num_traces: cfg.num_traces,
            max_buffered_bytes: cfg.max_buffered_bytes,
            pending: HashMap::new(),
            order: VecDeque::new(),
            decisions: DecisionCache::new(cfg.decision_cache),
            buffered_spans: 0,
            buffered_bytes: 0,
            stats: TailStats::default(),
        })
    }

    /// Takes a finished span. Spans of an already decided trace go to `out` (kept) or are
    /// dropped at once; others wait for their trace's decision. Traces decided early to make
    /// room release their kept spans into `out` too.
    pub fn push(&mut self, span: Span, now: Instant, out: &mut Vec<Span>) {
        let id = span.trace_id;
        if let Some(keep) = self.decisions.get(&id) {
            if keep {
                self.stats.late_kept += 1;
                out.push(span);
            } else {
                self.stats.late_dropped += 1;
            }
            return;
        }
        if !self.pending.contains_key(&id) {
            while self.pending.len() >= self.num_traces && self.decide_oldest(out) {
                self.stats.decided_early += 1;
            }
            self.order
                .push_back((now.checked_add(self.decision_wait), id));
        }
        let bytes = estimate_bytes(&span);
        self.pending.entry(id).or_default().add(span, bytes);
        self.buffered_spans += 1;
        self.buffered_bytes = self.buffered_bytes.saturating_add(bytes);
        while self.buffered_bytes > self.max_buffered_bytes && self.decide_oldest(out) {
            self.stats.decided_early += 1;
        }
    }

    /// Decides every trace whose time has come, releasing kept spans into `out`. Costs only
    /// the traces decided.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Span>) {
        while let Some(&(Some(deadline), _)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.decide_oldest(out);
        }
    }

    /// Decides every buffered trace now, on what it has (shutdown).
    pub fn flush(&mut self, out: &mut Vec<Span>) {
        while self.decide_oldest(out) {}
    }

    /// When the next trace is due, for the caller's timer; `None` when nothing is buffered
    /// (or the oldest trace's time is beyond what an `Instant` holds).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.front().and_then(|&(deadline, _)| deadline)
    }

    pub fn stats(&self) -> TailStats {
        TailStats {
            buffered_traces: self.pending.len() as u64,
            buffered_spans: self.buffered_spans as u64,
            buffered_bytes: self.buffered_bytes as u64,
            ..self.stats
        }
    }

    /// Decides the oldest buffered trace; false when there is none.
    fn decide_oldest(&mut self, out: &mut Vec<Span>) -> bool {
        let Some((_, id)) = self.order.pop_front() else {
            return false;
        };
        let Some(trace) = self.pending.remove(&id) else {
            // Cannot happen (`order` and `pending` hold the same traces); harmless if it did.
            return true;
        };
        let keep = self.policies.iter().any(|p| p.sample(&id, &trace));
        let spans = trace.spans.len();
        self.buffered_spans = self.buffered_spans.saturating_sub(spans);
        self.buffered_bytes = self.buffered_bytes.saturating_sub(trace.bytes);
        if keep {
            self.stats.traces_kept += 1;
            self.stats.spans_kept += spans as u64;
            out.extend(trace.spans);
        } else {
            self.stats.traces_dropped += 1;
            self.stats.spans_dropped += spans as u64;
        }
        self.decisions.insert(id, keep);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::policy::{fnv1a64, probability_threshold};
    use super::*;
    use crate::capture::process::ProcessInfo;
    use crate::span::{Attribute, SpanKind, Status};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    fn process() -> Arc<ProcessInfo> {
        ProcessInfo::for_test("svc")
    }

    fn tid(n: u64) -> [u8; 16] {
        let mut id = [0x5au8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// A span of trace `n` starting at `start_ms` (from an arbitrary epoch) and lasting `ms`.
    fn span(n: u64, start_ms: u64, ms: u64, status: Status) -> Span {
        let start = 1_700_000_000_000_000_000 + start_ms * 1_000_000;
        Span {
            trace_id: tid(n),
            span_id: [1; 8],
            parent_span_id: None,
            parent_is_remote: false,
            tracestate: None,
            kind: SpanKind::Server,
            name: "GET /".into(),
            start_unix_ns: start,
            end_unix_ns: start + ms * 1_000_000,
            attributes: vec![Attribute::str("http.request.method", "GET")],
            events: Vec::new(),
            status,
            process: process(),
        }
    }

    fn policy(name: &str, kind: &str) -> PolicyConfig {
        PolicyConfig {
            name: name.into(),
            kind: kind.into(),
            ..PolicyConfig::default()
        }
    }

    fn probabilistic(pct: f64, salt: Option<&str>) -> PolicyConfig {
        PolicyConfig {
            probabilistic: Some(ProbabilisticConfig {
                sampling_percentage: pct,
                hash_salt: salt.map(String::from),
            }),
            ..policy("some", "probabilistic")
        }
    }

    fn config(policies: Vec<PolicyConfig>) -> TailConfig {
        TailConfig {
            decision_wait: Duration::from_secs(10),
            num_traces: 1000,
            max_buffered_bytes: 1 << 20,
            decision_cache: 1000,
            policies,
        }
    }

    /// Errors, or slow (>= 500 ms), else nothing.
    fn errors_or_slow() -> TailSampler {
        TailSampler::new(config(vec![
            PolicyConfig {
                status_code: Some(StatusCodeConfig {
                    status_codes: vec!["ERROR".into()],
                }),
                ..policy("errors", "status_code")
            },
            PolicyConfig {
                latency: Some(LatencyConfig {
                    threshold_ms: 500,
                    upper_threshold_ms: None,
                }),
                ..policy("slow", "latency")
            },
            probabilistic(0.0, None),
        ]))
        .expect("valid")
    }

    #[test]
    fn keeps_error_traces() {
        let mut s = errors_or_slow();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.push(span(1, 0, 5, Status::Unset), t0, &mut out);
        s.push(span(1, 1, 2, Status::Error), t0, &mut out);
        s.push(span(2, 0, 5, Status::Unset), t0, &mut out);
        assert!(out.is_empty());
        s.expire(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|sp| sp.trace_id == tid(1)));
        let st = s.stats();
        assert_eq!((st.traces_kept, st.traces_dropped), (1, 1));
        assert_eq!((st.spans_kept, st.spans_dropped), (2, 1));
        assert_eq!(
            (st.buffered_traces, st.buffered_spans, st.buffered_bytes),
            (0, 0, 0)
        );
    }

    #[test]
    fn keeps_slow_traces() {
        let mut s = errors_or_slow();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Two fast spans, 600 ms apart: the trace lasts 600 ms.
        s.push(span(1, 0, 10, Status::Unset), t0, &mut out);
        s.push(span(1, 590, 10, Status::Unset), t0, &mut out);
        // 499 ms: not slow.
        s.push(span(2, 0, 499, Status::Unset), t0, &mut out);
        // Exactly 500 ms: slow (>=).
        s.push(span(3, 0, 500, Status::Unset), t0, &mut out);
        s.flush(&mut out);
        let mut kept: Vec<_> = out.iter().map(|sp| sp.trace_id).collect();
        kept.dedup();
        assert_eq!(kept, vec![tid(1), tid(3)]);

        // The collector's range with an upper bound: threshold < d <= upper.
        let mut s = TailSampler::new(config(vec![PolicyConfig {
            latency: Some(LatencyConfig {
                threshold_ms: 100,
                upper_threshold_ms: Some(200),
            }),
            ..policy("range", "latency")
        }]))
        .expect("valid");
        let mut out = Vec::new();
        for (n, ms) in [(1, 100), (2, 101), (3, 200), (4, 201)] {
            s.push(span(n, 0, ms, Status::Unset), t0, &mut out);
        }
        s.flush(&mut out);
        let kept: Vec<_> = out.iter().map(|sp| sp.trace_id).collect();
        assert_eq!(kept, vec![tid(2), tid(3)]);
    }

    #[test]
    fn drops_fast_ok_traces_at_zero_percent() {
        let mut s = errors_or_slow();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..1000 {
            s.push(span(n, 0, 20, Status::Unset), t0, &mut out);
        }
        s.expire(t0 + Duration::from_secs(11), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.stats().traces_dropped, 1000);
    }

    #[test]
    fn probabilistic_accuracy() {
        let mut s = TailSampler::new(TailConfig {
            num_traces: 200_000,
            max_buffered_bytes: usize::MAX,
            decision_cache: 0,
            ..config(vec![probabilistic(5.0, None)])
        })
        .expect("valid");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut out = Vec::new();
        const N: u64 = 100_000;
        for _ in 0..N {
            let mut sp = span(0, 0, 1, Status::Unset);
            sp.trace_id = rng.random();
            s.push(sp, t0, &mut out);
        }
        s.flush(&mut out);
        let st = s.stats();
        assert_eq!(st.traces_kept + st.traces_dropped, N);
        let pct = st.traces_kept as f64 * 100.0 / N as f64;
        assert!((4.5..=5.5).contains(&pct), "{pct}%");
    }

    #[test]
    fn probabilistic_is_deterministic_across_samplers() {
        let decide = |salt: Option<&str>| {
            let mut s = TailSampler::new(config(vec![probabilistic(30.0, salt)])).expect("valid");
            let mut out = Vec::new();
            let t0 = Instant::now();
            // Random ids, as W3C trace ids are: FNV-1a spreads ids that differ only in their
            // last bytes poorly (the collector's rule has the same property).
            let mut rng = rand::rngs::StdRng::seed_from_u64(11);
            for _ in 0..500 {
                let mut sp = span(0, 0, 1, Status::Unset);
                sp.trace_id = rng.random();
                s.push(sp, t0, &mut out);
            }
            s.flush(&mut out);
            out.into_iter().map(|sp| sp.trace_id).collect::<Vec<_>>()
        };
        let a = decide(None);
        assert!(!a.is_empty() && a.len() < 500);
        assert_eq!(a, decide(None));
        assert_eq!(a, decide(Some("")), "empty salt is the default salt");
        assert_ne!(
            a,
            decide(Some("layer-2")),
            "another salt chooses other traces"
        );
        assert_eq!(decide(Some("layer-2")), decide(Some("layer-2")));
    }

    #[test]
    fn hashes_like_the_collector() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
        assert_eq!(probability_threshold(0.0), None);
        assert_eq!(probability_threshold(100.0), Some(u64::MAX));
        assert_eq!(probability_threshold(50.0), Some(1 << 63));
    }

    #[test]
    fn waits_for_decision_wait() {
        let mut s = TailSampler::new(TailConfig {
            decision_wait: Duration::from_secs(5),
            ..config(vec![policy("all", "always_sample")])
        })
        .expect("valid");
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.push(span(1, 0, 1, Status::Unset), t0, &mut out);
        s.push(
            span(2, 0, 1, Status::Unset),
            t0 + Duration::from_secs(2),
            &mut out,
        );
        // A later span does not move its trace's decision time.
        s.push(
            span(1, 0, 1, Status::Unset),
            t0 + Duration::from_secs(4),
            &mut out,
        );
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
        s.expire(t0 + Duration::from_millis(4_999), &mut out);
        assert!(out.is_empty());
        s.expire(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|sp| sp.trace_id == tid(1)));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(7)));
        s.expire(t0 + Duration::from_millis(6_999), &mut out);
        assert_eq!(out.len(), 2);
        s.expire(t0 + Duration::from_secs(60), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.stats().decided_early, 0);
    }

    #[test]
    fn late_spans_follow_the_decision() {
        let mut s = errors_or_slow();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.push(span(1, 0, 1, Status::Error), t0, &mut out);
        s.push(span(2, 0, 1, Status::Unset), t0, &mut out);
        s.expire(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        let later = t0 + Duration::from_secs(11);
        // Kept trace: a late fast OK span goes straight out.
        s.push(span(1, 5, 1, Status::Unset), later, &mut out);
        assert_eq!(out.len(), 1);
        // Dropped trace: a late error span stays dropped, as in the collector.
        s.push(span(2, 5, 1, Status::Error), later, &mut out);
        assert_eq!(out.len(), 1);
        let st = s.stats();
        assert_eq!((st.late_kept, st.late_dropped), (1, 1));
        assert_eq!(st.buffered_traces, 0);
    }

    #[test]
    fn decision_cache_is_bounded() {
        let mut s = TailSampler::new(TailConfig {
            decision_cache: 3,
            ..config(vec![policy("all", "always_sample")])
        })
        .expect("valid");
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..5 {
            s.push(span(n, 0, 1, Status::Unset), t0, &mut out);
        }
        s.flush(&mut out);
        assert_eq!(s.decisions.keep.len(), 3);
        assert_eq!(s.decisions.order.len(), 3);
        // Trace 0 was forgotten: its late span is buffered as a new trace.
        s.push(span(0, 0, 1, Status::Unset), t0, &mut out);
        assert_eq!(s.stats().buffered_traces, 1);
        // Trace 4 is remembered.
        s.push(span(4, 0, 1, Status::Unset), t0, &mut out);
        assert_eq!(s.stats().late_kept, 1);
    }

    #[test]
    fn num_traces_bound_decides_oldest_early() {
        let mut s = TailSampler::new(TailConfig {
            num_traces: 10,
            ..config(vec![probabilistic(100.0, None)])
        })
        .expect("valid");
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..15 {
            s.push(span(n, 0, 1, Status::Unset), t0, &mut out);
            // A second span of a buffered trace adds no trace.
            s.push(span(n, 0, 1, Status::Unset), t0, &mut out);
            assert!(s.stats().buffered_traces <= 10);
        }
        let st = s.stats();
        assert_eq!(st.decided_early, 5);
        assert_eq!(st.buffered_traces, 10);
        assert_eq!(st.traces_kept, 5);
        // The oldest went first, each with both its spans.
        let early: Vec<_> = out.iter().map(|sp| sp.trace_id).collect();
        let want: Vec<_> = (0..5).flat_map(|n| [tid(n), tid(n)]).collect();
        assert_eq!(early, want);
        s.flush(&mut out);
        assert_eq!(out.len(), 30);
        assert_eq!(s.stats().decided_early, 5);
    }

    #[test]
    fn bytes_bound_decides_oldest_early() {
        let per_span = estimate_bytes(&span(0, 0, 1, Status::Unset));
        let mut s = TailSampler::new(TailConfig {
            max_buffered_bytes: per_span * 4,
            ..config(vec![PolicyConfig {
                status_code: Some(StatusCodeConfig {
                    status_codes: vec!["ERROR".into()],
                }),
                ..policy("errors", "status_code")
            }])
        })
        .expect("valid");
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Trace 0 has an error: decided early, it is still kept.
        s.push(span(0, 0, 1, Status::Error), t0, &mut out);
        for n in 1..6 {
            s.push(span(n, 0, 1, Status::Unset), t0, &mut out);
            assert!(s.stats().buffered_bytes <= (per_span * 4) as u64);
        }
        let st = s.stats();
        assert_eq!(st.decided_early, 2);
        assert_eq!(st.buffered_traces, 4);
        assert_eq!(st.buffered_bytes, (per_span * 4) as u64);
        assert_eq!((st.traces_kept, st.traces_dropped), (1, 1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].trace_id, tid(0));

        // A span larger than the whole budget is decided at once, never kept buffered.
        let mut big = span(9, 0, 1, Status::Error);
        big.attributes
            .push(Attribute::str("url.full", "x".repeat(per_span * 8)));
        s.push(big, t0, &mut out);
        assert!(s.stats().buffered_bytes <= (per_span * 4) as u64);
        assert_eq!(out.last().map(|sp| sp.trace_id), Some(tid(9)));
    }

    #[test]
    fn flush_decides_all() {
        let mut s = errors_or_slow();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..20 {
            let status = if n % 4 == 0 {
                Status::Error
            } else {
                Status::Unset
            };
            s.push(span(n, 0, 1, status), t0, &mut out);
        }
        s.flush(&mut out);
        assert_eq!(out.len(), 5);
        let st = s.stats();
        assert_eq!((st.traces_kept, st.traces_dropped), (5, 15));
        assert_eq!(
            (st.buffered_traces, st.buffered_spans, st.buffered_bytes),
            (0, 0, 0)
        );
        assert_eq!(s.next_deadline(), None);
        // Nothing left: a second flush is a no-op.
        s.flush(&mut out);
        assert_eq!(s.stats(), st);
    }

    #[test]
    fn a_huge_decision_wait_does_not_panic() {
        let mut s = TailSampler::new(TailConfig {
            decision_wait: Duration::from_secs(u64::MAX),
            ..config(vec![policy("all", "always_sample")])
        })
        .expect("valid");
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.push(span(1, 0, 1, Status::Unset), t0, &mut out);
        s.expire(t0 + Duration::from_secs(3600), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.next_deadline(), None);
        s.flush(&mut out);
        assert_eq!(out.len(), 1);
    }
}
