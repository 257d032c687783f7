//! The agent's own `OTEL_RESOURCE_ATTRIBUTES`: attributes of the node (`k8s.node.name`,
//! `k8s.cluster.name`, `deployment.environment.name`) added to every process's resource. What
//! the agent knows of each process (`service.name`, `process.*`, `container.id`,
//! `k8s.pod.uid`) wins over them; `host.name` given here wins over the kernel's hostname, which
//! in a Kubernetes pod is the pod's name, not the node's.

/// Attributes the agent sets per process: the environment cannot override them.
const PER_PROCESS: &[&str] = &[
    "service.name",
    "process.pid",
    "process.executable.name",
    "process.executable.path",
    "process.command_line",
    "container.id",
    "k8s.pod.uid",
    "telemetry.sdk.name",
    "telemetry.sdk.language",
    "telemetry.sdk.version",
    "telemetry.distro.name",
    "telemetry.distro.version",
];

/// Parses `key1=value1,key2=value2` (values percent-encoded, as the specification says);
/// malformed members are skipped, later keys win, at most 64 members.
pub fn parse(value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for member in value.split(',').take(64) {
        let Some((k, v)) = member.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), percent_decode(v.trim()));
        if k.is_empty() || v.is_empty() || PER_PROCESS.contains(&k) {
            continue;
        }
        out.retain(|(old, _)| old != k);
        out.push((k.to_string(), v));
    }
    out
}

/// From the agent's environment.
pub fn from_env() -> Vec<(String, String)> {
    std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .map(|v| parse(&v))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_decoding_and_precedence() {
        let got = parse(
            "k8s.node.name=node-1, deployment.environment.name=prod%20eu ,bad,=x,empty=,\
             service.name=not-mine,k8s.node.name=node-2,host.name=node-2,pct=%zz%4",
        );
        assert_eq!(
            got,
            [
                ("deployment.environment.name".into(), "prod eu".into()),
                ("k8s.node.name".into(), "node-2".into()),
                ("host.name".into(), "node-2".into()),
                ("pct".into(), "%zz%4".into()),
            ]
        );
        assert!(parse("").is_empty());
    }
}
