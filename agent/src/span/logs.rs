//! Logs tied to traces with no code: what a traced process writes to its stdout or stderr while
//! one of its threads serves a request becomes a log record with that request's trace and span
//! ids. Nothing in the process changes: the kernel hands over the write (`logs.enabled`), and
//! the thread that wrote it names the request (the in-process rule of `context`).
//!
//! Bounded: lines per second per process (a token bucket), bytes per line, and the queue to
//! the exporter; what is dropped is counted by reason. Lines written outside any request, or
//! while the thread serves several, are not exported. A redaction hook (regular expressions,
//! `logs.redact`) blanks secrets before a line leaves the stage.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{Clock, context::ContextTracker};
use crate::{
    capture::process::ProcessInfo,
    reassembly::LogNotice,
    telemetry::{Drop, TELEMETRY},
};

/// What `logs:` in the config file sets.
#[derive(Clone, Debug)]
pub struct LogsConfig {
    pub max_lines_per_second: u32,
    pub max_line_bytes: usize,
    /// Each match is replaced by `[REDACTED]` (or, with a capture group named `keep`, by that
    /// group followed by `[REDACTED]`).
    pub redact: Vec<regex::Regex>,
}

/// The default redaction: the value after a secret-looking key (`password=…`, `token: …`,
/// `Authorization: Bearer …`).
pub const DEFAULT_REDACT: &str = r"(?i)(?P<keep>\b(?:password|passwd|pwd|secret|token|api[_-]?key|authorization)\b\s*[:=]\s*)(?:bearer\s+)?[^\s,;&]+";

/// Processes with a token bucket at once.
const MAX_PROCESSES: usize = 4096;

/// One log line, tied to the request its thread was serving.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub time_unix_ns: u64,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `stdout` or `stderr` (semconv `log.iostream`).
    pub stream: &'static str,
    pub body: String,
    /// The line was cut at `max_line_bytes`, or the write was longer than the capture.
    pub truncated: bool,
    pub process: Arc<ProcessInfo>,
}

pub struct LogTap {
    cfg: LogsConfig,
    out: mpsc::Sender<LogRecord>,
    buckets: HashMap<u32, (f64, Instant)>,
}

impl LogTap {
    pub fn new(cfg: LogsConfig, out: mpsc::Sender<LogRecord>) -> Self {
        LogTap {
            cfg,
            out,
            buckets: HashMap::new(),
        }
    }

    /// The lines of one write, for the request the writing thread serves.
    pub fn write(&mut self, notice: LogNotice, contexts: &ContextTracker, clock: &Clock) {
        let pid = notice.process.pid;
        let Some((trace_id, span_id, sampled)) = contexts.serving_on(pid, notice.tid) else {
            TELEMETRY.drop(Drop::LogOutsideRequest);
            return;
        };
        if !sampled {
            return;
        }
        let text = String::from_utf8_lossy(&notice.payload);
        let stream = if notice.fd == 2 { "stderr" } else { "stdout" };
        let now = Instant::now();
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            if !self.take_token(pid, now) {
                TELEMETRY.drop(Drop::LogRateLimited);
                continue;
            }
            let mut body = line.trim_end_matches('\r').to_string();
            let mut truncated = notice.truncated;
            if body.len() > self.cfg.max_line_bytes {
                let mut cut = self.cfg.max_line_bytes;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                truncated = true;
            }
            for re in &self.cfg.redact {
                body = redact(re, &body);
            }
            let record = LogRecord {
                time_unix_ns: clock.to_unix_ns(notice.ts_ns),
                trace_id,
                span_id,
                stream,
                body,
                truncated,
                process: Arc::clone(&notice.process),
            };
            if self.out.try_send(record).is_err() {
                TELEMETRY.drop(Drop::LogQueueFull);
            }
        }
    }

    /// A token of `pid`'s bucket (`max_lines_per_second`, as much burst), if one is left.
    fn take_token(&mut self, pid: u32, now: Instant) -> bool {
        let rate = f64::from(self.cfg.max_lines_per_second.max(1));
        if self.buckets.len() >= MAX_PROCESSES && !self.buckets.contains_key(&pid) {
            // Forget buckets idle for a while rather than grow.
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(10));
            if self.buckets.len() >= MAX_PROCESSES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(pid).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `text` with each match of `re` blanked (keeping its `keep` group).
pub fn redact(re: &regex::Regex, text: &str) -> String {
    re.replace_all(text, |caps: &regex::Captures<'_>| {
        format!("{}[REDACTED]", caps.name("keep").map_or("", |m| m.as_str()))
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked_and_the_rest_kept() {
        let re = regex::Regex::new(DEFAULT_REDACT).expect("default pattern");
        assert_eq!(
            redact(&re, "login user=bob password=hunter2 ok"),
            "login user=bob password=[REDACTED] ok"
        );
        assert_eq!(
            redact(&re, "Authorization: Bearer abc.def.ghi then"),
            "Authorization: [REDACTED] then"
        );
        assert_eq!(redact(&re, "api_key=xyz&q=1"), "api_key=[REDACTED]&q=1");
        assert_eq!(redact(&re, "GET /orders/7 200"), "GET /orders/7 200");
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let (tx, _rx) = mpsc::channel(8);
        let mut tap = LogTap::new(
            LogsConfig {
                max_lines_per_second: 2,
                max_line_bytes: 100,
                redact: Vec::new(),
            },
            tx,
        );
        let t = Instant::now();
        assert!(tap.take_token(1, t));
        assert!(tap.take_token(1, t));
        assert!(!tap.take_token(1, t), "burst of 2 spent");
        assert!(tap.take_token(2, t), "another process has its own");
        assert!(tap.take_token(1, t + Duration::from_millis(600)));
        assert!(!tap.take_token(1, t + Duration::from_millis(600)));
    }
}
