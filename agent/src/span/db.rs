//! Database client spans from database exchanges, per the stable database semantic conventions:
//! <https://opentelemetry.io/docs/specs/semconv/database/database-spans/>.
//!
//! The parsers have already stripped literal values from the query text; nothing here looks at
//! the wire bytes again.
use super::{Attribute, Clock, Span, SpanKind, context::SpanContext, semconv as sc};
use crate::reassembly::{DbExchange, Exchange};

/// The conventions' limit on a generated `db.query.summary`.
const MAX_SUMMARY: usize = 255;

/// `tracewire.incomplete` values: what the span lacks, so that an absent attribute is not read
/// as a known absence.
const TEXT_TRUNCATED: &str = "query_text_truncated";
const NO_REPLY: &str = "no_reply";

/// `{operation} {collection}`, or the operation alone when the statement is not about exactly
/// one collection (Redis commands, `SELECT 1`, joins). None without an operation: a summary
/// made of a table name alone would not say what was done to it.
fn summary(operation: Option<&str>, collection: Option<&str>) -> Option<String> {
    let op = operation?;
    match collection {
        // The conventions cut a summary at 255 characters but never inside a name: an
        // overlong target is left out rather than cut.
        Some(c) if op.len() + 1 + c.len() <= MAX_SUMMARY => Some(format!("{op} {c}")),
        _ if op.len() <= MAX_SUMMARY => Some(op.to_string()),
        _ => None,
    }
}

/// The span name rule of the conventions: the summary; else `{operation} {target}`; else the
/// target; else the system. The target is the collection, else the namespace, else
/// `server.address:server.port`.
fn span_name(
    summary: Option<&str>,
    operation: Option<&str>,
    target: Option<String>,
    system: &str,
) -> String {
    match (summary, operation, target) {
        (Some(s), _, _) => s.to_string(),
        (None, Some(op), Some(t)) => format!("{op} {t}"),
        (None, Some(op), None) => op.to_string(),
        (None, None, Some(t)) => t,
        (None, None, None) => system.to_string(),
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Builds the CLIENT span of one query.
pub fn build(ex: &Exchange, db: &DbExchange, ctx: SpanContext, clock: &Clock) -> Span {
    let query = &db.query;
    let system = db.system.as_str();
    let namespace = non_empty(&db.namespace);
    let operation = non_empty(&query.operation);
    let collection = non_empty(&query.collection);
    let summary = summary(operation, collection);

    let mut attrs = Vec::with_capacity(16);
    attrs.push(Attribute::str(sc::DB_SYSTEM_NAME, system));
    if let Some(ns) = namespace {
        attrs.push(Attribute::str(sc::DB_NAMESPACE, ns));
    }
    if let Some(op) = operation {
        attrs.push(Attribute::str(sc::DB_OPERATION_NAME, op));
    }
    if let Some(c) = collection {
        attrs.push(Attribute::str(sc::DB_COLLECTION_NAME, c));
    }
    if let Some(s) = &summary {
        attrs.push(Attribute::str(sc::DB_QUERY_SUMMARY, s.clone()));
    }
    if let Some(text) = non_empty(&query.text) {
        attrs.push(Attribute::str(sc::DB_QUERY_TEXT, text));
    }
    // The conventions count only two or more statements as a batch.
    if query.batch_size > 1 {
        attrs.push(Attribute::int(
            sc::DB_OPERATION_BATCH_SIZE,
            i64::from(query.batch_size),
        ));
    }
    let error_code = db.reply.as_ref().and_then(|r| r.error_code.as_deref());
    if let Some(code) = error_code {
        attrs.push(Attribute::str(sc::DB_RESPONSE_STATUS_CODE, code));
        // The conventions ask for `error.type` to match the database's own code.
        attrs.push(Attribute::str(sc::ERROR_TYPE, code));
    }
    if let Some(rows) = db.reply.as_ref().and_then(|r| r.rows) {
        attrs.push(Attribute::int(
            sc::DB_RESPONSE_RETURNED_ROWS,
            i64::try_from(rows).unwrap_or(i64::MAX),
        ));
    }
    // The agent sees the socket, not the host name the application connected to: the peer's
    // address is the best `server.address` it has.
    let remote = ex.conn.remote;
    if let Some(r) = remote {
        let ip = r.ip().to_string();
        let port = i64::from(r.port());
        attrs.push(Attribute::str(sc::SERVER_ADDRESS, ip.clone()));
        attrs.push(Attribute::int(sc::SERVER_PORT, port));
        attrs.push(Attribute::str(sc::NETWORK_PEER_ADDRESS, ip));
        attrs.push(Attribute::int(sc::NETWORK_PEER_PORT, port));
    }
    attrs.push(Attribute::int(sc::THREAD_ID, i64::from(ex.tid)));
    // A missing reply is not known to be a failure (the application may have closed the
    // connection on purpose), so it only marks the span incomplete and leaves the status unset.
    // Both reasons can hold at once; one attribute carries them comma-separated.
    let incomplete = match (query.truncated, db.reply.is_none()) {
        (true, true) => Some(format!("{TEXT_TRUNCATED},{NO_REPLY}")),
        (true, false) => Some(TEXT_TRUNCATED.to_string()),
        (false, true) => Some(NO_REPLY.to_string()),
        (false, false) => None,
    };
    if let Some(why) = incomplete {
        attrs.push(Attribute::str(sc::TRACEWIRE_INCOMPLETE, why));
    }

    // SocketAddr's Display brackets IPv6 addresses, so the port stays readable.
    let target = collection
        .or(namespace)
        .map(str::to_string)
        .or_else(|| remote.map(|r| r.to_string()));
    let name = span_name(summary.as_deref(), operation, target, system);
    super::http::finish(
        ex,
        ctx,
        clock,
        SpanKind::Client,
        name,
        attrs,
        error_code.is_some(),
    )
}

#[cfg(test)]
mod tests;
