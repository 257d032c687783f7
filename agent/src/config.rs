//! `--config`: one YAML file for everything a flag or a standard `OTEL_*` variable sets, plus
//! what only a file can say (tail-sampling policies).
//!
//! Precedence: flags > environment > file > defaults. Flags win because main.rs only falls
//! back to the file for a flag that was not given. The environment wins over the file because
//! the file's `OTEL_*`-backed keys are written into the process environment only where the
//! variable is unset ([`FileConfig::export_to_env`]): every reader of those variables — the
//! head sampler, the batcher, `opentelemetry-otlp` itself — then sees one answer.
//!
//! A file that is missing, unreadable, has an unknown key or a bad value is an error naming
//! the file, the key and what is allowed: the agent never starts half-configured.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::sampling::tail::TailConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}; check --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the config file {path}: {key}={value:?} is not valid; {allowed}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{key} is not valid: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exporter {
    /// One line per span on stdout.
    Stdout,
    /// OTLP to the collector named by `otlp.endpoint` / `OTEL_EXPORTER_OTLP_*`.
    Otlp,
}

/// Pod metadata from the Kubernetes API (`kubernetes:` in the file; no flag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kubernetes {
    /// Watch this node's pods when the API is reachable (in-cluster service account or
    /// KUBECONFIG) and `K8S_NODE_NAME` is set; otherwise say why not, once, and go on.
    #[default]
    Auto,
    /// Never call the API: resources carry `container.id` and `k8s.pod.uid` only.
    Off,
}

/// The CPU priority of the agent's threads (`--cpu-priority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPriority {
    /// Scheduled like the applications.
    #[default]
    Normal,
    /// `SCHED_IDLE`: the agent runs only on CPU time the applications leave; an application
    /// waking up takes the CPU from it at once. A saturated host then drops spans (counted)
    /// instead of the applications waiting for the agent.
    Idle,
}

/// How the kernel programs hook the syscalls they capture (`--syscall-hooks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyscallHooks {
    /// Unless injection is asked for: fexit where the kernel allows it (x86-64, BTF, no
    /// lockdown), else one BTF tracepoint on `sys_exit`; syscall tracepoints otherwise.
    #[default]
    Auto,
    /// fexit or fail: for testing a kernel.
    Fexit,
    /// The `sys_exit` BTF tracepoint or fail: for testing a kernel.
    #[serde(rename = "tp_btf")]
    TpBtf,
    /// Syscall tracepoints only.
    Tracepoints,
}

/// The file. Every key is optional; absent keys fall back to the environment, then defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// `--exporter`
    pub exporter: Option<Exporter>,
    /// `--pid`
    pub pids: Vec<u32>,
    /// `--cgroup`
    pub cgroups: Vec<PathBuf>,
    /// `--exe`
    pub exes: Vec<String>,
    /// `--port`
    pub ports: Vec<u16>,
    /// `--inject-cgroup`
    pub inject_cgroups: Vec<PathBuf>,
    /// `--metrics-addr`
    pub metrics_addr: Option<SocketAddr>,
    /// `--capture-bytes`
    pub capture_bytes: Option<u32>,
    /// `--ring-buffer-bytes`
    pub ring_buffer_bytes: Option<u32>,
    /// `--max-connections`
    pub max_connections: Option<u32>,
    /// `--capture-query`
    pub capture_query: Option<bool>,
    /// `--export-command-line`
    pub export_command_line: Option<bool>,
    /// `false` is `--no-tls`.
    pub tls: Option<bool>,
    /// `OTEL_SEMCONV_STABILITY_OPT_IN`
    pub semconv_stability_opt_in: Option<String>,
    /// `auto` (default) or `off`: pod names, namespaces and owners from the Kubernetes API.
    pub kubernetes: Option<Kubernetes>,
    /// `--syscall-hooks`
    pub syscall_hooks: Option<SyscallHooks>,
    /// `--cpu-priority`
    pub cpu_priority: Option<CpuPriority>,
    /// `--watch-socket`
    pub watch_socket: Option<PathBuf>,
    pub otlp: OtlpFile,
    pub sampling: SamplingFile,
    pub batch: BatchFile,
    pub metrics: MetricsFile,
    pub findings: FindingsFile,
    pub logs: LogsFile,
}

