//! curl → nginx (a master and one worker), HTTP/1.1 end to end.

use anyhow::{Result, ensure};
use tracewire_tests::peers::{self, CurlRun};
use tracewire_tests::{
    AgentGuard, Exchange, Export, OtlpProtocol, OtlpReceiver, TempDir, Window, check_exchanges,
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

    let requests = [("/ok", 200), ("/missing", 404), ("/fail", 500)];
    let mut runs: Vec<CurlRun> = Vec::new();
    for (path, status) in requests {
        let run = peers::curl(
            &dir,
            &nginx.url(path),
            &["--http1.1", "--user-agent", USER_AGENT],
        )?;
        ensure!(
            run.status == status,
            "curl GET {path}: {} instead of {status}",
            run.status
        );
        runs.push(run);
    }

    let exchanges: Vec<Exchange<'_>> = requests
        .iter()
        .zip(&runs)
        .map(|(&(path, status), run)| Exchange {
            method: "GET",
            path,
            status,
            server: &nginx,
            client: &run.process,
            client_port: Some(run.local_port),
            protocol_version: "1.1",
            user_agent: USER_AGENT,
        })
        .collect();
    check_exchanges(&receiver, &exchanges, window)
}
