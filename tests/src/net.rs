//! Loopback plumbing: free ports, waiting for a peer to listen, and a blocking HTTP GET for the
//! agent's own endpoints. Every address here is 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::http1::{self, BodyFraming, Framed};
use crate::process::ChildGuard;

/// A port the kernel just handed out on 127.0.0.1. The listener is closed before returning, so a
/// peer can bind it; the kernel does not hand the same ephemeral port out again right away.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 for a free port")?;
    Ok(listener.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Waits until `127.0.0.1:port` accepts connections, failing early (with the peer's output) if the
/// process that should listen there exits.
pub fn wait_for_port(port: u16, owner: &mut ChildGuard, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = owner.try_exit_status()? {
            bail!(
                "{} exited ({status}) before listening on 127.0.0.1:{port}\n{}",
                owner.name(),
                owner.logs()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not listen on 127.0.0.1:{port} within {timeout:?}\n{}",
                owner.name(),
                owner.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reply from [`http_get`].
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `addr` over a fresh connection, reading the reply whatever its framing.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tracewire-tests\r\nConnection: close\r\n\r\n"
    )?;
    let mut wire = Vec::new();
    stream
        .read_to_end(&mut wire)
        .with_context(|| format!("reading the reply to GET http://{addr}{path}"))?;

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&wire) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => bail!("GET http://{addr}{path}: truncated reply head"),
        Err(error) => bail!("GET http://{addr}{path}: bad reply head: {error}"),
    };
    let status = response.code.context("reply without a status code")?;
    let headers = http1::owned_headers(response.headers);
    let framing = BodyFraming::of(&headers, false).map_err(anyhow::Error::msg)?;
    match http1::read_body(&wire[head_len..], framing, true) {
        Framed::Complete { body, .. } => Ok(HttpReply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
        Framed::Partial => bail!("GET http://{addr}{path}: connection closed mid-body"),
        Framed::Invalid(reason) => bail!("GET http://{addr}{path}: {reason}"),
    }
}
