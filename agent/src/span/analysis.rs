//! What the waterfall would show a human, computed as spans are built: N+1 calls, serial
//! fan-out, the critical path, and cold starts.
//!
//! Children end, and so are built, before their parent: each span is summarised into its
//! parent's *family* as it goes by, and when the parent comes its family is judged and dropped.
//! Nothing is delayed but a process's first server span, held (at most `cold_start_wait`) until
//! enough of its next requests have been seen to call it a cold start or not.
//!
//! Findings are span events on the span they concern (see the README for each rule and its
//! guard), and counted on `/metrics` (`tracewire_findings_total{finding}`).
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::{AttrValue, Attribute, CompactString, Span, SpanEvent, SpanKind, hex, semconv as sc};

pub const N_PLUS_ONE: &str = "tracewire.finding.n_plus_one";
pub const SERIAL_FAN_OUT: &str = "tracewire.finding.serial_fan_out";
pub const COLD_START: &str = "tracewire.finding.cold_start";
/// The repeated call: `db.system.name` and query text, or method, peer and path template.
pub const SHAPE: &str = "tracewire.finding.shape";
pub const COUNT: &str = "tracewire.finding.count";
/// Time spent in the calls of the finding (cold start: the slow span's duration).
pub const DURATION_NS: &str = "tracewire.finding.duration_ns";
/// Serial fan-out: what running the calls in parallel would have saved (their sum minus the
/// longest).
pub const SAVED_NS: &str = "tracewire.finding.saved_ns";
pub const PEERS: &str = "tracewire.finding.peers";
/// Cold start: the median duration of the requests after it.
pub const MEDIAN_NS: &str = "tracewire.finding.median_ns";
/// On a process's root span (no parent, or a parent in another process): the chain of spans
/// that explains its duration, in time order, with the nanoseconds each spent on it itself.
pub const CRITICAL_PATH_SPAN_IDS: &str = "tracewire.critical_path.span_ids";
pub const CRITICAL_PATH_NAMES: &str = "tracewire.critical_path.names";
pub const CRITICAL_PATH_SELF_NS: &str = "tracewire.critical_path.self_ns";

/// Children remembered per parent; more are counted, not judged.
const MAX_CHILDREN: usize = 256;
/// Parents waiting for their span at once.
const MAX_FAMILIES: usize = 16384;
/// A family whose parent has not come within this is dropped (its parent was sampled out,
/// lost, or is on another host).
const FAMILY_TTL: Duration = Duration::from_secs(30);
/// First server spans held at once, and processes remembered as already judged.
const MAX_HELD: usize = 1024;
const MAX_SEEN: usize = 65536;
/// Steps kept of a critical path.
const MAX_STEPS: usize = 32;
/// Fan-out findings per span.
const MAX_FAN_OUT_EVENTS: usize = 3;
/// A cold start must also be this much slower than the median. What an operator can act on
/// (class loading, JIT, lazy pools, imports) costs tens of milliseconds and more; a first
/// request a few milliseconds slow is a scheduling hiccup of the host (a 2-CPU host starting
/// the agent itself stalled a warm Java server's first traced request by over 1 ms).
const COLD_START_MIN_EXTRA_NS: u64 = 10_000_000;

#[derive(Clone, Debug, PartialEq)]
pub struct FindingsConfig {
    pub enabled: bool,
    /// N+1: at least this many children of one span with the same shape.
    pub n_plus_one: usize,
    /// Serial fan-out: at least this many back-to-back calls to different peers...
    pub fan_out: usize,
    /// ... each starting within this of the previous one's end.
    pub fan_out_gap: Duration,
    /// Cold start: the first server span is at least this many times the median of...
    pub cold_start_ratio: u64,
    /// ... this many next ones (or those seen within `cold_start_wait`, at least 3).
    pub cold_start_followers: usize,
    pub cold_start_wait: Duration,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            enabled: true,
            n_plus_one: 10,
            fan_out: 3,
            fan_out_gap: Duration::from_millis(10),
            cold_start_ratio: 10,
            cold_start_followers: 5,
            cold_start_wait: Duration::from_secs(2),
        }
    }
}

/// Which finding, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    NPlusOne,
    SerialFanOut,
    ColdStart,
}

/// One span on a critical path and the time it spent there itself.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    span_id: [u8; 8],
    name: CompactString,
    self_ns: u64,
}

