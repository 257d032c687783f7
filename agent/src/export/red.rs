//! RED metrics (rate, errors, duration) aggregated from the agent's own spans: one duration
//! histogram per HTTP/gRPC direction and service, kept once and rendered two ways, as
//! Prometheus text for `/metrics` and as an OTLP `ExportMetricsServiceRequest`.
//!
//! Names and attributes follow the OpenTelemetry semantic conventions
//! (`http.server.request.duration`, `http.client.request.duration`, and the pre-1.37
//! `rpc.server.duration` / `rpc.client.duration`); temporality is cumulative.
//!
//! Traffic chooses most attribute values (paths, hosts), so cardinality is bounded three ways:
//! - `http.route` is a template inferred from the path ([`route_template`]), never the raw path;
//! - each service keeps at most [`RedConfig::max_routes_per_service`] routes, the rest are
//!   recorded as route `{other}`;
//! - at most [`RedConfig::max_series`] series in all; past it, new attribute sets go to one
//!   overflow series per metric and service carrying only `otel.metric.overflow=true` (the
//!   OpenTelemetry SDK's cardinality-limit convention), counted by [`Red::overflowed`].
use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, metric,
    },
    resource::v1::Resource,
};

use crate::{
    protocol::grpc,
    span::{AttrValue, Span, SpanKind, semconv as sc},
};

pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
pub const RPC_SERVER_DURATION: &str = "rpc.server.duration";
pub const RPC_CLIENT_DURATION: &str = "rpc.client.duration";
pub const HTTP_ROUTE: &str = "http.route";
/// The attribute of an overflow series (OpenTelemetry SDK cardinality limits).
pub const OTEL_METRIC_OVERFLOW: &str = "otel.metric.overflow";

/// A path segment that looks like an identifier.
pub const ROUTE_ID: &str = "{id}";
/// What follows the last segment kept.
pub const ROUTE_REST: &str = "{rest}";
/// A route past the per-service limit, or a request-target that is not a path.
pub const ROUTE_OTHER: &str = "{other}";
/// Segments kept in a route; deeper paths end with `/{rest}`.
pub const MAX_ROUTE_SEGMENTS: usize = 6;
/// A longer segment is taken for an identifier whatever its characters (slugs, blobs).
pub const MAX_SEGMENT_LEN: usize = 64;

/// Prometheus names of the agent's own counters for this module.
const OVERFLOW_COUNTER: &str = "tracewire_red_overflow_total";
const SERIES_GAUGE: &str = "tracewire_red_series";

/// Semconv advice for HTTP durations, in seconds.
const HTTP_BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The SDK default explicit buckets, for the millisecond RPC durations.
const RPC_BOUNDS_MS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// The four histograms; the discriminant indexes per-service arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Instrument {
    HttpServer = 0,
    HttpClient = 1,
    RpcServer = 2,
    RpcClient = 3,
}

const INSTRUMENTS: [Instrument; 4] = [
    Instrument::HttpServer,
    Instrument::HttpClient,
    Instrument::RpcServer,
    Instrument::RpcClient,
];

impl Instrument {
    fn of(span: &Span) -> Self {
        let rpc = span.attribute(sc::RPC_SYSTEM).is_some()
            || span.attribute(sc::RPC_SYSTEM_NAME).is_some();
        match (rpc, span.kind) {
            (false, SpanKind::Server) => Instrument::HttpServer,
            (false, SpanKind::Client) => Instrument::HttpClient,
            (true, SpanKind::Server) => Instrument::RpcServer,
            (true, SpanKind::Client) => Instrument::RpcClient,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Instrument::HttpServer => HTTP_SERVER_REQUEST_DURATION,
            Instrument::HttpClient => HTTP_CLIENT_REQUEST_DURATION,
            Instrument::RpcServer => RPC_SERVER_DURATION,
            Instrument::RpcClient => RPC_CLIENT_DURATION,
        }
    }

    /// The OTel-to-Prometheus name: dots to underscores, the unit as a suffix.
    fn prometheus_name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http_server_request_duration_seconds",
            Instrument::HttpClient => "http_client_request_duration_seconds",
            Instrument::RpcServer => "rpc_server_duration_milliseconds",
            Instrument::RpcClient => "rpc_client_duration_milliseconds",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => "s",
            Instrument::RpcServer | Instrument::RpcClient => "ms",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::RpcServer => "Measures the duration of inbound RPC.",
            Instrument::RpcClient => "Measures the duration of outbound RPC.",
        }
    }

    fn bounds(self) -> &'static [f64] {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => &HTTP_BOUNDS_S,
            Instrument::RpcServer | Instrument::RpcClient => &RPC_BOUNDS_MS,
        }
    }

    /// A duration in the instrument's unit.
    fn value(self, ns: u64) -> f64 {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => ns as f64 / 1e9,
            Instrument::RpcServer | Instrument::RpcClient => ns as f64 / 1e6,
        }
    }
}

/// An attribute value in a series key (ordered, so that output is stable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Val {
    Str(String),
    Int(i64),
}

impl From<&AttrValue> for Val {
    fn from(v: &AttrValue) -> Self {
        match v {
            AttrValue::Str(s) => Val::Str(s.clone()),
            AttrValue::Int(i) => Val::Int(*i),
        }
    }
}

