use super::*;
use crate::reassembly::h2::Http2Exchange;
use bytes::Bytes;

const KEY: ConnKey = ConnKey {
    tgid: 1,
    sock: 0xabc,
};

/// An HTTP/1 exchange's request and response.
fn http1(ex: &Exchange) -> (&RequestHead, Option<&ResponseHead>) {
    match &ex.message {
        Message::Http1 { request, response } => (request, response.as_ref()),
        _ => panic!("not HTTP/1"),
    }
}

/// The finished exchanges among the notices.
fn finished(out: &[Notice]) -> Vec<&Exchange> {
    out.iter()
        .filter_map(|n| match n {
            Notice::Finished(ex) => Some(ex),
            _ => None,
        })
        .collect()
}

fn table() -> ConnTable {
    ConnTable::new(Limits::default(), ProcessCache::new(8, false))
}

fn open(t: &mut ConnTable, origin: ConnOrigin) {
    let mut out = Vec::new();
    t.open(
        ConnOpen {
            key: KEY,
            fd: 3,
            origin,
            ts_ns: 1,
            local: "127.0.0.1:8080".parse().expect("addr"),
            remote: "127.0.0.1:40000".parse().expect("addr"),
            comm: "srv".into(),
        },
        &mut out,
    );
    assert!(out.is_empty());
}

fn chunk(direction: Direction, start: u64, end: u64, data: &[u8], total: u32) -> DataChunk {
    DataChunk {
        key: KEY,
        tid: 7,
        direction,
        start_ns: start,
        end_ns: end,
        total_len: total.max(data.len() as u32),
        payload: Bytes::copy_from_slice(data),
        kernel_ctx: None,
        tls: false,
    }
}

#[test]
fn server_exchange_times_and_role() {
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    t.data(
        chunk(
            Direction::Ingress,
            5,
            100,
            b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
            0,
        ),
        &mut out,
    );
    t.data(
        chunk(
            Direction::Egress,
            150,
            160,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",
            0,
        ),
        &mut out,
    );
    assert!(finished(&out).is_empty(), "body not complete yet");
    t.data(chunk(Direction::Egress, 170, 180, b"llo", 0), &mut out);
    assert_eq!(finished(&out).len(), 1);
    let ex = finished(&out)[0];
    assert_eq!(ex.role, Role::Server);
    assert_eq!(http1(ex).0.target, "/x");
    assert_eq!(http1(ex).1.map(|r| r.status), Some(200));
    assert_eq!((ex.start_ns, ex.end_ns), (100, 180));
}

#[test]
fn client_keepalive_pipelined_head_and_gap() {
    let mut t = table();
    open(&mut t, ConnOrigin::Connected);
    let mut out = Vec::new();
    t.data(
        chunk(
            Direction::Egress,
            10,
            11,
            b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n",
            0,
        ),
        &mut out,
    );
    // First response has a 10000-byte body of which 4 bytes were captured, then the HEAD
    // response (Content-Length but no body) arrives in the next read.
    t.data(
        chunk(
            Direction::Ingress,
            20,
            30,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nabcd",
            10000 + b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n".len() as u32,
        ),
        &mut out,
    );
    t.data(
        chunk(
            Direction::Ingress,
            40,
            50,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n",
            0,
        ),
        &mut out,
    );
    let got: Vec<_> = finished(&out)
        .into_iter()
        .map(|e| {
            (
                e.role,
                http1(e).0.target.clone(),
                http1(e).1.map(|r| r.status),
                e.start_ns,
                e.end_ns,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Role::Client, "/a".to_string(), Some(200), 10, 30),
            (Role::Client, "/b".to_string(), Some(404), 10, 50)
        ]
    );
}

#[test]
fn close_ends_until_close_body_and_counts_unanswered() {
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    t.data(
        chunk(Direction::Ingress, 1, 2, b"GET / HTTP/1.0\r\n\r\n", 0),
        &mut out,
    );
    t.data(
        chunk(Direction::Egress, 3, 4, b"HTTP/1.0 200 OK\r\n\r\nbody", 0),
        &mut out,
    );
    t.data(chunk(Direction::Egress, 5, 6, b"more body", 0), &mut out);
    assert!(finished(&out).is_empty());
    t.close(KEY, 3, &mut out);
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(finished(&out)[0].end_ns, 6);
    assert!(t.is_empty());
}

