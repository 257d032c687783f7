//! OTLP export through `opentelemetry-otlp`: its exporters take span data with the ids and
//! timestamps the agent computed. The endpoint, headers, timeout and TLS come from the standard
//! `OTEL_EXPORTER_OTLP_*` variables, which the exporter reads itself.
//!
//! Every traced process is its own resource, while an exporter carries one resource: a batch
//! is split by process and each part sent with `set_resource` first.
use std::{
    borrow::Cow,
    collections::HashMap,
    time::{Duration, UNIX_EPOCH},
};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, StringValue, Value,
    trace::{
        Event, SpanContext, SpanId, SpanKind as OtelKind, Status as OtelStatus, TraceFlags,
        TraceId, TraceState,
    },
};
use opentelemetry_otlp::{
    Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};

use super::tls::{TlsError, TlsFiles};
use crate::{
    capture::kubernetes::{PodDirectory, PodMeta},
    span::{AttrValue, Span, SpanKind, Status, semconv as sc},
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
    #[error(
        "building the OTLP exporter failed: {source}; check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS"
    )]
    Build {
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
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

pub struct OtlpSink {
    exporter: opentelemetry_otlp::SpanExporter,
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

impl OtlpSink {
    /// Builds the exporter. Must run inside the tokio runtime (the gRPC channel needs it).
    pub fn new(transport: Transport, host_name: String, tls: &TlsFiles) -> Result<Self, OtlpError> {
        let https = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .is_some_and(|e| e.trim_start().starts_with("https:"));
        let exporter = match transport {
            Transport::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if https || !tls.is_empty() {
                    builder.with_tls_config(tls.tonic()).build()
                } else {
                    builder.build()
                }
            }
            Transport::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(tls.reqwest()?)
                .with_protocol(Protocol::HttpBinary)
                .build(),
        }
        .map_err(|source| OtlpError::Build { source })?;
        Ok(OtlpSink {
            exporter,
            scope: InstrumentationScope::builder("tracewire")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            host_name,
            node_attributes: super::resource::from_env(),
            pods: None,
            resources: HashMap::new(),
        })
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

    pub async fn export(&mut self, batch: Vec<Span>) -> Result<(), String> {
        let mut by_process: Vec<(Resource, Vec<SpanData>)> = Vec::new();
        let mut index: HashMap<(u32, &str), usize> = HashMap::new();
        let mut resources = Vec::with_capacity(batch.len());
        for span in &batch {
            resources.push(self.resource(span));
        }
        for (span, resource) in batch.iter().zip(resources) {
            let key = (span.process.pid, span.process.service_name.as_str());
            let slot = *index.entry(key).or_insert_with(|| {
                by_process.push((resource, Vec::new()));
                by_process.len() - 1
            });
            if let Some((_, spans)) = by_process.get_mut(slot) {
                spans.push(span_data(span, &self.scope));
            }
        }
        let mut first_error = None;
        for (resource, spans) in by_process {
            self.exporter.set_resource(&resource);
            if let Err(e) = self.exporter.export(spans).await {
                first_error.get_or_insert(e.to_string());
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.exporter.shutdown_with_timeout(Duration::from_secs(5));
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
    let mut attrs = vec![
        KeyValue::new(sc::SERVICE_NAME, p.service_name.clone()),
        KeyValue::new(sc::PROCESS_PID, i64::from(p.pid)),
        KeyValue::new(sc::PROCESS_EXECUTABLE_NAME, p.executable_name.clone()),
        KeyValue::new(
            sc::HOST_NAME,
            node_host.map_or_else(|| host_name.to_string(), |(_, v)| v.clone()),
        ),
        KeyValue::new(sc::TELEMETRY_SDK_NAME, "tracewire"),
        KeyValue::new(sc::TELEMETRY_SDK_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(sc::TELEMETRY_DISTRO_NAME, "tracewire"),
        KeyValue::new(sc::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")),
    ];
    if let Some(path) = &p.executable_path {
        attrs.push(KeyValue::new(sc::PROCESS_EXECUTABLE_PATH, path.clone()));
    }
    if let Some(cmd) = &p.command_line {
        attrs.push(KeyValue::new(sc::PROCESS_COMMAND_LINE, cmd.clone()));
    }
    if let Some(id) = &p.container.container_id {
        attrs.push(KeyValue::new(sc::CONTAINER_ID, id.clone()));
    }
    if let Some(uid) = &p.container.pod_uid {
        attrs.push(KeyValue::new(sc::K8S_POD_UID, uid.clone()));
    }
    // The operator's own OTEL_RESOURCE_ATTRIBUTES win over the API's (k8s.node.name is in both
    // with the DaemonSet as shipped, with the same value).
    for (k, v) in pod.map(PodMeta::attributes).unwrap_or_default() {
        if !node.iter().any(|(n, _)| n == k) {
            attrs.push(KeyValue::new(k, v));
        }
    }
    for (k, v) in node.iter().filter(|(k, _)| k != sc::HOST_NAME) {
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    Resource::builder_empty().with_attributes(attrs).build()
}

fn key_value(a: &crate::span::Attribute) -> KeyValue {
    match &a.value {
        AttrValue::Str(s) => KeyValue::new(a.key, s.clone()),
        AttrValue::Int(i) => KeyValue::new(a.key, *i),
        AttrValue::StrArray(v) => KeyValue::new(
            a.key,
            Value::Array(Array::String(
                v.iter().map(|s| StringValue::from(s.clone())).collect(),
            )),
        ),
        AttrValue::IntArray(v) => KeyValue::new(a.key, Value::Array(Array::I64(v.clone()))),
    }
}

fn span_data(span: &Span, scope: &InstrumentationScope) -> SpanData {
    let attributes = span.attributes.iter().map(key_value).collect();
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| {
            Event::new(
                e.name,
                UNIX_EPOCH + Duration::from_nanos(e.time_unix_ns),
                e.attributes.iter().map(key_value).collect(),
                0,
            )
        })
        .collect();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            span.tracestate
                .as_deref()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default(),
        ),
        parent_span_id: span
            .parent_span_id
            .map(SpanId::from_bytes)
            .unwrap_or(SpanId::INVALID),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name.clone()),
        start_time: UNIX_EPOCH + Duration::from_nanos(span.start_unix_ns),
        end_time: UNIX_EPOCH + Duration::from_nanos(span.end_unix_ns),
        attributes,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status: match span.status {
            Status::Unset => OtelStatus::Unset,
            Status::Error => OtelStatus::error(""),
        },
        instrumentation_scope: scope.clone(),
    }
}
