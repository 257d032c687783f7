//! The OTLP receiver the agent exports to: gRPC (`grpc.rs`) or HTTP/protobuf (`http.rs`) on
//! 127.0.0.1:0, on a runtime of its own so tests stay plain blocking `#[test]` functions.

mod grpc;
mod http;
mod record;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

pub use record::{SpanQuery, SpanRecord, event_int, event_str, flatten, path_of_url};

/// How long a test waits for a span: agent batches go out every 200 ms in tests, so this is
/// generous even for a JVM's first request.
pub const SPAN_WAIT: Duration = Duration::from_secs(20);

/// How long to keep listening after the expected spans arrived before counting them, so that a
/// duplicate exported in a later batch is seen.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// The two OTLP transports, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn env_value(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Everything received, shared with the server tasks.
#[derive(Default)]
struct Store {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    /// How each request's body was encoded on the wire: "identity" or "gzip".
    encodings: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    /// How long each export waits before it is answered: a slow collector.
    delay: Mutex<Duration>,
    /// Spans each trace export answer claims to have rejected (OTLP partial success).
    reject: Mutex<i64>,
}

impl Store {
    fn push(&self, request: ExportTraceServiceRequest, encoding: &str) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        self.encodings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(encoding.to_string());
    }

    fn push_logs(&self, request: ExportLogsServiceRequest) {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }

    fn push_metrics(&self, request: ExportMetricsServiceRequest) {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }

    /// The partial-success part of a trace export answer.
    fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        let n = *self.reject.lock().unwrap_or_else(PoisonError::into_inner);
        (n > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: n,
            error_message: "test receiver: rejected".to_string(),
        })
    }

    fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push_error(&self, error: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(error);
    }
}

/// A running OTLP receiver; it stops when dropped.
pub struct OtlpReceiver {
    protocol: OtlpProtocol,
    addr: SocketAddr,
    https: bool,
    store: Arc<Store>,
    runtime: Option<Runtime>,
}

impl OtlpReceiver {
    pub fn start(protocol: OtlpProtocol) -> Result<Self> {
        Self::start_on(protocol, 0)
    }

    /// An OTLP/gRPC receiver that speaks TLS with `cert`/`key` and accepts only clients with
    /// a certificate signed by `client_ca` (mutual TLS). Its endpoint is `https://`.
    pub fn start_grpc_tls(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self> {
        let tls = grpc::ServerTls {
            cert: std::fs::read(cert)?,
            key: std::fs::read(key)?,
            client_ca: std::fs::read(client_ca)?,
        };
        Self::start_with(OtlpProtocol::Grpc, 0, Some(tls))
    }

    /// Listens on 127.0.0.1:`port` (0: any free port), e.g. to come back where a stopped
    /// receiver was.
    pub fn start_on(protocol: OtlpProtocol, port: u16) -> Result<Self> {
        Self::start_with(protocol, port, None)
    }

    fn start_with(protocol: OtlpProtocol, port: u16, tls: Option<grpc::ServerTls>) -> Result<Self> {
        let https = tls.is_some();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .context("building the receiver's runtime")?;
        let listener = runtime
            .block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .with_context(|| format!("binding the OTLP receiver on 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::default());
        match protocol {
            OtlpProtocol::Grpc => runtime.spawn(grpc::serve(listener, Arc::clone(&store), tls)),
            OtlpProtocol::HttpProtobuf => runtime.spawn(http::serve(listener, Arc::clone(&store))),
        };
        Ok(Self {
            protocol,
            addr,
            https,
            store,
            runtime: Some(runtime),
        })
    }

    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`: for HTTP the base URL, to which exporters
    /// append `/v1/traces`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.store
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The wire encoding of every request received so far, in order.
    pub fn encodings(&self) -> Vec<String> {
        self.store
            .encodings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every export from now on is answered only after `delay` (a slow collector).
    pub fn set_delay(&self, delay: Duration) {
        *self
            .store
            .delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Every trace export from now on is answered with a partial success that rejected `n`
    /// spans (0: full success).
    pub fn set_rejected_spans(&self, n: i64) {
        *self
            .store
            .reject
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = n;
    }

    /// The OTLP logs export requests received so far (gRPC).
    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.store
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The OTLP metrics export requests received so far.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        flatten(&self.requests())
    }

    /// Requests the receiver refused, and why.
    pub fn errors(&self) -> Vec<String> {
        self.store
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every span received so far and every refused request, one per line, for failure messages.
    pub fn report(&self) -> String {
        let spans = self.spans();
        let mut out = format!("{} span(s) received on {}:\n", spans.len(), self.endpoint());
        for span in &spans {
            out.push_str(&format!("  {span}\n"));
        }
        for error in self.errors() {
            out.push_str(&format!("  refused: {error}\n"));
        }
        out
    }

    /// Polls until a span satisfies `predicate`, for up to [`SPAN_WAIT`].
    pub fn wait_for_span(
        &self,
        what: &str,
        predicate: impl Fn(&SpanRecord) -> bool,
    ) -> Result<SpanRecord> {
        let deadline = Instant::now() + SPAN_WAIT;
        loop {
            if let Some(found) = self.spans().into_iter().find(|s| predicate(s)) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                bail!("no {what} within {SPAN_WAIT:?}\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, query: &SpanQuery) -> Result<SpanRecord> {
        self.wait_for_span(&query.to_string(), |s| query.matches(s))
    }

    /// Waits for a span per query, then for [`SETTLE`], and checks that each request produced
    /// exactly one span. Returns the spans in query order.
    pub fn wait_for_each(&self, queries: &[SpanQuery]) -> Result<Vec<SpanRecord>> {
        for query in queries {
            self.wait_for(query)?;
        }
        std::thread::sleep(SETTLE);
        let spans = self.spans();
        let mut found = Vec::with_capacity(queries.len());
        for query in queries {
            let matching: Vec<&SpanRecord> = spans.iter().filter(|s| query.matches(s)).collect();
            match matching.as_slice() {
                [one] => found.push((*one).clone()),
                many => bail!(
                    "expected exactly one {query}, got {}\n{}",
                    many.len(),
                    self.report()
                ),
            }
        }
        Ok(found)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