/// `OTEL_EXPORTER_OTLP_*`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpFile {
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`
    pub protocol: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// `gzip` or `none`
    pub compression: Option<String>,
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// PEM file of the CA that signed the collector's certificate (default: system roots).
    pub certificate: Option<PathBuf>,
    /// PEM files of the agent's client certificate and key, for mutual TLS.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// `OTEL_TRACES_SAMPLER(_ARG)` and the tail sampler.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingFile {
    pub sampler: Option<String>,
    pub sampler_arg: Option<f64>,
    /// The OpenTelemetry Collector's `tail_sampling` processor settings, same shape.
    pub tail: Option<TailConfig>,
}

/// `OTEL_BSP_*`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchFile {
    #[serde(with = "opt_duration")]
    pub schedule_delay: Option<Duration>,
    pub max_export_batch_size: Option<usize>,
    pub max_queue_size: Option<usize>,
    #[serde(with = "opt_duration")]
    pub export_timeout: Option<Duration>,
}

/// Findings added to spans (`findings:` in the file; no flags). See `span::analysis`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FindingsFile {
    /// Default true.
    pub enabled: Option<bool>,
    /// N+1: this many children of one span with the same shape (default 10).
    pub n_plus_one: Option<usize>,
    /// Serial fan-out: this many back-to-back calls to different peers (default 3)...
    pub fan_out: Option<usize>,
    /// ... each starting within this of the previous one's end (default 10ms).
    #[serde(with = "opt_duration")]
    pub fan_out_gap: Option<Duration>,
    /// Cold start: a process's first server span this many times the median of the next ones
    /// (default 10)...
    pub cold_start_ratio: Option<u64>,
    /// ... over this many next ones (default 5)...
    pub cold_start_followers: Option<usize>,
    /// ... seen within this (default 2s): the first span waits this long at most.
    #[serde(with = "opt_duration")]
    pub cold_start_wait: Option<Duration>,
}

impl FindingsFile {
    pub fn config(&self) -> crate::span::analysis::FindingsConfig {
        let d = crate::span::analysis::FindingsConfig::default();
        crate::span::analysis::FindingsConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            n_plus_one: self.n_plus_one.unwrap_or(d.n_plus_one),
            fan_out: self.fan_out.unwrap_or(d.fan_out),
            fan_out_gap: self.fan_out_gap.unwrap_or(d.fan_out_gap),
            cold_start_ratio: self.cold_start_ratio.unwrap_or(d.cold_start_ratio),
            cold_start_followers: self.cold_start_followers.unwrap_or(d.cold_start_followers),
            cold_start_wait: self.cold_start_wait.unwrap_or(d.cold_start_wait),
        }
    }
}

/// Logs tied to traces (`logs:` in the file, `--export-logs`). See `span::logs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsFile {
    /// Default false: stdout/stderr lines carry what the program prints, secrets included.
    pub enabled: Option<bool>,
    /// Per process (default 100).
    pub max_lines_per_second: Option<u32>,
    /// Longer lines are cut (default 2048).
    pub max_line_bytes: Option<usize>,
    /// Regular expressions whose matches are blanked before export (default: values after
    /// password/secret/token/api_key/authorization keys).
    pub redact: Option<Vec<String>>,
}

impl LogsFile {
    /// The settings, or which pattern does not compile.
    pub fn config(&self) -> Result<crate::span::logs::LogsConfig, ConfigError> {
        let patterns = self
            .redact
            .clone()
            .unwrap_or_else(|| vec![crate::span::logs::DEFAULT_REDACT.to_string()]);
        let redact = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|e| ConfigError::Invalid {
                    key: "logs.redact".into(),
                    reason: format!("{p:?}: {e}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(crate::span::logs::LogsConfig {
            max_lines_per_second: self.max_lines_per_second.unwrap_or(100),
            max_line_bytes: self.max_line_bytes.unwrap_or(2048).max(16),
            redact,
        })
    }
}

