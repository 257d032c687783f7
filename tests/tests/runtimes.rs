//! Each language runtime talking to itself: its own HTTP server, called by its own HTTP client
//! (one client process, requests in turn), HTTP/1.1 end to end.

use anyhow::{Result, ensure};
use tracewire_tests::peers::Runtime;
use tracewire_tests::{
    AgentGuard, Exchange, Export, OtlpProtocol, OtlpReceiver, TempDir, Window, check_exchanges,
};

const ROUTES: [(&str, u16); 3] = [("/ok", 200), ("/missing", 404), ("/fail", 500)];

fn client_to_own_server(runtime: Runtime) -> Result<()> {
    let name = runtime.name();
    let dir = TempDir::new(name)?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let server = runtime.start_server(&dir, &format!("tw-{name}-server"))?;
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &[server.port], dir.path())?;
    let window = Window::open();

    let user_agent = format!("tracewire-e2e-{name}/1.0");
    let urls: Vec<String> = ROUTES.iter().map(|(path, _)| server.url(path)).collect();
    let client = runtime.run_client(&dir, &format!("tw-{name}-client"), &user_agent, &urls)?;
    for ((_, status), (url, line)) in ROUTES.iter().zip(urls.iter().zip(client.stdout.lines())) {
        ensure!(
            line == format!("{status} {url}"),
            "{name} client printed {line:?} for {url}"
        );
    }

    let exchanges: Vec<Exchange<'_>> = ROUTES
        .iter()
        .map(|&(path, status)| Exchange {
            method: "GET",
            path,
            status,
            server: &server,
            client: &client.process,
            client_port: None,
            protocol_version: "1.1",
            user_agent: &user_agent,
        })
        .collect();
    check_exchanges(&receiver, &exchanges, window)
}

#[test]
fn node_http_client_to_node_http_server() -> Result<()> {
    client_to_own_server(Runtime::Node)
}

#[test]
fn java_http_client_to_java_http_server() -> Result<()> {
    client_to_own_server(Runtime::Java)
}

#[test]
fn go_net_http_client_to_go_net_http_server() -> Result<()> {
    client_to_own_server(Runtime::Go)
}
