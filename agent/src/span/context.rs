//! Trace context: which trace a span belongs to and who its parent is.
//!
//! * Incoming: a valid W3C `traceparent` (Trace Context level 1) on a request the process
//!   serves makes its server span join the caller's trace; an invalid one is counted and
//!   ignored, never trusted.
//! * In-process: a request a process makes while it is serving one becomes a child of that
//!   server span. Exact for thread-per-request servers (the same thread reads the request and
//!   makes the call); for runtimes that move work between threads (Go) only when the process is
//!   serving exactly one request at that moment. When the agent cannot tell, the client span
//!   starts a new trace: a wrong parent is worse than none.
use foldhash::{HashMap, HashMapExt};

use crate::{
    capture::event::{KernelCtx, KernelCtxKind},
    telemetry::{Drop, TELEMETRY},
};

use super::{new_span_id, new_trace_id};
use crate::sampling::head::Sampler;

/// Where a span sits in its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent is in another process (it came in a `traceparent`).
    pub parent_is_remote: bool,
    pub sampled: bool,
    pub tracestate: Option<String>,
}

impl SpanContext {
    /// A new trace with this span at its root.
    pub fn new_root() -> Self {
        SpanContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent_span_id: None,
            parent_is_remote: false,
            sampled: true,
            tracestate: None,
        }
    }
}

/// A parsed, valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceParent {
    #[error("traceparent has the wrong length or separators")]
    Shape,
    #[error("traceparent has a field that is not lowercase hex")]
    NotHex,
    #[error("traceparent version ff is forbidden")]
    VersionFF,
    #[error("traceparent trace-id or parent-id is all zeros")]
    ZeroId,
}

fn hex_field<const N: usize>(s: &[u8]) -> Result<[u8; N], InvalidTraceParent> {
    if s.len() != N * 2 {
        return Err(InvalidTraceParent::Shape);
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidTraceParent::NotHex),
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
    }
    Ok(out)
}