/// A series' attributes, in the instrument's fixed order.
type Key = Vec<(&'static str, Val)>;

/// One cumulative explicit-bucket histogram.
#[derive(Clone, Debug)]
struct Series {
    start_unix_ns: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Per bucket (not cumulative), `bounds.len() + 1` of them, the last one unbounded.
    buckets: Box<[u64]>,
}

impl Series {
    fn new(start_unix_ns: u64, bounds: usize) -> Self {
        Series {
            start_unix_ns,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: vec![0; bounds + 1].into_boxed_slice(),
        }
    }

    fn record(&mut self, v: f64, bounds: &[f64]) {
        // Upper bounds are inclusive, in OTLP as in Prometheus `le`.
        let i = bounds.partition_point(|b| *b < v);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// What one service has recorded.
#[derive(Debug, Default)]
struct Service {
    /// Routes admitted under the per-service limit.
    routes: HashSet<String>,
    series: [BTreeMap<Key, Series>; 4],
    overflow: [Option<Series>; 4],
}

/// Cardinality limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedConfig {
    /// Series (attribute sets) kept over all metrics and services, overflow series aside.
    pub max_series: usize,
    /// Distinct `http.route` values per service before new ones become `{other}`.
    pub max_routes_per_service: usize,
}

impl Default for RedConfig {
    fn default() -> Self {
        RedConfig {
            max_series: 2000,
            max_routes_per_service: 100,
        }
    }
}

/// The RED aggregation. Plain data (`Send`), to be shared behind a mutex between the span
/// stage, which records, and the exporters, which render.
#[derive(Debug)]
pub struct Red {
    cfg: RedConfig,
    start_unix_ns: u64,
    services: BTreeMap<String, Service>,
    /// Series under `max_series`.
    series: usize,
    /// Overflow series (at most one per metric and service).
    overflow_series: usize,
    overflowed: u64,
}

impl Red {
    /// `start_unix_ns` is when aggregation began: no series starts before it.
    pub fn new(cfg: RedConfig, start_unix_ns: u64) -> Self {
        Red {
            cfg,
            start_unix_ns,
            services: BTreeMap::new(),
            series: 0,
            overflow_series: 0,
            overflowed: 0,
        }
    }

    /// Adds one span's duration to its series. A gRPC span (`rpc.system`, or the stable
    /// `rpc.system.name`) counts in the RPC metric only.
    pub fn record(&mut self, span: &Span) {
        let inst = Instrument::of(span);
        let value = inst.value(span.end_unix_ns.saturating_sub(span.start_unix_ns));
        let name = span.process.service_name.as_str();
        if !self.services.contains_key(name) {
            self.services.insert(name.to_string(), Service::default());
        }
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let key = match inst {
            Instrument::HttpServer => {
                http_server_key(span, &mut svc.routes, self.cfg.max_routes_per_service)
            }
            Instrument::HttpClient => http_client_key(span),
            Instrument::RpcServer | Instrument::RpcClient => rpc_key(span),
        };
        let i = inst as usize;
        let bounds = inst.bounds();
        let (Some(series), Some(overflow)) = (svc.series.get_mut(i), svc.overflow.get_mut(i))
        else {
            return;
        };
        if let Some(s) = series.get_mut(&key) {
            s.record(value, bounds);
            return;
        }
        let start = span.start_unix_ns.max(self.start_unix_ns);
        if self.series < self.cfg.max_series {
            let mut s = Series::new(start, bounds.len());
            s.record(value, bounds);
            series.insert(key, s);
            self.series += 1;
        } else {
            self.overflowed += 1;
            if overflow.is_none() {
                self.overflow_series += 1;
            }
            overflow
                .get_or_insert_with(|| Series::new(start, bounds.len()))
                .record(value, bounds);
        }
    }

    /// Series held, overflow series included: what a scrape or an export carries.
    pub fn series(&self) -> usize {
        self.series + self.overflow_series
    }

    /// Measurements recorded into an overflow series because `max_series` was reached.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Appends the histograms in the Prometheus text format (0.0.4), one family per metric
    /// with the service as a `service_name` label, then this module's own counters.
    pub fn render_prometheus(&self, out: &mut String) {
        for inst in INSTRUMENTS {
            let i = inst as usize;
            let any = self.services.values().any(|s| {
                s.series.get(i).is_some_and(|m| !m.is_empty())
                    || s.overflow.get(i).is_some_and(Option::is_some)
            });
            if !any {
                continue;
            }
            let name = inst.prometheus_name();
            let _ = writeln!(out, "# HELP {name} {}", inst.description());
            let _ = writeln!(out, "# TYPE {name} histogram");
            let mut labels = String::with_capacity(256);
            for (service, svc) in &self.services {
                for (key, s) in svc.series.get(i).into_iter().flatten() {
                    labels.clear();
                    push_label(&mut labels, "service_name", service);
                    for (k, v) in key {
                        match v {
                            Val::Str(s) => push_label(&mut labels, k, s),
                            Val::Int(n) => push_label(&mut labels, k, &n.to_string()),
                        }
                    }
                    write_histogram(out, name, &labels, s, inst.bounds());
                }
                if let Some(Some(s)) = svc.overflow.get(i) {
                    labels.clear();
                    push_label(&mut labels, "service_name", service);
                    push_label(&mut labels, OTEL_METRIC_OVERFLOW, "true");
                    write_histogram(out, name, &labels, s, inst.bounds());
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP {OVERFLOW_COUNTER} RED measurements recorded into an overflow series \
             (otel_metric_overflow) because the series limit was reached.\n\
             # TYPE {OVERFLOW_COUNTER} counter\n\
             {OVERFLOW_COUNTER} {}",
            self.overflowed
        );
        let _ = writeln!(
            out,
            "# HELP {SERIES_GAUGE} RED series held, overflow series included.\n\
             # TYPE {SERIES_GAUGE} gauge\n\
             {SERIES_GAUGE} {}",
            self.series()
        );
    }

    /// The same histograms as OTLP: one `ResourceMetrics` per service (`service.name`,
    /// `host.name`, `telemetry.sdk.name=tracewire`), cumulative temporality, each point
    /// dated `now_unix_ns` from its series' start.
    pub fn to_otlp(&self, host_name: &str, now_unix_ns: u64) -> ExportMetricsServiceRequest {
        let resource_metrics = self
            .services
            .iter()
            .filter_map(|(service, svc)| {
                let metrics: Vec<Metric> = INSTRUMENTS
                    .iter()
                    .filter_map(|inst| otlp_metric(*inst, svc, now_unix_ns))
                    .collect();
                if metrics.is_empty() {
                    return None;
                }
                Some(ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            kv_str(sc::SERVICE_NAME, service),
                            kv_str(sc::HOST_NAME, host_name),
                            kv_str(sc::TELEMETRY_SDK_NAME, "tracewire"),
                            kv_str(sc::TELEMETRY_SDK_VERSION, env!("CARGO_PKG_VERSION")),
                            kv_str(sc::TELEMETRY_DISTRO_NAME, "tracewire"),
                            kv_str(sc::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")),
                        ],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "tracewire".to_string(),
                            version: env!("CARGO_PKG_VERSION").to_string(),
                            ..Default::default()
                        }),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }
}

fn push_attr(key: &mut Key, span: &Span, name: &'static str) {
    if let Some(v) = span.attribute(name) {
        key.push((name, Val::from(v)));
    }
}

fn str_attr<'a>(span: &'a Span, name: &str) -> Option<&'a str> {
    match span.attribute(name)? {
        AttrValue::Str(s) => Some(s),
        AttrValue::Int(_) => None,
    }
}

fn http_server_key(span: &Span, routes: &mut HashSet<String>, max_routes: usize) -> Key {
    let mut key = Vec::with_capacity(6);
    push_attr(&mut key, span, sc::HTTP_REQUEST_METHOD);
    push_attr(&mut key, span, sc::HTTP_RESPONSE_STATUS_CODE);
    if let Some(path) = str_attr(span, sc::URL_PATH) {
        let route = route_template(path);
        let route = if routes.contains(&route) {
            route
        } else if routes.len() < max_routes {
            routes.insert(route.clone());
            route
        } else {
            ROUTE_OTHER.to_string()
        };
        key.push((HTTP_ROUTE, Val::Str(route)));
    }
    push_attr(&mut key, span, sc::URL_SCHEME);
    push_attr(&mut key, span, sc::NETWORK_PROTOCOL_VERSION);
    push_attr(&mut key, span, sc::ERROR_TYPE);
    key
}

fn http_client_key(span: &Span) -> Key {
    let mut key = Vec::with_capacity(7);
    push_attr(&mut key, span, sc::HTTP_REQUEST_METHOD);
    push_attr(&mut key, span, sc::HTTP_RESPONSE_STATUS_CODE);
    push_attr(&mut key, span, sc::SERVER_ADDRESS);
    push_attr(&mut key, span, sc::SERVER_PORT);
    // Client spans carry the scheme inside `url.full`.
    let scheme = str_attr(span, sc::URL_SCHEME).or_else(|| {
        str_attr(span, sc::URL_FULL)
            .and_then(|u| u.split_once("://"))
            .map(|(s, _)| s)
    });
    if let Some(s) = scheme {
        key.push((sc::URL_SCHEME, Val::Str(s.to_string())));
    }
    push_attr(&mut key, span, sc::NETWORK_PROTOCOL_VERSION);
    push_attr(&mut key, span, sc::ERROR_TYPE);
    key
}

/// The pre-1.37 attributes, also from spans that carry only the stable ones
/// (`OTEL_SEMCONV_STABILITY_OPT_IN=rpc`): `rpc.system.name`, a fully qualified `rpc.method`,
/// and `rpc.response.status_code` as a status name.
fn rpc_key(span: &Span) -> Key {
    let mut key = Vec::with_capacity(4);
    if span.attribute(sc::RPC_SYSTEM).is_some() {
        push_attr(&mut key, span, sc::RPC_SYSTEM);
        push_attr(&mut key, span, sc::RPC_SERVICE);
        push_attr(&mut key, span, sc::RPC_METHOD);
        push_attr(&mut key, span, sc::RPC_GRPC_STATUS_CODE);
        return key;
    }
    if let Some(system) = span.attribute(sc::RPC_SYSTEM_NAME) {
        key.push((sc::RPC_SYSTEM, Val::from(system)));
    }
    if let Some(full) = str_attr(span, sc::RPC_METHOD) {
        match full.rsplit_once('/') {
            Some((service, method)) => {
                key.push((sc::RPC_SERVICE, Val::Str(service.to_string())));
                key.push((sc::RPC_METHOD, Val::Str(method.to_string())));
            }
            None => key.push((sc::RPC_METHOD, Val::Str(full.to_string()))),
        }
    }
    if let Some(name) = str_attr(span, sc::RPC_RESPONSE_STATUS_CODE)
        && let Some(code) = (0..=16u32).find(|c| grpc::status_name(*c) == Some(name))
    {
        key.push((sc::RPC_GRPC_STATUS_CODE, Val::Int(i64::from(code))));
    }
    key
}

/// `name="value",` with the value escaped and the name's dots made underscores.
fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_histogram(out: &mut String, name: &str, labels: &str, s: &Series, bounds: &[f64]) {
    let mut cumulative = 0;
    for (bound, n) in bounds.iter().zip(s.buckets.iter()) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

fn otlp_point(
    attributes: Vec<KeyValue>,
    s: &Series,
    bounds: &[f64],
    now_unix_ns: u64,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: s.start_unix_ns.min(now_unix_ns),
        time_unix_nano: now_unix_ns,
        count: s.count,
        sum: Some(s.sum),
        bucket_counts: s.buckets.to_vec(),
        explicit_bounds: bounds.to_vec(),
        min: (s.count > 0).then_some(s.min),
        max: (s.count > 0).then_some(s.max),
        ..Default::default()
    }
}

fn otlp_metric(inst: Instrument, svc: &Service, now_unix_ns: u64) -> Option<Metric> {
    let i = inst as usize;
    let bounds = inst.bounds();
    let mut points: Vec<HistogramDataPoint> = svc
        .series
        .get(i)?
        .iter()
        .map(|(key, s)| {
            let attrs = key
                .iter()
                .map(|(k, v)| match v {
                    Val::Str(s) => kv_str(k, s),
                    Val::Int(n) => kv(k, any_value::Value::IntValue(*n)),
                })
                .collect();
            otlp_point(attrs, s, bounds, now_unix_ns)
        })
        .collect();
    if let Some(Some(s)) = svc.overflow.get(i) {
        let attrs = vec![kv(OTEL_METRIC_OVERFLOW, any_value::Value::BoolValue(true))];
        points.push(otlp_point(attrs, s, bounds, now_unix_ns));
    }
    if points.is_empty() {
        return None;
    }
    Some(Metric {
        name: inst.name().to_string(),
        description: inst.description().to_string(),
        unit: inst.unit().to_string(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    })
}

/// The `http.route` template of a request path, so that routes stay few whatever the traffic.
///
/// The rule:
/// - the query (`?`) and fragment (`#`) are dropped; an absolute-form target
///   (`http://host/p`) is reduced to its path (`/` if it has none);
/// - an empty target is `/`; `*` (`OPTIONS *`) stays `*`; any other target that does not start
///   with `/` (authority-form `host:port`, garbage) is `{other}`;
/// - the path is split on `/` (empty segments, e.g. a trailing slash, are kept as they are);
///   a segment becomes `{id}` when it is all digits, holds a run of 4+ digits, is a UUID, is
///   hex of length >= 8 with at least one digit, is token-like (length >= 16 with both
///   letters and digits), is longer than [`MAX_SEGMENT_LEN`], or has any character outside
///   `[A-Za-z0-9._~-]` (percent-encoding included);
/// - at most [`MAX_ROUTE_SEGMENTS`] segments are kept; anything deeper becomes one `/{rest}`
///   (a lone trailing slash after them is kept as `/`).
///
/// So `/users/123/orders/9f8e7d6c?x=1` is `/users/{id}/orders/{id}` and
/// `/a/b/c/d/e/f/g/h` is `/a/b/c/d/e/f/{rest}`.
pub fn route_template(path: &str) -> String {
    let path = match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    };
    let path = match path.find("://") {
        Some(i) if !path.starts_with('/') => {
            let after = &path[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        _ => path,
    };
    if path.is_empty() {
        return "/".to_string();
    }
    if path == "*" {
        return "*".to_string();
    }
    let Some(rest) = path.strip_prefix('/') else {
        return ROUTE_OTHER.to_string();
    };
    let mut out = String::with_capacity(path.len().min(128));
    for (n, seg) in rest.splitn(MAX_ROUTE_SEGMENTS + 1, '/').enumerate() {
        out.push('/');
        if n == MAX_ROUTE_SEGMENTS {
            if !seg.is_empty() {
                out.push_str(ROUTE_REST);
            }
        } else if is_identifier(seg) {
            out.push_str(ROUTE_ID);
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// Whether a path segment looks like a value rather than a name (see [`route_template`]).
fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.len() > MAX_SEGMENT_LEN
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(c))
    {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let longest_digit_run = b
        .split(|c| !c.is_ascii_digit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    digits == b.len()
        || longest_digit_run >= 4
        || is_uuid(b)
        || (b.len() >= 8 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit))
        || (b.len() >= 16 && digits > 0 && letters > 0)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        capture::process::ProcessInfo,
        span::{Attribute, Status},
    };

    const START: u64 = 1_700_000_000_000_000_000;

    fn span(kind: SpanKind, service: &str, attributes: Vec<Attribute>, dur_ns: u64) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            parent_is_remote: false,
            tracestate: None,
            kind,
            name: "GET".into(),
            start_unix_ns: START + 1_000,
            end_unix_ns: START + 1_000 + dur_ns,
            attributes,
            status: Status::Unset,
            process: Arc::new(ProcessInfo {
                pid: 1,
                service_name: service.into(),
                executable_name: service.into(),
                executable_path: None,
                command_line: None,
                threading: crate::span::context::Threading::PerThread,
            }),
        }
    }

    fn server(service: &str, path: &str, status: i64, dur_ns: u64) -> Span {
        span(
            SpanKind::Server,
            service,
            vec![
                Attribute::str(sc::HTTP_REQUEST_METHOD, "GET"),
                Attribute::int(sc::HTTP_RESPONSE_STATUS_CODE, status),
                Attribute::str(sc::NETWORK_PROTOCOL_VERSION, "1.1"),
                Attribute::int(sc::THREAD_ID, 7),
                Attribute::str(sc::URL_PATH, path),
                Attribute::str(sc::URL_SCHEME, "http"),
                Attribute::str(sc::SERVER_ADDRESS, "example.com"),
                Attribute::str(sc::CLIENT_ADDRESS, "10.0.0.1"),
            ],
            dur_ns,
        )
    }

    fn client(service: &str, host: &str, status: i64, dur_ns: u64) -> Span {
        span(
            SpanKind::Client,
            service,
            vec![
                Attribute::str(sc::HTTP_REQUEST_METHOD, "POST"),
                Attribute::int(sc::HTTP_RESPONSE_STATUS_CODE, status),
                Attribute::str(sc::NETWORK_PROTOCOL_VERSION, "1.1"),
                Attribute::str(sc::SERVER_ADDRESS, host),
                Attribute::int(sc::SERVER_PORT, 8443),
                Attribute::str(sc::URL_FULL, format!("https://{host}:8443/pay/123")),
                Attribute::str(sc::NETWORK_PEER_ADDRESS, "10.0.0.2"),
            ],
            dur_ns,
        )
    }

    fn grpc(kind: SpanKind, service: &str, code: i64, dur_ns: u64) -> Span {
        span(
            kind,
            service,
            vec![
                Attribute::str(sc::RPC_SYSTEM, "grpc"),
                Attribute::str(sc::RPC_SERVICE, "helloworld.Greeter"),
                Attribute::str(sc::RPC_METHOD, "SayHello"),
                Attribute::int(sc::RPC_GRPC_STATUS_CODE, code),
                Attribute::str(sc::SERVER_ADDRESS, "greeter"),
                Attribute::int(sc::SERVER_PORT, 50051),
            ],
            dur_ns,
        )
    }

    fn only<'a>(red: &'a Red, service: &str, inst: Instrument) -> (&'a Key, &'a Series) {
        let m = &red.services[service].series[inst as usize];
        assert_eq!(m.len(), 1, "{m:?}");
        m.iter().next().expect("one series")
    }

    fn get<'a>(key: &'a Key, name: &str) -> Option<&'a Val> {
        key.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    fn sv(v: &str) -> Val {
        Val::Str(v.into())
    }

    #[test]
    fn route_templates() {
        let cases = [
            ("/users/123", "/users/{id}"),
            ("/users/123/orders/9f8e7d6c", "/users/{id}/orders/{id}"),
            ("/api/v1/items?x=1", "/api/v1/items"),
            ("/", "/"),
            ("/files/550e8400-e29b-41d4-a716-446655440000", "/files/{id}"),
            ("", "/"),
            ("*", "*"),
            ("?x=1", "/"),
            ("/page#section", "/page"),
            ("/redirect?to=http://evil/1", "/redirect"),
            ("http://example.com/users/42?q=1", "/users/{id}"),
            ("https://example.com", "/"),
            ("example.com:443", "{other}"),
            ("users/1", "{other}"),
            ("/users/", "/users/"),
            ("/users/me", "/users/me"),
            ("/a//b", "/a//b"),
            ("/static/app.min.js", "/static/app.min.js"),
            ("/deadbeef", "/deadbeef"),
            ("/cafe1234", "/{id}"),
            ("/v2/oauth2/h264", "/v2/oauth2/h264"),
            ("/t/AbCdEfGh12345678", "/t/{id}"),
            ("/t/abcdefghijklmnop", "/t/abcdefghijklmnop"),
            ("/invoices/INV-000123", "/invoices/{id}"),
            ("/search/hello%20world", "/search/{id}"),
            ("/users/@me", "/users/{id}"),
            ("/a/b/c/d/e/f", "/a/b/c/d/e/f"),
            ("/a/b/c/d/e/f/", "/a/b/c/d/e/f/"),
            ("/a/b/c/d/e/f/g", "/a/b/c/d/e/f/{rest}"),
            ("/a/b/c/d/e/f/g/h/i", "/a/b/c/d/e/f/{rest}"),
            ("/1/2/3/4/5/6/7", "/{id}/{id}/{id}/{id}/{id}/{id}/{rest}"),
        ];
        for (path, want) in cases {
            assert_eq!(route_template(path), want, "{path:?}");
        }
        let long = format!("/posts/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        assert_eq!(route_template(&long), "/posts/{id}");
        let slug = format!("/posts/{}", "a".repeat(MAX_SEGMENT_LEN));
        assert_eq!(route_template(&slug), slug);
        assert_eq!(route_template("/ünïcode"), "/{id}");
    }

    #[test]
    fn server_span_lands_in_its_bucket() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&server("shop", "/users/123", 200, 30_000_000));
        // Bounds are inclusive: exactly 100 ms is in le=0.1.
        red.record(&server("shop", "/users/456", 200, 100_000_000));
        red.record(&server("shop", "/users/7", 200, 20_000_000_000));
        let (key, s) = only(&red, "shop", Instrument::HttpServer);
        assert_eq!(
            key,
            &vec![
                (sc::HTTP_REQUEST_METHOD, sv("GET")),
                (sc::HTTP_RESPONSE_STATUS_CODE, Val::Int(200)),
                (HTTP_ROUTE, sv("/users/{id}")),
                (sc::URL_SCHEME, sv("http")),
                (sc::NETWORK_PROTOCOL_VERSION, sv("1.1")),
            ]
        );
        assert_eq!(s.count, 3);
        assert!((s.sum - 20.13).abs() < 1e-9, "{}", s.sum);
        assert_eq!((s.min, s.max), (0.03, 20.0));
        let mut want = [0u64; 15];
        want[3] = 1; // 0.05
        want[5] = 1; // 0.1
        want[14] = 1; // +Inf
        assert_eq!(&*s.buckets, &want);
        assert_eq!(s.start_unix_ns, START + 1_000);
        assert_eq!(red.series(), 1);
        assert_eq!(red.overflowed(), 0);
    }

    #[test]
    fn client_and_rpc_spans_go_to_their_metrics() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&client("shop", "pay.internal", 201, 5_000_000));
        red.record(&grpc(SpanKind::Server, "shop", 0, 12_000_000));
        red.record(&grpc(SpanKind::Client, "shop", 14, 0));
        let svc = &red.services["shop"];
        assert!(svc.series[Instrument::HttpServer as usize].is_empty());
        let (key, c) = only(&red, "shop", Instrument::HttpClient);
        assert_eq!(
            key,
            &vec![
                (sc::HTTP_REQUEST_METHOD, sv("POST")),
                (sc::HTTP_RESPONSE_STATUS_CODE, Val::Int(201)),
                (sc::SERVER_ADDRESS, sv("pay.internal")),
                (sc::SERVER_PORT, Val::Int(8443)),
                (sc::URL_SCHEME, sv("https")),
                (sc::NETWORK_PROTOCOL_VERSION, sv("1.1")),
            ]
        );
        assert_eq!(c.count, 1);
        let (key, r) = only(&red, "shop", Instrument::RpcServer);
        assert_eq!(
            key,
            &vec![
                (sc::RPC_SYSTEM, sv("grpc")),
                (sc::RPC_SERVICE, sv("helloworld.Greeter")),
                (sc::RPC_METHOD, sv("SayHello")),
                (sc::RPC_GRPC_STATUS_CODE, Val::Int(0)),
            ]
        );
        // 12 ms, in milliseconds: le=25.
        assert_eq!(r.sum, 12.0);
        assert_eq!(r.buckets[3], 1);
        let (key, r) = only(&red, "shop", Instrument::RpcClient);
        assert_eq!(get(key, sc::RPC_GRPC_STATUS_CODE), Some(&Val::Int(14)));
        // 0 ms: the first bucket, le=0.
        assert_eq!(r.buckets[0], 1);
        assert_eq!(red.series(), 3);
    }

    #[test]
    fn stable_rpc_conventions_map_to_the_old_attributes() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&span(
            SpanKind::Client,
            "shop",
            vec![
                Attribute::str(sc::RPC_SYSTEM_NAME, "grpc"),
                Attribute::str(sc::RPC_METHOD, "helloworld.Greeter/SayHello"),
                Attribute::str(sc::RPC_RESPONSE_STATUS_CODE, "UNAVAILABLE"),
            ],
            1_000_000,
        ));
        assert!(red.services["shop"].series[Instrument::HttpClient as usize].is_empty());
        let (key, _) = only(&red, "shop", Instrument::RpcClient);
        assert_eq!(
            key,
            &vec![
                (sc::RPC_SYSTEM, sv("grpc")),
                (sc::RPC_SERVICE, sv("helloworld.Greeter")),
                (sc::RPC_METHOD, sv("SayHello")),
                (sc::RPC_GRPC_STATUS_CODE, Val::Int(14)),
            ]
        );
    }

    #[test]
    fn error_type_is_carried() {
        let mut red = Red::new(RedConfig::default(), START);
        let mut failed = server("shop", "/checkout", 503, 1_000_000);
        failed
            .attributes
            .push(Attribute::str(sc::ERROR_TYPE, "503"));
        red.record(&failed);
        red.record(&server("shop", "/checkout", 200, 1_000_000));
        let mut reset = client("shop", "pay", 0, 1_000_000);
        reset
            .attributes
            .retain(|a| a.key != sc::HTTP_RESPONSE_STATUS_CODE);
        reset
            .attributes
            .push(Attribute::str(sc::ERROR_TYPE, "stream_reset"));
        red.record(&reset);
        let servers = &red.services["shop"].series[Instrument::HttpServer as usize];
        assert_eq!(servers.len(), 2);
        let errors: Vec<_> = servers
            .keys()
            .filter_map(|k| get(k, sc::ERROR_TYPE))
            .collect();
        assert_eq!(errors, vec![&sv("503")]);
        let (key, _) = only(&red, "shop", Instrument::HttpClient);
        assert_eq!(get(key, sc::ERROR_TYPE), Some(&sv("stream_reset")));
        assert_eq!(get(key, sc::HTTP_RESPONSE_STATUS_CODE), None);
        let mut text = String::new();
        red.render_prometheus(&mut text);
        assert!(text.contains("error_type=\"503\""), "{text}");
    }

    #[test]
    fn route_limit_records_other() {
        let cfg = RedConfig {
            max_routes_per_service: 2,
            ..RedConfig::default()
        };
        let mut red = Red::new(cfg, START);
        for path in ["/a", "/b", "/c", "/d/1", "/a", "/b/"] {
            red.record(&server("shop", path, 200, 1_000));
        }
        // Another service has its own routes.
        red.record(&server("other", "/c", 200, 1_000));
        let routes: Vec<_> = red.services["shop"].series[Instrument::HttpServer as usize]
            .iter()
            .map(|(k, s)| (get(k, HTTP_ROUTE).cloned(), s.count))
            .collect();
        assert_eq!(
            routes,
            vec![
                (Some(sv("/a")), 2),
                (Some(sv("/b")), 1),
                (Some(sv("{other}")), 3),
            ]
        );
        let (key, _) = only(&red, "other", Instrument::HttpServer);
        assert_eq!(get(key, HTTP_ROUTE), Some(&sv("/c")));
        assert_eq!(red.overflowed(), 0);
    }

    #[test]
    fn series_limit_overflows() {
        let cfg = RedConfig {
            max_series: 2,
            ..RedConfig::default()
        };
        let mut red = Red::new(cfg, START);
        red.record(&client("shop", "h1", 200, 1_000));
        red.record(&client("shop", "h2", 200, 1_000));
        for host in ["h3", "h4", "h5"] {
            red.record(&client("shop", host, 200, 1_000));
        }
        // Existing series keep counting.
        red.record(&client("shop", "h1", 200, 1_000));
        red.record(&grpc(SpanKind::Server, "api", 0, 1_000));
        assert_eq!(red.overflowed(), 4);
        assert_eq!(red.series(), 4);
        let svc = &red.services["shop"];
        assert_eq!(svc.series[Instrument::HttpClient as usize].len(), 2);
        let overflow = svc.overflow[Instrument::HttpClient as usize]
            .as_ref()
            .expect("overflow series");
        assert_eq!(overflow.count, 3);
        assert!(red.services["api"].overflow[Instrument::RpcServer as usize].is_some());

        let mut text = String::new();
        red.render_prometheus(&mut text);
        assert!(text.contains(
            "http_client_request_duration_seconds_count{service_name=\"shop\",otel_metric_overflow=\"true\"} 3"
        ), "{text}");
        assert!(text.contains("tracewire_red_overflow_total 4\n"));
        assert!(text.contains("tracewire_red_series 4\n"));

        let req = red.to_otlp("host", START + 10);
        let shop = req
            .resource_metrics
            .iter()
            .find(|rm| resource_service(rm) == "shop")
            .expect("shop");
        let Some(metric::Data::Histogram(h)) = &shop.scope_metrics[0].metrics[0].data else {
            panic!("histogram")
        };
        let last = h.data_points.last().expect("points");
        assert_eq!(last.count, 3);
        assert_eq!(last.attributes.len(), 1);
        assert_eq!(last.attributes[0].key, OTEL_METRIC_OVERFLOW);
        assert_eq!(
            last.attributes[0].value,
            Some(AnyValue {
                value: Some(any_value::Value::BoolValue(true))
            })
        );
    }

    #[test]
    fn prometheus_exact_lines() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&server("svc", "/users/123?token=x", 200, 30_000_000));
        let mut text = String::new();
        red.render_prometheus(&mut text);
        let n = "http_server_request_duration_seconds";
        let l = "service_name=\"svc\",http_request_method=\"GET\",http_response_status_code=\"200\",\
                 http_route=\"/users/{id}\",url_scheme=\"http\",network_protocol_version=\"1.1\"";
        let mut want =
            format!("# HELP {n} Duration of HTTP server requests.\n# TYPE {n} histogram\n");
        for (le, c) in [
            ("0.005", 0),
            ("0.01", 0),
            ("0.025", 0),
            ("0.05", 1),
            ("0.075", 1),
            ("0.1", 1),
            ("0.25", 1),
            ("0.5", 1),
            ("0.75", 1),
            ("1", 1),
            ("2.5", 1),
            ("5", 1),
            ("7.5", 1),
            ("10", 1),
            ("+Inf", 1),
        ] {
            want.push_str(&format!("{n}_bucket{{{l},le=\"{le}\"}} {c}\n"));
        }
        want.push_str(&format!("{n}_sum{{{l}}} 0.03\n{n}_count{{{l}}} 1\n"));
        want.push_str(
            "# HELP tracewire_red_overflow_total RED measurements recorded into an overflow \
             series (otel_metric_overflow) because the series limit was reached.\n\
             # TYPE tracewire_red_overflow_total counter\n\
             tracewire_red_overflow_total 0\n\
             # HELP tracewire_red_series RED series held, overflow series included.\n\
             # TYPE tracewire_red_series gauge\n\
             tracewire_red_series 1\n",
        );
        assert_eq!(text, want);

        // Nothing recorded: only the module's own counters.
        let mut empty = String::new();
        Red::new(RedConfig::default(), START).render_prometheus(&mut empty);
        assert!(!empty.contains("duration"), "{empty}");
    }

    #[test]
    fn prometheus_buckets_cumulative_and_inf_is_count() {
        let mut red = Red::new(RedConfig::default(), START);
        for (i, ms) in [1u64, 7, 30, 30, 80, 300, 900, 4000, 12_000]
            .iter()
            .enumerate()
        {
            red.record(&server("a", "/x", 200, ms * 1_000_000));
            red.record(&grpc(SpanKind::Client, "b", 0, ms * 1_000_000 + i as u64));
        }
        let mut text = String::new();
        red.render_prometheus(&mut text);
        for family in [
            "http_server_request_duration_seconds",
            "rpc_client_duration_milliseconds",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} histogram\n"))
                    .count(),
                1
            );
            let bucket = format!("{family}_bucket{{");
            let counts: Vec<u64> = text
                .lines()
                .filter(|l| l.starts_with(&bucket))
                .map(|l| {
                    l.rsplit(' ')
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("value")
                })
                .collect();
            assert_eq!(counts.len(), family_bounds(family) + 1);
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
            let count_line = text
                .lines()
                .find(|l| l.starts_with(&format!("{family}_count{{")))
                .expect("count");
            assert_eq!(counts.last(), Some(&9));
            assert!(count_line.ends_with(" 9"), "{count_line}");
            let inf = text
                .lines()
                .find(|l| l.starts_with(&bucket) && l.contains("le=\"+Inf\""))
                .expect("+Inf");
            assert!(inf.ends_with(" 9"));
        }
        assert!(text.contains("rpc_client_duration_milliseconds_bucket{service_name=\"b\",rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"0\",le=\"0\"} 0\n"), "{text}");
        // A family's lines are together: no other family between its TYPE and its last line.
        let types: Vec<usize> = text.match_indices("# TYPE").map(|(i, _)| i).collect();
        for pair in types.windows(2) {
            let block = &text[pair[0]..pair[1]];
            let name = block.split(' ').nth(2).expect("name");
            assert!(
                block
                    .lines()
                    .skip(1)
                    .all(|l| l.starts_with(name) || l.starts_with("# HELP"))
            );
        }
    }

    fn family_bounds(family: &str) -> usize {
        if family.starts_with("rpc") {
            RPC_BOUNDS_MS.len()
        } else {
            HTTP_BOUNDS_S.len()
        }
    }

    #[test]
    fn prometheus_escapes_label_values() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&client("shop", "we\"ird\\host\nx", 200, 1));
        let mut text = String::new();
        red.render_prometheus(&mut text);
        assert!(
            text.contains("server_address=\"we\\\"ird\\\\host\\nx\""),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.contains("we\\\"ird")).count(), 17);
    }

    fn resource_service(rm: &ResourceMetrics) -> String {
        let attrs = &rm.resource.as_ref().expect("resource").attributes;
        match attrs
            .iter()
            .find(|kv| kv.key == sc::SERVICE_NAME)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("service.name: {other:?}"),
        }
    }

    #[test]
    fn otlp_conversion() {
        let mut red = Red::new(RedConfig::default(), START);
        red.record(&server("a", "/users/1", 200, 30_000_000));
        red.record(&server("a", "/users/2", 200, 70_000_000));
        red.record(&client("a", "pay", 200, 1_000_000));
        red.record(&grpc(SpanKind::Server, "b", 0, 2_000_000));
        let now = START + 5_000_000_000;
        let req = red.to_otlp("node-1", now);
        assert_eq!(req.resource_metrics.len(), 2);
        let services: Vec<_> = req.resource_metrics.iter().map(resource_service).collect();
        assert_eq!(services, vec!["a", "b"]);
        let attrs = &req.resource_metrics[0]
            .resource
            .as_ref()
            .expect("resource")
            .attributes;
        assert!(attrs.contains(&kv_str(sc::HOST_NAME, "node-1")));
        assert!(attrs.contains(&kv_str(sc::TELEMETRY_SDK_NAME, "tracewire")));

        let a = &req.resource_metrics[0].scope_metrics[0];
        assert_eq!(a.scope.as_ref().map(|s| s.name.as_str()), Some("tracewire"));
        let names: Vec<_> = a
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("http.server.request.duration", "s"),
                ("http.client.request.duration", "s")
            ]
        );
        let b = &req.resource_metrics[1].scope_metrics[0];
        assert_eq!(b.metrics.len(), 1);
        assert_eq!(
            (b.metrics[0].name.as_str(), b.metrics[0].unit.as_str()),
            ("rpc.server.duration", "ms")
        );

        for m in a.metrics.iter().chain(&b.metrics) {
            let Some(metric::Data::Histogram(h)) = &m.data else {
                panic!("{} is not a histogram", m.name)
            };
            assert_eq!(
                h.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            for p in &h.data_points {
                assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
                assert_eq!(p.time_unix_nano, now);
                assert_eq!(p.start_time_unix_nano, START + 1_000);
            }
        }
        let Some(metric::Data::Histogram(h)) = &a.metrics[0].data else {
            panic!("histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 2);
        assert_eq!((p.min, p.max), (Some(0.03), Some(0.07)));
        assert!((p.sum.expect("sum") - 0.1).abs() < 1e-12);
        assert_eq!(p.explicit_bounds, HTTP_BOUNDS_S.to_vec());
        assert!(p.attributes.contains(&kv_str(HTTP_ROUTE, "/users/{id}")));
        assert!(p.attributes.contains(&kv(
            sc::HTTP_RESPONSE_STATUS_CODE,
            any_value::Value::IntValue(200)
        )));
        assert!(
            Red::new(RedConfig::default(), START)
                .to_otlp("h", now)
                .resource_metrics
                .is_empty()
        );
    }

    #[test]
    fn series_start_is_not_before_aggregation_start() {
        let mut red = Red::new(RedConfig::default(), START + 10_000);
        red.record(&server("a", "/", 200, 1));
        assert_eq!(
            only(&red, "a", Instrument::HttpServer).1.start_unix_ns,
            START + 10_000
        );
    }

    #[test]
    fn red_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Red>();
        assert_send::<std::sync::Mutex<Red>>();
    }
}
