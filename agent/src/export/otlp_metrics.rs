//! OTLP metrics: the RED histograms, sent every `OTEL_METRIC_EXPORT_INTERVAL` to the collector
//! the spans go to, over gRPC or HTTP/protobuf as `OTEL_EXPORTER_OTLP_(METRICS_)PROTOCOL` says.
//!
//! The histograms are cumulative, so a failed export loses nothing: the next one carries the
//! totals. There is no retry queue to bound; a failure is counted and logged (rate-limited).
//! The request is built from the same aggregation `/metrics` renders, with the official
//! protobuf types, and sent with tonic or reqwest (the clients the span exporter uses).
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use tokio::sync::watch;

use super::{otlp::Transport, red::Red, tls::TlsFiles};
use crate::telemetry::TELEMETRY;

#[derive(Debug, thiserror::Error)]
pub enum MetricsExportError {
    #[error(
        "OTEL_EXPORTER_OTLP_(TRACES_|METRICS_|LOGS_)PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL={0} is not supported; use grpc or http/protobuf"
    )]
    Protocol(String),
    #[error(
        "OTLP endpoint {endpoint:?} is not a valid URI: {reason}; check OTEL_EXPORTER_OTLP_(TRACES_|METRICS_|LOGS_)ENDPOINT"
    )]
    Endpoint { endpoint: String, reason: String },
}

/// Where and how metrics go, from the standard variables.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsExportConfig {
    pub protocol: Transport,
    /// The full URL: for HTTP it includes `/v1/metrics`.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub timeout: Duration,
    pub interval: Duration,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl MetricsExportConfig {
    pub fn from_env() -> Result<Self, MetricsExportError> {
        Self::from_lookup(env_var)
    }

    /// Where OTLP spans go: the same variables with `TRACES` for `METRICS` (no interval).
    pub fn traces_from_env() -> Result<Self, MetricsExportError> {
        Self::for_signal(env_var, "TRACES", "traces")
    }

    /// Where OTLP logs go: the same variables with `LOGS` for `METRICS` (no interval).
    pub fn logs_from_env() -> Result<Self, MetricsExportError> {
        Self::for_signal(env_var, "LOGS", "logs")
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, MetricsExportError> {
        Self::for_signal(var, "METRICS", "metrics")
    }

    /// Signal-specific variables (`OTEL_EXPORTER_OTLP_{SIGNAL}_*`) win over the generic ones,
    /// as the specification says; over HTTP the path is `/v1/{path}`.
    fn for_signal(
        var: impl Fn(&str) -> Option<String>,
        signal: &str,
        path: &str,
    ) -> Result<Self, MetricsExportError> {
        let either = |specific: &str, generic: &str| {
            var(&specific.replace("{S}", signal)).or_else(|| var(generic))
        };
        let protocol = match either(
            "OTEL_EXPORTER_OTLP_{S}_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            None => Transport::Grpc,
            Some(name) => Transport::from_name(&name)
                .ok_or_else(|| MetricsExportError::Protocol(name.trim().to_string()))?,
        };
        let endpoint = match (
            var(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            protocol,
        ) {
            (Some(e), _, _) => e.trim().to_string(),
            (None, Some(base), Transport::Grpc) => base.trim().to_string(),
            (None, Some(base), Transport::HttpProtobuf) => {
                format!("{}/v1/{path}", base.trim().trim_end_matches('/'))
            }
            (None, None, Transport::Grpc) => "http://localhost:4317".to_string(),
            (None, None, Transport::HttpProtobuf) => format!("http://localhost:4318/v1/{path}"),
        };
        if let Err(e) = endpoint.parse::<tonic::codegen::http::Uri>() {
            return Err(MetricsExportError::Endpoint {
                endpoint,
                reason: e.to_string(),
            });
        }
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
            format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS"),
        ] {
            if let Some(list) = var(&name) {
                headers.extend(list.split(',').filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
                }));
            }
        }
        let gzip = either(
            "OTEL_EXPORTER_OTLP_{S}_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        )
        .is_some_and(|c| c.trim() == "gzip");
        let ms = |v: Option<String>, default: u64| {
            Duration::from_millis(
                v.and_then(|v| v.trim().parse().ok())
                    .filter(|ms: &u64| *ms > 0)
                    .unwrap_or(default),
            )
        };
        Ok(MetricsExportConfig {
            protocol,
            endpoint,
            headers,
            gzip,
            timeout: ms(
                either(
                    "OTEL_EXPORTER_OTLP_{S}_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                ),
                10_000,
            ),
            interval: ms(var("OTEL_METRIC_EXPORT_INTERVAL"), 60_000),
        })
    }
}

/// A connection to the collector for one signal: a gRPC channel or an HTTP client.
pub(super) enum Client {
    Grpc(tonic::transport::Channel),
    Http(reqwest::Client),
}

impl Client {
    /// The client for `cfg`, or why there is none (logged by the caller).
    pub(super) fn new(cfg: &MetricsExportConfig, tls: &TlsFiles) -> Result<Self, String> {
        match cfg.protocol {
            Transport::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
                    .map_err(|e| format!("bad endpoint: {e}"))?;
                let endpoint = if cfg.endpoint.starts_with("https:") || !tls.is_empty() {
                    endpoint
                        .tls_config(tls.tonic())
                        .map_err(|e| format!("TLS settings refused: {e}"))?
                } else {
                    endpoint
                };
                Ok(Client::Grpc(endpoint.connect_lazy()))
            }
            Transport::HttpProtobuf => tls.reqwest().map(Client::Http).map_err(|e| e.to_string()),
        }
    }
}

