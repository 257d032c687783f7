//! curl → nginx (a master and one worker), HTTP/1.1 end to end.

use anyhow::{Result, ensure};
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, CurlRequests, Export, OtlpProtocol, OtlpReceiver, TempDir, Window, check_exchanges,
};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";

#[test]
fn curl_to_nginx_ok_not_found_and_server_error() -> Result<()> {
    let dir = TempDir::new("nginx")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let nginx = peers::nginx_server(&dir)?;
    ensure!(
        nginx.serving.pid != nginx.guard.pid(),
        "expected nginx's worker, not its master, to be the serving process"
    );
    let _agent = AgentGuard::start(Export::Otlp(&receiver), &[nginx.port], dir.path())?;
    let window = Window::open();

    let curl = CurlRequests {
        requests: &[("/ok", 200), ("/missing", 404), ("/fail", 500)],
        options: &["--http1.1", "--user-agent", USER_AGENT],
        protocol_version: "1.1",
        user_agent: USER_AGENT,
    };
    let runs = curl.run(&dir, &nginx)?;
    let exchanges = curl.exchanges(&nginx, &runs);
    check_exchanges(&receiver, &exchanges, window)
}
