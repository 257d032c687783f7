//! RED metrics (rate, errors, duration) aggregated from the agent's own spans: one duration
//! histogram per HTTP/gRPC direction, plus database client calls, per service, kept once and
//! rendered two ways, as Prometheus text for `/metrics` and as an OTLP
//! `ExportMetricsServiceRequest`.
//!
//! Names and attributes follow the OpenTelemetry semantic conventions
//! (`http.server.request.duration`, `http.client.request.duration`, the pre-1.37
//! `rpc.server.duration` / `rpc.client.duration`, and `db.client.operation.duration`);
//! temporality is cumulative.
//!
//! Traffic chooses most attribute values (paths, hosts), so cardinality is bounded three ways:
//! - `http.route` is a template inferred from the path ([`route_template`]), never the raw path;
//! - each service keeps at most [`RedConfig::max_routes_per_service`] routes, the rest are
//!   recorded as route `{other}`;
//! - at most [`RedConfig::max_series`] series in all; past it, new attribute sets go to one
//!   overflow series per metric and service carrying only `otel.metric.overflow=true` (the
//!   OpenTelemetry SDK's cardinality-limit convention), counted by [`Red::overflowed`].
mod route;

pub use route::{
    MAX_ROUTE_SEGMENTS, MAX_SEGMENT_LEN, ROUTE_ID, ROUTE_OTHER, ROUTE_REST, route_template,
};

use std::{collections::BTreeMap, fmt::Write as _};

use foldhash::HashSet;

use compact_str::ToCompactString;

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
    span::{AttrValue, CompactString, Span, SpanKind, semconv as sc},
};

pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
pub const RPC_SERVER_DURATION: &str = "rpc.server.duration";
pub const RPC_CLIENT_DURATION: &str = "rpc.client.duration";
pub const DB_CLIENT_OPERATION_DURATION: &str = "db.client.operation.duration";
pub const HTTP_ROUTE: &str = "http.route";
/// The attribute of an overflow series (OpenTelemetry SDK cardinality limits).
pub const OTEL_METRIC_OVERFLOW: &str = "otel.metric.overflow";

/// Prometheus names of the agent's own counters for this module.
const OVERFLOW_COUNTER: &str = "tracewire_red_overflow_total";
const SERIES_GAUGE: &str = "tracewire_red_series";

/// Semconv advice for HTTP durations, in seconds.
const HTTP_BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Semconv advice for database operation durations, in seconds.
const DB_BOUNDS_S: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
/// The SDK default explicit buckets, for the millisecond RPC durations.
const RPC_BOUNDS_MS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// The histograms; the discriminant indexes per-service arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Instrument {
    HttpServer = 0,
    HttpClient = 1,
    RpcServer = 2,
    RpcClient = 3,
    DbClient = 4,
}

const INSTRUMENTS: [Instrument; 5] = [
    Instrument::HttpServer,
    Instrument::HttpClient,
    Instrument::RpcServer,
    Instrument::RpcClient,
    Instrument::DbClient,
];

impl Instrument {
    fn of(span: &Span) -> Self {
        // Database spans are CLIENT spans too: without this they would be HTTP client calls.
        if span.attribute(sc::DB_SYSTEM_NAME).is_some() {
            return Instrument::DbClient;
        }
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
            Instrument::DbClient => DB_CLIENT_OPERATION_DURATION,
        }
    }

    /// The OTel-to-Prometheus name: dots to underscores, the unit as a suffix.
    fn prometheus_name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http_server_request_duration_seconds",
            Instrument::HttpClient => "http_client_request_duration_seconds",
            Instrument::RpcServer => "rpc_server_duration_milliseconds",
            Instrument::RpcClient => "rpc_client_duration_milliseconds",
            Instrument::DbClient => "db_client_operation_duration_seconds",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Instrument::HttpServer | Instrument::HttpClient | Instrument::DbClient => "s",
            Instrument::RpcServer | Instrument::RpcClient => "ms",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::RpcServer => "Measures the duration of inbound RPC.",
            Instrument::RpcClient => "Measures the duration of outbound RPC.",
            Instrument::DbClient => "Duration of database client operations.",
        }
    }

    fn bounds(self) -> &'static [f64] {
        match self {
            Instrument::HttpServer | Instrument::HttpClient => &HTTP_BOUNDS_S,
            Instrument::RpcServer | Instrument::RpcClient => &RPC_BOUNDS_MS,
            Instrument::DbClient => &DB_BOUNDS_S,
        }
    }

    /// A duration in the instrument's unit.
    fn value(self, ns: u64) -> f64 {
        match self {
            Instrument::HttpServer | Instrument::HttpClient | Instrument::DbClient => {
                ns as f64 / 1e9
            }
            Instrument::RpcServer | Instrument::RpcClient => ns as f64 / 1e6,
        }
    }
}

/// An attribute value in a series key (ordered, so that output is stable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Val {
    Str(CompactString),
    Int(i64),
}

impl From<&AttrValue> for Val {
    fn from(v: &AttrValue) -> Self {
        match v {
            AttrValue::Str(s) => Val::Str(s.clone()),
            AttrValue::Int(i) => Val::Int(*i),
            other => Val::Str(other.to_compact_string()),
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
    routes: HashSet<CompactString>,
    series: [BTreeMap<Key, Series>; INSTRUMENTS.len()],
    overflow: [Option<Series>; INSTRUMENTS.len()],
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
    /// `rpc.system.name`) counts in the RPC metric only, a database span (`db.system.name`) in
    /// the database metric only.
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
            Instrument::DbClient => db_key(span),
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
                        scope: Some(scope()),
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
        _ => None,
    }
}

fn http_server_key(span: &Span, routes: &mut HashSet<CompactString>, max_routes: usize) -> Key {
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
            CompactString::const_new(ROUTE_OTHER)
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
        key.push((sc::URL_SCHEME, Val::Str(s.into())));
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
                key.push((sc::RPC_SERVICE, Val::Str(service.into())));
                key.push((sc::RPC_METHOD, Val::Str(method.into())));
            }
            None => key.push((sc::RPC_METHOD, Val::Str(full.into()))),
        }
    }
    if let Some(name) = str_attr(span, sc::RPC_RESPONSE_STATUS_CODE)
        && let Some(code) = (0..=16u32).find(|c| grpc::status_name(*c) == Some(name))
    {
        key.push((sc::RPC_GRPC_STATUS_CODE, Val::Int(i64::from(code))));
    }
    key
}

/// The conventions' attributes of `db.client.operation.duration`, those the span has. Table
/// names come from traffic, so the series limit is what bounds them; `db.query.text` and the
/// span's summary are left out (the first is unbounded, the second repeats operation and
/// collection).
fn db_key(span: &Span) -> Key {
    let mut key = Vec::with_capacity(8);
    for name in [
        sc::DB_SYSTEM_NAME,
        sc::DB_NAMESPACE,
        sc::DB_OPERATION_NAME,
        sc::DB_COLLECTION_NAME,
        sc::DB_RESPONSE_STATUS_CODE,
        sc::ERROR_TYPE,
        sc::SERVER_ADDRESS,
        sc::SERVER_PORT,
    ] {
        push_attr(&mut key, span, name);
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

/// An OTLP attribute (the metrics and the logs exporters build theirs with it).
pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// The instrumentation scope of everything the agent exports itself.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "tracewire".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
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

#[cfg(test)]
mod tests;
