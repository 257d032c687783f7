//! Received spans, flattened so a test can look at one span together with its process's resource.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// One span and the resource attributes of the `ResourceSpans` it arrived in.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

/// Every span in `requests`, in arrival order.
pub fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<SpanRecord> {
    let mut records = Vec::new();
    for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            records.push(SpanRecord {
                resource: resource.clone(),
                span: span.clone(),
            });
        }
    }
    records
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn as_str(value: Option<&Value>) -> Option<&str> {
    match value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn as_int(value: Option<&Value>) -> Option<i64> {
    match value {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

impl SpanRecord {
    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    pub fn attr(&self, key: &str) -> Option<&Value> {
        find(&self.span.attributes, key)
    }

    /// The attribute if it is a string; `None` if absent or of another type.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        as_str(self.attr(key))
    }

    /// The attribute if it is an int; `None` if absent or of another type (semconv ports and
    /// status codes are ints, not strings).
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        as_int(self.attr(key))
    }

    pub fn resource_attr(&self, key: &str) -> Option<&Value> {
        find(&self.resource, key)
    }

    /// The attribute if it is an array of strings.
    pub fn attr_strs(&self, key: &str) -> Option<Vec<&str>> {
        match self.attr(key)? {
            Value::ArrayValue(a) => a.values.iter().map(|v| as_str(v.value.as_ref())).collect(),
            _ => None,
        }
    }

    /// The attribute if it is an array of ints.
    pub fn attr_ints(&self, key: &str) -> Option<Vec<i64>> {
        match self.attr(key)? {
            Value::ArrayValue(a) => a.values.iter().map(|v| as_int(v.value.as_ref())).collect(),
            _ => None,
        }
    }

    /// The span's events named `name`.
    pub fn events(&self, name: &str) -> Vec<&Event> {
        self.span.events.iter().filter(|e| e.name == name).collect()
    }

    /// Names of all its events.
    pub fn event_names(&self) -> Vec<&str> {
        self.span.events.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        as_str(self.resource_attr(key))
    }

    pub fn resource_int(&self, key: &str) -> Option<i64> {
        as_int(self.resource_attr(key))
    }

    /// `process.pid` of the resource.
    pub fn pid(&self) -> Option<u32> {
        self.resource_int("process.pid")
            .and_then(|p| u32::try_from(p).ok())
    }

    pub fn status_code(&self) -> StatusCode {
        self.span
            .status
            .as_ref()
            .and_then(|s| StatusCode::try_from(s.code).ok())
            .unwrap_or(StatusCode::Unset)
    }

    pub fn start(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.span.start_time_unix_nano)
    }

    pub fn end(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.span.end_time_unix_nano)
    }

    /// The path a span is about: `url.path` for servers, the path of `url.full` for clients
    /// (query excluded, so a leaked query still matches and fails the exact checks instead).
    pub fn request_path(&self) -> Option<&str> {
        match self.kind() {
            SpanKind::Client => self.attr_str("url.full").map(path_of_url),
            _ => self.attr_str("url.path"),
        }
    }
}

/// `/p` of `scheme://authority/p?q#f`; `/` when the URL has no path.
pub fn path_of_url(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

fn fmt_value(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => "<none>".to_string(),
    }
}

fn fmt_attributes(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            format!("{}={}", kv.key, fmt_value(value))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for SpanRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = self
            .span
            .end_time_unix_nano
            .checked_sub(self.span.start_time_unix_nano)
            .map_or_else(
                || "negative".to_string(),
                |ns| format!("{:?}", Duration::from_nanos(ns)),
            );
        write!(
            f,
            "{:?} {:?} status={:?} duration={duration} {{{}}} resource {{{}}}",
            self.kind(),
            self.span.name,
            self.status_code(),
            fmt_attributes(&self.span.attributes),
            fmt_attributes(&self.resource),
        )
    }
}

/// Which span a test waits for: its kind, the pid of the process that made or served the request,
/// and the request path.
#[derive(Clone, Debug)]
pub struct SpanQuery {
    pub kind: SpanKind,
    pub pid: u32,
    pub path: String,
}

impl SpanQuery {
    pub fn server(pid: u32, path: &str) -> Self {
        Self {
            kind: SpanKind::Server,
            pid,
            path: path.to_string(),
        }
    }

    pub fn client(pid: u32, path: &str) -> Self {
        Self {
            kind: SpanKind::Client,
            pid,
            path: path.to_string(),
        }
    }

    pub fn matches(&self, record: &SpanRecord) -> bool {
        record.kind() == self.kind
            && record.pid() == Some(self.pid)
            && record.request_path() == Some(self.path.as_str())
    }
}

impl fmt::Display for SpanQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} span of pid {} for {}",
            self.kind, self.pid, self.path
        )
    }
}

/// An event's attribute if it is an int.
pub fn event_int(event: &Event, key: &str) -> Option<i64> {
    as_int(find(&event.attributes, key))
}

/// An event's attribute if it is a string.
pub fn event_str<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    as_str(find(&event.attributes, key))
}

#[cfg(test)]
mod tests {
    use super::path_of_url;

    #[test]
    fn path_of_url_drops_authority_and_query() {
        assert_eq!(
            path_of_url("http://127.0.0.1:8080/login?password=x"),
            "/login"
        );
        assert_eq!(path_of_url("http://127.0.0.1:8080"), "/");
        assert_eq!(path_of_url("http://h/a/b#frag"), "/a/b");
    }
}