/// What a parent needs of one child.
#[derive(Clone, Debug)]
struct Child {
    start: u64,
    end: u64,
    /// A call this process made (CLIENT), with its shape and peer.
    call: Option<(String, String)>,
    /// The child's own critical path, itself included.
    path: Vec<Step>,
}

#[derive(Debug)]
struct Family {
    children: Vec<Child>,
    born: Instant,
}

#[derive(Debug)]
struct Held {
    span: Span,
    followers: Vec<u64>,
    since: Instant,
}

pub struct Analyzer {
    cfg: FindingsConfig,
    families: HashMap<[u8; 8], Family>,
    /// A process's first server span, waiting for the next ones.
    held: HashMap<u32, Held>,
    /// Processes whose first server span was already seen, oldest first.
    seen: HashSet<u32>,
    seen_order: VecDeque<u32>,
    /// Children forgotten because their parent never came or the family table was full.
    pub orphans: u64,
}

impl Analyzer {
    pub fn new(cfg: FindingsConfig) -> Self {
        Analyzer {
            cfg,
            families: HashMap::new(),
            held: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            orphans: 0,
        }
    }

    /// Judges `span`'s children, remembers it for its own parent, and puts it in `out`,
    /// unless it is a process's first server span, which comes out of a later call.
    pub fn process(&mut self, mut span: Span, now: Instant, out: &mut Vec<Span>) {
        if !self.cfg.enabled {
            out.push(span);
            return;
        }
        let children = self
            .families
            .remove(&span.span_id)
            .map(|f| f.children)
            .unwrap_or_default();
        let path = if children.is_empty() {
            vec![Step {
                span_id: span.span_id,
                name: span.name.clone(),
                self_ns: duration(&span),
            }]
        } else {
            self.judge_children(&mut span, &children);
            let path = critical_path(&span, &children);
            let root = span.parent_span_id.is_none() || span.parent_is_remote;
            if root {
                add_path_attributes(&mut span, &path);
            }
            path
        };
        if let Some(parent) = span.parent_span_id {
            self.remember(parent, child_of(&span, path), now);
        }
        if span.kind == SpanKind::Server {
            self.cold_start(span, now, out);
        } else {
            out.push(span);
        }
    }

    /// Releases held spans whose wait is over, and drops families too old to see their parent.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Span>) {
        let due: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| now.duration_since(h.since) >= self.cfg.cold_start_wait)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            if let Some(held) = self.held.remove(&pid) {
                out.push(self.verdict(held));
            }
        }
        let before = self.families.len();
        self.families
            .retain(|_, f| now.duration_since(f.born) < FAMILY_TTL);
        self.orphans += (before - self.families.len()) as u64;
    }

    /// Everything still held, at shutdown.
    pub fn drain(&mut self, out: &mut Vec<Span>) {
        let held: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        for h in held {
            out.push(self.verdict(h));
        }
    }

    fn remember(&mut self, parent: [u8; 8], child: Child, now: Instant) {
        if !self.families.contains_key(&parent) && self.families.len() >= MAX_FAMILIES {
            // Full (parents that never come, under load): this child goes unjudged.
            self.orphans += 1;
            return;
        }
        let family = self.families.entry(parent).or_insert_with(|| Family {
            children: Vec::new(),
            born: now,
        });
        if family.children.len() < MAX_CHILDREN {
            family.children.push(child);
        }
    }

    fn judge_children(&self, span: &mut Span, children: &[Child]) {
        for event in n_plus_one(children, self.cfg.n_plus_one) {
            count(Finding::NPlusOne);
            span.events.push(event);
        }
        for event in serial_fan_out(children, self.cfg.fan_out, self.cfg.fan_out_gap) {
            count(Finding::SerialFanOut);
            span.events.push(event);
        }
    }

    fn cold_start(&mut self, span: Span, now: Instant, out: &mut Vec<Span>) {
        let pid = span.process.pid;
        if let Some(held) = self.held.get_mut(&pid) {
            held.followers.push(duration(&span));
            out.push(span);
            if held.followers.len() >= self.cfg.cold_start_followers
                && let Some(held) = self.held.remove(&pid)
            {
                out.push(self.verdict(held));
            }
            return;
        }
        if self.seen.contains(&pid) || self.held.len() >= MAX_HELD {
            out.push(span);
            return;
        }
        if self.seen_order.len() >= MAX_SEEN
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(pid);
        self.seen_order.push_back(pid);
        self.held.insert(
            pid,
            Held {
                span,
                followers: Vec::new(),
                since: now,
            },
        );
    }

    /// The held first span, with a cold-start event if it was one.
    fn verdict(&self, held: Held) -> Span {
        let Held {
            mut span,
            mut followers,
            ..
        } = held;
        if followers.len() < 3.min(self.cfg.cold_start_followers.max(1)) {
            return span;
        }
        followers.sort_unstable();
        let median = followers[followers.len() / 2];
        let first = duration(&span);
        if first >= median.saturating_mul(self.cfg.cold_start_ratio)
            && first >= median + COLD_START_MIN_EXTRA_NS
        {
            count(Finding::ColdStart);
            span.events.push(SpanEvent {
                name: COLD_START,
                time_unix_ns: span.start_unix_ns,
                attributes: vec![
                    Attribute::int(DURATION_NS, clamp(first)),
                    Attribute::int(MEDIAN_NS, clamp(median)),
                    Attribute::int(COUNT, followers.len() as i64),
                ],
            });
        }
        span
    }
}

