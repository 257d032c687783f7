//! Tail-sampling settings as the OpenTelemetry Collector's `tail_sampling` processor writes
//! them, and their validation: every refusal names the policy and what to change.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Pending;
use crate::span::Status;

/// The policy types tracewire implements, as listed in error messages.
const IMPLEMENTED: &str = "always_sample, latency, probabilistic, status_code";

/// Collector policy types tracewire knows of but does not implement: named as such in errors,
/// rather than as unknown, so a user moving a collector config knows what to change.
const COLLECTOR_ONLY: [&str; 11] = [
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "rate_limiting",
    "bytes_limiting",
    "span_count",
    "trace_state",
    "ottl_condition",
    "and",
    "drop",
    "composite",
];

/// The status codes a `status_code` policy may name (the collector's spelling).
const STATUS_CODES: &str = "ERROR, OK, UNSET";

/// The collector's salt when `hash_salt` is empty, so both decide alike by default.
const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// Tail sampling settings, a section of the agent's config file. The field names are the
/// collector's, except `decision_cache` (one size here: the collector's is split into
/// `sampled_cache_size` and `non_sampled_cache_size`) and `max_buffered_bytes` (the agent's
/// own memory bound).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// Time from a trace's first span to its decision: long enough for the trace's last span
    /// to arrive. Written like the collector's: "10s", "500ms", "2m", "1m30s".
    #[serde(default = "default_decision_wait", with = "duration_str")]
    pub decision_wait: Duration,
    /// Traces buffered at once; past it, the oldest are decided early.
    #[serde(default = "default_num_traces")]
    pub num_traces: usize,
    /// Estimated bytes of buffered spans; past it, the oldest traces are decided early.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// Decisions remembered for spans that arrive after their trace was decided (0: none).
    #[serde(default = "default_decision_cache")]
    pub decision_cache: usize,
    /// A trace is kept when any of these says so.
    pub policies: Vec<PolicyConfig>,
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(10)
}

fn default_num_traces() -> usize {
    50_000
}

fn default_max_buffered_bytes() -> usize {
    64 << 20
}

fn default_decision_cache() -> usize {
    100_000
}

/// One policy, in the collector's shape: a name, a type, and the settings of that type in a
/// section named after it. The sections of collector-only types are accepted so that
/// [`TailConfig::validate`] can say what they are instead of failing on an unknown field.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_limiting: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_count: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ottl_condition: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<serde_norway::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<serde_norway::Value>,
}

/// `status_code` policy: keep a trace with a span of one of these statuses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `ERROR`, `OK` or `UNSET`. Tracewire's spans are never `OK` today (the agent sets no
    /// status on success), so `OK` is accepted, for portability, and matches nothing.
    pub status_codes: Vec<String>,
}

/// `latency` policy: keep a trace whose duration (latest span end minus earliest span start,
/// in whole milliseconds) is at least `threshold_ms`; with an `upper_threshold_ms` (0 means
/// none, as in the collector) the collector's range applies instead:
/// `threshold_ms < duration <= upper_threshold_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    pub threshold_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_threshold_ms: Option<u64>,
}

/// `probabilistic` policy: keep a share of traces chosen by their trace id, the same share on
/// every agent (and collector) with the same salt.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// 0 to 100.
    pub sampling_percentage: f64,
    /// Different salts make independent choices (layers sampling at different rates); empty
    /// or absent is the collector's default salt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_salt: Option<String>,
}

