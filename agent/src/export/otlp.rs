//! OTLP span export: each batch becomes one `ExportTraceServiceRequest` built straight from
//! the agent's spans with the official protobuf types (`opentelemetry-proto`), one resource per
//! traced process, sent over gRPC or HTTP/protobuf by the client the metrics and logs share.
//! The endpoint, headers, compression, timeout and TLS come from the standard
//! `OTEL_EXPORTER_OTLP_(TRACES_)*` variables.
//!
//! Why not `opentelemetry-otlp`'s span exporter, which the agent used first: it takes the SDK's
//! `SpanData`, so each span was converted twice (to `SpanData`, then to the protobuf types) and
//! each batch split into one request per process. Under nginx at saturation that conversion
//! chain was a third of the agent's CPU (perf: `span_data` 6.5%,
//! `build_trace_export_body` 23% of the agent's samples, plus the drops); building the protobuf
//! span once, moving the strings the agent already owns, removes it.
use std::collections::HashMap;

use opentelemetry::trace::TraceState;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span as ProtoSpan, SpanFlags, Status as ProtoStatus,
        span::{Event as ProtoEvent, SpanKind as ProtoKind},
        status::StatusCode,
    },
};

use super::{
    otlp_metrics::{Client, MetricsExportConfig, MetricsExportError, send},
    red::{kv, scope},
    tls::{TlsError, TlsFiles},
};
use crate::{
    capture::kubernetes::{PodDirectory, PodMeta},
    span::{AttrValue, Attribute, Span, SpanKind, Status, semconv as sc},
};

/// Which OTLP transport, from `OTEL_EXPORTER_OTLP_PROTOCOL` (or its traces-specific variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={value} is not supported; use grpc or http/protobuf")]
    Protocol { value: String },
    #[error(transparent)]
    Config(#[from] MetricsExportError),
    #[error(
        "building the OTLP client for {endpoint} failed: {reason}; check \
         OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT and the OTEL_EXPORTER_OTLP_*CERTIFICATE files"
    )]
    Client { endpoint: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}
impl Transport {
    pub fn from_env() -> Result<Self, OtlpError> {
        let value = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|_| "grpc".to_string());
        Self::from_name(&value).ok_or_else(|| OtlpError::Protocol {
            value: value.trim().to_string(),
        })
    }

    /// An `OTEL_EXPORTER_OTLP_*PROTOCOL` value (empty: the default, gRPC); `None` for the ones
    /// not supported (`http/json`).
    pub fn from_name(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" | "" => Some(Transport::Grpc),
            "http/protobuf" => Some(Transport::HttpProtobuf),
            _ => None,
        }
    }
}

/// Is a collector configured through the environment?
pub fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// The part of span export that needs no network: spans to one request, with each process's
/// resource built once and kept.
pub struct TraceRequests {
    scope: InstrumentationScope,
    host_name: String,
    /// The agent's `OTEL_RESOURCE_ATTRIBUTES` (node-level attributes).
    node_attributes: Vec<(String, String)>,
    /// Pods of this node from the Kubernetes API, when the agent watches them.
    pods: Option<PodDirectory>,
    /// By pid, service name and whether the pod's metadata was known: a resource built before
    /// the watch named the pod is not kept once it has.
    resources: HashMap<(u32, String, bool), Resource>,
}

const MAX_RESOURCES: usize = 4096;

impl TraceRequests {
    pub fn new(host_name: String, node_attributes: Vec<(String, String)>) -> Self {
        TraceRequests {
            scope: scope(),
            host_name,
            node_attributes,
            pods: None,
            resources: HashMap::new(),
        }
    }

    /// Adds the pod's name, namespace and owners to the resources of processes in known pods.
    pub fn set_pods(&mut self, pods: PodDirectory) {
        self.pods = Some(pods);
        self.resources.clear();
    }

    fn resource(&mut self, span: &Span) -> Resource {
        let p = &span.process;
        let pod = match (&self.pods, &p.container.pod_uid) {
            (Some(pods), Some(uid)) => pods.get(uid),
            _ => None,
        };
        let key = (p.pid, p.service_name.clone(), pod.is_some());
        if let Some(r) = self.resources.get(&key) {
            return r.clone();
        }
        if self.resources.len() >= MAX_RESOURCES {
            self.resources.clear();
        }
        let r = resource_of(span, &self.host_name, &self.node_attributes, pod.as_deref());
        self.resources.insert(key, r.clone());
        r
    }

