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
use tracewire_tests::peers::{self, PeerServer, ProcessIdentity, Runtime};
use tracewire_tests::semconv::{self, Window};
use tracewire_tests::{Exchange, OtlpProtocol, OtlpReceiver, SpanQuery, TempDir, check_exchanges};

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

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// One SERVER span from pid 4242 for `/probe`, as an exporter would send it.
fn sample_request() -> ExportTraceServiceRequest {
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
    export_grpc(&receiver, sample_request())?;
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

fn export_grpc(receiver: &OtlpReceiver, request: ExportTraceServiceRequest) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(receiver.endpoint()).await?;
        client.export(request).await?;
        anyhow::Ok(())
    })
}

/// The SERVER and CLIENT spans the agent should export for `GET /missing` (404) from curl on
/// `client_port` to `server`, with `tamper` applied to the server span's attributes.
fn exchange_spans(
    server: &PeerServer,
    client: &ProcessIdentity,
    client_port: u16,
    tamper: impl Fn(&mut Span),
) -> Result<ExportTraceServiceRequest> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let start = u64::try_from(now.as_nanos())? - 5_000_000;
    let resource = |process: &ProcessIdentity| -> Result<Resource> {
        Ok(Resource {
            attributes: vec![
                string("service.name", &process.service_name),
                int("process.pid", i64::from(process.pid)),
                string("process.executable.name", &process.executable_name),
                string("host.name", &semconv::host_name()?),
                string("telemetry.sdk.name", "tracewire"),
            ],
            ..Default::default()
        })
    };
    let span = |kind: SpanKind, id: u8, attributes: Vec<KeyValue>, error: bool| Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: "GET".to_string(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes,
        status: error.then(|| opentelemetry_proto::tonic::trace::v1::Status {
            code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let port = i64::from(server.port);
    let mut server_span = span(
        SpanKind::Server,
        1,
        vec![
            string("http.request.method", "GET"),
            string("url.path", "/missing"),
            string("url.scheme", "http"),
            int("http.response.status_code", 404),
            string("server.address", "127.0.0.1"),
            int("server.port", port),
            string("client.address", "127.0.0.1"),
            int("client.port", i64::from(client_port)),
            string("network.protocol.version", "1.0"),
            string("user_agent.original", "tracewire-harness/1.0"),
        ],
        false,
    );
    tamper(&mut server_span);
    let client_span = span(
        SpanKind::Client,
        2,
        vec![
            string("http.request.method", "GET"),
            string("server.address", "127.0.0.1"),
            int("server.port", port),
            string("url.full", &server.url("/missing")),
            int("http.response.status_code", 404),
        ],
        true,
    );
    let resource_spans = |process: &ProcessIdentity, span: Span| -> Result<ResourceSpans> {
        Ok(ResourceSpans {
            resource: Some(resource(process)?),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    Ok(ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(&server.serving, server_span)?,
            resource_spans(client, client_span)?,
        ],
    })
}

#[test]
fn exchange_checks_accept_conforming_spans_and_name_each_mismatch() -> Result<()> {
    let dir = TempDir::new("harness-exchange")?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let window = Window::open();
    let curl = ProcessIdentity {
        pid: 4343,
        service_name: "curl".to_string(),
        executable_name: "curl".to_string(),
    };
    let exchange = Exchange {
        method: "GET",
        path: "/missing",
        status: 404,
        server: &python,
        client: &curl,
        client_port: Some(50123),
        protocol_version: "1.0",
        user_agent: "tracewire-harness/1.0",
    };

    let conforming = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    export_grpc(&conforming, exchange_spans(&python, &curl, 50123, |_| {})?)?;
    check_exchanges(&conforming, std::slice::from_ref(&exchange), window)?;

    let tampered = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let request = exchange_spans(&python, &curl, 50123, |span| {
        span.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
            ..Default::default()
        });
        span.attributes
            .retain(|kv| kv.key != "server.port" && kv.key != "client.port");
        span.attributes
            .push(string("server.port", &python.port.to_string()));
        span.attributes.push(int("client.port", 50999));
        span.attributes.push(string("url.query", "password=x"));
    })?;
    export_grpc(&tampered, request)?;
    let error = match check_exchanges(&tampered, &[exchange], window) {
        Ok(()) => anyhow::bail!("a tampered SERVER span passed the checks"),
        Err(error) => format!("{error:#}"),
    };
    for expected in [
        "status is Error, expected Unset",
        "server.port is missing or not an int",
        "client.port is 50999, but the client's local port was 50123",
        "url.query is exported",
    ] {
        ensure!(
            error.contains(expected),
            "{expected:?} not reported in:\n{error}"
        );
    }
    Ok(())
}