/// Why a tail sampling config was refused; each names the policy and what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TailError {
    #[error("tail sampling needs at least one policy (a trace is kept when any policy says so)")]
    NoPolicies,
    #[error("tail sampling: {field} must be at least 1")]
    ZeroBound { field: &'static str },
    #[error("tail sampling policy #{index} has an empty name; every policy needs a unique name")]
    EmptyName { index: usize },
    #[error("tail sampling policy {policy:?}: the name is used twice; policy names must be unique")]
    DuplicateName { policy: String },
    #[error(
        "tail sampling policy {policy:?}: unknown type {kind:?}; tracewire implements {implemented}",
        implemented = IMPLEMENTED
    )]
    UnknownType { policy: String, kind: String },
    #[error(
        "tail sampling policy {policy:?}: {kind} is a collector policy tracewire does not \
         implement; tracewire implements {implemented}",
        implemented = IMPLEMENTED
    )]
    NotImplemented { policy: String, kind: String },
    #[error(
        "tail sampling policy {policy:?}: type {kind} needs its settings in a `{kind}:` section"
    )]
    MissingSettings { policy: String, kind: &'static str },
    #[error("tail sampling policy {policy:?}: sampling_percentage {value} is outside 0 to 100")]
    Percentage { policy: String, value: f64 },
    #[error(
        "tail sampling policy {policy:?}: status code {code:?} is not one of {allowed}",
        allowed = STATUS_CODES
    )]
    StatusCode { policy: String, code: String },
    #[error(
        "tail sampling policy {policy:?}: status_codes is empty; list at least one of {allowed}",
        allowed = STATUS_CODES
    )]
    NoStatusCodes { policy: String },
    #[error(
        "tail sampling policy {policy:?}: upper_threshold_ms {upper} must be greater than \
         threshold_ms {threshold}"
    )]
    LatencyRange {
        policy: String,
        threshold: u64,
        upper: u64,
    },
    #[error(
        "invalid duration {0:?}: use numbers with units ns, us, ms, s, m or h, e.g. \"10s\", \
         \"500ms\" or \"1m30s\""
    )]
    Duration(String),
}

impl TailConfig {
    /// Checks everything [`TailSampler::new`] needs, so a bad config fails at start, with the
    /// policy and the problem named.
    pub fn validate(&self) -> Result<(), TailError> {
        self.compile().map(|_| ())
    }

    pub(super) fn compile(&self) -> Result<Vec<Policy>, TailError> {
        if self.num_traces == 0 {
            return Err(TailError::ZeroBound {
                field: "num_traces",
            });
        }
        if self.max_buffered_bytes == 0 {
            return Err(TailError::ZeroBound {
                field: "max_buffered_bytes",
            });
        }
        if self.policies.is_empty() {
            return Err(TailError::NoPolicies);
        }
        let mut names = std::collections::HashSet::new();
        let mut policies = Vec::with_capacity(self.policies.len());
        for (index, p) in self.policies.iter().enumerate() {
            if p.name.is_empty() {
                return Err(TailError::EmptyName { index });
            }
            if !names.insert(p.name.as_str()) {
                return Err(TailError::DuplicateName {
                    policy: p.name.clone(),
                });
            }
            policies.push(p.compile()?);
        }
        Ok(policies)
    }
}

impl PolicyConfig {
    fn compile(&self) -> Result<Policy, TailError> {
        let policy = || self.name.clone();
        let missing = |kind| TailError::MissingSettings {
            policy: policy(),
            kind,
        };
        match self.kind.as_str() {
            "always_sample" => Ok(Policy::AlwaysSample),
            "status_code" => {
                let cfg = self.status_code.as_ref().ok_or(missing("status_code"))?;
                if cfg.status_codes.is_empty() {
                    return Err(TailError::NoStatusCodes { policy: policy() });
                }
                let mut set = StatusSet::default();
                for code in &cfg.status_codes {
                    match code.as_str() {
                        "ERROR" => set.error = true,
                        "UNSET" => set.unset = true,
                        "OK" => set.ok = true,
                        _ => {
                            return Err(TailError::StatusCode {
                                policy: policy(),
                                code: code.clone(),
                            });
                        }
                    }
                }
                Ok(Policy::StatusCode(set))
            }
            "latency" => {
                let cfg = self.latency.as_ref().ok_or(missing("latency"))?;
                let upper = cfg.upper_threshold_ms.filter(|&u| u != 0);
                if let Some(u) = upper.filter(|&u| u <= cfg.threshold_ms) {
                    return Err(TailError::LatencyRange {
                        policy: policy(),
                        threshold: cfg.threshold_ms,
                        upper: u,
                    });
                }
                Ok(Policy::Latency {
                    threshold_ms: cfg.threshold_ms,
                    upper_ms: upper,
                })
            }
            "probabilistic" => {
                let cfg = self
                    .probabilistic
                    .as_ref()
                    .ok_or(missing("probabilistic"))?;
                let pct = cfg.sampling_percentage;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(TailError::Percentage {
                        policy: policy(),
                        value: pct,
                    });
                }
                let salt = match cfg.hash_salt.as_deref() {
                    None | Some("") => DEFAULT_HASH_SALT,
                    Some(s) => s,
                };
                Ok(Policy::Probabilistic {
                    salt: salt.as_bytes().to_vec(),
                    threshold: probability_threshold(pct),
                })
            }
            other if COLLECTOR_ONLY.contains(&other) => Err(TailError::NotImplemented {
                policy: policy(),
                kind: other.to_string(),
            }),
            other => Err(TailError::UnknownType {
                policy: policy(),
                kind: other.to_string(),
            }),
        }
    }
}