/// Parses a `traceparent` value by the W3C Trace Context level 1 rules: version 00 is exactly
/// `00-{32 hex}-{16 hex}-{2 hex}`; a higher version may carry more fields after a `-`;
/// version ff, upper-case hex and all-zero ids are invalid.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, InvalidTraceParent> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < 55 {
        return Err(InvalidTraceParent::Shape);
    }
    let version: [u8; 1] = hex_field(&v[0..2])?;
    if version[0] == 0xff {
        return Err(InvalidTraceParent::VersionFF);
    }
    if version[0] == 0 && v.len() != 55 {
        return Err(InvalidTraceParent::Shape);
    }
    if v.len() > 55 && v[55] != b'-' {
        return Err(InvalidTraceParent::Shape);
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(InvalidTraceParent::Shape);
    }
    let trace_id: [u8; 16] = hex_field(&v[3..35])?;
    let parent_id: [u8; 8] = hex_field(&v[36..52])?;
    let flags: [u8; 1] = hex_field(&v[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return Err(InvalidTraceParent::ZeroId);
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// How a process's runtime schedules requests onto threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// The thread that reads a request makes the calls it causes (CPython, Java, nginx,
    /// Node's event loop when one request is in flight on it).
    PerThread,
    /// Work migrates between OS threads (Go goroutines): only a process serving exactly one
    /// request can be linked.
    Migrating,
}

/// A request seen starting, with what the context needs to know.
#[derive(Clone, Debug)]
pub struct RequestStart {
    pub id: u64,
    pub server: bool,
    pub tgid: u32,
    pub tid: u32,
    pub threading: Threading,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// With injection: the ids the kernel gave this request (server), or wrote into it
    /// (client). They are on the wire already, so the span takes them.
    pub kernel: Option<KernelCtx>,
}

/// Server requests in flight, by process and thread, and the contexts given to requests that
/// have started but not finished.
pub struct ContextTracker {
    serving: HashMap<u32, Vec<Serving>>,
    assigned: HashMap<u64, SpanContext>,
    capacity: usize,
    sampler: Sampler,
}

#[derive(Clone, Debug)]
struct Serving {
    id: u64,
    tid: u32,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl ContextTracker {
    pub fn new(capacity: usize) -> Self {
        Self::with_sampler(capacity, Sampler::default())
    }

    pub fn with_sampler(capacity: usize, sampler: Sampler) -> Self {
        ContextTracker {
            serving: HashMap::new(),
            assigned: HashMap::new(),
            capacity: capacity.max(16),
            sampler,
        }
    }

    /// The server request thread `tid` of process `tgid` is serving, if exactly one: its
    /// trace id, span id and sampling decision.
    pub fn serving_on(&self, tgid: u32, tid: u32) -> Option<([u8; 16], [u8; 8], bool)> {
        let mut on_thread = self.serving.get(&tgid)?.iter().filter(|s| s.tid == tid);
        let only = on_thread.next()?;
        if on_thread.next().is_some() {
            return None;
        }
        Some((only.trace_id, only.span_id, only.sampled))
    }

    /// Gives a starting request its context.
    pub fn start(&mut self, req: &RequestStart) {
        if self.assigned.len() >= self.capacity {
            // More requests in flight than the bound: their links are lost, not the spans.
            TELEMETRY.drop_n(Drop::ContextOverflow, self.assigned.len() as u64);
            self.assigned.clear();
            self.serving.clear();
        }
        let (mut ctx, parent_sampled) = if req.server {
            self.start_server(req)
        } else {
            self.start_client(req)
        };
        ctx.sampled = self.sampler.sample(&ctx.trace_id, parent_sampled);
        if req.server
            && let Some(list) = self.serving.get_mut(&req.tgid)
            && let Some(entry) = list.iter_mut().find(|s| s.id == req.id)
        {
            // Calls made while serving inherit the decision actually taken.
            entry.sampled = ctx.sampled;
        }
        self.assigned.insert(req.id, ctx);
    }

    /// The context, and the parent's sampled flag when there is a parent.
    fn start_server(&mut self, req: &RequestStart) -> (SpanContext, Option<bool>) {
        let incoming = req.traceparent.as_deref().map(parse_traceparent);
        // With injection the kernel already chose this span's ids (and handed them to the
        // calls it causes); the incoming header, when valid, still decides the trace.
        let kernel = req.kernel.filter(|k| k.kind == KernelCtxKind::Server);
        let span_id = kernel.map_or_else(new_span_id, |k| k.span_id);
        let ctx = match incoming {
            Some(Ok(tp)) => {
                if kernel.is_some_and(|k| k.trace_id != tp.trace_id) {
                    TELEMETRY.drop(Drop::KernelContextMismatch);
                }
                SpanContext {
                    trace_id: tp.trace_id,
                    span_id,
                    parent_span_id: Some(tp.parent_id),
                    parent_is_remote: true,
                    sampled: tp.sampled,
                    tracestate: req.tracestate.clone(),
                }
            }
            other => {
                if matches!(other, Some(Err(_))) {
                    TELEMETRY.drop(Drop::InvalidTraceparent);
                }
                let mut root = SpanContext::new_root();
                if let Some(k) = kernel {
                    root.trace_id = k.trace_id;
                    root.span_id = k.span_id;
                }
                root
            }
        };
        self.serving.entry(req.tgid).or_default().push(Serving {
            id: req.id,
            tid: req.tid,
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            sampled: ctx.sampled,
        });
        let parent_sampled = ctx.parent_span_id.map(|_| ctx.sampled);
        (ctx, parent_sampled)
    }

    fn start_client(&mut self, req: &RequestStart) -> (SpanContext, Option<bool>) {
        if let Some(k) = req.kernel.filter(|k| k.kind == KernelCtxKind::Injected) {
            return self.start_injected(req, &k);
        }
        // The application's own instrumentation wins: its ids are the client span's, and its
        // sampled flag is the decision it already took for the trace.
        if let Some(Ok(tp)) = req.traceparent.as_deref().map(parse_traceparent) {
            let ctx = SpanContext {
                trace_id: tp.trace_id,
                span_id: tp.parent_id,
                parent_span_id: None,
                parent_is_remote: false,
                sampled: tp.sampled,
                tracestate: req.tracestate.clone(),
            };
            return (ctx, Some(tp.sampled));
        }
        let serving = self
            .serving
            .get(&req.tgid)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let candidates: Vec<&Serving> = match req.threading {
            Threading::PerThread => serving.iter().filter(|s| s.tid == req.tid).collect(),
            Threading::Migrating => serving.iter().collect(),
        };
        match candidates.as_slice() {
            [parent] => (
                SpanContext {
                    trace_id: parent.trace_id,
                    span_id: new_span_id(),
                    parent_span_id: Some(parent.span_id),
                    parent_is_remote: false,
                    sampled: parent.sampled,
                    tracestate: None,
                },
                Some(parent.sampled),
            ),
            many => {
                if many.len() > 1 {
                    TELEMETRY.drop(Drop::AmbiguousParent);
                }
                (SpanContext::new_root(), None)
            }
        }
    }

    /// A client request the kernel wrote `traceparent` into: its ids are on the wire. Its
    /// parent is the server span the kernel named, if that span is one this process is serving
    /// in the same trace; otherwise the call is the root of the trace the header started.
    fn start_injected(&mut self, req: &RequestStart, k: &KernelCtx) -> (SpanContext, Option<bool>) {
        let mut ctx = SpanContext {
            trace_id: k.trace_id,
            span_id: k.span_id,
            parent_span_id: None,
            parent_is_remote: false,
            sampled: k.sampled,
            tracestate: None,
        };
        let Some(parent_id) = k.parent_id else {
            return (ctx, None);
        };
        let parent = self
            .serving
            .get(&req.tgid)
            .and_then(|list| list.iter().find(|s| s.span_id == parent_id));
        match parent {
            Some(p) if p.trace_id == k.trace_id => {
                ctx.parent_span_id = Some(parent_id);
                (ctx, Some(p.sampled))
            }
            _ => {
                TELEMETRY.drop(Drop::KernelContextMismatch);
                (ctx, None)
            }
        }
    }

    /// The context of a finished (or abandoned) request; a server request stops being in
    /// flight.
    pub fn finish(&mut self, id: u64, tgid: u32) -> Option<SpanContext> {
        if let Some(list) = self.serving.get_mut(&tgid) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                self.serving.remove(&tgid);
            }
        }
        self.assigned.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_rules() {
        let tp = parse_traceparent(TP).expect("valid");
        assert_eq!(
            super::super::hex(&tp.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(super::super::hex(&tp.parent_id), "00f067aa0ba902b7");
        assert!(tp.sampled);
        assert!(
            !parse_traceparent(&TP.replace("-01", "-00"))
                .expect("valid")
                .sampled
        );
        let bad = [
            ("", InvalidTraceParent::Shape),
            (&TP.to_uppercase(), InvalidTraceParent::NotHex),
            (&TP.replacen("00", "ff", 1), InvalidTraceParent::VersionFF),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                InvalidTraceParent::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                InvalidTraceParent::ZeroId,
            ),
            (&format!("{TP}-extra"), InvalidTraceParent::Shape),
            (&TP.replace('-', "_"), InvalidTraceParent::Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                InvalidTraceParent::NotHex,
            ),
        ];
        for (input, want) in bad {
            assert_eq!(parse_traceparent(input), Err(want), "{input}");
        }
        // A future version may append fields.
        assert!(parse_traceparent(&format!("01{}-what", &TP[2..])).is_ok());
    }

    fn start(
        id: u64,
        server: bool,
        tid: u32,
        tp: Option<&str>,
        threading: Threading,
    ) -> RequestStart {
        RequestStart {
            id,
            server,
            tgid: 100,
            tid,
            threading,
            traceparent: tp.map(str::to_string),
            tracestate: None,
            kernel: None,
        }
    }

    #[test]
    fn server_joins_incoming_trace_and_client_is_its_child() {
        let mut t = ContextTracker::new(64);
        t.start(&start(1, true, 7, Some(TP), Threading::PerThread));
        t.start(&start(2, false, 7, None, Threading::PerThread));
        let client = t.finish(2, 100).expect("client ctx");
        let server = t.finish(1, 100).expect("server ctx");
        assert_eq!(
            server
                .parent_span_id
                .map(|p| super::super::hex(&p))
                .as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(server.parent_is_remote);
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent_span_id, Some(server.span_id));
        // After the server request ended, a call from that thread starts its own trace.
        t.start(&start(3, false, 7, None, Threading::PerThread));
        let lone = t.finish(3, 100).expect("ctx");
        assert_eq!(lone.parent_span_id, None);
        assert_ne!(lone.trace_id, server.trace_id);
    }

    #[test]
    fn other_threads_and_ambiguity_get_no_parent() {
        let mut t = ContextTracker::new(64);
        t.start(&start(1, true, 7, None, Threading::PerThread));
        t.start(&start(2, false, 8, None, Threading::PerThread));
        assert_eq!(t.finish(2, 100).expect("ctx").parent_span_id, None);
        // Go: one request in flight in the process links whatever thread calls...
        t.start(&start(3, false, 9, None, Threading::Migrating));
        let linked = t.finish(3, 100).expect("ctx");
        assert!(linked.parent_span_id.is_some());
        // ...two in flight do not.
        t.start(&start(4, true, 8, None, Threading::Migrating));
        t.start(&start(5, false, 8, None, Threading::Migrating));
        assert_eq!(t.finish(5, 100).expect("ctx").parent_span_id, None);
    }

    #[test]
    fn instrumented_client_keeps_its_ids_and_invalid_headers_are_ignored() {
        let mut t = ContextTracker::new(64);
        t.start(&start(1, false, 7, Some(TP), Threading::PerThread));
        let c = t.finish(1, 100).expect("ctx");
        assert_eq!(super::super::hex(&c.span_id), "00f067aa0ba902b7");
        t.start(&start(2, true, 7, Some("garbage"), Threading::PerThread));
        let s = t.finish(2, 100).expect("ctx");
        assert_eq!(s.parent_span_id, None);
        assert!(s.sampled);
    }

    fn kernel(kind: KernelCtxKind, trace: u8, span: u8, parent: Option<u8>) -> KernelCtx {
        KernelCtx {
            kind,
            trace_id: [trace; 16],
            span_id: [span; 8],
            parent_id: parent.map(|p| [p; 8]),
            sampled: true,
        }
    }

    #[test]
    fn kernel_ids_are_taken_and_checked() {
        let mut t = ContextTracker::new(64);
        // Server: the kernel's ids; client: the injected ids, child of that server span.
        let mut server = start(1, true, 7, None, Threading::PerThread);
        server.kernel = Some(kernel(KernelCtxKind::Server, 1, 2, None));
        t.start(&server);
        let mut client = start(2, false, 7, None, Threading::PerThread);
        client.kernel = Some(kernel(KernelCtxKind::Injected, 1, 3, Some(2)));
        t.start(&client);
        let c = t.finish(2, 100).expect("ctx");
        assert_eq!((c.trace_id, c.span_id), ([1; 16], [3; 8]));
        assert_eq!(c.parent_span_id, Some([2; 8]));
        // A kernel parent that is not a server span of this trace is not trusted.
        let mut stray = start(3, false, 7, None, Threading::PerThread);
        stray.kernel = Some(kernel(KernelCtxKind::Injected, 9, 4, Some(2)));
        t.start(&stray);
        let s = t.finish(3, 100).expect("ctx");
        assert_eq!((s.trace_id, s.parent_span_id), ([9; 16], None));
        let srv = t.finish(1, 100).expect("ctx");
        assert_eq!((srv.trace_id, srv.span_id), ([1; 16], [2; 8]));
        // An incoming traceparent decides the trace; the kernel's span id is kept.
        let mut joined = start(4, true, 7, Some(TP), Threading::PerThread);
        joined.kernel = Some(kernel(KernelCtxKind::Server, 5, 6, None));
        t.start(&joined);
        let j = t.finish(4, 100).expect("ctx");
        assert_eq!(
            super::super::hex(&j.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(j.span_id, [6; 8]);
    }
}
