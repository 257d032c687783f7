//! Checks of exported spans against the OpenTelemetry stable HTTP semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>) and Tracewire's resource
//! attributes. Each check lists every mismatch at once, followed by the span itself.

use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::collector::SpanRecord;
use crate::peers::ProcessIdentity;

/// A span must last less than this; every request in these tests takes milliseconds.
pub const MAX_DURATION: Duration = Duration::from_secs(10);
/// Slack for comparing span timestamps (converted by the agent from kernel time) with the wall clock.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// When the test's traffic started: every span's timestamps must fall between this and the check.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    opened: SystemTime,
}

impl Window {
    pub fn open() -> Self {
        Self {
            opened: SystemTime::now(),
        }
    }
}

/// What the SERVER span of one request served must say.
#[derive(Clone, Debug)]
pub struct ServerSpanExpectation<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub server_port: u16,
    /// The client's local port, when the client reports it (curl does).
    pub client_port: Option<u16>,
    /// `network.protocol.version`: "1.1", or "1.0" when both request and response are HTTP/1.0.
    pub protocol_version: &'a str,
    pub user_agent: &'a str,
    pub process: &'a ProcessIdentity,
}

/// What the CLIENT span of one request made must say.
#[derive(Clone, Debug)]
pub struct ClientSpanExpectation<'a> {
    pub method: &'a str,
    /// `url.full`: scheme, authority and path; never a query.
    pub url_full: &'a str,
    pub status: u16,
    pub server_port: u16,
    pub process: &'a ProcessIdentity,
}

pub fn check_server_span(
    span: &SpanRecord,
    expected: &ServerSpanExpectation<'_>,
    window: Window,
) -> Result<()> {
    let mut check = Check::new(span);
    check.kind(SpanKind::Server);
    check.common(expected.method, expected.status, expected.process, window);
    check.str_attr("url.path", expected.path);
    check.str_attr("url.scheme", "http");
    check.str_attr("server.address", "127.0.0.1");
    check.int_attr("server.port", i64::from(expected.server_port));
    check.str_attr("client.address", "127.0.0.1");
    match (span.attr_int("client.port"), expected.client_port) {
        (Some(actual), Some(port)) if actual != i64::from(port) => check.problem(format!(
            "client.port is {actual}, but the client's local port was {port}"
        )),
        (Some(actual), _)
            if actual <= 0 || actual > 65535 || actual == i64::from(expected.server_port) =>
        {
            check.problem(format!(
                "client.port {actual} is not the client's ephemeral port"
            ));
        }
        (Some(_), _) => {}
        (None, _) => check.problem("client.port is missing or not an int".to_string()),
    }
    check.str_attr("network.protocol.version", expected.protocol_version);
    check.str_attr("user_agent.original", expected.user_agent);
    // Spec: a server span is an error only for 5xx; 4xx is the client's fault.
    check.status(if expected.status >= 500 {
        StatusCode::Error
    } else {
        StatusCode::Unset
    });
    check.finish()
}

pub fn check_client_span(
    span: &SpanRecord,
    expected: &ClientSpanExpectation<'_>,
    window: Window,
) -> Result<()> {
    let mut check = Check::new(span);
    check.kind(SpanKind::Client);
    check.common(expected.method, expected.status, expected.process, window);
    check.str_attr("server.address", "127.0.0.1");
    check.int_attr("server.port", i64::from(expected.server_port));
    check.str_attr("url.full", expected.url_full);
    // Spec: a client span is an error for any status >= 400.
    check.status(if expected.status >= 400 {
        StatusCode::Error
    } else {
        StatusCode::Unset
    });
    check.finish()
}

/// `host.name` as the agent should see it: the kernel's hostname (tests share its UTS namespace).
pub fn host_name() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

struct Check<'a> {
    span: &'a SpanRecord,
    problems: Vec<String>,
}

