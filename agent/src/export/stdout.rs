//! The embedded default: with no collector configured, one readable line per span on stdout,
//! so the first run shows live traffic with nothing else installed.
use std::io::Write as _;

use crate::span::{AttrValue, Span, Status, hex, semconv as sc};

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
        Some(AttrValue::Str(s)) => s.clone(),
        Some(AttrValue::Int(i)) => i.to_string(),
        None => "-".to_string(),
    }
}

/// `2026-11-26T18:59:01.123456Z svc SERVER GET /path 200 1.234ms trace=… span=…`
pub fn line(span: &Span) -> String {
    let secs = span.start_unix_ns / 1_000_000_000;
    let micros = (span.start_unix_ns % 1_000_000_000) / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let target = match span.attribute(sc::URL_PATH) {
        Some(_) => text(span, sc::URL_PATH),
        None => text(span, sc::URL_FULL),
    };
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
        text(span, sc::HTTP_RESPONSE_STATUS_CODE),
        if span.status == Status::Error {
            " ERROR"
        } else {
            ""
        },
        hex(&span.trace_id),
        hex(&span.span_id),
    )
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

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