#[test]
fn interim_100_continue_and_non_http() {
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    t.data(
        chunk(
            Direction::Ingress,
            1,
            2,
            b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            0,
        ),
        &mut out,
    );
    t.data(
        chunk(Direction::Egress, 3, 4, b"HTTP/1.1 100 Continue\r\n\r\n", 0),
        &mut out,
    );
    t.data(chunk(Direction::Ingress, 5, 6, b"hi", 0), &mut out);
    t.data(
        chunk(
            Direction::Egress,
            7,
            8,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            0,
        ),
        &mut out,
    );
    assert_eq!(finished(&out).len(), 1);
    assert_eq!(http1(finished(&out)[0]).1.map(|r| r.status), Some(201));

    // A binary protocol is given up on after a few chunks and costs nothing after that.
    let before = TELEMETRY.dropped(Drop::NotHttp);
    let key = ConnKey { tgid: 2, sock: 9 };
    for _ in 0..10 {
        let mut c = chunk(Direction::Ingress, 1, 2, b"\x00\x01binary", 0);
        c.key = key;
        t.data(c, &mut out);
    }
    assert!(TELEMETRY.dropped(Drop::NotHttp) > before);
    assert_eq!(finished(&out).len(), 1);
}

#[test]
fn table_is_bounded() {
    let mut t = ConnTable::new(
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
        ProcessCache::new(8, false),
    );
    let mut out = Vec::new();
    for sock in 0..5 {
        let mut c = chunk(Direction::Ingress, 1, 2, b"GET / HTTP/1.1\r\n\r\n", 0);
        c.key = ConnKey { tgid: 1, sock };
        t.data(c, &mut out);
    }
    assert_eq!(t.len(), 2);
    t.evict_idle(u64::MAX, &mut out);
    assert!(t.is_empty());
}

#[test]
fn notices_start_before_finish_and_abandon_on_close() {
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    t.data(
        chunk(
            Direction::Ingress,
            1,
            2,
            b"GET /a HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            0,
        ),
        &mut out,
    );
    t.data(
        chunk(
            Direction::Egress,
            3,
            4,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            0,
        ),
        &mut out,
    );
    t.close(KEY, 3, &mut out);
    let kinds: Vec<String> = out
        .iter()
        .map(|n| match n {
            Notice::Started(s) => format!("start {} {}", s.id, s.traceparent.is_some()),
            Notice::Finished(ex) => format!("finish {}", ex.id),
            Notice::Abandoned { id, .. } => format!("abandon {id}"),
            Notice::Log(l) => format!("log {}", l.tid),
        })
        .collect();
    assert_eq!(
        kinds,
        ["start 1 true", "start 2 false", "finish 1", "abandon 2"]
    );
}

#[test]
fn a_socket_under_two_descriptors_is_one_connection() {
    // busybox httpd and inetd-style servers: the socket is dup'ed onto fds 0 and 1, the
    // request read on one, the response written on the other.
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    t.open(
        ConnOpen {
            key: KEY,
            fd: 1,
            origin: ConnOrigin::Unknown,
            ts_ns: 2,
            local: "127.0.0.1:8080".parse().expect("addr"),
            remote: "127.0.0.1:40000".parse().expect("addr"),
            comm: "httpd".into(),
        },
        &mut out,
    );
    t.data(
        chunk(Direction::Ingress, 1, 2, b"GET / HTTP/1.0\r\n\r\n", 0),
        &mut out,
    );
    t.close(KEY, 3, &mut out);
    assert_eq!(t.len(), 1, "fd 1 still holds the socket");
    t.data(
        chunk(
            Direction::Egress,
            3,
            4,
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            0,
        ),
        &mut out,
    );
    assert_eq!(finished(&out).len(), 1);
    t.close(KEY, 1, &mut out);
    assert!(t.is_empty());
}

const GRPC_CLIENT: &[u8] = include_bytes!("../protocol/fixtures/http2/grpcio_client.h2");
const GRPC_SERVER: &[u8] = include_bytes!("../protocol/fixtures/http2/grpcio_server.h2");