impl<'a> Check<'a> {
    fn new(span: &'a SpanRecord) -> Self {
        Self {
            span,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    fn kind(&mut self, kind: SpanKind) {
        if self.span.kind() != kind {
            self.problem(format!("kind is {:?}, expected {kind:?}", self.span.kind()));
        }
    }

    fn str_attr(&mut self, key: &str, expected: &str) {
        match self.span.attr_str(key) {
            Some(actual) if actual == expected => {}
            Some(actual) => self.problem(format!("{key} is {actual:?}, expected {expected:?}")),
            None => self.problem(format!(
                "{key} is missing or not a string, expected {expected:?}"
            )),
        }
    }

    fn int_attr(&mut self, key: &str, expected: i64) {
        match self.span.attr_int(key) {
            Some(actual) if actual == expected => {}
            Some(actual) => self.problem(format!("{key} is {actual}, expected {expected}")),
            None => self.problem(format!(
                "{key} is missing or not an int, expected {expected}"
            )),
        }
    }

    fn resource_str(&mut self, key: &str, expected: &str) {
        match self.span.resource_str(key) {
            Some(actual) if actual == expected => {}
            Some(actual) => self.problem(format!(
                "resource {key} is {actual:?}, expected {expected:?}"
            )),
            None => self.problem(format!(
                "resource {key} is missing or not a string, expected {expected:?}"
            )),
        }
    }

    fn status(&mut self, expected: StatusCode) {
        let actual = self.span.status_code();
        if actual != expected {
            self.problem(format!("status is {actual:?}, expected {expected:?}"));
        }
    }

    /// What SERVER and CLIENT spans share: name, method, status code, ids, timing, resource.
    fn common(&mut self, method: &str, status: u16, process: &ProcessIdentity, window: Window) {
        if self.span.span.name != method {
            self.problem(format!(
                "name is {:?}, expected {method:?}",
                self.span.span.name
            ));
        }
        self.str_attr("http.request.method", method);
        self.int_attr("http.response.status_code", i64::from(status));
        if self.span.attr("url.query").is_some() {
            self.problem("url.query is exported; queries must never be".to_string());
        }

        let trace_id = &self.span.span.trace_id;
        if trace_id.len() != 16 || trace_id.iter().all(|b| *b == 0) {
            self.problem(format!(
                "trace_id {trace_id:02x?} is not a valid 16-byte id"
            ));
        }
        let span_id = &self.span.span.span_id;
        if span_id.len() != 8 || span_id.iter().all(|b| *b == 0) {
            self.problem(format!("span_id {span_id:02x?} is not a valid 8-byte id"));
        }

        let (start, end) = (self.span.start(), self.span.end());
        match end.duration_since(start) {
            Ok(duration) if duration.is_zero() => self.problem("start == end".to_string()),
            Ok(duration) if duration >= MAX_DURATION => {
                self.problem(format!("lasted {duration:?}, more than {MAX_DURATION:?}"));
            }
            Ok(_) => {}
            Err(_) => self.problem("ends before it starts".to_string()),
        }
        if start + CLOCK_SLACK < window.opened || end > SystemTime::now() + CLOCK_SLACK {
            self.problem(format!(
                "timestamps {start:?}..{end:?} fall outside the test's traffic window from {:?}",
                window.opened
            ));
        }

        self.resource_str("service.name", &process.service_name);
        match self.span.resource_int("process.pid") {
            Some(pid) if pid == i64::from(process.pid) => {}
            Some(pid) => self.problem(format!(
                "resource process.pid is {pid}, expected {}",
                process.pid
            )),
            None => self.problem("resource process.pid is missing or not an int".to_string()),
        }
        self.resource_str("process.executable.name", &process.executable_name);
        self.resource_str("telemetry.sdk.name", "tracewire");
        match host_name() {
            Ok(host) => self.resource_str("host.name", &host),
            Err(error) => self.problem(format!("cannot read this host's name: {error:#}")),
        }
    }

    fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        bail!(
            "span does not match:\n  - {}\nspan: {}",
            self.problems.join("\n  - "),
            self.span
        )
    }
}
