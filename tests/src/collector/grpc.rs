//! OTLP/gRPC: tonic's generated `TraceService`, storing each export request as it arrives.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::Store;

struct Collector {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        let delay = self.store.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.store.push(request.into_inner(), &encoding);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: self.store.partial_success(),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.store.push_metrics(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.store.push_logs(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// PEM contents for a TLS receiver.
pub(super) struct ServerTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: Vec<u8>,
}

pub(super) async fn serve(listener: TcpListener, store: Arc<Store>, tls: Option<ServerTls>) {
    let service = TraceServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(tls.cert, tls.key))
            .client_ca_root(Certificate::from_pem(tls.client_ca));
        builder = match builder.tls_config(config) {
            Ok(b) => b,
            Err(error) => {
                store.push_error(format!("gRPC TLS set-up: {error}"));
                return;
            }
        };
    }
    if let Err(error) = builder
        .add_service(service)
        .add_service(metrics)
        .add_service(logs)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
    {
        store.push_error(format!("gRPC server stopped: {error}"));
    }
}
