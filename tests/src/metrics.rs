//! Reading the agent's Prometheus text exposition (format 0.0.4): enough to sum a counter's
//! series and to see which label sets exist.

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The raw label set between the braces, empty when there is none.
    pub labels: String,
    pub value: f64,
}

/// Every sample in `text`; comments and malformed lines are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..=close], &line[close + 1..])
        }
        None => line.split_at(line.find(char::is_whitespace)?),
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels: labels.to_string(),
        value,
    })
}

/// The sum over every series of `name`, or `None` when it has none.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The value of the series of `name` whose label set is exactly `labels` (e.g.
/// `reason="not_http"`), or `None` when there is no such series.
pub fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels == labels)
        .map(|s| s.value)
}

/// The label sets `name` has series for.
pub fn label_sets(text: &str, name: &str) -> Vec<String> {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| s.labels)
        .collect()
}

/// One sample as the official Prometheus client's parser read it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ParsedSample {
    /// The metric family (for a histogram, without `_bucket`/`_sum`/`_count`).
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: serde_json::Value,
}

/// `/metrics` text as a real Prometheus parser reads it.
pub struct Scrape {
    pub samples: Vec<ParsedSample>,
}

/// `text` parsed by the official Prometheus Python client's text-format parser
/// (`peers/prom_parse.py`); a line it rejects fails the parse.
pub fn scrape(text: &str) -> anyhow::Result<Scrape> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let python = crate::peers::otel_sdk_python()?;
    let mut child = std::process::Command::new(&python)
        .arg(crate::peers_dir().join("prom_parse.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Scrape {
        samples: serde_json::from_slice(&out.stdout).context("prom_parse.py output")?,
    })
}

impl ParsedSample {
    fn number(&self) -> f64 {
        match &self.value {
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0),
            serde_json::Value::String(s) if s == "inf" => f64::INFINITY,
            _ => 0.0,
        }
    }

    /// Whether every (name, value) in `want` is among the labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|got| got == v))
    }
}

/// The sum of the samples named `name` having `labels`.
pub fn scalar(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .map(ParsedSample::number)
        .sum()
}

/// The observation count of the histogram `name`'s series having `labels`, summed.
pub fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scalar(scrape, &format!("{name}_count"), labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tracewire_spans_exported_total Spans exported.\n\
        # TYPE tracewire_spans_exported_total counter\n\
        tracewire_spans_exported_total{exporter=\"otlp\"} 3\n\
        tracewire_spans_exported_total{exporter=\"stdout\"} 1 1700000000000\n\
        tracewire_events_total 42\n\
        tracewire_dropped_total{reason=\"ring_full\"} 0\n";

    #[test]
    fn sums_series_and_lists_labels() {
        assert_eq!(sum(TEXT, "tracewire_spans_exported_total"), Some(4.0));
        assert_eq!(sum(TEXT, "tracewire_events_total"), Some(42.0));
        assert_eq!(sum(TEXT, "tracewire_missing_total"), None);
        assert_eq!(
            value(TEXT, "tracewire_dropped_total", "reason=\"ring_full\""),
            Some(0.0)
        );
        assert_eq!(value(TEXT, "tracewire_events_total", ""), Some(42.0));
        assert_eq!(value(TEXT, "tracewire_dropped_total", "reason=\"x\""), None);
        assert_eq!(
            label_sets(TEXT, "tracewire_dropped_total"),
            vec!["reason=\"ring_full\"".to_string()]
        );
    }
}
