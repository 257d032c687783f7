//! HTTP server and client spans from exchanges, per the stable HTTP semantic conventions:
//! <https://opentelemetry.io/docs/specs/semconv/http/http-spans/>.

use compact_str::{CompactString, ToCompactString, format_compact};

use super::{Attribute, Clock, Span, SpanKind, Status, context::SpanContext, semconv as sc};
use crate::reassembly::{Exchange, Message, Role};

/// What the operator allowed to leave the host, and which conventions to speak.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanOptions {
    /// Export query strings (`url.query`, and in `url.full`). Off by default: they hold tokens.
    pub capture_query: bool,
    /// RPC attribute names (`OTEL_SEMCONV_STABILITY_OPT_IN`).
    pub rpc: super::rpc::RpcConventions,
}

/// Methods the conventions know; any other is reported as `_OTHER`.
fn known_method(m: &str) -> bool {
    matches!(
        m,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    )
}

/// Splits a request-target into path and query; an absolute-form target (proxies) is reduced
/// to its path.
fn path_and_query(target: &str) -> (&str, Option<&str>) {
    let rest = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            match after.find('/') {
                Some(j) => &after[j..],
                None => "/",
            }
        }
        None => target,
    };
    match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    }
}

/// `host[:port]` or `[v6][:port]` from a Host header.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (h, port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

fn host_for_url(host: &str) -> CompactString {
    if host.contains(':') {
        format_compact!("[{host}]")
    } else {
        host.into()
    }
}

/// What an HTTP span is built from, whatever the version.
struct HttpView<'a> {
    /// None when it could not be decoded (HTTP/2 joined mid-connection).
    method: Option<&'a str>,
    target: Option<&'a str>,
    host: Option<&'a str>,
    scheme: &'a str,
    version: &'static str,
    user_agent: Option<&'a str>,
    status: Option<u16>,
    /// Why the stream ended without a response (HTTP/2 reset or refused).
    ended_by: Option<&'static str>,
    /// Some request fields were not decodable.
    incomplete: bool,
}

/// Builds the span of one exchange.
pub fn build(ex: &Exchange, ctx: SpanContext, clock: &Clock, opts: SpanOptions) -> Span {
    match &ex.message {
        Message::Http1 { request, response } => {
            let view = HttpView {
                method: Some(request.method.as_str()),
                target: Some(&request.target),
                host: request.host.as_deref(),
                scheme: if ex.conn.tls { "https" } else { "http" },
                version: if request.minor_version == 0 {
                    "1.0"
                } else {
                    "1.1"
                },
                user_agent: request.user_agent.as_deref(),
                status: response.as_ref().map(|r| r.status),
                ended_by: None,
                incomplete: false,
            };
            build_http(ex, &view, ctx, clock, opts)
        }
        Message::Db(db) => super::db::build(ex, db, ctx, clock),
        Message::Http2(h2) if h2.is_grpc() => super::rpc::build(ex, h2, ctx, clock, opts),
        Message::Http2(h2) => {
            let req = &h2.request;
            let view = HttpView {
                method: req.method.as_deref(),
                target: req.path.as_deref(),
                host: req.authority.as_deref(),
                scheme: req
                    .scheme
                    .as_deref()
                    .unwrap_or(if ex.conn.tls { "https" } else { "http" }),
                version: "2",
                user_agent: req.user_agent.as_deref(),
                status: h2.response.as_ref().and_then(|r| r.status),
                ended_by: h2.ended_by(),
                incomplete: !req.complete || h2.response_incomplete,
            };
            build_http(ex, &view, ctx, clock, opts)
        }
    }
}

