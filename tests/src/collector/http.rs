//! OTLP/HTTP with protobuf bodies: `POST /v1/traces`, answered with an empty
//! `ExportTraceServiceResponse` (OTLP spec, "OTLP/HTTP Response"). Anything the spec does not allow
//! a client to send is answered with a 4xx and recorded, so a test's timeout message says why no
//! spans arrived.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Store;
use crate::http1::{self, BodyFraming, Framed, Headers};

const TRACES_PATH: &str = "/v1/traces";
const METRICS_PATH: &str = "/v1/metrics";

pub(super) async fn serve(listener: TcpListener, store: Arc<Store>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&store)));
            }
            Err(error) => store.push_error(format!("OTLP/HTTP accept: {error}")),
        }
    }
}

struct RequestHead {
    method: String,
    path: String,
    headers: Headers,
}

/// Parses a request head from the front of `buf`: `Ok(None)` means more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, RequestHead)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((
            len,
            RequestHead {
                method: request.method.unwrap_or_default().to_string(),
                path: request.path.unwrap_or_default().to_string(),
                headers: http1::owned_headers(request.headers),
            },
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(error) => Err(format!("bad request head: {error}")),
    }
}

async fn serve_connection(mut stream: TcpStream, store: Arc<Store>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut closed = false;
    // One iteration per request: exporters keep the connection alive between batches.
    loop {
        let (head_len, head) = loop {
            match parse_head(&buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if closed => return,
                Ok(None) => closed = read_more(&mut stream, &mut buf).await,
                Err(reason) => {
                    store.push_error(format!("OTLP/HTTP: {reason}"));
                    let _ = respond(&mut stream, 400, "Bad Request", b"").await;
                    return;
                }
            }
        };
        let framing = match BodyFraming::of(&head.headers, true) {
            Ok(framing) => framing,
            Err(reason) => {
                store.push_error(format!("OTLP/HTTP {} {}: {reason}", head.method, head.path));
                let _ = respond(&mut stream, 400, "Bad Request", b"").await;
                return;
            }
        };
        let (body, consumed) = loop {
            match http1::read_body(&buf[head_len..], framing, closed) {
                Framed::Complete { body, consumed } => break (body, consumed),
                Framed::Partial if closed => {
                    store.push_error("OTLP/HTTP: connection closed mid-body".to_string());
                    return;
                }
                Framed::Partial => closed = read_more(&mut stream, &mut buf).await,
                Framed::Invalid(reason) => {
                    store.push_error(format!("OTLP/HTTP: {reason}"));
                    let _ = respond(&mut stream, 400, "Bad Request", b"").await;
                    return;
                }
            }
        };
        buf.drain(..head_len + consumed);

        let delay = store.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, reason, reply) = handle(&head, &body, &store);
        if respond(&mut stream, status, reason, &reply).await.is_err() {
            return;
        }
        let wants_close = http1::header(&head.headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if wants_close || (closed && buf.is_empty()) {
            return;
        }
    }
}

/// Reads into `buf`; returns whether the peer has closed its side.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    matches!(stream.read_buf(buf).await, Ok(0) | Err(_))
}

fn handle(head: &RequestHead, body: &[u8], store: &Store) -> (u16, &'static str, Vec<u8>) {
    let what = format!("OTLP/HTTP {} {}", head.method, head.path);
    if head.path != TRACES_PATH && head.path != METRICS_PATH {
        store.push_error(format!(
            "{what}: expected POST {TRACES_PATH} or {METRICS_PATH}"
        ));
        return (404, "Not Found", Vec::new());
    }
    if head.method != "POST" {
        store.push_error(format!("{what}: expected POST"));
        return (405, "Method Not Allowed", Vec::new());
    }
    let content_type = http1::header(&head.headers, "content-type").unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        store.push_error(format!(
            "{what}: Content-Type {content_type:?}, expected application/x-protobuf"
        ));
        return (415, "Unsupported Media Type", Vec::new());
    }
    let coding = http1::header(&head.headers, "content-encoding")
        .unwrap_or("identity")
        .to_ascii_lowercase();
    let decoded;
    let body = match coding.as_str() {
        "identity" => body,
        "gzip" => {
            let mut out = Vec::new();
            if let Err(error) =
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
            {
                store.push_error(format!("{what}: gzip body does not decode: {error}"));
                return (400, "Bad Request", Vec::new());
            }
            decoded = out;
            &decoded
        }
        other => {
            store.push_error(format!(
                "{what}: Content-Encoding {other:?} is not supported by the test receiver"
            ));
            return (415, "Unsupported Media Type", Vec::new());
        }
    };
    if head.path == METRICS_PATH {
        return match ExportMetricsServiceRequest::decode(body) {
            Ok(request) => {
                store.push_metrics(request);
                let reply = ExportMetricsServiceResponse {
                    partial_success: None,
                };
                (200, "OK", reply.encode_to_vec())
            }
            Err(error) => {
                store.push_error(format!(
                    "{what}: body is not an ExportMetricsServiceRequest: {error}"
                ));
                (400, "Bad Request", Vec::new())
            }
        };
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.push(request, &coding);
            let reply = ExportTraceServiceResponse {
                partial_success: store.partial_success(),
            };
            (200, "OK", reply.encode_to_vec())
        }
        Err(error) => {
            store.push_error(format!(
                "{what}: body is not an ExportTraceServiceRequest: {error}"
            ));
            (400, "Bad Request", Vec::new())
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}
