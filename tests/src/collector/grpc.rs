//! OTLP/gRPC: tonic's generated `TraceService`, storing each export request as it arrives.

use std::sync::Arc;

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
        self.store.push(request.into_inner(), &encoding);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub(super) async fn serve(listener: TcpListener, store: Arc<Store>) {
    let service = TraceServiceServer::new(Collector {
        store: Arc::clone(&store),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    if let Err(error) = Server::builder()
        .add_service(service)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
    {
        store.push_error(format!("gRPC server stopped: {error}"));
    }
}
