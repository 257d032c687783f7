//! gRPC client and server spans, per the OpenTelemetry RPC and gRPC conventions:
//! <https://opentelemetry.io/docs/specs/semconv/rpc/grpc/>.
//!
//! The RPC conventions are moving to stable names (`rpc.system.name`, a fully qualified
//! `rpc.method`, `rpc.response.status_code`). As the conventions ask of existing
//! instrumentations, the long-standing names stay the default and
//! `OTEL_SEMCONV_STABILITY_OPT_IN=rpc` (stable only) or `rpc/dup` (both) opt in.
use super::{Attribute, Clock, Span, SpanKind, context::SpanContext, http::finish, semconv as sc};
use crate::{
    protocol::grpc,
    reassembly::{Exchange, Role, h2::Http2Exchange},
};

/// Which RPC attribute names spans carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RpcConventions {
    /// `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`.
    #[default]
    Experimental,
    Stable,
    Both,
}

impl RpcConventions {
    /// From the value of `OTEL_SEMCONV_STABILITY_OPT_IN` (comma-separated categories;
    /// `rpc/dup` wins over `rpc`).
    pub fn from_opt_in(value: Option<&str>) -> Self {
        let mut conventions = RpcConventions::Experimental;
        for category in value.unwrap_or_default().split(',').map(str::trim) {
            match category {
                "rpc/dup" => return RpcConventions::Both,
                "rpc" => conventions = RpcConventions::Stable,
                _ => {}
            }
        }
        conventions
    }

    fn experimental(self) -> bool {
        self != RpcConventions::Stable
    }

    fn stable(self) -> bool {
        self != RpcConventions::Experimental
    }
}

pub fn build(
    ex: &Exchange,
    h2: &Http2Exchange,
    ctx: SpanContext,
    clock: &Clock,
    opts: super::http::SpanOptions,
) -> Span {
    let conventions = opts.rpc;
    let mut attrs = Vec::with_capacity(12);
    let call = h2.request.path.as_deref().and_then(grpc::service_method);
    if conventions.experimental() {
        attrs.push(Attribute::str(sc::RPC_SYSTEM, "grpc"));
        if let Some((service, method)) = call {
            attrs.push(Attribute::str(sc::RPC_SERVICE, service));
            attrs.push(Attribute::str(sc::RPC_METHOD, method));
        }
        if let Some(code) = h2.grpc_status {
            attrs.push(Attribute::int(sc::RPC_GRPC_STATUS_CODE, i64::from(code)));
        }
    }
    if conventions.stable() {
        attrs.push(Attribute::str(sc::RPC_SYSTEM_NAME, "grpc"));
        // `rpc.method` means the fully qualified name here; with both sets, the experimental
        // (method-only) value keeps the key and the stable one is in the span name.
        if !conventions.experimental() {
            let full = call.map_or_else(|| "_OTHER".to_string(), |(s, m)| format!("{s}/{m}"));
            attrs.push(Attribute::str(sc::RPC_METHOD, full));
        }
        if let Some(name) = h2.grpc_status.and_then(grpc::status_name) {
            attrs.push(Attribute::str(sc::RPC_RESPONSE_STATUS_CODE, name));
        }
    }
    if !h2.request.complete || h2.response_incomplete {
        attrs.push(Attribute::str(
            sc::TRACEWIRE_INCOMPLETE,
            "header_fields_unknown",
        ));
    }
    // No status because the trailers could not be decoded is not knowledge of a failure.
    let status_unknown =
        h2.grpc_status.is_none() && h2.response_incomplete && h2.ended_by().is_none();
    let authority = h2.request.authority.as_deref().and_then(split_authority);
    let (kind, is_error) = match ex.role {
        Role::Server => {
            let local = ex.conn.local;
            match (authority, local) {
                (Some((h, p)), _) => {
                    attrs.push(Attribute::str(sc::SERVER_ADDRESS, h));
                    if let Some(p) = p.or(local.map(|l| l.port())) {
                        attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(p)));
                    }
                }
                (None, Some(l)) => {
                    attrs.push(Attribute::str(
                        sc::SERVER_ADDRESS,
                        ex.conn.local_ip().cloned().unwrap_or_default(),
                    ));
                    attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(l.port())));
                }
                (None, None) => {}
            }
            if let Some(r) = ex.conn.remote {
                attrs.push(Attribute::str(
                    sc::CLIENT_ADDRESS,
                    ex.conn.remote_ip().cloned().unwrap_or_default(),
                ));
                attrs.push(Attribute::int(sc::CLIENT_PORT, i64::from(r.port())));
            }
            (
                SpanKind::Server,
                !status_unknown && h2.grpc_status.is_none_or(grpc::server_error),
            )
        }
        Role::Client => {
            let remote = ex.conn.remote;
            match (authority, remote) {
                (Some((h, p)), r) => {
                    attrs.push(Attribute::str(sc::SERVER_ADDRESS, h));
                    if let Some(p) = p.or(r.map(|r| r.port())) {
                        attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(p)));
                    }
                }
                (None, Some(r)) => {
                    attrs.push(Attribute::str(
                        sc::SERVER_ADDRESS,
                        ex.conn.remote_ip().cloned().unwrap_or_default(),
                    ));
                    attrs.push(Attribute::int(sc::SERVER_PORT, i64::from(r.port())));
                }
                (None, None) => {}
            }
            (
                SpanKind::Client,
                !status_unknown && h2.grpc_status.is_none_or(grpc::client_error),
            )
        }
    };
    if let Some(r) = ex.conn.remote {
        attrs.push(Attribute::str(
            sc::NETWORK_PEER_ADDRESS,
            ex.conn.remote_ip().cloned().unwrap_or_default(),
        ));
        attrs.push(Attribute::int(sc::NETWORK_PEER_PORT, i64::from(r.port())));
    }
    attrs.push(Attribute::int(sc::THREAD_ID, i64::from(ex.tid)));
    if is_error {
        // A status the call ended with; without one, why there was none.
        let error_type = match h2.grpc_status {
            Some(code) => grpc::status_name(code).map_or_else(|| code.to_string(), str::to_string),
            None => h2.ended_by().unwrap_or("_OTHER").to_string(),
        };
        attrs.push(Attribute::str(sc::ERROR_TYPE, error_type));
    }
    let name = match call {
        Some((service, method)) => format!("{service}/{method}"),
        None => "grpc".to_string(),
    };
    finish(ex, ctx, clock, kind, name, attrs, is_error)
}

/// `host[:port]` or `[v6]:port` from `:authority`.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim();
    if a.is_empty() {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return Some((
            h.to_string(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        ));
    }
    Some(match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
        _ => (a.to_string(), None),
    })
}