fn build_http(
    ex: &Exchange,
    req: &HttpView<'_>,
    ctx: SpanContext,
    clock: &Clock,
    opts: SpanOptions,
) -> Span {
    let mut attrs = Vec::with_capacity(16);
    let name = match req.method {
        Some(m) if known_method(m) => {
            attrs.push(Attribute::str(sc::HTTP_REQUEST_METHOD, m));
            CompactString::from(m)
        }
        Some(m) => {
            attrs.push(Attribute::str(sc::HTTP_REQUEST_METHOD, "_OTHER"));
            attrs.push(Attribute::str(sc::HTTP_REQUEST_METHOD_ORIGINAL, m));
            CompactString::const_new("HTTP")
        }
        // Not decodable: say nothing rather than something wrong.
        None => CompactString::const_new("HTTP"),
    };
    if req.incomplete {
        attrs.push(Attribute::str(
            sc::TRACEWIRE_INCOMPLETE,
            "header_fields_unknown",
        ));
    }
    let status = req.status;
    if let Some(code) = status {
        attrs.push(Attribute::int(
            sc::HTTP_RESPONSE_STATUS_CODE,
            i64::from(code),
        ));
    }
    let (path, query) = match req.target {
        Some(t) => {
            let (p, q) = path_and_query(t);
            (Some(p), q)
        }
        None => (None, None),
    };
    let host = req.host.map(split_host);
    attrs.push(Attribute::str(sc::NETWORK_PROTOCOL_VERSION, req.version));
    if let Some(ua) = req.user_agent {
        attrs.push(Attribute::str(sc::USER_AGENT_ORIGINAL, ua));
    }
    attrs.push(Attribute::int(sc::THREAD_ID, i64::from(ex.tid)));
    let (kind, error) = match ex.role {
        Role::Server => {
            if let Some(path) = path {
                attrs.push(Attribute::str(sc::URL_PATH, path));
            }
            attrs.push(Attribute::str(sc::URL_SCHEME, req.scheme));
            if opts.capture_query
                && let Some(q) = query
            {
                attrs.push(Attribute::str(sc::URL_QUERY, q));
            }
            let local = ex.conn.local;
            match (&host, local) {
                (Some((h, port)), _) => {
                    attrs.push(Attribute::str(sc::SERVER_ADDRESS, *h));
                    if let Some(p) = port.or(local.map(|l| l.port())) {
                        attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(p)));
                    }
                }
                (None, Some(l)) => {
                    if let Some(ip) = ex.conn.local_ip() {
                        attrs.push(Attribute::str(sc::SERVER_ADDRESS, ip.clone()));
                    }
                    attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(l.port())));
                }
                (None, None) => {}
            }
            if let (Some(remote), Some(ip)) = (ex.conn.remote, ex.conn.remote_ip()) {
                let port = i64::from(remote.port());
                attrs.push(Attribute::str(sc::CLIENT_ADDRESS, ip.clone()));
                attrs.push(Attribute::int(sc::CLIENT_PORT, port));
                attrs.push(Attribute::str(sc::NETWORK_PEER_ADDRESS, ip.clone()));
                attrs.push(Attribute::int(sc::NETWORK_PEER_PORT, port));
            }
            (SpanKind::Server, status.is_some_and(|s| s >= 500))
        }
        Role::Client => {
            let remote = ex.conn.remote;
            let remote_ip = ex.conn.remote_ip().cloned();
            let (server_host, server_port) = match (&host, remote) {
                (Some((h, p)), r) => (Some(CompactString::from(*h)), p.or(r.map(|r| r.port()))),
                (None, Some(r)) => (remote_ip.clone(), Some(r.port())),
                (None, None) => (None, None),
            };
            if let Some(h) = &server_host {
                attrs.push(Attribute::str(sc::SERVER_ADDRESS, h.clone()));
            }
            if let Some(p) = server_port {
                attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(p)));
            }
            if let (Some(h), Some(path)) = (&server_host, path) {
                let default_port = if req.scheme == "https" { 443 } else { 80 };
                let authority = match server_port {
                    Some(p) if p != default_port => format_compact!("{}:{p}", host_for_url(h)),
                    _ => host_for_url(h),
                };
                let mut full = format_compact!("{}://{authority}{path}", req.scheme);
                if opts.capture_query
                    && let Some(q) = query
                {
                    full.push('?');
                    full.push_str(q);
                }
                attrs.push(Attribute::str(sc::URL_FULL, full));
            }
            if let (Some(r), Some(ip)) = (remote, remote_ip) {
                attrs.push(Attribute::str(sc::NETWORK_PEER_ADDRESS, ip));
                attrs.push(Attribute::int(sc::NETWORK_PEER_PORT, i64::from(r.port())));
            }
            (SpanKind::Client, status.is_some_and(|s| s >= 400))
        }
    };
    let error_type = match (error, status, req.ended_by) {
        (true, Some(code), _) => Some(code.to_compact_string()),
        (_, None, Some(reason)) => Some(CompactString::from(reason)),
        _ => None,
    };
    let is_error = error_type.is_some();
    if let Some(e) = error_type {
        attrs.push(Attribute::str(sc::ERROR_TYPE, e));
    }
    finish(ex, ctx, clock, kind, name, attrs, is_error)
}