fn count(finding: Finding) {
    crate::telemetry::TELEMETRY.count_finding(finding);
}

fn duration(span: &Span) -> u64 {
    span.end_unix_ns.saturating_sub(span.start_unix_ns)
}

fn clamp(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn text(span: &Span, key: &str) -> Option<String> {
    span.attribute(key).map(AttrValue::to_string)
}

/// The summary a parent keeps of `span`.
fn child_of(span: &Span, path: Vec<Step>) -> Child {
    let call = (span.kind == SpanKind::Client)
        .then(|| {
            let peer = format!(
                "{}:{}",
                text(span, sc::SERVER_ADDRESS)?,
                text(span, sc::SERVER_PORT).unwrap_or_default()
            );
            Some((shape(span, &peer), peer))
        })
        .flatten();
    Child {
        start: span.start_unix_ns,
        end: span.end_unix_ns.max(span.start_unix_ns),
        call,
        path,
    }
}

/// What makes two calls "the same": the database and query text (literals are already `?`),
/// or the RPC method, or the HTTP method and path template, to the same peer.
fn shape(span: &Span, peer: &str) -> String {
    if let Some(system) = text(span, sc::DB_SYSTEM_NAME) {
        let query = text(span, sc::DB_QUERY_TEXT)
            .or_else(|| text(span, sc::DB_QUERY_SUMMARY))
            .unwrap_or_else(|| span.name.to_string());
        return format!("{system} {query} @{peer}");
    }
    if text(span, sc::RPC_METHOD).is_some() {
        return format!("{} @{peer}", span.name);
    }
    let method = text(span, sc::HTTP_REQUEST_METHOD).unwrap_or_else(|| span.name.to_string());
    let path = text(span, sc::URL_FULL)
        .map(|url| path_template(&url))
        .unwrap_or_default();
    format!("{method} {peer}{path}")
}

/// The path of `url` without its query, each segment that looks like an id (digits, a UUID, a
/// long hex string) as `{id}`.
pub fn path_template(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let segments: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let digits = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
            let hexish = seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            if digits || hexish { "{id}" } else { seg }
        })
        .collect();
    segments.join("/")
}

/// N+1: shapes that at least `min` children share.
fn n_plus_one(children: &[Child], min: usize) -> Vec<SpanEvent> {
    let mut by_shape: HashMap<&str, (usize, u64, u64)> = HashMap::new();
    for c in children {
        if let Some((shape, _)) = &c.call {
            let e = by_shape.entry(shape).or_insert((0, 0, c.start));
            e.0 += 1;
            e.1 += c.end - c.start;
            e.2 = e.2.min(c.start);
        }
    }
    let mut found: Vec<(&str, (usize, u64, u64))> = by_shape
        .into_iter()
        .filter(|(_, (n, _, _))| *n >= min.max(2))
        .collect();
    found.sort_by_key(|(_, (_, _, first))| *first);
    found
        .into_iter()
        .map(|(shape, (n, total, first))| SpanEvent {
            name: N_PLUS_ONE,
            time_unix_ns: first,
            attributes: vec![
                Attribute::str(SHAPE, shape),
                Attribute::int(COUNT, n as i64),
                Attribute::int(DURATION_NS, clamp(total)),
            ],
        })
        .collect()
}

