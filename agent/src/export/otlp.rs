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
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span as ProtoSpan, SpanFlags, Status as ProtoStatus,
        span::{Event as ProtoEvent, SpanKind as ProtoKind},
        status::StatusCode,
    },
};
use prost::Message as _;

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
    resources: HashMap<(u32, String, bool), (Resource, Vec<u8>)>,
    /// The scope, encoded.
    scope_bytes: Vec<u8>,
    /// Scratch of [`Self::encode`]: the sizes its first pass computed, kept between batches.
    sizes: Vec<u32>,
}

const MAX_RESOURCES: usize = 4096;

impl TraceRequests {
    pub fn new(host_name: String, node_attributes: Vec<(String, String)>) -> Self {
        let scope = scope();
        TraceRequests {
            scope_bytes: scope.encode_to_vec(),
            scope,
            host_name,
            node_attributes,
            pods: None,
            resources: HashMap::new(),
            sizes: Vec::new(),
        }
    }

    /// Adds the pod's name, namespace and owners to the resources of processes in known pods.
    pub fn set_pods(&mut self, pods: PodDirectory) {
        self.pods = Some(pods);
        self.resources.clear();
    }

    /// The process's resource, and its encoding.
    fn resource(&mut self, span: &Span) -> &(Resource, Vec<u8>) {
        let p = &span.process;
        let pod = match (&self.pods, &p.container.pod_uid) {
            (Some(pods), Some(uid)) => pods.get(uid),
            _ => None,
        };
        let key = (p.pid, p.service_name.clone(), pod.is_some());
        if self.resources.len() >= MAX_RESOURCES && !self.resources.contains_key(&key) {
            self.resources.clear();
        }
        self.resources.entry(key).or_insert_with(|| {
            let r = resource_of(span, &self.host_name, &self.node_attributes, pod.as_deref());
            let bytes = r.encode_to_vec();
            (r, bytes)
        })
    }

    /// The encoded `ExportTraceServiceRequest` for `batch`: a `ResourceSpans` per process (pid
    /// and service name), in the order the processes first appear. Written straight from the
    /// agent's spans with protobuf's wire format: no protobuf struct, string or vector is
    /// allocated per span. The bytes are those prost gives for [`Self::request`] (unit test).
    ///
    /// Two passes: the first sizes every span and attribute once (a nested message's length
    /// comes before it), the second writes each process's spans straight into one buffer of
    /// the exact size, with the lengths the first pass kept.
    pub fn encode(&mut self, batch: &[Span]) -> Encoded {
        let mut groups: Vec<Group> = Vec::new();
        let mut sizes = std::mem::take(&mut self.sizes);
        sizes.clear();
        // Where each span's sizes start.
        let mut starts = Vec::with_capacity(batch.len());
        let mut last = usize::MAX;
        for (i, span) in batch.iter().enumerate() {
            let p = &span.process;
            let same = |g: &Group| g.pid == p.pid && g.service == p.service_name.as_str();
            let slot = if groups.get(last).is_some_and(same) {
                last
            } else if let Some(i) = groups.iter().position(same) {
                i
            } else {
                let resource = self.resource(span).1.clone();
                groups.push(Group {
                    pid: p.pid,
                    service: p.service_name.as_str(),
                    resource,
                    spans_len: 0,
                    members: Vec::new(),
                });
                groups.len() - 1
            };
            last = slot;
            starts.push(sizes.len());
            let len = wire::span_len(span, &mut sizes);
            if let Some(group) = groups.get_mut(slot) {
                group.spans_len += wire::field_len(2, len);
                group.members.push(i as u32);
            }
        }
        let scope_spans = |spans: usize| wire::field_len(1, self.scope_bytes.len()) + spans;
        let resource_spans = |resource: &[u8], spans: usize| {
            wire::field_len(1, resource.len()) + wire::field_len(2, scope_spans(spans))
        };
        let total = groups
            .iter()
            .map(|g| wire::field_len(1, resource_spans(&g.resource, g.spans_len)))
            .sum();
        let mut out = Vec::with_capacity(total);
        for g in &groups {
            wire::put_header(&mut out, 1, resource_spans(&g.resource, g.spans_len));
            wire::put_bytes(&mut out, 1, &g.resource);
            wire::put_header(&mut out, 2, scope_spans(g.spans_len));
            wire::put_bytes(&mut out, 1, &self.scope_bytes);
            for &i in &g.members {
                let i = i as usize;
                if let (Some(span), Some(&start)) = (batch.get(i), starts.get(i)) {
                    wire::put_span(&mut out, span, sizes.get(start..).unwrap_or_default());
                }
            }
        }
        debug_assert_eq!(out.len(), total);
        self.sizes = sizes;
        Encoded(out)
    }

