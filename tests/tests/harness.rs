//! The harness checked on its own, with no agent: every peer answers its routes, and both OTLP
//! receivers store what a real OTLP client sends. When an end-to-end test fails and these pass,
//! the agent is the one to look at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracewire_tests::peers::{self, PeerServer, Runtime};
use tracewire_tests::{OtlpProtocol, OtlpReceiver, SpanQuery, TempDir};

/// Every route of `server` through curl, which must report the expected status.
fn answers(dir: &TempDir, server: &PeerServer, routes: &[(&str, u16)]) -> Result<()> {
    for &(path, status) in routes {
        let run = peers::curl(dir, &server.url(path), &[])?;
        ensure!(
            run.status == status,
            "GET {path}: {} instead of {status}",
            run.status
        );
        ensure!(
            run.local_port != server.port && run.local_port != 0,
            "curl reported local port {}",
            run.local_port
        );
    }
    Ok(())
}

#[test]
fn python_http_server_answers_its_routes() -> Result<()> {
    let dir = TempDir::new("harness-python")?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    ensure!(
        python.serving.executable_name.starts_with("python3"),
        "{:?}",
        python.serving
    );
    answers(&dir, &python, &[("/ok.html", 200), ("/missing", 404)])
}

#[test]
fn nginx_answers_its_routes_from_its_worker() -> Result<()> {
    let dir = TempDir::new("harness-nginx")?;
    let nginx = peers::nginx_server(&dir)?;
    ensure!(
        nginx.serving.pid != nginx.guard.pid(),
        "no separate worker: {:?}",
        nginx.serving
    );
    ensure!(
        nginx.serving.executable_name == "nginx",
        "{:?}",
        nginx.serving
    );
    answers(
        &dir,
        &nginx,
        &[("/ok", 200), ("/missing", 404), ("/fail", 500)],
    )
}

fn runtime_answers(runtime: Runtime) -> Result<()> {
    let dir = TempDir::new(&format!("harness-{}", runtime.name()))?;
    let server = runtime.start_server(&dir, "tw-server")?;
    let routes = [("/ok", 200), ("/missing", 404), ("/fail", 500)];
    answers(&dir, &server, &routes)?;
    let urls: Vec<String> = routes.iter().map(|(path, _)| server.url(path)).collect();
    let client = runtime.run_client(&dir, "tw-client", "tracewire-harness/1.0", &urls)?;
    let expected: Vec<String> = routes
        .iter()
        .zip(&urls)
        .map(|((_, s), u)| format!("{s} {u}"))
        .collect();
    ensure!(
        client
            .stdout
            .lines()
            .eq(expected.iter().map(String::as_str)),
        "{} client printed {:?}",
        runtime.name(),
        client.stdout
    );
    Ok(())
}

#[test]
fn node_peer_answers_its_routes() -> Result<()> {
    runtime_answers(Runtime::Node)
}

#[test]
fn java_peer_answers_its_routes() -> Result<()> {
    runtime_answers(Runtime::Java)
}

#[test]
fn go_peer_answers_its_routes() -> Result<()> {
    runtime_answers(Runtime::Go)
}

/// One SERVER span from pid 4242 for `/probe`, as an exporter would send it.
fn sample_request() -> ExportTraceServiceRequest {
    let string = |key: &str, value: &str| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    };
    let int = |key: &str, value: i64| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "probe"), int("process.pid", 4242)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "GET".to_string(),
                    kind: SpanKind::Server as i32,
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    attributes: vec![
                        string("url.path", "/probe"),
                        int("http.response.status_code", 200),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn grpc_receiver_stores_what_a_tonic_client_exports() -> Result<()> {
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(receiver.endpoint()).await?;
        client.export(sample_request()).await?;
        anyhow::Ok(())
    })?;
    let span = receiver.wait_for(&SpanQuery::server(4242, "/probe"))?;
    ensure!(span.resource_str("service.name") == Some("probe"), "{span}");
    ensure!(
        span.attr_int("http.response.status_code") == Some(200),
        "{span}"
    );
    Ok(())
}

/// POSTs `body` to the receiver's `/v1/traces` over a fresh connection; returns the status line
/// and whatever followed.
fn post_traces(
    receiver: &OtlpReceiver,
    content_type: &str,
    body: &[u8],
    chunked: bool,
) -> Result<String> {
    let addr = receiver
        .endpoint()
        .trim_start_matches("http://")
        .to_string();
    let mut stream = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: close\r\n\r\n"
    )?;
    if chunked {
        let (first, second) = body.split_at(body.len() / 2);
        for chunk in [first, second] {
            write!(stream, "{:x}\r\n", chunk.len())?;
            stream.write_all(chunk)?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")?;
    } else {
        stream.write_all(body)?;
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn http_receiver_stores_protobuf_posts_and_refuses_other_media() -> Result<()> {
    let receiver = OtlpReceiver::start(OtlpProtocol::HttpProtobuf)?;
    let body = sample_request().encode_to_vec();
    for chunked in [false, true] {
        let reply = post_traces(&receiver, "application/x-protobuf", &body, chunked)?;
        ensure!(
            reply.starts_with("HTTP/1.1 200 "),
            "chunked={chunked}: {reply:?}"
        );
    }
    ensure!(receiver.spans().len() == 2, "{}", receiver.report());
    ensure!(receiver.errors().is_empty(), "{}", receiver.report());

    let reply = post_traces(&receiver, "application/json", b"{}", false)?;
    ensure!(reply.starts_with("HTTP/1.1 415 "), "{reply:?}");
    ensure!(receiver.errors().len() == 1, "{}", receiver.report());
    Ok(())
}