/// Serial fan-out: runs of at least `min` calls to pairwise different peers, each starting
/// after the previous one ended and within `gap` of it.
fn serial_fan_out(children: &[Child], min: usize, gap: Duration) -> Vec<SpanEvent> {
    let gap = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
    let mut calls: Vec<(&Child, &str)> = children
        .iter()
        .filter_map(|c| c.call.as_ref().map(|(_, peer)| (c, peer.as_str())))
        .collect();
    calls.sort_by_key(|(c, _)| (c.start, c.end));
    let mut events = Vec::new();
    let mut run: Vec<(&Child, &str)> = Vec::new();
    let mut close = |run: &mut Vec<(&Child, &str)>| {
        if run.len() >= min.max(2) && events.len() < MAX_FAN_OUT_EVENTS {
            let total: u64 = run.iter().map(|(c, _)| c.end - c.start).sum();
            let longest = run.iter().map(|(c, _)| c.end - c.start).max().unwrap_or(0);
            events.push(SpanEvent {
                name: SERIAL_FAN_OUT,
                time_unix_ns: run[0].0.start,
                attributes: vec![
                    Attribute::int(COUNT, run.len() as i64),
                    Attribute::strs(PEERS, run.iter().map(|(_, p)| p.to_string()).collect()),
                    Attribute::int(DURATION_NS, clamp(total)),
                    Attribute::int(SAVED_NS, clamp(total - longest)),
                ],
            });
        }
        run.clear();
    };
    for (i, &(c, peer)) in calls.iter().enumerate() {
        // A call that overlaps the next one ran in parallel with it: it cannot be part of a
        // serial run, nor can the one it overlaps.
        let overlaps_next = calls.get(i + 1).is_some_and(|(n, _)| n.start < c.end);
        let continues = run.last().is_some_and(|(prev, _)| {
            c.start >= prev.end && c.start - prev.end <= gap && !run.iter().any(|(_, p)| *p == peer)
        });
        if !continues {
            close(&mut run);
        }
        let overlaps_prev = i > 0 && c.start < calls[i - 1].0.end;
        if overlaps_next || overlaps_prev {
            close(&mut run);
            continue;
        }
        run.push((c, peer));
    }
    close(&mut run);
    events
}

/// The chain of spans that explains `span`'s duration: walking back from its end, the child
/// that ended last (within the span) is on the path, with its own path, and the walk goes on
/// from that child's start; the gaps are the span's own work. In time order.
fn critical_path(span: &Span, children: &[Child]) -> Vec<Step> {
    let (start, end) = (span.start_unix_ns, span.end_unix_ns.max(span.start_unix_ns));
    let mut order: Vec<&Child> = children
        .iter()
        .filter(|c| c.end > start && c.start < end)
        .collect();
    order.sort_by_key(|c| std::cmp::Reverse(c.end.min(end)));
    let mut cursor = end;
    let mut own = 0u64;
    let mut picked: Vec<&Child> = Vec::new();
    for c in order {
        let c_end = c.end.min(end);
        if c_end > cursor {
            continue;
        }
        own += cursor - c_end;
        picked.push(c);
        cursor = c.start.max(start);
    }
    own += cursor - start;
    let mut steps = vec![Step {
        span_id: span.span_id,
        name: span.name.clone(),
        self_ns: own,
    }];
    for c in picked.into_iter().rev() {
        for step in &c.path {
            if steps.len() >= MAX_STEPS {
                return steps;
            }
            steps.push(step.clone());
        }
    }
    steps
}

fn add_path_attributes(span: &mut Span, path: &[Step]) {
    span.attributes.push(Attribute::strs(
        CRITICAL_PATH_SPAN_IDS,
        path.iter().map(|s| hex(&s.span_id)).collect(),
    ));
    span.attributes.push(Attribute::strs(
        CRITICAL_PATH_NAMES,
        path.iter().map(|s| s.name.to_string()).collect(),
    ));
    span.attributes.push(Attribute::ints(
        CRITICAL_PATH_SELF_NS,
        path.iter().map(|s| clamp(s.self_ns)).collect(),
    ));
}

#[cfg(test)]
mod tests;