/// Parses a duration the way the collector's config does (Go's `time.ParseDuration`, without
/// negative values): one or more decimal numbers, each with a unit of ns, us (or µs), ms, s, m
/// or h; "0" alone is allowed.
pub fn parse_duration(text: &str) -> Result<Duration, TailError> {
    let err = || TailError::Duration(text.to_string());
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c.is_ascii_digit() || c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        // Digits past 18 are below a nanosecond for every unit: ignore them, as Go does.
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac_ns = if frac_digits.is_empty() {
            0
        } else {
            let frac: u128 = frac_digits.parse().map_err(|_| err())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).map_err(|_| err())?);
            frac * unit_ns / scale
        };
        total = int
            .checked_mul(unit_ns)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(err)?;
        rest = after;
    }
    // Go's durations are int64 nanoseconds: stay within them.
    let ns = u64::try_from(total)
        .ok()
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(err)?;
    Ok(Duration::from_nanos(ns))
}

/// The shortest exact form in one unit: "10s", "500ms", "90s".
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (size, unit) in UNITS {
        if ns.is_multiple_of(size) {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

/// `#[serde(with)]` for durations written as collector duration strings.
mod duration_str {
    use std::{fmt, time::Duration};

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration string with a unit of ns, us, ms, s, m or h, e.g. \"10s\" or \
                     \"500ms\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Statuses a `status_code` policy matches, or a trace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StatusSet {
    error: bool,
    unset: bool,
    ok: bool,
}

impl StatusSet {
    pub(super) fn add(&mut self, status: Status) {
        match status {
            Status::Error => self.error = true,
            Status::Unset => self.unset = true,
        }
    }

    pub(super) fn intersects(self, other: StatusSet) -> bool {
        (self.error && other.error) || (self.unset && other.unset) || (self.ok && other.ok)
    }
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Policy {
    AlwaysSample,
    StatusCode(StatusSet),
    Latency {
        threshold_ms: u64,
        upper_ms: Option<u64>,
    },
    /// Keep when FNV-1a 64 of (salt ++ trace id) <= threshold; `None` keeps nothing.
    Probabilistic {
        salt: Vec<u8>,
        threshold: Option<u64>,
    },
}

impl Policy {
    pub(super) fn sample(&self, trace_id: &[u8; 16], trace: &Pending) -> bool {
        match self {
            Policy::AlwaysSample => true,
            Policy::StatusCode(codes) => codes.intersects(trace.statuses),
            Policy::Latency {
                threshold_ms,
                upper_ms,
            } => {
                let ms = trace.max_end.saturating_sub(trace.min_start) / 1_000_000;
                match upper_ms {
                    None => ms >= *threshold_ms,
                    Some(upper) => *threshold_ms < ms && ms <= *upper,
                }
            }
            Policy::Probabilistic { salt, threshold } => {
                threshold.is_some_and(|t| fnv1a64(&[salt, trace_id]) <= t)
            }
        }
    }
}

/// The collector's probabilistic rule: FNV-1a 64 of (salt bytes ++ trace id bytes), kept when
/// at most `percentage / 100 * u64::MAX`. Computed in f64, so it agrees with the collector's
/// (exact) threshold except for hashes within about 2^11 of it, about one trace in 10^16.
/// 0% keeps nothing (the collector would keep the one hash equal to 0).
pub(super) fn probability_threshold(percentage: f64) -> Option<u64> {
    if percentage <= 0.0 || percentage.is_nan() {
        None
    } else if percentage >= 100.0 {
        Some(u64::MAX)
    } else {
        // 2^64 as f64 is exact; the cast saturates at u64::MAX.
        Some((percentage / 100.0 * 18_446_744_073_709_551_616.0) as u64)
    }
}

pub(super) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::tail::TailSampler;

    const SEED_YAML: &str = r#"
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 500}
  - name: some
    type: probabilistic
    probabilistic: {sampling_percentage: 5}
  - name: all
    type: always_sample
"#;
    fn err_of(yaml: &str) -> String {
        match serde_norway::from_str::<TailConfig>(yaml) {
            Err(e) => e.to_string(),
            Ok(cfg) => match TailSampler::new(cfg) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted: {yaml}"),
            },
        }
    }

    #[test]
    fn parses_the_collector_policy_yaml() {
        let cfg: TailConfig = serde_norway::from_str(SEED_YAML).expect("parses");
        assert_eq!(cfg.decision_wait, Duration::from_secs(10));
        assert_eq!(cfg.num_traces, 50_000);
        assert_eq!(cfg.max_buffered_bytes, 64 << 20);
        assert_eq!(cfg.decision_cache, 100_000);
        assert_eq!(cfg.policies.len(), 4);
        assert_eq!(
            cfg.policies[0].status_code,
            Some(StatusCodeConfig {
                status_codes: vec!["ERROR".into()]
            })
        );
        assert_eq!(
            cfg.policies[1].latency,
            Some(LatencyConfig {
                threshold_ms: 500,
                upper_threshold_ms: None
            })
        );
        assert_eq!(
            cfg.policies[2].probabilistic,
            Some(ProbabilisticConfig {
                sampling_percentage: 5.0,
                hash_salt: None
            })
        );
        assert_eq!(cfg.policies[3].kind, "always_sample");
        cfg.validate().expect("valid");

        // The bounds and the optional settings.
        let cfg: TailConfig = serde_norway::from_str(
            r#"
decision_wait: 500ms
num_traces: 10
max_buffered_bytes: 4096
decision_cache: 0
policies:
  - {name: range, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 200}}
  - {name: salted, type: probabilistic, probabilistic: {sampling_percentage: 0.5, hash_salt: x}}
  - {name: codes, type: status_code, status_code: {status_codes: [ERROR, OK, UNSET]}}
"#,
        )
        .expect("parses");
        assert_eq!(cfg.decision_wait, Duration::from_millis(500));
        assert_eq!(cfg.decision_cache, 0);
        assert_eq!(
            cfg.policies[1].probabilistic,
            Some(ProbabilisticConfig {
                sampling_percentage: 0.5,
                hash_salt: Some("x".into())
            })
        );
        TailSampler::new(cfg.clone()).expect("valid");

        // And it writes back the same.
        let yaml = serde_norway::to_string(&cfg).expect("serializes");
        assert!(yaml.contains("decision_wait: 500ms"), "{yaml}");
        let back: TailConfig = serde_norway::from_str(&yaml).expect("reparses");
        assert_eq!(back, cfg);
    }

    #[test]
    fn rejects_unknown_fields() {
        let e = err_of("policies:\n  - {name: slow, type: latency, latency: {treshold_ms: 5}}\n");
        assert!(e.contains("unknown field `treshold_ms`"), "{e}");
        let e = err_of("decison_wait: 5s\npolicies: [{name: all, type: always_sample}]\n");
        assert!(e.contains("unknown field `decison_wait`"), "{e}");
        let e = err_of("policies: [{name: all, type: always_sample, invert_match: true}]\n");
        assert!(e.contains("unknown field `invert_match`"), "{e}");
        let e = err_of("decision_wait: 10\npolicies: [{name: all, type: always_sample}]\n");
        assert!(e.contains("invalid duration \"10\""), "{e}");
        let e = err_of("decision_wait: 10x\npolicies: [{name: all, type: always_sample}]\n");
        assert!(
            e.contains("invalid duration \"10x\"") && e.contains("ms, s, m or h"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_and_collector_only_types() {
        let e = err_of("policies: [{name: p, type: sometimes_sample}]\n");
        assert_eq!(
            e,
            "tail sampling policy \"p\": unknown type \"sometimes_sample\"; tracewire \
             implements always_sample, latency, probabilistic, status_code"
        );
        let e = err_of(
            "policies:\n  - name: attr\n    type: string_attribute\n    string_attribute: \
             {key: http.route, values: [/health], enabled_regex_matching: true}\n",
        );
        assert_eq!(
            e,
            "tail sampling policy \"attr\": string_attribute is a collector policy tracewire \
             does not implement; tracewire implements always_sample, latency, probabilistic, \
             status_code"
        );
        for kind in COLLECTOR_ONLY {
            let e = err_of(&format!(
                "policies: [{{name: p, type: {kind}, {kind}: {{}}}}]\n"
            ));
            assert!(
                e.contains("collector policy tracewire does not implement"),
                "{e}"
            );
        }
    }

    #[test]
    fn rejects_invalid_settings() {
        let cases = [
            (
                "policies: [{name: slow, type: latency}]",
                "tail sampling policy \"slow\": type latency needs its settings in a `latency:` \
                 section",
            ),
            (
                "policies: [{name: p, type: probabilistic, probabilistic: \
                 {sampling_percentage: 101}}]",
                "tail sampling policy \"p\": sampling_percentage 101 is outside 0 to 100",
            ),
            (
                "policies: [{name: p, type: probabilistic, probabilistic: \
                 {sampling_percentage: -1}}]",
                "tail sampling policy \"p\": sampling_percentage -1 is outside 0 to 100",
            ),
            (
                "policies: [{name: e, type: status_code, status_code: {status_codes: [FAILED]}}]",
                "tail sampling policy \"e\": status code \"FAILED\" is not one of ERROR, OK, UNSET",
            ),
            (
                "policies: [{name: e, type: status_code, status_code: {status_codes: []}}]",
                "tail sampling policy \"e\": status_codes is empty; list at least one of ERROR, \
                 OK, UNSET",
            ),
            (
                "policies: [{name: r, type: latency, latency: {threshold_ms: 5, \
                 upper_threshold_ms: 5}}]",
                "tail sampling policy \"r\": upper_threshold_ms 5 must be greater than \
                 threshold_ms 5",
            ),
            (
                "policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]",
                "tail sampling policy \"a\": the name is used twice; policy names must be unique",
            ),
            (
                "policies: [{name: '', type: always_sample}]",
                "tail sampling policy #0 has an empty name; every policy needs a unique name",
            ),
            (
                "policies: []",
                "tail sampling needs at least one policy (a trace is kept when any policy says \
                 so)",
            ),
            (
                "num_traces: 0\npolicies: [{name: a, type: always_sample}]",
                "tail sampling: num_traces must be at least 1",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(err_of(yaml), want, "{yaml}");
        }
    }

    #[test]
    fn parses_collector_durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "10",
            "10x",
            "-1s",
            "s",
            "1.s5",
            "1e3s",
            "9999999999999h",
            "1 s",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(TailError::Duration(bad.into())),
                "{bad}"
            );
        }
        for d in [
            Duration::from_secs(10),
            Duration::from_millis(500),
            Duration::from_secs(120),
            Duration::from_nanos(1_000_001),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