/// Exports every interval until `shutdown` flips, then once more.
pub async fn run(
    cfg: MetricsExportConfig,
    tls: TlsFiles,
    red: Arc<Mutex<Red>>,
    host_name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match Client::new(&cfg, &tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %cfg.endpoint, %e, "OTLP metrics export disabled");
            return;
        }
    };
    let mut client = client;
    let mut interval = tokio::time::interval(cfg.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        let last = tokio::select! {
            _ = interval.tick() => false,
            _ = shutdown.changed() => true,
        };
        let request = {
            let red = red.lock().unwrap_or_else(PoisonError::into_inner);
            red.to_otlp(&host_name, now_unix_ns())
        };
        if !request.resource_metrics.is_empty() {
            let result = send(
                &mut client,
                &cfg,
                last,
                request,
                |channel, req, gzip| async move {
                    let mut c = MetricsServiceClient::new(channel);
                    if gzip {
                        c = c.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                    }
                    c.export(req).await.map(|r| r.into_inner())
                },
            )
            .await;
            match result {
                Ok(_) => {
                    TELEMETRY
                        .metric_exports
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(err) => {
                    let n = TELEMETRY
                        .metric_export_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n.is_multiple_of(100) {
                        tracing::warn!(endpoint = %cfg.endpoint, %err, "OTLP metrics export failed; the next export carries the totals");
                    }
                }
            }
        }
        if last {
            break;
        }
    }
}

/// Sends `request` with the configured headers within the configured timeout (at most 2 s
/// for the `last` one, at shutdown): over gRPC through `grpc` (the signal's generated client on
/// the channel, compressed if the flag says so), over HTTP as a protobuf POST. Returns the
/// collector's answer (over HTTP, an empty or undecodable body reads as the default answer).
/// A request, as the body of an HTTP POST.
pub(super) trait Body: prost::Message + Sized {
    fn into_body(self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl Body for opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {}
impl Body for opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {}

pub(super) async fn send<M, R, F, Fut>(
    client: &mut Client,
    cfg: &MetricsExportConfig,
    last: bool,
    request: M,
    grpc: F,
) -> Result<R, String>
where
    M: Body,
    R: prost::Message + Default,
    F: FnOnce(tonic::transport::Channel, tonic::Request<M>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<R, tonic::Status>>,
{
    let timeout = if last {
        cfg.timeout.min(Duration::from_secs(2))
    } else {
        cfg.timeout
    };
    tokio::time::timeout(timeout, send_now(client, cfg, request, grpc))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

async fn send_now<M, R, F, Fut>(
    client: &mut Client,
    cfg: &MetricsExportConfig,
    request: M,
    grpc: F,
) -> Result<R, String>
where
    M: Body,
    R: prost::Message + Default,
    F: FnOnce(tonic::transport::Channel, tonic::Request<M>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<R, tonic::Status>>,
{
    match client {
        Client::Grpc(channel) => {
            let mut req = tonic::Request::new(request);
            for (k, v) in &cfg.headers {
                if let (Ok(k), Ok(v)) = (
                    k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                    v.parse(),
                ) {
                    req.metadata_mut().insert(k, v);
                }
            }
            grpc(channel.clone(), req, cfg.gzip)
                .await
                .map_err(|s| s.to_string())
        }
        Client::Http(c) => {
            let mut body = request.into_body();
            let mut req = c
                .post(&cfg.endpoint)
                .header("content-type", "application/x-protobuf");
            if cfg.gzip {
                use std::io::Write as _;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&body).map_err(|e| e.to_string())?;
                body = enc.finish().map_err(|e| e.to_string())?;
                req = req.header("content-encoding", "gzip");
            }
            for (k, v) in &cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let answer = resp.bytes().await.map_err(|e| e.to_string())?;
            Ok(R::decode(answer).unwrap_or_default())
        }
    }
}

pub(super) fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<MetricsExportConfig, MetricsExportError> {
        MetricsExportConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str()),
            (Transport::Grpc, "http://localhost:4317")
        );
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/metrics");
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/custom"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://m:9/custom");
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer x, tenant=a",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4317");
        assert!(c.gzip);
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(
            c.headers,
            vec![
                ("authorization".to_string(), "Bearer x".to_string()),
                ("tenant".to_string(), "a".to_string())
            ]
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(cfg(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_err());
        assert!(cfg(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "not a uri")]).is_err());
    }
}