fn h2(ex: &Exchange) -> &Http2Exchange {
    match &ex.message {
        Message::Http2(h2) => h2,
        _ => panic!("not HTTP/2"),
    }
}

#[test]
fn grpc_client_streams_pair_with_their_responses() {
    let mut t = table();
    open(&mut t, ConnOrigin::Connected);
    let mut out = Vec::new();
    let mut ts = 10;
    // All requests first, then all responses: 23 streams open at once on one connection.
    for (direction, bytes) in [
        (Direction::Egress, GRPC_CLIENT),
        (Direction::Ingress, GRPC_SERVER),
    ] {
        for piece in bytes.chunks(300) {
            t.data(chunk(direction, ts, ts + 1, piece, 0), &mut out);
            ts += 10;
        }
    }
    let started = out
        .iter()
        .filter(|n| matches!(n, Notice::Started(s) if !s.server))
        .count();
    assert_eq!(started, 23);
    let done = finished(&out);
    assert_eq!(done.len(), 23);
    for ex in &done {
        assert_eq!(ex.role, Role::Client);
        let h2 = h2(ex);
        assert!(h2.is_grpc() && h2.request.complete);
        assert!(ex.end_ns > ex.start_ns);
        assert!(h2.reset.is_none() && !h2.refused);
    }
    let codes: Vec<Option<u32>> = done.iter().map(|ex| h2(ex).grpc_status).collect();
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 22);
    assert_eq!(codes.iter().filter(|c| **c == Some(5)).count(), 1);
    assert_eq!(t.buffered, 0);
}

#[test]
fn grpc_server_joined_midway_reports_only_what_it_knows() {
    let mut t = table();
    let mut out = Vec::new();
    // The agent starts after the preface and the first calls: no open record, no preface.
    let mut at = 24;
    let mut frames = Vec::new();
    while at + 9 <= GRPC_CLIENT.len() {
        frames.push(at);
        let len =
            u32::from_be_bytes([0, GRPC_CLIENT[at], GRPC_CLIENT[at + 1], GRPC_CLIENT[at + 2]]);
        at += 9 + len as usize;
    }
    let from = frames[frames.len() / 2];
    t.data(
        chunk(Direction::Ingress, 10, 11, &GRPC_CLIENT[from..], 0),
        &mut out,
    );
    t.data(chunk(Direction::Egress, 20, 21, GRPC_SERVER, 0), &mut out);
    let done = finished(&out);
    let known = done
        .iter()
        .filter(|ex| h2(ex).request.method.is_some())
        .count();
    assert!(done.len() >= 10 && known >= 10, "{} {known}", done.len());
    for ex in done {
        assert_eq!(ex.role, Role::Server);
        let req = &h2(ex).request;
        assert!(matches!(req.method.as_deref(), None | Some("POST")));
        assert!(
            req.path
                .as_deref()
                .is_none_or(|p| p.starts_with("/tracewire.test.Echo/"))
        );
    }
}

#[test]
fn h2_server_that_speaks_first_is_followed_from_the_start() {
    const CURL: &[u8] = include_bytes!("../protocol/fixtures/http2/curl_h2c_client.h2");
    const NODE: &[u8] = include_bytes!("../protocol/fixtures/http2/node_h2c_server.h2");
    let mut t = table();
    open(&mut t, ConnOrigin::Accepted);
    let mut out = Vec::new();
    // Node writes its SETTINGS as soon as it accepts, before reading the client's preface.
    let settings = 9 + usize::from(NODE[2]);
    t.data(
        chunk(Direction::Egress, 1, 2, &NODE[..settings], 0),
        &mut out,
    );
    t.data(chunk(Direction::Ingress, 3, 4, CURL, 0), &mut out);
    t.data(
        chunk(Direction::Egress, 5, 6, &NODE[settings..], 0),
        &mut out,
    );
    let done = finished(&out);
    assert_eq!(done.len(), 1, "{out:?}");
    assert_eq!(done[0].role, Role::Server);
    let h2 = h2(done[0]);
    assert_eq!(h2.request.method.as_deref(), Some("GET"));
    assert_eq!(h2.request.path.as_deref(), Some("/a/b?secret=1"));
    assert!(h2.request.complete);
    assert_eq!(h2.response.as_ref().and_then(|r| r.status), Some(200));
}
