//! `tracewire watch`: the traces the running agent exports, live in the terminal, with no
//! backend: a list of recent traces and, for the selected one, a waterfall (one bar per span
//! on a shared time axis, indented by parent, the critical path marked, findings under their
//! span). `--once` prints one waterfall as plain text.
//!
//! The agent serves its recent spans on a root-only unix socket (`server`), recording them only
//! while someone watches (`store`); this module assembles them into traces and draws them
//! (`render` here, `tui` for the interactive view).
pub mod server;
pub mod store;
pub mod tui;

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

pub use store::{Recent, WatchSpan};

/// Where the agent listens, unless `--watch-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tracewire/watch.sock";

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot reach the agent at {path}: {source}; is `tracewire run` running on this host \
         (with this --watch-socket), and are you root?"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading from the agent at {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {path} answered something that is not a span list: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The spans the agent at `socket` exported lately (and it records from now on, for a while).
pub fn fetch(socket: &Path) -> Result<Vec<WatchSpan>, WatchError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| WatchError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let read = |source| WatchError::Read {
        path: socket.to_path_buf(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(read)?;
    stream.write_all(b"spans\n").map_err(read)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(read)?;
    serde_json::from_str(&line).map_err(|source| WatchError::Decode {
        path: socket.to_path_buf(),
        source,
    })
}

/// Which traces to show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces at least this long.
    pub min_duration: Duration,
    pub errors_only: bool,
    /// Only this trace (hex id).
    pub trace_id: Option<String>,
}

impl Filter {
    pub fn accepts(&self, t: &Trace) -> bool {
        self.service
            .as_ref()
            .is_none_or(|s| t.spans.iter().any(|x| &x.service == s))
            && t.duration_ns() >= self.min_duration.as_nanos() as u64
            && (!self.errors_only || t.error())
            && self.trace_id.as_ref().is_none_or(|id| &t.trace_id == id)
    }
}

/// The spans of one trace that this host saw, in waterfall order.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub trace_id: String,
    /// Depth-first from the roots (spans whose parent is not here), children by start time.
    pub spans: Vec<WatchSpan>,
    pub depths: Vec<usize>,
}

impl Trace {
    pub fn root(&self) -> &WatchSpan {
        &self.spans[0]
    }

    pub fn start_ns(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.start_unix_ns)
            .min()
            .unwrap_or(0)
    }

    pub fn end_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.end_unix_ns).max().unwrap_or(0)
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.start_ns())
    }

    pub fn error(&self) -> bool {
        self.spans.iter().any(|s| s.error)
    }

    /// Span ids on the critical path: the union of what each process's root span says.
    pub fn critical(&self) -> HashSet<&str> {
        self.spans
            .iter()
            .flat_map(|s| s.critical_path.iter().map(String::as_str))
            .collect()
    }
}

/// Groups `spans` into traces, newest (by start) first.
pub fn traces(spans: &[WatchSpan]) -> Vec<Trace> {
    let mut by_trace: HashMap<&str, Vec<&WatchSpan>> = HashMap::new();
    for s in spans {
        by_trace.entry(&s.trace_id).or_default().push(s);
    }
    let mut out: Vec<Trace> = by_trace
        .into_iter()
        .map(|(id, mut members)| {
            members.sort_by_key(|s| (s.start_unix_ns, std::cmp::Reverse(s.end_unix_ns)));
            members.dedup_by(|a, b| a.span_id == b.span_id);
            let ids: HashSet<&str> = members.iter().map(|s| s.span_id.as_str()).collect();
            let mut children: HashMap<&str, Vec<&WatchSpan>> = HashMap::new();
            let mut roots = Vec::new();
            for s in &members {
                match s.parent_span_id.as_deref() {
                    Some(p) if ids.contains(p) && p != s.span_id => {
                        children.entry(p).or_default().push(s)
                    }
                    _ => roots.push(*s),
                }
            }
            let mut spans = Vec::with_capacity(members.len());
            let mut depths = Vec::with_capacity(members.len());
            let mut visited: HashSet<&str> = HashSet::new();
            // Spans left unvisited after the roots (ids that form a cycle) start trees of their
            // own, so hostile ids lose nothing and loop nowhere.
            let starts = roots.into_iter().chain(members.iter().copied());
            for start in starts {
                let mut stack = vec![(start, 0)];
                while let Some((s, depth)) = stack.pop() {
                    if !visited.insert(s.span_id.as_str()) {
                        continue;
                    }
                    spans.push(s.clone());
                    depths.push(depth);
                    if let Some(kids) = children.get(s.span_id.as_str()) {
                        stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
                    }
                }
            }
            Trace {
                trace_id: id.to_string(),
                spans,
                depths,
            }
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.start_ns()));
    out
}

