//! OTLP/gRPC: tonic's generated `TraceService`, storing each export request as it arrives.

use std::sync::Arc;

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
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
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
            partial_success: None,
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

pub(super) async fn serve(listener: TcpListener, store: Arc<Store>) {
    let service = TraceServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    if let Err(error) = Server::builder()
        .add_service(service)
        .add_service(metrics)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
    {
        store.push_error(format!("gRPC server stopped: {error}"));
    }
}
