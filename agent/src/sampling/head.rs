//! Head sampling with the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` values.
//! The ratio decision is a function of the trace id alone (the Go SDK's rule: the trace id's
//! last 8 bytes, shifted right by one, against `ratio * 2^63`), so every agent and every SDK
//! that uses the same rule decides the same for a trace.

/// How a trace's sampling is decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// Follow the parent's sampled flag when there is a parent; use the inner rule for roots.
    ParentBased(Root),
}

/// The rule a parent-based sampler applies to root spans.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error(
        "OTEL_TRACES_SAMPLER={0} is not supported; use always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Unknown(String),
}

impl Default for Sampler {
    /// The specification's default.
    fn default() -> Self {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

/// `OTEL_TRACES_SAMPLER_ARG` as a ratio in [0, 1]; the specification's default is 1.0, and an
/// invalid value falls back to it.
fn ratio(arg: Option<&str>) -> f64 {
    arg.and_then(|a| a.trim().parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(1.0)
}

impl Sampler {
    pub fn from_env() -> Result<Self, SamplerError> {
        let name = std::env::var("OTEL_TRACES_SAMPLER").ok();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::parse(name.as_deref(), arg.as_deref())
    }

    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Self, SamplerError> {
        Ok(
            match name.map(str::trim).unwrap_or("parentbased_always_on") {
                "always_on" => Sampler::AlwaysOn,
                "always_off" => Sampler::AlwaysOff,
                "traceidratio" => Sampler::TraceIdRatio(ratio(arg)),
                "parentbased_always_on" | "" => Sampler::ParentBased(Root::AlwaysOn),
                "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
                "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio(arg))),
                other => return Err(SamplerError::Unknown(other.to_string())),
            },
        )
    }

    /// The decision for a span of `trace_id`; `parent_sampled` is the parent's flag, if the
    /// span has a parent (remote or in the same process).
    pub fn sample(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        match *self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(r) => by_ratio(trace_id, r),
            Sampler::ParentBased(root) => match parent_sampled {
                Some(flag) => flag,
                None => match root {
                    Root::AlwaysOn => true,
                    Root::AlwaysOff => false,
                    Root::TraceIdRatio(r) => by_ratio(trace_id, r),
                },
            },
        }
    }
}

impl Sampler {
    /// The kernel's view of this sampler (it decides the flags of traces it starts for
    /// injection): whether a parent's flag is followed, and the bound of the ratio rule for
    /// everything else (u64::MAX: all, 0: none).
    pub fn kernel_rule(&self) -> (bool, u64) {
        let bound = ratio_bound;
        match *self {
            Sampler::AlwaysOn => (false, u64::MAX),
            Sampler::AlwaysOff => (false, 0),
            Sampler::TraceIdRatio(r) => (false, bound(r)),
            Sampler::ParentBased(Root::AlwaysOn) => (true, u64::MAX),
            Sampler::ParentBased(Root::AlwaysOff) => (true, 0),
            Sampler::ParentBased(Root::TraceIdRatio(r)) => (true, bound(r)),
        }
    }
}

/// The ratio rule's bound: a trace is sampled when its id's last 8 bytes (big endian) shifted
/// right by one are below it; u64::MAX samples every trace. The kernel applies the same bound
/// to the traces it starts (`kernel_rule`), so both decide alike.
fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * (1u64 << 63) as f64) as u64
    }
}

fn by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    let bound = ratio_bound(ratio);
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    bound == u64::MAX || (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> [u8; 16] {
        let mut t = [0xabu8; 16];
        t[8..].copy_from_slice(&low.to_be_bytes());
        t
    }

    #[test]
    fn parses_the_standard_names() {
        assert_eq!(
            Sampler::parse(None, None),
            Ok(Sampler::ParentBased(Root::AlwaysOn))
        );
        assert_eq!(
            Sampler::parse(Some("always_off"), None),
            Ok(Sampler::AlwaysOff)
        );
        assert_eq!(
            Sampler::parse(Some("traceidratio"), Some("0.25")),
            Ok(Sampler::TraceIdRatio(0.25))
        );
        assert_eq!(
            Sampler::parse(Some("parentbased_traceidratio"), Some("7")),
            Ok(Sampler::ParentBased(Root::TraceIdRatio(1.0))),
            "an out-of-range ratio falls back to 1.0"
        );
        assert!(Sampler::parse(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn ratio_is_a_function_of_the_trace_id() {
        let s = Sampler::TraceIdRatio(0.5);
        // (low >> 1) < 2^62 samples: the top bit of the low half decides at 0.5.
        assert!(s.sample(&id(0x7fff_ffff_ffff_fffe), None));
        assert!(!s.sample(&id(0x8000_0000_0000_0000), None));
        // Not parent-based: the parent's flag does not matter.
        assert!(s.sample(&id(1), Some(false)));
        let share = (0..10_000u64)
            .filter(|i| s.sample(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), None))
            .count();
        assert!((4_500..5_500).contains(&share), "{share}");
        assert!(!Sampler::TraceIdRatio(0.0).sample(&id(0), None));
    }

    /// The bar: over 100k random trace ids the share kept is within one percentage
    /// point of the ratio, and two samplers (two agents) agree on every id.
    #[test]
    fn ratio_accuracy_and_determinism_over_100k_ids() {
        let ids: Vec<[u8; 16]> = (0..100_000).map(|_| rand::random()).collect();
        for ratio in [0.01, 0.05, 0.1, 0.25, 0.5, 0.9] {
            let (a, b) = (
                Sampler::TraceIdRatio(ratio),
                Sampler::parse(Some("traceidratio"), Some(&ratio.to_string())).unwrap(),
            );
            let mut kept = 0usize;
            for id in &ids {
                let decision = a.sample(id, None);
                assert_eq!(decision, b.sample(id, None), "two samplers disagree");
                kept += usize::from(decision);
            }
            let share = kept as f64 / ids.len() as f64;
            assert!(
                (share - ratio).abs() <= 0.01,
                "ratio {ratio}: kept {share:.4} of 100k ids"
            );
            // Parent-based with no parent is the root rule.
            let pb = Sampler::ParentBased(Root::TraceIdRatio(ratio));
            assert!(
                ids.iter()
                    .take(1000)
                    .all(|id| pb.sample(id, None) == a.sample(id, None))
            );
        }
    }

    #[test]
    fn parent_based_follows_the_parent() {
        let s = Sampler::ParentBased(Root::AlwaysOff);
        assert!(s.sample(&id(5), Some(true)));
        assert!(!s.sample(&id(5), None));
        assert!(!Sampler::ParentBased(Root::AlwaysOn).sample(&id(5), Some(false)));
    }
}