/// RED metrics.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsFile {
    /// Request-duration histograms per service and route (default true).
    pub red: Option<bool>,
    pub max_series: Option<usize>,
    pub max_routes_per_service: Option<usize>,
    /// `OTEL_METRIC_EXPORT_INTERVAL`
    #[serde(with = "opt_duration")]
    pub export_interval: Option<Duration>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        // An empty file is a valid file that sets nothing.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, value: &str, allowed| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value: value.to_string(),
            allowed,
        };
        if let Some(p) = &self.otlp.protocol
            && crate::export::otlp::Transport::from_name(p).is_none()
        {
            return Err(bad("otlp.protocol", p, "use grpc or http/protobuf"));
        }
        if let Some(c) = &self.otlp.compression
            && !matches!(c.as_str(), "gzip" | "none")
        {
            return Err(bad("otlp.compression", c, "use gzip or none"));
        }
        if let Some(s) = &self.sampling.sampler
            && crate::sampling::head::Sampler::parse(Some(s), None).is_err()
        {
            return Err(bad(
                "sampling.sampler",
                s,
                "use always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
        if let Some(r) = self.sampling.sampler_arg
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad(
                "sampling.sampler_arg",
                &r.to_string(),
                "use a ratio between 0 and 1",
            ));
        }
        if let Some(t) = &self.sampling.tail {
            crate::sampling::tail::TailSampler::new(t.clone()).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("sampling.tail: {e}"),
            })?;
        }
        if let Some(n) = self.capture_bytes
            && !(1..=8192).contains(&n)
        {
            return Err(bad("capture_bytes", &n.to_string(), "use 1 to 8192 bytes"));
        }
        Ok(())
    }

    /// The file's `OTEL_*`-backed keys as (variable, value) pairs.
    pub fn env_pairs(&self) -> Vec<(&'static str, String)> {
        let ms = |d: &Duration| d.as_millis().to_string();
        let mut pairs = Vec::new();
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(v) = value {
                pairs.push((name, v));
            }
        };
        let o = &self.otlp;
        put("OTEL_EXPORTER_OTLP_ENDPOINT", o.endpoint.clone());
        put(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            o.traces_endpoint.clone(),
        );
        put(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            o.metrics_endpoint.clone(),
        );
        put("OTEL_EXPORTER_OTLP_PROTOCOL", o.protocol.clone());
        put(
            "OTEL_EXPORTER_OTLP_HEADERS",
            (!o.headers.is_empty()).then(|| {
                o.headers
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        );
        put("OTEL_EXPORTER_OTLP_COMPRESSION", o.compression.clone());
        put("OTEL_EXPORTER_OTLP_TIMEOUT", o.timeout.as_ref().map(ms));
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        put("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&o.certificate));
        put(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            path(&o.client_certificate),
        );
        put("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&o.client_key));
        put("OTEL_TRACES_SAMPLER", self.sampling.sampler.clone());
        put(
            "OTEL_TRACES_SAMPLER_ARG",
            self.sampling.sampler_arg.map(|r| r.to_string()),
        );
        let b = &self.batch;
        put("OTEL_BSP_SCHEDULE_DELAY", b.schedule_delay.as_ref().map(ms));
        put(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            b.max_export_batch_size.map(|n| n.to_string()),
        );
        put(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            b.max_queue_size.map(|n| n.to_string()),
        );
        put("OTEL_BSP_EXPORT_TIMEOUT", b.export_timeout.as_ref().map(ms));
        put(
            "OTEL_METRIC_EXPORT_INTERVAL",
            self.metrics.export_interval.as_ref().map(ms),
        );
        put(
            "OTEL_SEMCONV_STABILITY_OPT_IN",
            self.semconv_stability_opt_in.clone(),
        );
        pairs
    }

    /// Writes the file's `OTEL_*` values into the environment where the variable is unset.
    ///
    /// # Safety
    /// Call before any other thread exists (the async runtime included): `setenv` races with
    /// concurrent `getenv`.
    pub unsafe fn export_to_env(&self) {
        for (name, value) in self.env_pairs() {
            if std::env::var_os(name).is_none() {
                // SAFETY: the caller guarantees no other thread runs.
                unsafe { std::env::set_var(name, value) };
            }
        }
    }
}

impl FileConfig {
    /// This configuration with every key `over` sets replacing it: `over` is the command
    /// line, read into the same shape (an empty list or `None` there sets nothing).
    pub fn overlaid_by(mut self, over: FileConfig) -> Self {
        fn list<T>(base: &mut Vec<T>, over: Vec<T>) {
            if !over.is_empty() {
                *base = over;
            }
        }
        fn one<T>(base: &mut Option<T>, over: Option<T>) {
            if over.is_some() {
                *base = over;
            }
        }
        one(&mut self.exporter, over.exporter);
        list(&mut self.pids, over.pids);
        list(&mut self.cgroups, over.cgroups);
        list(&mut self.exes, over.exes);
        list(&mut self.ports, over.ports);
        list(&mut self.inject_cgroups, over.inject_cgroups);
        one(&mut self.metrics_addr, over.metrics_addr);
        one(&mut self.capture_bytes, over.capture_bytes);
        one(&mut self.ring_buffer_bytes, over.ring_buffer_bytes);
        one(&mut self.max_connections, over.max_connections);
        one(&mut self.capture_query, over.capture_query);
        one(&mut self.export_command_line, over.export_command_line);
        one(&mut self.tls, over.tls);
        one(&mut self.syscall_hooks, over.syscall_hooks);
        one(&mut self.cpu_priority, over.cpu_priority);
        one(&mut self.watch_socket, over.watch_socket);
        one(&mut self.logs.enabled, over.logs.enabled);
        self
    }

    /// The configuration in effect: this (file and flags merged) with every `OTEL_*`-backed
    /// key read back from the environment and defaults filled in, as `tracewire config`
    /// prints it. Header values are secrets: only their names are shown.
    pub fn effective(&self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let ms = |name: &str| {
            var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let mut e = self.clone();
        e.exporter = Some(e.exporter.unwrap_or(
            if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            {
                Exporter::Otlp
            } else {
                Exporter::Stdout
            },
        ));
        e.capture_bytes = Some(e.capture_bytes.unwrap_or(DEFAULT_CAPTURE_BYTES));
        e.ring_buffer_bytes = Some(e.ring_buffer_bytes.unwrap_or(DEFAULT_RING_BUFFER_BYTES));
        e.max_connections = Some(e.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS));
        e.capture_query = Some(e.capture_query.unwrap_or(false));
        e.export_command_line = Some(e.export_command_line.unwrap_or(false));
        e.tls = Some(e.tls.unwrap_or(true));
        e.kubernetes = Some(e.kubernetes.unwrap_or_default());
        e.syscall_hooks = Some(e.syscall_hooks.unwrap_or_default());
        e.cpu_priority = Some(e.cpu_priority.unwrap_or_default());
        e.watch_socket = Some(
            e.watch_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::watch::DEFAULT_SOCKET)),
        );
        e.semconv_stability_opt_in = var("OTEL_SEMCONV_STABILITY_OPT_IN");
        e.otlp = OtlpFile {
            endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            metrics_endpoint: var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            protocol: Some(var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "grpc".into())),
            headers: var("OTEL_EXPORTER_OTLP_HEADERS")
                .map(|h| {
                    h.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, _)| (k.trim().to_string(), "<redacted>".to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            compression: Some(
                var("OTEL_EXPORTER_OTLP_COMPRESSION").unwrap_or_else(|| "none".into()),
            ),
            timeout: Some(ms("OTEL_EXPORTER_OTLP_TIMEOUT").unwrap_or(Duration::from_secs(10))),
            certificate: var("OTEL_EXPORTER_OTLP_CERTIFICATE").map(PathBuf::from),
            client_certificate: var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE").map(PathBuf::from),
            client_key: var("OTEL_EXPORTER_OTLP_CLIENT_KEY").map(PathBuf::from),
        };
        e.sampling.sampler =
            Some(var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into()));
        e.sampling.sampler_arg = var("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse().ok());
        let batch = crate::export::BatchConfig::from_env();
        e.batch = BatchFile {
            schedule_delay: Some(batch.schedule_delay),
            max_export_batch_size: Some(batch.max_batch),
            max_queue_size: Some(batch.max_queue),
            export_timeout: Some(batch.export_timeout),
        };
        e.logs.enabled = Some(e.logs.enabled.unwrap_or(false));
        let f = e.findings.config();
        e.findings = FindingsFile {
            enabled: Some(f.enabled),
            n_plus_one: Some(f.n_plus_one),
            fan_out: Some(f.fan_out),
            fan_out_gap: Some(f.fan_out_gap),
            cold_start_ratio: Some(f.cold_start_ratio),
            cold_start_followers: Some(f.cold_start_followers),
            cold_start_wait: Some(f.cold_start_wait),
        };
        e.metrics.red = Some(e.metrics.red.unwrap_or(true));
        e.metrics.max_series = Some(e.metrics.max_series.unwrap_or(DEFAULT_MAX_SERIES));
        e.metrics.max_routes_per_service = Some(
            e.metrics
                .max_routes_per_service
                .unwrap_or(DEFAULT_MAX_ROUTES_PER_SERVICE),
        );
        e.metrics.export_interval =
            Some(ms("OTEL_METRIC_EXPORT_INTERVAL").unwrap_or(DEFAULT_METRIC_EXPORT_INTERVAL));
        e
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

pub const DEFAULT_CAPTURE_BYTES: u32 = agent_common::DEFAULT_CAPTURE;
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 65536;
pub const DEFAULT_MAX_SERIES: usize = 2000;
pub const DEFAULT_MAX_ROUTES_PER_SERVICE: usize = 100;
/// The specification's default for `OTEL_METRIC_EXPORT_INTERVAL`.
pub const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Durations as the collector writes them ("10s") in both directions.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::sampling::tail::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Millis(u64),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(Raw::Text(t)) => crate::sampling::tail::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(Path::new("/etc/tracewire.yaml"), text)
    }

    #[test]
    fn full_file_maps_to_flags_and_env() {
        let c = parse(
            "exporter: otlp\nports: [8080, 443]\ninject_cgroups: [/sys/fs/cgroup/app]\n\
             metrics_addr: 127.0.0.1:9464\ncapture_query: true\ntls: false\n\
             otlp:\n  endpoint: http://collector:4317\n  compression: gzip\n  timeout: 10s\n  \
             headers: {authorization: Bearer x}\n\
             sampling:\n  sampler: parentbased_traceidratio\n  sampler_arg: 0.25\n\
             batch:\n  schedule_delay: 200ms\n  max_queue_size: 4096\n\
             metrics:\n  export_interval: 15s\n",
        )
        .unwrap();
        assert_eq!(c.exporter, Some(Exporter::Otlp));
        assert_eq!(c.ports, vec![8080, 443]);
        assert_eq!(c.tls, Some(false));
        let env: BTreeMap<_, _> = c.env_pairs().into_iter().collect();
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://collector:4317");
        assert_eq!(env["OTEL_EXPORTER_OTLP_COMPRESSION"], "gzip");
        assert_eq!(env["OTEL_EXPORTER_OTLP_TIMEOUT"], "10000");
        assert_eq!(env["OTEL_EXPORTER_OTLP_HEADERS"], "authorization=Bearer x");
        assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.25");
        assert_eq!(env["OTEL_BSP_SCHEDULE_DELAY"], "200");
        assert_eq!(env["OTEL_BSP_MAX_QUEUE_SIZE"], "4096");
        assert_eq!(env["OTEL_METRIC_EXPORT_INTERVAL"], "15000");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = parse("exporter: otlp\nport: [80]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/tracewire.yaml") && e.contains("port"),
            "{e}"
        );
        let e = parse("exporter: kafka\n").unwrap_err().to_string();
        assert!(e.contains("stdout") && e.contains("otlp"), "{e}");
        let e = parse("otlp:\n  compression: zstd\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("otlp.compression") && e.contains("gzip"), "{e}");
        let e = parse("sampling:\n  sampler: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sampling.sampler") && e.contains("traceidratio"),
            "{e}"
        );
        let e = parse("sampling:\n  sampler_arg: 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sampling.sampler_arg"), "{e}");
        let e = parse("batch:\n  schedule_delay: 5 fortnights\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fortnights"), "{e}");
        let e = parse("otlp:\n  protocol: http/json\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("otlp.protocol"), "{e}");
    }

    #[test]
    fn missing_file_names_it() {
        let e = FileConfig::load(Path::new("/nonexistent/tracewire.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/tracewire.yaml"), "{e}");
    }

    /// The documented example is a valid file, with every section.
    #[test]
    fn the_example_in_deploy_parses() {
        let c = parse(include_str!("../../deploy/tracewire.yaml")).unwrap();
        assert_eq!(c.exporter, Some(Exporter::Otlp));
        assert_eq!(c.sampling.tail.map(|t| t.policies.len()), Some(3));
        assert_eq!(
            c.findings.config(),
            crate::span::analysis::FindingsConfig::default(),
            "the example's findings section states the defaults"
        );
    }

    /// The collector's tail_sampling section is accepted by the agent as it is.
    #[test]
    fn the_collector_policy_moves_to_the_agent() {
        let collector: serde_norway::Value =
            serde_norway::from_str(include_str!("../../deploy/collector/sampler.yaml")).unwrap();
        let section = &collector["processors"]["tail_sampling"];
        let tail: TailConfig = serde_norway::from_value(section.clone()).unwrap();
        crate::sampling::tail::TailSampler::new(tail).unwrap();
    }

    #[test]
    fn kubernetes_is_auto_or_off() {
        assert_eq!(
            parse("kubernetes: off\n").unwrap().kubernetes,
            Some(Kubernetes::Off)
        );
        assert_eq!(
            parse("kubernetes: auto\n").unwrap().kubernetes,
            Some(Kubernetes::Auto)
        );
        assert_eq!(
            parse("\n").unwrap().effective().kubernetes,
            Some(Kubernetes::Auto)
        );
        let e = parse("kubernetes: maybe\n").unwrap_err().to_string();
        assert!(e.contains("auto") && e.contains("off"), "{e}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("\n").unwrap(), FileConfig::default());
        assert!(parse("").unwrap().env_pairs().is_empty());
    }
}