/// The parts every span shares: ids, times, status and resource.
pub(super) fn finish(
    ex: &Exchange,
    ctx: SpanContext,
    clock: &Clock,
    kind: SpanKind,
    name: impl Into<CompactString>,
    attributes: Vec<Attribute>,
    error: bool,
) -> Span {
    Span {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent_span_id: ctx.parent_span_id,
        parent_is_remote: ctx.parent_is_remote,
        tracestate: ctx.tracestate,
        kind,
        name: name.into(),
        start_unix_ns: clock.to_unix_ns(ex.start_ns),
        end_unix_ns: clock.to_unix_ns(ex.end_ns),
        attributes,
        events: Vec::new(),
        status: if error { Status::Error } else { Status::Unset },
        process: std::sync::Arc::clone(&ex.conn.process),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::process::ProcessInfo,
        protocol::http1::{self, Parse, ResponseHead},
        reassembly::ConnMeta,
        span::AttrValue,
    };
    use agent_common::ConnOrigin;
    use std::sync::Arc;

    fn exchange(role: Role, req: &[u8], status: u16) -> Exchange {
        let Parse::Complete(request, _) = http1::parse_request(req) else {
            panic!("fixture request does not parse")
        };
        Exchange {
            id: 1,
            role,
            conn: Arc::new(ConnMeta {
                local: Some("127.0.0.1:8080".parse().expect("addr")),
                remote: Some("127.0.0.1:41000".parse().expect("addr")),
                origin: ConnOrigin::Unknown,
                tls: false,
                ip_text: Default::default(),
                process: ProcessInfo::for_test("svc"),
            }),
            message: Message::Http1 {
                request,
                response: Some(ResponseHead {
                    status,
                    minor_version: 1,
                    content_length: Some(0),
                    chunked: false,
                    connection_close: false,
                }),
            },
            start_ns: 1_000,
            end_ns: 3_500,
            tid: 9,
        }
    }

    fn s(span: &Span, key: &str) -> Option<String> {
        span.attribute(key).map(AttrValue::to_string)
    }

    #[test]
    fn server_span_semconv() {
        let ex = exchange(
            Role::Server,
            b"GET /a/b?password=hunter2 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAuthorization: Bearer x\r\n\r\n",
            503,
        );
        let span = build(
            &ex,
            SpanContext::new_root(),
            &Clock::with_offset(10),
            SpanOptions::default(),
        );
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.name, "GET");
        assert_eq!((span.start_unix_ns, span.end_unix_ns), (1_010, 3_510));
        assert_eq!(s(&span, "url.path").as_deref(), Some("/a/b"));
        assert_eq!(s(&span, "url.query"), None);
        assert_eq!(s(&span, "server.address").as_deref(), Some("example.com"));
        assert_eq!(s(&span, "server.port").as_deref(), Some("8080"));
        assert_eq!(s(&span, "client.port").as_deref(), Some("41000"));
        assert_eq!(
            s(&span, "http.response.status_code").as_deref(),
            Some("503")
        );
        assert_eq!(s(&span, "error.type").as_deref(), Some("503"));
        assert_eq!(s(&span, "user_agent.original").as_deref(), Some("curl/8"));
        assert_eq!(span.status, Status::Error);
        let all = format!("{:?}", span.attributes);
        assert!(!all.contains("hunter2") && !all.contains("Bearer"));
    }

    #[test]
    fn client_span_semconv_and_query_opt_in() {
        let ex = exchange(
            Role::Client,
            b"GET /x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
            404,
        );
        let span = build(
            &ex,
            SpanContext::new_root(),
            &Clock::with_offset(0),
            SpanOptions::default(),
        );
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(
            s(&span, "url.full").as_deref(),
            Some("http://127.0.0.1:8080/x")
        );
        assert_eq!(span.status, Status::Error);
        let with_query = build(
            &ex,
            SpanContext::new_root(),
            &Clock::with_offset(0),
            SpanOptions {
                capture_query: true,
                ..SpanOptions::default()
            },
        );
        assert_eq!(
            s(&with_query, "url.full").as_deref(),
            Some("http://127.0.0.1:8080/x?q=1")
        );
    }

    #[test]
    fn unknown_method_and_hosts() {
        let ex = exchange(Role::Server, b"FOO / HTTP/1.0\r\n\r\n", 200);
        let span = build(
            &ex,
            SpanContext::new_root(),
            &Clock::with_offset(0),
            SpanOptions::default(),
        );
        assert_eq!(span.name, "HTTP");
        assert_eq!(s(&span, "http.request.method").as_deref(), Some("_OTHER"));
        assert_eq!(
            s(&span, "http.request.method_original").as_deref(),
            Some("FOO")
        );
        assert_eq!(s(&span, "network.protocol.version").as_deref(), Some("1.0"));
        assert_eq!(s(&span, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(span.status, Status::Unset);
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("a.b"), ("a.b", None));
        assert_eq!(path_and_query("http://h:1/p?x"), ("/p", Some("x")));
        assert_eq!(path_and_query("http://h"), ("/", None));
    }
}
