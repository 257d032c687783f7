//! Golden tests over real captures (fixtures/http2, recorded by a relay between the peers):
//! a grpcio client and server (unary OK and NOT_FOUND, server streaming, 20 concurrent calls
//! on one connection) and curl's h2c request to Node's `http2` server.
use super::*;

const GRPC_CLIENT: &[u8] = include_bytes!("../fixtures/http2/grpcio_client.h2");
const GRPC_SERVER: &[u8] = include_bytes!("../fixtures/http2/grpcio_server.h2");
const CURL_CLIENT: &[u8] = include_bytes!("../fixtures/http2/curl_h2c_client.h2");
const NODE_SERVER: &[u8] = include_bytes!("../fixtures/http2/node_h2c_server.h2");

fn events(mut dir: Http2Direction, data: &[u8], piece: usize) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        dir.feed(chunk, 0, &mut |e| out.push(e));
    }
    out
}

fn headers(events: &[StreamEvent]) -> Vec<(u32, bool, HeaderFields)> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Headers {
                stream,
                end_stream,
                fields,
            } => Some((*stream, *end_stream, (**fields).clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn grpcio_client_requests() {
    let ev = events(Http2Direction::from_start(true), GRPC_CLIENT, usize::MAX);
    let requests = headers(&ev);
    assert_eq!(requests.len(), 23, "{requests:#?}");
    for (stream, end_stream, f) in &requests {
        assert!(f.complete, "stream {stream}: {f:?}");
        assert!(!end_stream, "gRPC requests end with their DATA");
        assert_eq!(f.method.as_deref(), Some("POST"));
        assert_eq!(f.scheme.as_deref(), Some("http"));
        assert!(f.is_grpc(), "{f:?}");
        assert_eq!(f.authority.as_deref(), Some("127.0.0.1:50052"));
        assert!(
            f.user_agent
                .as_deref()
                .is_some_and(|u| u.starts_with("grpc-python/"))
        );
    }
    let paths: Vec<&str> = requests
        .iter()
        .filter_map(|(_, _, f)| f.path.as_deref())
        .collect();
    assert_eq!(paths[0], "/tracewire.test.Echo/Unary");
    assert_eq!(paths[2], "/tracewire.test.Echo/Stream");
    assert!(
        paths[3..]
            .iter()
            .all(|p| *p == "/tracewire.test.Echo/Unary")
    );
    let streams: Vec<u32> = requests.iter().map(|r| r.0).collect();
    assert_eq!(streams, (0..23).map(|i| 1 + 2 * i).collect::<Vec<_>>());
    let ends = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                StreamEvent::Data {
                    end_stream: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ends, 23);
}

#[test]
fn grpcio_server_responses_and_trailers() {
    let ev = events(Http2Direction::from_start(false), GRPC_SERVER, usize::MAX);
    let blocks = headers(&ev);
    // Per call: response headers, then trailers with END_STREAM.
    let trailers: Vec<(u32, u32)> = blocks
        .iter()
        .filter(|(_, end, _)| *end)
        .map(|(s, _, f)| (*s, f.grpc_status.expect("grpc-status in trailers")))
        .collect();
    assert_eq!(trailers.len(), 23, "{blocks:#?}");
    assert!(blocks.iter().all(|(_, _, f)| f.complete));
    assert_eq!(trailers[0], (1, 0));
    assert_eq!(trailers[1], (3, 5), "NOT_FOUND");
    assert!(trailers[2..].iter().all(|(_, code)| *code == 0));
    let statuses = blocks
        .iter()
        .filter(|(_, _, f)| f.status == Some(200))
        .count();
    // NOT_FOUND may come trailers-only (one block with :status and grpc-status).
    assert!((22..=23).contains(&statuses), "{statuses}");
}

#[test]
fn split_anywhere_gives_the_same_events() {
    for (data, preface) in [
        (GRPC_CLIENT, true),
        (GRPC_SERVER, false),
        (CURL_CLIENT, true),
        (NODE_SERVER, false),
    ] {
        let whole = events(Http2Direction::from_start(preface), data, usize::MAX);
        for piece in [1, 2, 7, 9, 10, 64, 100] {
            let pieces = events(Http2Direction::from_start(preface), data, piece);
            assert_eq!(whole, pieces, "piece {piece}");
        }
    }
}

#[test]
fn curl_h2c_request_keeps_only_known_fields() {
    let ev = events(Http2Direction::from_start(true), CURL_CLIENT, usize::MAX);
    let requests = headers(&ev);
    assert_eq!(requests.len(), 1);
    let (stream, end_stream, f) = &requests[0];
    assert_eq!((*stream, *end_stream), (1, true));
    assert_eq!(f.method.as_deref(), Some("GET"));
    assert_eq!(f.path.as_deref(), Some("/a/b?secret=1"));
    assert_eq!(f.authority.as_deref(), Some("127.0.0.1:50062"));
    assert_eq!(
        f.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert!(!f.is_grpc());
    assert!(!format!("{ev:?}").contains("hunter2"));
    let resp = headers(&events(
        Http2Direction::from_start(false),
        NODE_SERVER,
        usize::MAX,
    ));
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].2.status, Some(200));
    let data_end = events(Http2Direction::from_start(false), NODE_SERVER, 5)
        .iter()
        .any(|e| {
            matches!(
                e,
                StreamEvent::Data {
                    stream: 1,
                    end_stream: true
                }
            )
        });
    assert!(data_end);
}

#[test]
fn joined_midway_never_invents_fields() {
    // Skip the preface and the first calls: join at a later write, as an agent started while
    // the connection was open would. Find a frame boundary by walking the frames.
    let mut at = frame::PREFACE.len();
    let mut boundaries = Vec::new();
    while at + 9 <= GRPC_CLIENT.len() {
        boundaries.push(at);
        let len =
            u32::from_be_bytes([0, GRPC_CLIENT[at], GRPC_CLIENT[at + 1], GRPC_CLIENT[at + 2]]);
        at += 9 + len as usize;
    }
    let whole = headers(&events(
        Http2Direction::from_start(true),
        GRPC_CLIENT,
        usize::MAX,
    ));
    let mut methods_known = 0;
    for &start in &boundaries[boundaries.len() / 2..] {
        let ev = events(Http2Direction::joined(), &GRPC_CLIENT[start..], usize::MAX);
        for (stream, _, f) in headers(&ev) {
            methods_known += usize::from(f.method.is_some());
            let truth = &whole.iter().find(|w| w.0 == stream).expect("stream").2;
            for (got, want) in [
                (&f.method, &truth.method),
                (&f.path, &truth.path),
                (&f.authority, &truth.authority),
                (&f.content_type, &truth.content_type),
            ] {
                if got.is_some() {
                    assert_eq!(got, want, "stream {stream} joined at {start}");
                }
            }
        }
    }
    // `:method POST` is in the static table: known even without the dynamic one.
    assert!(methods_known > 10, "{methods_known}");
}

#[test]
fn gaps_lose_framing_then_resync() {
    let mut dir = Http2Direction::from_start(false);
    let mut out = Vec::new();
    // A gap in the middle of a frame header: framing is lost.
    dir.feed(&GRPC_SERVER[..4], 10, &mut |e| out.push(e));
    assert_eq!(out, [StreamEvent::Lost]);
    // Garbage does not resync; a chunk of whole frames does.
    dir.feed(b"\x16\x03\x01 not frames", 0, &mut |e| out.push(e));
    assert_eq!(out.len(), 1);
    let settings_ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
    dir.feed(&settings_ack, 0, &mut |e| out.push(e));
    assert!(!dir.frames.is_lost());
    // A gap inside a DATA payload costs nothing.
    let mut data = vec![0, 0, 100, 0, 1, 0, 0, 0, 1];
    data.extend([0u8; 40]);
    dir.feed(&data, 60, &mut |e| out.push(e));
    assert_eq!(
        out.last(),
        Some(&StreamEvent::Data {
            stream: 1,
            end_stream: true
        })
    );
    assert!(!dir.frames.is_lost());
}

#[test]
fn hostile_frames() {
    // A header block larger than the bound, in CONTINUATIONs: counted as lost, not buffered.
    let mut dir = Http2Direction::from_start(false);
    let mut out = Vec::new();
    let mut bytes = vec![0, 0x40, 0, 1, 0, 0, 0, 0, 1];
    bytes.extend(vec![0x82u8; 0x4000]);
    for _ in 0..5 {
        bytes.extend([0, 0x40, 0, 9, 0, 0, 0, 0, 1]);
        bytes.extend(vec![0x82u8; 0x4000]);
    }
    bytes.extend([0, 0, 1, 9, FLAG_END_HEADERS, 0, 0, 0, 1, 0x82]);
    dir.feed(&bytes, 0, &mut |e| out.push(e));
    assert_eq!(
        out,
        [StreamEvent::HeadersLost {
            stream: 1,
            end_stream: false
        }]
    );
    assert!(dir.buffered() <= MAX_HEADER_BLOCK + 4096);
    // Padding longer than the payload.
    let mut out = Vec::new();
    let mut dir = Http2Direction::from_start(false);
    dir.feed(
        &[
            0,
            0,
            2,
            1,
            FLAG_END_HEADERS | FLAG_PADDED,
            0,
            0,
            0,
            1,
            9,
            0x82,
        ],
        0,
        &mut |e| out.push(e),
    );
    assert_eq!(
        out,
        [StreamEvent::HeadersLost {
            stream: 1,
            end_stream: false
        }]
    );
    // A HEADERS interrupted by another stream's frame.
    let mut out = Vec::new();
    let mut dir = Http2Direction::from_start(false);
    dir.feed(
        &[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82, 0, 0, 0, 0, 1, 0, 0, 0, 3],
        0,
        &mut |e| out.push(e),
    );
    assert_eq!(
        out[0],
        StreamEvent::HeadersLost {
            stream: 1,
            end_stream: false
        }
    );
}

#[test]
fn detection() {
    assert!(starts_with_preface(GRPC_CLIENT));
    assert!(starts_with_preface(&GRPC_CLIENT[..14]));
    assert!(!starts_with_preface(b"PRI * HTTP/1.1\r\n"));
    assert!(!starts_with_preface(b"GET / HTTP/1.1\r\n"));
    assert!(starts_with_frame(GRPC_SERVER));
    assert!(!starts_with_frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(!starts_with_frame(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    ));
    assert!(!starts_with_frame(b""));
}
