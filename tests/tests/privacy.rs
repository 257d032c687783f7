//! What must never leave the host: query strings and header values other than User-Agent. The
//! request carries three secrets; none may appear anywhere in what the agent exported, byte for
//! byte, whatever attribute or field it might hide in.

use anyhow::{Result, ensure};
use prost::Message;
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, Exchange, Export, OtlpProtocol, OtlpReceiver, TempDir, Window, check_exchanges,
};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";
const PASSWORD: &str = "tw-hunter2";
const TOKEN: &str = "tw-secret-token-123";
const COOKIE: &str = "tw-cookie-456";

#[test]
fn query_string_and_credentials_are_never_exported() -> Result<()> {
    let dir = TempDir::new("privacy")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &[python.port], dir.path())?;
    let window = Window::open();

    let authorization = format!("Authorization: Bearer {TOKEN}");
    let cookie = format!("Cookie: session={COOKIE}");
    let login = peers::curl(
        &dir,
        &python.url(&format!("/login?password={PASSWORD}")),
        &[
            "--http1.0",
            "--user-agent",
            USER_AGENT,
            "--header",
            &authorization,
            "--header",
            &cookie,
        ],
    )?;
    ensure!(
        login.status == 404,
        "curl GET /login: {} instead of 404",
        login.status
    );
    // The secret really was on the wire: python logs the request line it received.
    let python_log = python.guard.stderr_text()?;
    ensure!(
        python_log.contains(PASSWORD),
        "python never saw the query string:\n{python_log}"
    );

    // Exact url.path "/login" and url.full "http://127.0.0.1:<port>/login", no url.query.
    let exchange = Exchange {
        method: "GET",
        path: "/login",
        status: 404,
        server: &python,
        client: &login.process,
        client_port: Some(login.local_port),
        protocol_version: "1.0",
        user_agent: USER_AGENT,
    };
    check_exchanges(&receiver, &[exchange], window)?;

    for span in receiver.spans() {
        ensure!(
            span.attr("url.query").is_none(),
            "url.query exported: {span}"
        );
        if let Some(url) = span.attr_str("url.full") {
            ensure!(!url.contains('?'), "url.full keeps a query: {span}");
        }
    }
    let requests = receiver.requests();
    ensure!(!requests.is_empty(), "nothing was exported");
    for request in &requests {
        let bytes = request.encode_to_vec();
        for secret in [PASSWORD, TOKEN, COOKIE] {
            ensure!(
                !contains(&bytes, secret.as_bytes()),
                "secret {secret:?} appears in an exported request:\n{}",
                receiver.report()
            );
        }
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