    /// The same request as protobuf structs: the reference [`Self::encode`] is tested against,
    /// and the baseline of its benchmark (this is what `opentelemetry-otlp` builds, minus its
    /// conversion through the SDK's `SpanData`).
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
                    resource: Some(self.resource(&span).0.clone()),
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

/// One process's spans in a request being encoded.
struct Group<'a> {
    pid: u32,
    service: &'a str,
    /// Its `Resource`, encoded.
    resource: Vec<u8>,
    /// Bytes of its encoded spans (fields 2 of its `ScopeSpans`).
    spans_len: usize,
    /// Its spans, as indexes into the batch.
    members: Vec<u32>,
}

/// The gRPC method of OTLP span export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A protobuf message already encoded (`TraceRequests::encode`), for the transports that take
/// a prost message: its bytes are written as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded(pub Vec<u8>);

/// The bytes are the body: moved, not copied.
impl super::otlp_metrics::Body for Encoded {
    fn into_body(self) -> Vec<u8> {
        self.0
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
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
        let request = self.requests.encode(&batch);
        drop(batch);
        let answer: ExportTraceServiceResponse = send(
            &mut self.client,
            &self.cfg,
            false,
            request,
            |channel, req, gzip| async move {
                // What the generated TraceServiceClient::export does, for a request that is
                // already bytes.
                let mut grpc = tonic::client::Grpc::new(channel);
                if gzip {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let codec =
                    tonic_prost::ProstCodec::<Encoded, ExportTraceServiceResponse>::default();
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                grpc.unary(req, path, codec).await.map(|r| r.into_inner())
            },
        )
        .await?;
        // OTLP: spans a collector refuses in a partial success are not to be retried; they
        // are lost, so counted and logged.
        if let Some(partial) = answer.partial_success
            && partial.rejected_spans > 0
        {
            crate::telemetry::collector_rejected(
                u64::try_from(partial.rejected_spans).unwrap_or(0),
                &partial.error_message,
            );
        }
        Ok(())
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
        AttrValue::Str(s) => Value::StringValue(s.into()),
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
        name: span.name.into(),
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

/// OTLP's `Span` in protobuf's wire format, fields in tag order and defaults left out as prost
/// does (so the bytes equal prost's for the same message). Lengths of nested messages are
/// computed once, before they are written ([`wire::span_len`]): nothing is encoded twice or
/// buffered.
mod wire {
    use prost::encoding::{WireType, encoded_len_varint, key_len};

    use super::{AttrValue, Attribute, Span, SpanFlags, SpanKind, Status, TraceState};

    /// A varint; most (tags, lengths, small numbers) are one byte.
    #[inline]
    fn put_raw_varint(buf: &mut Vec<u8>, mut v: u64) {
        if v < 0x80 {
            buf.push(v as u8);
            return;
        }
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    #[inline]
    fn put_key(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
        put_raw_varint(buf, u64::from(tag << 3 | wire_type as u32));
    }

    /// Bytes of a length-delimited field `tag` holding `len` bytes.
    pub fn field_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    /// The key and length of a length-delimited field; its `len` bytes follow.
    #[inline]
    pub fn put_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
        put_key(buf, tag, WireType::LengthDelimited);
        put_raw_varint(buf, len as u64);
    }

    #[inline]
    pub fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        put_header(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }

    /// A proto3 string or bytes field: left out when empty.
    #[inline]
    fn put_nonempty(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            put_bytes(buf, tag, bytes);
        }
    }

    fn nonempty_len(tag: u32, len: usize) -> usize {
        if len == 0 { 0 } else { field_len(tag, len) }
    }

    fn fixed64_len(tag: u32, v: u64) -> usize {
        if v == 0 { 0 } else { key_len(tag) + 8 }
    }

    fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            put_key(buf, tag, WireType::SixtyFourBit);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn varint_len(tag: u32, v: u64) -> usize {
        if v == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(v)
        }
    }

    fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            put_key(buf, tag, WireType::Varint);
            put_raw_varint(buf, v);
        }
    }

    /// `AnyValue` holding a string (`string_value`, 1) or an int (`int_value`, 3): a oneof
    /// member is written even when it is the default.
    fn str_value_len(s: &str) -> usize {
        field_len(1, s.len())
    }

    fn int_value_len(i: i64) -> usize {
        key_len(3) + encoded_len_varint(i as u64)
    }

    fn put_str_value(buf: &mut Vec<u8>, s: &str) {
        put_bytes(buf, 1, s.as_bytes());
    }

    fn put_int_value(buf: &mut Vec<u8>, i: i64) {
        put_key(buf, 3, WireType::Varint);
        put_raw_varint(buf, i as u64);
    }

    /// `ArrayValue` (`values`, 1: repeated AnyValue) of strings or ints.
    fn array_len(v: &AttrValue) -> usize {
        match v {
            AttrValue::StrArray(v) => v.iter().map(|s| field_len(1, str_value_len(s))).sum(),
            AttrValue::IntArray(v) => v.iter().map(|i| field_len(1, int_value_len(*i))).sum(),
            AttrValue::Str(_) | AttrValue::Int(_) => 0,
        }
    }

    fn any_value_len(v: &AttrValue) -> usize {
        match v {
            AttrValue::Str(s) => str_value_len(s),
            AttrValue::Int(i) => int_value_len(*i),
            // `array_value`, 5.
            AttrValue::StrArray(_) | AttrValue::IntArray(_) => field_len(5, array_len(v)),
        }
    }

    fn put_any_value(buf: &mut Vec<u8>, v: &AttrValue) {
        match v {
            AttrValue::Str(s) => put_str_value(buf, s),
            AttrValue::Int(i) => put_int_value(buf, *i),
            AttrValue::StrArray(items) => {
                put_header(buf, 5, array_len(v));
                for s in items {
                    put_header(buf, 1, str_value_len(s));
                    put_str_value(buf, s);
                }
            }
            AttrValue::IntArray(items) => {
                put_header(buf, 5, array_len(v));
                for i in items {
                    put_header(buf, 1, int_value_len(*i));
                    put_int_value(buf, *i);
                }
            }
        }
    }

    /// `KeyValue`: key (1), value (2, always present); with its value's length.
    fn key_value_len(a: &Attribute) -> (usize, usize) {
        let value = any_value_len(&a.value);
        (nonempty_len(1, a.key.len()) + field_len(2, value), value)
    }

    /// `a` as field `tag`, its lengths given.
    fn put_key_value(buf: &mut Vec<u8>, tag: u32, a: &Attribute, len: usize, value_len: usize) {
        put_header(buf, tag, len);
        put_nonempty(buf, 1, a.key.as_bytes());
        put_header(buf, 2, value_len);
        put_any_value(buf, &a.value);
    }

    fn attributes_len(tag: u32, attributes: &[Attribute]) -> usize {
        attributes
            .iter()
            .map(|a| field_len(tag, key_value_len(a).0))
            .sum()
    }

    /// `Span.Event`: time (1), name (2), attributes (3).
    fn event_len(time: u64, name: &str, attributes: &[Attribute]) -> usize {
        fixed64_len(1, time) + nonempty_len(2, name.len()) + attributes_len(3, attributes)
    }

    /// `Status`: message (2, always empty), code (3): 2 for ERROR.
    fn status_code(status: Status) -> u64 {
        match status {
            Status::Unset => 0,
            Status::Error => 2,
        }
    }

    /// The `tracestate` exported: passed on only if valid W3C tracestate, normalised.
    fn trace_state(span: &Span) -> String {
        span.tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .map(|t| t.header())
            .unwrap_or_default()
    }

    fn parent(span: &Span) -> &[u8] {
        match &span.parent_span_id {
            Some(p) => p,
            None => &[],
        }
    }

    fn kind(span: &Span) -> u64 {
        match span.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        }
    }

    /// The length of `span`'s message. Appends to `sizes` what [`put_span`] takes: that
    /// length, then each attribute's `KeyValue` and `AnyValue` lengths.
    pub fn span_len(span: &Span, sizes: &mut Vec<u32>) -> usize {
        let at = sizes.len();
        sizes.push(0);
        let mut attributes = 0;
        for a in &span.attributes {
            let (len, value) = key_value_len(a);
            sizes.push(len as u32);
            sizes.push(value as u32);
            attributes += field_len(9, len);
        }
        let events: usize = span
            .events
            .iter()
            .map(|e| field_len(11, event_len(e.time_unix_ns, e.name, &e.attributes)))
            .sum();
        let len = field_len(1, span.trace_id.len())
            + field_len(2, span.span_id.len())
            + nonempty_len(3, trace_state(span).len())
            + nonempty_len(4, parent(span).len())
            + nonempty_len(5, span.name.len())
            + varint_len(6, kind(span))
            + fixed64_len(7, span.start_unix_ns)
            + fixed64_len(8, span.end_unix_ns)
            + attributes
            + events
            + field_len(15, varint_len(3, status_code(span.status)))
            + key_len(16)
            + 4;
        if let Some(slot) = sizes.get_mut(at) {
            *slot = len as u32;
        }
        len
    }

    /// Appends `span` as field 2 of a `ScopeSpans` (its `spans`), with the `sizes`
    /// [`span_len`] gave.
    pub fn put_span(buf: &mut Vec<u8>, span: &Span, sizes: &[u32]) {
        let mut flags = 1 | SpanFlags::ContextHasIsRemoteMask as u32;
        if span.parent_is_remote {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        let code = status_code(span.status);
        let size = |i: usize| sizes.get(i).copied().unwrap_or(0) as usize;
        put_header(buf, 2, size(0));
        put_bytes(buf, 1, &span.trace_id);
        put_bytes(buf, 2, &span.span_id);
        if span.tracestate.is_some() {
            put_nonempty(buf, 3, trace_state(span).as_bytes());
        }
        put_nonempty(buf, 4, parent(span));
        put_nonempty(buf, 5, span.name.as_bytes());
        put_varint(buf, 6, kind(span));
        put_fixed64(buf, 7, span.start_unix_ns);
        put_fixed64(buf, 8, span.end_unix_ns);
        for (k, a) in span.attributes.iter().enumerate() {
            put_key_value(buf, 9, a, size(1 + 2 * k), size(2 + 2 * k));
        }
        for e in &span.events {
            put_header(buf, 11, event_len(e.time_unix_ns, e.name, &e.attributes));
            put_fixed64(buf, 1, e.time_unix_ns);
            put_nonempty(buf, 2, e.name.as_bytes());
            for a in &e.attributes {
                let (len, value) = key_value_len(a);
                put_key_value(buf, 3, a, len, value);
            }
        }
        put_header(buf, 15, varint_len(3, code));
        put_varint(buf, 3, code);
        put_key(buf, 16, WireType::ThirtyTwoBit);
        buf.extend_from_slice(&flags.to_le_bytes());
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
            name: format!("GET /{id}").into(),
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

    /// The hand-written encoding is byte for byte what prost writes for the protobuf structs,
    /// over processes interleaved, every attribute type, events, errors, remote parents,
    /// tracestate, and empty or negative values.
    #[test]
    fn encode_writes_the_bytes_prost_writes_for_the_request() {
        let a = ProcessInfo::for_test("a");
        let mut b = (*ProcessInfo::for_test("b")).clone();
        b.pid = 2;
        b.container.container_id = Some("c0ffee".into());
        let b = Arc::new(b);
        let mut batch = Vec::new();
        for i in 0..40u8 {
            let process = if i % 3 == 0 { &b } else { &a };
            let status = if i % 4 == 0 {
                Status::Error
            } else {
                Status::Unset
            };
            let mut s = span(process, i, status);
            match i % 5 {
                0 => s.tracestate = Some("vendor=a,other=b".into()),
                1 => {
                    s.attributes.push(Attribute {
                        key: "tracewire.critical_path.names",
                        value: AttrValue::StrArray(vec!["GET /".into(), String::new()]),
                    });
                    s.attributes.push(Attribute {
                        key: "negative",
                        value: AttrValue::Int(-7),
                    });
                }
                2 => {
                    s.events.clear();
                    s.attributes.clear();
                    s.name.clear();
                }
                3 => s.attributes.push(Attribute::str("empty", "")),
                _ => {
                    s.start_unix_ns = 0;
                    s.attributes.push(Attribute {
                        key: "zero",
                        value: AttrValue::Int(0),
                    });
                    s.attributes.push(Attribute {
                        key: "none",
                        value: AttrValue::IntArray(Vec::new()),
                    });
                }
            }
            batch.push(s);
        }
        let mut requests = TraceRequests::new("host-1".into(), vec![("k".into(), "v".into())]);
        let encoded = requests.encode(&batch);
        let reference = requests.request(batch).encode_to_vec();
        assert_eq!(encoded.0, reference);
        // Sized exactly by the first pass: never grown.
        assert_eq!(encoded.0.capacity(), encoded.0.len());
        assert!(
            ExportTraceServiceRequest::decode(encoded.0.as_slice())
                .expect("decodes")
                .resource_spans
                .len()
                == 2
        );
        assert!(requests.encode(&[]).0.is_empty());
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
