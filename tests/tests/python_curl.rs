//! curl → python `http.server`, the baseline pair, exported over both OTLP transports, plain
//! and gzip-compressed (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
//!
//! python's `http.server` answers in HTTP/1.0, so curl is told to ask in HTTP/1.0 too: both ends of
//! the connection then agree that `network.protocol.version` is "1.0".

use anyhow::{Result, ensure};
use tracewire_tests::peers;
use tracewire_tests::{
    AgentGuard, CurlRequests, Export, OtlpProtocol, OtlpReceiver, Selection, TempDir, Window,
    check_exchanges,
};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";
const CURL_OPTIONS: [&str; 3] = ["--http1.0", "--user-agent", USER_AGENT];

fn curl_to_python(protocol: OtlpProtocol, compression: &str) -> Result<()> {
    let dir = TempDir::new("python-curl")?;
    let receiver = OtlpReceiver::start(protocol)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let selection = Selection {
        ports: vec![python.port],
        env: vec![("OTEL_EXPORTER_OTLP_COMPRESSION".into(), compression.into())],
        ..Selection::default()
    };
    let _agent = AgentGuard::start_selecting(Export::Otlp(&receiver), &selection, dir.path())?;
    let window = Window::open();

    let curl = CurlRequests {
        requests: &[("/ok.html", 200), ("/missing", 404)],
        options: &CURL_OPTIONS,
        protocol_version: "1.0",
        user_agent: USER_AGENT,
    };
    let runs = curl.run(&dir, &python)?;
    let exchanges = curl.exchanges(&python, &runs);
    check_exchanges(&receiver, &exchanges, window)?;
    let wanted = if compression == "none" {
        "identity"
    } else {
        compression
    };
    let encodings = receiver.encodings();
    ensure!(
        !encodings.is_empty() && encodings.iter().all(|e| e == wanted),
        "export requests were encoded {encodings:?}, expected all {wanted}"
    );
    Ok(())
}

#[test]
fn curl_to_python_exported_over_otlp_grpc() -> Result<()> {
    curl_to_python(OtlpProtocol::Grpc, "none")
}

#[test]
fn curl_to_python_exported_over_otlp_http_protobuf() -> Result<()> {
    curl_to_python(OtlpProtocol::HttpProtobuf, "none")
}

#[test]
fn curl_to_python_exported_over_otlp_grpc_gzip() -> Result<()> {
    curl_to_python(OtlpProtocol::Grpc, "gzip")
}

#[test]
fn curl_to_python_exported_over_otlp_http_protobuf_gzip() -> Result<()> {
    curl_to_python(OtlpProtocol::HttpProtobuf, "gzip")
}
