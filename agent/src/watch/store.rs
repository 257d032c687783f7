//! The agent's side of `tracewire watch`: the spans it exported lately, kept only while someone
//! watches (a request arms the store for [`ARMED_FOR`]), so an agent nobody watches pays one
//! atomic load per span.
use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::span::{AttrValue, Span, SpanKind, Status, analysis, hex, semconv as sc};

/// Spans kept, newest last; older ones fall off.
pub const MAX_SPANS: usize = 4096;
/// How long one request keeps the store recording.
pub const ARMED_FOR: Duration = Duration::from_secs(30);

/// What `watch` needs of a span: ids, times, what it was about, and its findings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub server: bool,
    pub service: String,
    pub name: String,
    /// `url.path`, `url.full` (without its query) or the database and namespace.
    pub target: String,
    /// HTTP status code, gRPC status or the database's error code; empty if none.
    pub status: String,
    pub error: bool,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// Finding names without their `tracewire.finding.` prefix.
    pub findings: Vec<String>,
    /// On a process's root span: the span ids of its critical path.
    pub critical_path: Vec<String>,
}

impl WatchSpan {
    pub fn from_span(span: &Span) -> Self {
        let text = |key: &str| span.attribute(key).map(AttrValue::to_string);
        let target = text(sc::URL_PATH)
            .or_else(|| {
                text(sc::URL_FULL).map(|u| u.split(['?', '#']).next().unwrap_or("").to_string())
            })
            .or_else(|| {
                text(sc::DB_SYSTEM_NAME).map(|s| match text(sc::DB_NAMESPACE) {
                    Some(ns) => format!("{s}/{ns}"),
                    None => s,
                })
            })
            .unwrap_or_default();
        let status = text(sc::HTTP_RESPONSE_STATUS_CODE)
            .or_else(|| text(sc::RPC_GRPC_STATUS_CODE))
            .or_else(|| text(sc::RPC_RESPONSE_STATUS_CODE))
            .or_else(|| text(sc::DB_RESPONSE_STATUS_CODE))
            .unwrap_or_default();
        let critical_path = match span.attribute(analysis::CRITICAL_PATH_SPAN_IDS) {
            Some(AttrValue::StrArray(ids)) => ids.clone(),
            _ => Vec::new(),
        };
        WatchSpan {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: span.parent_span_id.map(|p| hex(&p)),
            server: span.kind == SpanKind::Server,
            service: span.process.service_name.clone(),
            name: span.name.to_string(),
            target,
            status,
            error: span.status == Status::Error,
            start_unix_ns: span.start_unix_ns,
            end_unix_ns: span.end_unix_ns.max(span.start_unix_ns),
            findings: span
                .events
                .iter()
                .map(|e| {
                    e.name
                        .strip_prefix("tracewire.finding.")
                        .unwrap_or(e.name)
                        .to_string()
                })
                .collect(),
            critical_path,
        }
    }
}

#[derive(Default)]
pub struct Recent {
    /// Unix seconds until which spans are recorded.
    armed_until: AtomicU64,
    spans: Mutex<VecDeque<WatchSpan>>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Recent {
    /// Records `span` if someone watches.
    pub fn record(&self, span: &Span) {
        // Never watched (the usual case): no clock read per span.
        let armed_until = self.armed_until.load(Relaxed);
        if armed_until == 0 || armed_until < unix_secs() {
            return;
        }
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spans.len() >= MAX_SPANS {
            spans.pop_front();
        }
        spans.push_back(WatchSpan::from_span(span));
    }

    /// What a watcher asked for: everything kept, and recording for [`ARMED_FOR`] more.
    pub fn snapshot(&self) -> Vec<WatchSpan> {
        self.armed_until
            .store(unix_secs() + ARMED_FOR.as_secs(), Relaxed);
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}
