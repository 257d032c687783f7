//! The embedded default: with no collector configured, one readable line per span on stdout,
//! so the first run shows live traffic with nothing else installed.
use std::io::Write as _;

use crate::span::{Span, Status, hex, semconv as sc};

pub struct StdoutSink {
    out: std::io::Stdout,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            out: std::io::stdout(),
        }
    }

    /// Writes the batch with one write(2): stdout is line-buffered, and a syscall per span
    /// cost more than building the spans.
    pub fn export(&mut self, batch: &[Span]) -> Result<(), String> {
        let mut text = String::with_capacity(batch.len() * 160);
        for span in batch {
            text.push_str(&line(span));
            text.push('\n');
        }
        let mut out = self.out.lock();
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

fn text(span: &Span, key: &str) -> String {
    match span.attribute(key) {
        Some(value) => value.to_string(),
        None => "-".to_string(),
    }
}

/// What a span is about and how it ended, per protocol: an HTTP path or URL and status code; for
/// a database call the system and database (`postgresql/shop`, the span name already says the
/// operation and table) and the database's error code, `-` when it succeeded.
fn target_and_status(span: &Span) -> (String, String) {
    if let Some(system) = span.attribute(sc::DB_SYSTEM_NAME) {
        let system = system.to_string();
        let target = match span.attribute(sc::DB_NAMESPACE) {
            Some(_) => format!("{system}/{}", text(span, sc::DB_NAMESPACE)),
            None => system,
        };
        return (target, text(span, sc::DB_RESPONSE_STATUS_CODE));
    }
    let target = match span.attribute(sc::URL_PATH) {
        Some(_) => text(span, sc::URL_PATH),
        None => text(span, sc::URL_FULL),
    };
    (target, text(span, sc::HTTP_RESPONSE_STATUS_CODE))
}

/// `2026-11-26T18:59:01.123456Z svc SERVER GET /path 200 1.234ms trace=… span=…`, or for a
/// database call `… svc CLIENT SELECT users postgresql/shop 42P01 ERROR 0.412ms …`
pub fn line(span: &Span) -> String {
    let secs = span.start_unix_ns / 1_000_000_000;
    let micros = (span.start_unix_ns % 1_000_000_000) / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (target, status) = target_and_status(span);
    let duration_ms = span.end_unix_ns.saturating_sub(span.start_unix_ns) as f64 / 1e6;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z {} {} {} {} {}{} {duration_ms:.3}ms trace={} span={}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        span.process.service_name,
        span.kind.as_str(),
        span.name,
        target,
        status,
        if span.status == Status::Error {
            " ERROR"
        } else {
            ""
        },
        hex(&span.trace_id),
        hex(&span.span_id),
    ) + &findings(span)
}

/// ` findings=n_plus_one,cold_start` when the span has any, else nothing.
fn findings(span: &Span) -> String {
    if span.events.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = span
        .events
        .iter()
        .map(|e| e.name.strip_prefix("tracewire.finding.").unwrap_or(e.name))
        .collect();
    format!(" findings={}", names.join(","))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{
        capture::process::ProcessInfo,
        span::{Attribute, SpanKind},
    };

    fn span(name: &str, attributes: Vec<Attribute>, status: Status) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            parent_is_remote: false,
            tracestate: None,
            kind: SpanKind::Client,
            name: name.into(),
            // 2025-11-26T00:00:01Z, 1.5 ms.
            start_unix_ns: 1_764_115_201_000_000_000,
            end_unix_ns: 1_764_115_201_001_500_000,
            attributes,
            events: Vec::new(),
            status,
            process: ProcessInfo::for_test("shop"),
        }
    }

    #[test]
    fn http_and_db_lines() {
        let http = span(
            "GET",
            vec![
                Attribute::int(sc::HTTP_RESPONSE_STATUS_CODE, 200),
                Attribute::str(sc::URL_FULL, "http://pay/x"),
            ],
            Status::Unset,
        );
        assert_eq!(
            line(&http),
            format!(
                "2025-11-26T00:00:01.000000Z shop CLIENT GET http://pay/x 200 1.500ms trace={} span={}",
                "01".repeat(16),
                "02".repeat(8)
            )
        );
        let failed = span(
            "SELECT missing",
            vec![
                Attribute::str(sc::DB_SYSTEM_NAME, "postgresql"),
                Attribute::str(sc::DB_NAMESPACE, "shop"),
                Attribute::str(sc::DB_RESPONSE_STATUS_CODE, "42P01"),
            ],
            Status::Error,
        );
        assert!(
            line(&failed)
                .contains(" shop CLIENT SELECT missing postgresql/shop 42P01 ERROR 1.500ms "),
            "{}",
            line(&failed)
        );
        let redis = span(
            "GET",
            vec![Attribute::str(sc::DB_SYSTEM_NAME, "redis")],
            Status::Unset,
        );
        assert!(
            line(&redis).contains(" shop CLIENT GET redis - 1.500ms "),
            "{}",
            line(&redis)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