/// `1.234ms`, `12.3ms`, `1.50s`.
pub fn format_duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.3}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// One span's line of the waterfall: its label (indented), its bar, its duration.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub label: String,
    pub bar: String,
    pub duration: String,
    pub critical: bool,
    pub error: bool,
    /// Findings, as extra lines under the span.
    pub findings: Vec<String>,
}

/// Column widths for a terminal `width` wide: label, bar, duration.
pub fn columns(width: usize) -> (usize, usize, usize) {
    let duration = 9;
    let bar = (width.saturating_sub(duration + 5) * 2 / 5).max(10);
    let label = width.saturating_sub(bar + duration + 5).max(20);
    (label, bar, duration)
}

fn fit(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        format!("{text:<width$}")
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The waterfall rows of `trace` for a `width`-column terminal.
pub fn rows(trace: &Trace, width: usize) -> Vec<Row> {
    let (label_w, bar_w, _) = columns(width);
    let (t0, total) = (trace.start_ns(), trace.duration_ns().max(1));
    let critical = trace.critical();
    trace
        .spans
        .iter()
        .zip(&trace.depths)
        .map(|(s, depth)| {
            let kind = if s.server { "SERVER" } else { "CLIENT" };
            let mut label = format!("{}{kind} {} {}", "  ".repeat(*depth), s.service, s.name);
            if !s.target.is_empty() && !s.name.ends_with(s.target.as_str()) {
                label.push(' ');
                label.push_str(&s.target);
            }
            if !s.status.is_empty() {
                label.push(' ');
                label.push_str(&s.status);
            }
            let scale = |t: u64| ((t - t0) as u128 * bar_w as u128 / total as u128) as usize;
            let from = scale(s.start_unix_ns.max(t0)).min(bar_w - 1);
            let to = scale(s.end_unix_ns.max(t0)).max(from + 1).min(bar_w);
            let bar: String = (0..bar_w)
                .map(|i| if i >= from && i < to { '█' } else { ' ' })
                .collect();
            Row {
                label: fit(&label, label_w),
                bar,
                duration: format_duration(s.end_unix_ns - s.start_unix_ns),
                critical: critical.contains(s.span_id.as_str()),
                error: s.error,
                findings: s
                    .findings
                    .iter()
                    .map(|f| format!("{}  ↳ finding: {f}", "  ".repeat(*depth)))
                    .collect(),
            }
        })
        .collect()
}

/// The trace's one-line summary: root service and operation, duration, span count, status.
pub fn summary(trace: &Trace) -> String {
    let root = trace.root();
    format!(
        "{} {} {}{} · {} · {} span{}{}",
        root.service,
        root.name,
        root.target,
        if root.status.is_empty() {
            String::new()
        } else {
            format!(" {}", root.status)
        },
        format_duration(trace.duration_ns()),
        trace.spans.len(),
        if trace.spans.len() == 1 { "" } else { "s" },
        if trace.error() { " · ERROR" } else { "" }
    )
}

/// `trace` as plain text, `width` columns: a header, the time axis, one line per span
/// (`*` marks the critical path, `!` an error), findings under their span.
pub fn render(trace: &Trace, width: usize) -> String {
    let (label_w, bar_w, dur_w) = columns(width);
    let mut out = format!(
        "trace {}\n{}\n",
        trace.trace_id,
        fit(&summary(trace), width).trim_end()
    );
    let end = format_duration(trace.duration_ns());
    let axis = format!("0{end:>w$}", w = bar_w - 1);
    out.push_str(&format!("  {:label_w$} {axis}\n", ""));
    for row in rows(trace, width) {
        let mark = match (row.critical, row.error) {
            (_, true) => '!',
            (true, false) => '*',
            _ => ' ',
        };
        out.push_str(&format!(
            "{mark} {} {}{:>dur_w$}\n",
            row.label, row.bar, row.duration
        ));
        for f in &row.findings {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out.push_str("* critical path  ! error\n");
    out
}

/// `watch --once`: polls the agent until a trace passes `filter` and has been quiet (no new
/// span) for a moment, then prints it; gives up after `wait`.
pub fn once(
    socket: &Path,
    filter: &Filter,
    width: usize,
    wait: Duration,
) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + wait;
    let mut last: Option<(String, usize)> = None;
    loop {
        let spans = fetch(socket)?;
        let found = traces(&spans).into_iter().find(|t| filter.accepts(t));
        if let Some(t) = found {
            // The same trace with the same spans twice in a row: nothing more is coming.
            let key = (t.trace_id.clone(), t.spans.len());
            if last.as_ref() == Some(&key) {
                return Ok(render(&t, width));
            }
            last = Some(key);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no trace matching {filter:?} within {wait:?} (the agent records only while \
                 someone watches: send the traffic after `watch` started)"
            );
        }
        std::thread::sleep(Duration::from_millis(700));
    }
}

#[cfg(test)]
mod tests;
