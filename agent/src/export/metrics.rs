//! `--metrics-addr`: `/metrics` (Prometheus text) and `/ready` (200 once every probe is
//! attached), served with hyper.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use super::red::Red;
use crate::telemetry::TELEMETRY;

/// The RED histograms, when they are on, rendered after the agent's own metrics.
pub type SharedRed = Option<Arc<Mutex<Red>>>;

async fn handle(
    req: Request<hyper::body::Incoming>,
    red: SharedRed,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/metrics" => {
            let mut text = TELEMETRY.render_prometheus();
            if let Some(red) = &red {
                red.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .render_prometheus(&mut text);
            }
            (StatusCode::OK, text)
        }
        "/ready" if TELEMETRY.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready\n".into()),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()),
        _ => (StatusCode::NOT_FOUND, "try /metrics or /ready\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(resp)
}

/// Binds the address (so a bad one fails at start) and returns the serving future.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, red: SharedRed, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let red = red.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, red.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
