//! One HTTP request seen from both ends: the SERVER span of the process that served it and the
//! CLIENT span of the process that made it must each be exported once, must each match the
//! semantic conventions, and must agree with each other.

use anyhow::{Context, Result, ensure};

use crate::collector::{OtlpReceiver, SpanQuery};
use crate::peers::{self, CurlRun, PeerServer, ProcessIdentity};
use crate::semconv::{self, ClientSpanExpectation, ServerSpanExpectation, Window};
use crate::tempdir::TempDir;

/// A request a test made, and what it knows about it from the client's side.
#[derive(Clone, Debug)]
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub server: &'a PeerServer,
    pub client: &'a ProcessIdentity,
    /// The client's local port, when the client reports it (curl's `%{local_port}`).
    pub client_port: Option<u16>,
    pub protocol_version: &'a str,
    pub user_agent: &'a str,
}

impl Exchange<'_> {
    fn server_query(&self) -> SpanQuery {
        SpanQuery::server(self.server.serving.pid, self.path)
    }

    fn client_query(&self) -> SpanQuery {
        SpanQuery::client(self.client.pid, self.path)
    }
}

/// Waits for the two spans of every exchange and checks them all.
pub fn check_exchanges(
    receiver: &OtlpReceiver,
    exchanges: &[Exchange<'_>],
    window: Window,
) -> Result<()> {
    let queries: Vec<SpanQuery> = exchanges
        .iter()
        .flat_map(|e| [e.server_query(), e.client_query()])
        .collect();
    let spans = receiver.wait_for_each(&queries)?;
    for (exchange, pair) in exchanges.iter().zip(spans.chunks_exact(2)) {
        let [server_span, client_span] = pair else {
            unreachable!("chunks_exact(2) yields pairs");
        };
        let what = format!(
            "{} {} ({})",
            exchange.method, exchange.path, exchange.status
        );
        semconv::check_server_span(
            server_span,
            &ServerSpanExpectation {
                method: exchange.method,
                path: exchange.path,
                status: exchange.status,
                server_port: exchange.server.port,
                client_port: exchange.client_port,
                protocol_version: exchange.protocol_version,
                user_agent: exchange.user_agent,
                process: &exchange.server.serving,
            },
            window,
        )
        .with_context(|| format!("SERVER span of {what}"))?;
        semconv::check_client_span(
            client_span,
            &ClientSpanExpectation {
                method: exchange.method,
                url_full: &exchange.server.url(exchange.path),
                status: exchange.status,
                server_port: exchange.server.port,
                process: exchange.client,
            },
            window,
        )
        .with_context(|| format!("CLIENT span of {what}"))?;
        // Both ends name the same server endpoint, from opposite sides of one connection.
        ensure!(
            client_span.attr_int("server.port") == server_span.attr_int("server.port")
                && client_span.attr_str("server.address") == server_span.attr_str("server.address"),
            "{what}: CLIENT span's server endpoint differs from the SERVER span's\n  {client_span}\n  {server_span}"
        );
        ensure!(
            client_span.attr_str("http.request.method")
                == server_span.attr_str("http.request.method")
                && client_span.attr_int("http.response.status_code")
                    == server_span.attr_int("http.response.status_code"),
            "{what}: CLIENT and SERVER spans disagree on method or status\n  {client_span}\n  {server_span}"
        );
    }
    ensure!(
        receiver.errors().is_empty(),
        "the receiver refused requests:\n{}",
        receiver.report()
    );
    Ok(())
}

/// What a test asks of a server with curl: `(path, status)` pairs, one curl run each, with the
/// options that choose the protocol and the user agent.
pub struct CurlRequests<'a> {
    pub requests: &'a [(&'a str, u16)],
    pub options: &'a [&'a str],
    /// `network.protocol.version` both ends must report.
    pub protocol_version: &'a str,
    pub user_agent: &'a str,
}

impl<'a> CurlRequests<'a> {
    /// Runs one curl per request against `server`; fails when a status is not the expected one.
    pub fn run(&self, dir: &TempDir, server: &PeerServer) -> Result<Vec<CurlRun>> {
        let mut runs = Vec::with_capacity(self.requests.len());
        for &(path, status) in self.requests {
            let run = peers::curl(dir, &server.url(path), self.options)?;
            ensure!(
                run.status == status,
                "curl GET {path}: {} instead of {status}",
                run.status
            );
            runs.push(run);
        }
        Ok(runs)
    }

    /// The exchanges `runs` (from [`CurlRequests::run`]) made with `server`.
    pub fn exchanges(&self, server: &'a PeerServer, runs: &'a [CurlRun]) -> Vec<Exchange<'a>> {
        self.requests
            .iter()
            .zip(runs)
            .map(|(&(path, status), run)| Exchange {
                method: "GET",
                path,
                status,
                server,
                client: &run.process,
                client_port: Some(run.local_port),
                protocol_version: self.protocol_version,
                user_agent: self.user_agent,
            })
            .collect()
    }
}