    /// One request for `batch`: a `ResourceSpans` per process (pid and service name), in the
    /// order the processes first appear.
    pub fn request(&mut self, batch: Vec<Span>) -> ExportTraceServiceRequest {
        let mut groups: Vec<ResourceSpans> = Vec::new();
        // (pid, service name) of each group; spans of one process mostly come in runs.
        let mut keys: Vec<(u32, String)> = Vec::new();
        let mut last = usize::MAX;
        for span in batch {
            let p = &span.process;
            let same = |k: &(u32, String)| k.0 == p.pid && k.1 == p.service_name;
            let slot = if keys.get(last).is_some_and(same) {
                last
            } else if let Some(i) = keys.iter().position(same) {
                i
            } else {
                keys.push((p.pid, p.service_name.clone()));
                groups.push(ResourceSpans {
                    resource: Some(self.resource(&span)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(self.scope.clone()),
                        spans: Vec::new(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                });
                groups.len() - 1
            };
            last = slot;
            if let Some(scope_spans) = groups[slot].scope_spans.first_mut() {
                scope_spans.spans.push(proto_span(span));
            }
        }
        ExportTraceServiceRequest {
            resource_spans: groups,
        }
    }
}

pub struct OtlpSink {
    cfg: MetricsExportConfig,
    client: Client,
    requests: TraceRequests,
}

impl OtlpSink {
    /// The exporter for the `OTEL_EXPORTER_OTLP_(TRACES_)*` settings. Must run inside the tokio
    /// runtime (the gRPC channel needs it).
    pub fn new(host_name: String, tls: &TlsFiles) -> Result<Self, OtlpError> {
        let cfg = MetricsExportConfig::traces_from_env()?;
        let client = Client::new(&cfg, tls).map_err(|reason| OtlpError::Client {
            endpoint: cfg.endpoint.clone(),
            reason,
        })?;
        Ok(OtlpSink {
            cfg,
            client,
            requests: TraceRequests::new(host_name, super::resource::from_env()),
        })
    }

    /// Adds the pod's name, namespace and owners to the resources of processes in known pods.
    pub fn set_pods(&mut self, pods: PodDirectory) {
        self.requests.set_pods(pods);
    }

    pub async fn export(&mut self, batch: Vec<Span>) -> Result<(), String> {
        let request = self.requests.request(batch);
        send(
            &mut self.client,
            &self.cfg,
            false,
            request,
            |channel, req, gzip| async move {
                let mut c = TraceServiceClient::new(channel);
                if gzip {
                    c = c.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                c.export(req).await.map(|_| ())
            },
        )
        .await
    }
}

fn resource_of(
    span: &Span,
    host_name: &str,
    node: &[(String, String)],
    pod: Option<&PodMeta>,
) -> Resource {
    let p = &span.process;
    let node_host = node.iter().find(|(k, _)| k == sc::HOST_NAME);
    let text = |k: &str, v: &str| kv(k, Value::StringValue(v.to_string()));
    let mut attrs = vec![
        text(sc::SERVICE_NAME, &p.service_name),
        kv(sc::PROCESS_PID, Value::IntValue(i64::from(p.pid))),
        text(sc::PROCESS_EXECUTABLE_NAME, &p.executable_name),
        text(
            sc::HOST_NAME,
            node_host.map_or(host_name, |(_, v)| v.as_str()),
        ),
        text(sc::TELEMETRY_SDK_NAME, "tracewire"),
        text(sc::TELEMETRY_SDK_VERSION, env!("CARGO_PKG_VERSION")),
        text(sc::TELEMETRY_DISTRO_NAME, "tracewire"),
        text(sc::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")),
    ];
    if let Some(path) = &p.executable_path {
        attrs.push(text(sc::PROCESS_EXECUTABLE_PATH, path));
    }
    if let Some(cmd) = &p.command_line {
        attrs.push(text(sc::PROCESS_COMMAND_LINE, cmd));
    }
    if let Some(id) = &p.container.container_id {
        attrs.push(text(sc::CONTAINER_ID, id));
    }
    if let Some(uid) = &p.container.pod_uid {
        attrs.push(text(sc::K8S_POD_UID, uid));
    }
    // The operator's own OTEL_RESOURCE_ATTRIBUTES win over the API's (k8s.node.name is in both
    // with the DaemonSet as shipped, with the same value).
    for (k, v) in pod.map(PodMeta::attributes).unwrap_or_default() {
        if !node.iter().any(|(n, _)| n == k) {
            attrs.push(text(k, &v));
        }
    }
    for (k, v) in node.iter().filter(|(k, _)| k != sc::HOST_NAME) {
        attrs.push(text(k, v));
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// An attribute, its value moved.
fn key_value(a: Attribute) -> KeyValue {
    let value = match a.value {
        AttrValue::Str(s) => Value::StringValue(s),
        AttrValue::Int(i) => Value::IntValue(i),
        AttrValue::StrArray(v) => Value::ArrayValue(ArrayValue {
            values: v
                .into_iter()
                .map(|s| AnyValue {
                    value: Some(Value::StringValue(s)),
                })
                .collect(),
        }),
        AttrValue::IntArray(v) => Value::ArrayValue(ArrayValue {
            values: v
                .into_iter()
                .map(|i| AnyValue {
                    value: Some(Value::IntValue(i)),
                })
                .collect(),
        }),
    };
    kv(a.key, value)
}

/// The protobuf span, its strings moved. Flags as the SDK sets them: sampled, and whether the
/// parent is remote (known, since the agent knows where the parent came from).
fn proto_span(span: Span) -> ProtoSpan {
    let mut flags = 1 | SpanFlags::ContextHasIsRemoteMask as u32;
    if span.parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    ProtoSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        // Passed on only if valid W3C tracestate, normalised.
        trace_state: span
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .map(|t| t.header())
            .unwrap_or_default(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: span.name,
        kind: match span.kind {
            SpanKind::Server => ProtoKind::Server,
            SpanKind::Client => ProtoKind::Client,
        } as i32,
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano: span.end_unix_ns,
        attributes: span.attributes.into_iter().map(key_value).collect(),
        dropped_attributes_count: 0,
        events: span
            .events
            .into_iter()
            .map(|e| ProtoEvent {
                time_unix_nano: e.time_unix_ns,
                name: e.name.to_string(),
                attributes: e.attributes.into_iter().map(key_value).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(ProtoStatus {
            message: String::new(),
            code: match span.status {
                Status::Unset => StatusCode::Unset,
                Status::Error => StatusCode::Error,
            } as i32,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message as _;

    use super::*;
    use crate::{capture::process::ProcessInfo, span::SpanEvent};

    fn span(process: &Arc<ProcessInfo>, id: u8, status: Status) -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: (id > 1).then_some([1; 8]),
            parent_is_remote: id == 3,
            tracestate: Some("vendor=a,bad key".into()).filter(|_| id == 3),
            kind: if id == 1 {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            name: format!("GET /{id}"),
            start_unix_ns: 1_000 + u64::from(id),
            end_unix_ns: 2_000,
            attributes: vec![
                Attribute::str(sc::HTTP_REQUEST_METHOD, "GET"),
                Attribute {
                    key: "tracewire.critical_path.self_ns",
                    value: AttrValue::IntArray(vec![1, 2]),
                },
            ],
            events: vec![SpanEvent {
                name: "tracewire.finding.n_plus_one",
                time_unix_ns: 1_500,
                attributes: vec![Attribute {
                    key: "tracewire.finding.n_plus_one.count",
                    value: AttrValue::Int(12),
                }],
            }],
            status,
            process: Arc::clone(process),
        }
    }

    #[test]
    fn one_request_groups_spans_by_process_and_keeps_every_field() {
        let a = ProcessInfo::for_test("a");
        let mut b = (*ProcessInfo::for_test("b")).clone();
        b.pid = 2;
        let b = Arc::new(b);
        let batch = vec![
            span(&a, 1, Status::Unset),
            span(&b, 2, Status::Error),
            span(&a, 3, Status::Unset),
        ];
        let mut requests = TraceRequests::new("host-1".into(), Vec::new());
        let request = requests.request(batch);
        // It survives the wire.
        let request =
            ExportTraceServiceRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(request.resource_spans.len(), 2);
        let services: Vec<String> = request
            .resource_spans
            .iter()
            .map(|r| {
                let attrs = &r.resource.as_ref().expect("resource").attributes;
                let name = attrs.iter().find(|kv| kv.key == sc::SERVICE_NAME);
                match name.and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(services, ["a", "b"]);
        let scope_spans = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope_spans.scope.as_ref().expect("scope").name, "tracewire");
        let spans = &scope_spans.spans;
        assert_eq!(spans.len(), 2);
        let (server, client) = (&spans[0], &spans[1]);
        assert_eq!(server.trace_id, [7; 16]);
        assert_eq!(server.span_id, [1; 8]);
        assert!(server.parent_span_id.is_empty());
        assert_eq!(server.kind, ProtoKind::Server as i32);
        assert_eq!(server.name, "GET /1");
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (1_001, 2_000)
        );
        // Sampled, and whether the parent is remote is known.
        assert_eq!(server.flags, 0x101);
        assert_eq!(client.flags, 0x301);
        assert_eq!(client.parent_span_id, [1; 8]);
        // An invalid tracestate is not passed on.
        assert_eq!(client.trace_state, "");
        assert_eq!(server.attributes[0].key, sc::HTTP_REQUEST_METHOD);
        assert_eq!(
            server.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Value::StringValue("GET".into()))
        );
        let Some(Value::ArrayValue(array)) = server.attributes[1]
            .value
            .as_ref()
            .and_then(|v| v.value.clone())
        else {
            panic!("{:?}", server.attributes[1]);
        };
        assert_eq!(array.values.len(), 2);
        assert_eq!(server.events[0].name, "tracewire.finding.n_plus_one");
        assert_eq!(server.events[0].time_unix_nano, 1_500);
        assert_eq!(server.events[0].attributes.len(), 1);
        let status = |s: &ProtoSpan| s.status.as_ref().map(|s| s.code);
        assert_eq!(status(server), Some(StatusCode::Unset as i32));
        let other = &request.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(status(other), Some(StatusCode::Error as i32));
    }

    #[test]
    fn a_valid_tracestate_is_kept() {
        let a = ProcessInfo::for_test("a");
        let mut s = span(&a, 2, Status::Unset);
        s.tracestate = Some("vendor=a,other=b".into());
        let request = TraceRequests::new("h".into(), Vec::new()).request(vec![s]);
        assert_eq!(
            request.resource_spans[0].scope_spans[0].spans[0].trace_state,
            "vendor=a,other=b"
        );
    }
}
