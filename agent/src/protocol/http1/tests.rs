use super::*;

type Fixture = (&'static str, &'static [u8]);
/// method, target, minor version, framing, body bytes
type ExpectedRequest = (Method, &'static str, u8, BodyKind, usize);
/// status, minor version, framing, body bytes, complete
type ExpectedResponse = (u16, u8, BodyKind, usize, bool);

macro_rules! fixture {
    ($name:literal) => {
        ($name, include_bytes!(concat!("../fixtures/http1/", $name)))
    };
}

/// Real traffic recorded on loopback, and what each message in it must parse to.
const REQUESTS: &[(Fixture, &[ExpectedRequest])] = &[
    (
        fixture!("curl_get.req"),
        &[(Method::Get, "/hello.txt", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("curl_head.req"),
        &[(Method::Head, "/hello.txt", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("curl_http10_get.req"),
        &[(Method::Get, "/close", 0, BodyKind::None, 0)],
    ),
    (
        fixture!("curl_post_expect.req"),
        &[(Method::Post, "/upload", 1, BodyKind::Length(35), 35)],
    ),
    (
        fixture!("curl_put_chunked.req"),
        &[(Method::Put, "/upload", 1, BodyKind::Chunked, 41)],
    ),
    (
        fixture!("curl_auth_cookie.req"),
        &[(Method::Get, "/hello.txt", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("python_requests_post.req"),
        &[(Method::Post, "/upload", 1, BodyKind::Length(43), 43)],
    ),
    (
        fixture!("python_urllib_get.req"),
        &[(Method::Get, "/hello.txt?lang=en&x=1", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("go_client_get.req"),
        &[(Method::Get, "/hello.txt", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("java_httpclient_get.req"),
        &[(Method::Get, "/api/items?page=2", 1, BodyKind::None, 0)],
    ),
    (
        fixture!("pipelined_two.req"),
        &[
            (Method::Get, "/hello.txt", 1, BodyKind::None, 0),
            (Method::Get, "/missing", 1, BodyKind::None, 0),
        ],
    ),
];

/// The same for responses, with the method they answer.
const RESPONSES: &[(Fixture, Method, &[ExpectedResponse])] = &[
    (
        fixture!("python_http_server_200.resp"),
        Method::Get,
        &[(200, 0, BodyKind::Length(30), 30, true)],
    ),
    (
        fixture!("nginx_200.resp"),
        Method::Get,
        &[(200, 1, BodyKind::Length(30), 30, true)],
    ),
    (
        fixture!("nginx_404.resp"),
        Method::Get,
        &[(404, 1, BodyKind::Length(153), 153, true)],
    ),
    (
        fixture!("nginx_head.resp"),
        Method::Head,
        &[(200, 1, BodyKind::None, 0, true)],
    ),
    (
        fixture!("nginx_keepalive_two.resp"),
        Method::Get,
        &[
            (200, 1, BodyKind::Length(30), 30, true),
            (404, 1, BodyKind::Length(153), 153, true),
        ],
    ),
    (
        fixture!("node_chunked.resp"),
        Method::Get,
        &[(200, 1, BodyKind::Chunked, 74, true)],
    ),
    (
        fixture!("node_trailers.resp"),
        Method::Get,
        &[(200, 1, BodyKind::Chunked, 52, true)],
    ),
    (
        fixture!("node_100_continue.resp"),
        Method::Put,
        &[
            (100, 1, BodyKind::None, 0, true),
            (201, 1, BodyKind::Length(15), 15, true),
        ],
    ),
    // The body ends when the connection does: still open at the end of the capture.
    (
        fixture!("node_until_close.resp"),
        Method::Get,
        &[(200, 1, BodyKind::UntilClose, 21, false)],
    ),
];

fn bytes_of(name: &str) -> &'static [u8] {
    let requests = REQUESTS.iter().map(|(fixture, _)| fixture);
    let mut all = requests.chain(RESPONSES.iter().map(|(fixture, ..)| fixture));
    all.find(|(fixture, _)| *fixture == name)
        .map(|(_, bytes)| *bytes)
        .unwrap()
}

fn progress<N>(consumed: N, complete: bool) -> BodyProgress<N> {
    BodyProgress { consumed, complete }
}

/// One message as the reassembly stage would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message<H> {
    head: H,
    head_len: usize,
    body: BodyKind,
    body_len: usize,
    complete: bool,
}

/// Models reassembly: heads parse from a growing buffer, bodies stream through the decoder, and
/// what a body leaves over starts the next message.
fn drive<'a, H>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    parse: impl Fn(&[u8]) -> Parse<H>,
    body: impl Fn(&H) -> BodyKind,
) -> Result<Vec<Message<H>>, String> {
    let mut messages: Vec<Message<H>> = Vec::new();
    let mut decoder: Option<BodyDecoder> = None;
    let mut pending = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            if let Some(open) = decoder.as_mut() {
                let fed = open.feed(&pending).map_err(|lost| lost.to_string())?;
                pending.drain(..fed.consumed);
                let message = messages.last_mut().ok_or("body without head")?;
                message.body_len += fed.consumed;
                if !fed.complete {
                    assert!(pending.is_empty(), "an open body takes all it is fed");
                    break;
                }
                message.complete = true;
                decoder = None;
            }
            match parse(&pending) {
                Parse::Complete(head, head_len) => {
                    pending.drain(..head_len);
                    let kind = body(&head);
                    let open = BodyDecoder::new(kind);
                    let complete = open.is_complete();
                    let body_len = 0;
                    messages.push(Message {
                        head,
                        head_len,
                        body: kind,
                        body_len,
                        complete,
                    });
                    decoder = (!complete).then_some(open);
                }
                Parse::Partial => break,
                Parse::Invalid(invalid) => return Err(invalid.to_string()),
            }
        }
    }
    Ok(messages)
}

/// The same stream in one piece, in every 2-way split, and byte by byte must frame the same way.
fn drive_all_splits<H: PartialEq + std::fmt::Debug>(
    name: &str,
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Parse<H> + Copy,
    body: impl Fn(&H) -> BodyKind + Copy,
) -> Vec<Message<H>> {
    let whole = drive([bytes], parse, body).unwrap();
    for split in 0..=bytes.len() {
        let (first, second) = bytes.split_at(split);
        let pieces = drive([first, second], parse, body).unwrap();
        assert_eq!(pieces, whole, "{name} split at {split}");
    }
    let bytewise = drive(bytes.chunks(1), parse, body).unwrap();
    assert_eq!(bytewise, whole, "{name} byte by byte");
    whole
}

#[test]
fn request_fixtures_frame_the_same_in_any_pieces() {
    for ((name, bytes), expected) in REQUESTS {
        let messages = drive_all_splits(name, bytes, parse_request, request_body);
        let got: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    &m.head.method,
                    m.head.target.as_str(),
                    m.head.minor_version,
                    m.body,
                    m.body_len,
                )
            })
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(m, t, v, b, l)| (m, *t, *v, *b, *l))
            .collect();
        assert_eq!(got, want, "{name}");
        assert!(messages.iter().all(|m| m.complete), "{name}");
    }
}

#[test]
fn response_fixtures_frame_the_same_in_any_pieces() {
    for ((name, bytes), method, expected) in RESPONSES {
        let body = |head: &ResponseHead| response_body(head, Some(method));
        let messages = drive_all_splits(name, bytes, parse_response, body);
        let got: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    m.head.status,
                    m.head.minor_version,
                    m.body,
                    m.body_len,
                    m.complete,
                )
            })
            .collect();
        assert_eq!(got, *expected, "{name}");
    }
}

fn assert_prefixes_partial<H: std::fmt::Debug>(
    (name, bytes): Fixture,
    parse: fn(&[u8]) -> Parse<H>,
    looks_like: fn(&[u8]) -> bool,
) {
    let Parse::Complete(_, head_len) = parse(bytes) else {
        panic!("{name}")
    };
    for cut in 0..head_len {
        let prefix = &bytes[..cut];
        assert!(cut == 0 || looks_like(prefix), "{name} detected at {cut}");
        assert!(
            matches!(parse(prefix), Parse::Partial),
            "{name} cut at {cut}"
        );
    }
}

/// Every strict prefix of a head is Partial; a stream cut inside a body leaves the body open.
#[test]
fn truncated_fixtures_are_partial() {
    for (fixture, _) in REQUESTS {
        assert_prefixes_partial(*fixture, parse_request, looks_like_request);
    }
    for (fixture, ..) in RESPONSES {
        assert_prefixes_partial(*fixture, parse_response, looks_like_response);
    }
    let post = bytes_of("python_requests_post.req");
    let messages = drive([&post[..post.len() - 1]], parse_request, request_body).unwrap();
    assert_eq!((messages[0].body_len, messages[0].complete), (42, false));
    let chunked = bytes_of("node_chunked.resp");
    let body = |h: &ResponseHead| response_body(h, Some(&Method::Get));
    let messages = drive([&chunked[..chunked.len() - 2]], parse_response, body).unwrap();
    assert!(!messages[0].complete);
}

fn request_head(bytes: &[u8]) -> RequestHead {
    match parse_request(bytes) {
        Parse::Complete(head, _) => head,
        other => panic!("{other:?}"),
    }
}

#[test]
fn kept_fields_and_nothing_else() {
    let head = request_head(bytes_of("curl_auth_cookie.req"));
    assert_eq!(head.host.as_deref(), Some("127.0.0.1:18090"));
    assert_eq!(head.user_agent.as_deref(), Some("curl/7.88.1"));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(head.traceparent.as_deref(), Some(traceparent));
    let debug = format!("{head:?}");
    for secret in ["YWxpY2U6czNjcjN0LXBhc3M", "topsecret-cookie", "*/*"] {
        assert!(!debug.contains(secret), "{secret} kept");
    }

    let head = request_head(bytes_of("python_requests_post.req"));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(head.traceparent.as_deref(), Some(traceparent));
    assert_eq!(head.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        (head.content_length, head.connection_close),
        (Some(43), false)
    );

    // (connection_close, expect_continue, upgrade, chunked)
    let flags = |name| {
        let h = request_head(bytes_of(name));
        (h.connection_close, h.expect_continue, h.upgrade, h.chunked)
    };
    assert_eq!(
        flags("java_httpclient_get.req"),
        (false, false, true, false)
    );
    assert_eq!(flags("curl_post_expect.req"), (false, true, false, false));
    assert_eq!(flags("curl_put_chunked.req"), (false, true, false, true));
    assert_eq!(flags("python_urllib_get.req"), (true, false, false, false));
    assert_eq!(flags("curl_http10_get.req"), (true, false, false, false));
    let closes = |name| matches!(parse_response(bytes_of(name)), Parse::Complete(h, _) if h.connection_close);
    assert!(closes("node_until_close.resp") && closes("python_http_server_200.resp"));
    assert!(!closes("nginx_200.resp"));
}

#[test]
fn invalid_heads() {
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let long_method = format!("{} / HTTP/1.1\r\n\r\n", "M".repeat(MAX_METHOD_BYTES + 1));
    let endless = [b"GET /".as_slice(), &[b'a'; MAX_HEAD_BYTES]].concat();
    let requests: &[(&[u8], Invalid)] = &[
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            Invalid::NotHttp,
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Invalid::NotHttp),
        // HTTP/2 prior knowledge is another protocol's business.
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Invalid::NotHttp),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            Invalid::ConflictingContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            Invalid::ConflictingContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            Invalid::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            Invalid::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
            Invalid::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            Invalid::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            Invalid::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            Invalid::BadTransferEncoding,
        ),
        (
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Invalid::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Invalid::BadTransferEncoding,
        ),
        (b"GET / HTTP/2.0\r\n\r\n", Invalid::BadVersion),
        (b"GET /a b HTTP/1.1\r\n\r\n", Invalid::BadVersion),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Invalid::BadHead),
        (&many, Invalid::TooManyHeaders),
        (long_method.as_bytes(), Invalid::MethodTooLong),
        (&endless, Invalid::HeadTooLarge),
    ];
    for (bytes, want) in requests {
        let shown = String::from_utf8_lossy(bytes);
        assert_eq!(parse_request(bytes), Parse::Invalid(*want), "{shown:?}");
    }
    let responses: &[(&[u8], Invalid)] = &[
        (b"\x16\x03\x03\x00\x5a\x02", Invalid::NotHttp),
        (b"HTTP/2 200\r\n\r\n", Invalid::NotHttp),
        (b"HTTP/1.2 200 OK\r\n\r\n", Invalid::BadVersion),
        (b"HTTP/1.1 099 Odd\r\n\r\n", Invalid::BadStatus),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", Invalid::BadHead),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Invalid::ConflictingContentLength,
        ),
    ];
    for (bytes, want) in responses {
        let shown = String::from_utf8_lossy(bytes);
        assert_eq!(parse_response(bytes), Parse::Invalid(*want), "{shown:?}");
    }
}

#[test]
fn head_edge_cases() {
    let target = "a".repeat(9000);
    let raw = [
        b"GET /",
        target.as_bytes(),
        b" HTTP/1.1\r\nUser-Agent: a\xffb\r\n\r\n",
    ]
    .concat();
    let head = request_head(&raw);
    assert_eq!(head.target.len(), MAX_TARGET_BYTES);
    assert_eq!(head.user_agent.as_deref(), Some("a\u{fffd}b"));

    // RFC 9110 §8.6: repeated identical lengths are one length. Leading empty lines are skipped.
    let same = b"\r\nPOST / HTTP/1.1\r\ncontent-LENGTH: 7, 7\r\nContent-Length: 7\r\n\r\n";
    assert_eq!(
        parse_request(same),
        Parse::Complete(request_head(same), same.len())
    );
    assert_eq!(request_head(same).content_length, Some(7));

    let mut list = b"GET / HTTP/1.1\r\ntracestate: x=1,y=2\r\ntracestate: ".to_vec();
    list.extend_from_slice(&b"a=1".repeat(200));
    list.extend_from_slice(b"\r\n\r\n");
    assert_eq!(request_head(&list).tracestate.as_deref(), Some("x=1,y=2"));

    let dav = request_head(b"PROPFIND /dav HTTP/1.1\r\n\r\n");
    assert_eq!(dav.method, Method::Other("PROPFIND".to_owned()));
    assert_eq!(dav.method.as_str(), "PROPFIND");

    for yes in [&b"G"[..], b"OPTIO", b"DELETE /x", b"PROPFIND "] {
        assert!(looks_like_request(yes), "{yes:?}");
    }
    for no in [&b""[..], b"GETX", b"get /", b"\x16\x03"] {
        assert!(!looks_like_request(no), "{no:?}");
    }
    assert!(looks_like_response(b"HTT") && looks_like_response(b"HTTP/1.1 200"));
    assert!(!looks_like_response(b"") && !looks_like_response(b"HTTP/2 200"));
}

#[test]
fn response_framing_rules() {
    let (get, connect) = (Some(&Method::Get), Some(&Method::Connect));
    let rows: &[(&[u8], Option<&Method>, BodyKind)] = &[
        (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            get,
            BodyKind::None,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            get,
            BodyKind::None,
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            get,
            BodyKind::None,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", connect, BodyKind::UntilClose),
        (
            b"HTTP/1.1 407 No\r\nContent-Length: 2\r\n\r\n",
            connect,
            BodyKind::Length(2),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 9\r\n\r\n",
            get,
            BodyKind::UntilClose,
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            get,
            BodyKind::UntilClose,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            None,
            BodyKind::Chunked,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n",
            None,
            BodyKind::Length(4),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 3\r\n\r\n",
            None,
            BodyKind::Length(3),
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", None, BodyKind::UntilClose),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            None,
            BodyKind::None,
        ),
    ];
    for (bytes, method, want) in rows {
        let Parse::Complete(head, _) = parse_response(bytes) else {
            panic!("{bytes:?}")
        };
        assert_eq!(
            response_body(&head, *method),
            *want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn chunked_edge_cases() {
    let feed_all = |bytes: &[u8]| BodyDecoder::new(BodyKind::Chunked).feed(bytes);
    let extended = b"5;name=value; flag\r\nhello\r\n0 ;last\r\nX-T: 1\r\n\r\nHTTP/1.1";
    assert_eq!(feed_all(extended), Ok(progress(extended.len() - 8, true)));
    assert_eq!(feed_all(b"A\nabcdefghij\n0\n\n"), Ok(progress(16, true)));
    assert_eq!(
        feed_all(b"10000000000000000\r\n"),
        Err(FramingLost::ChunkSizeOverflow)
    );
    assert_eq!(
        feed_all(b"ffffffffffffffff\r\nabc"),
        Ok(progress(21, false))
    );
    let long = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE_BYTES]].concat();
    assert_eq!(feed_all(&long), Err(FramingLost::ChunkLineTooLong));
    assert_eq!(feed_all(b"3\r\nabcX"), Err(FramingLost::MissingChunkCrlf));
    for bad in [
        &b"xyz\r\n"[..],
        b"\r\n",
        b";ext\r\n",
        b"5 5\r\n",
        b"5\rX",
        b"5;\x01\r\n",
    ] {
        assert_eq!(feed_all(bad), Err(FramingLost::BadChunkSize), "{bad:?}");
    }
    assert_eq!(feed_all(b"0\r\nX: 1\rX"), Err(FramingLost::BadTrailer));
    let trailers = [
        b"0\r\n".as_slice(),
        &b"X: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1),
    ]
    .concat();
    assert_eq!(feed_all(&trailers), Err(FramingLost::TrailersTooLong));

    let mut decoder = BodyDecoder::new(BodyKind::Chunked);
    assert_eq!(decoder.feed(b"zz"), Err(FramingLost::BadChunkSize));
    assert_eq!(
        decoder.feed(b"0\r\n\r\n"),
        Err(FramingLost::BadChunkSize),
        "lost stays lost"
    );
    assert_eq!(decoder.skip(1), Err(FramingLost::BadChunkSize));
}

#[test]
fn gaps_inside_bodies_are_skipped() {
    let post = bytes_of("python_requests_post.req");
    let Parse::Complete(head, head_len) = parse_request(post) else {
        panic!("post")
    };
    let body = &post[head_len..];
    let mut decoder = BodyDecoder::new(request_body(&head));
    assert_eq!(decoder.feed(&body[..10]), Ok(progress(10, false)));
    assert_eq!(decoder.skip(20), Ok(progress(20, false)));
    assert_eq!(decoder.feed(&body[30..]), Ok(progress(13, true)));
    let mut decoder = BodyDecoder::new(request_body(&head));
    assert_eq!(
        decoder.skip(1000),
        Ok(progress(43, true)),
        "the rest is the next message's"
    );

    // "c\r\n" "first chunk\n" "\r\n" "23\r\n" ...
    let chunked = bytes_of("node_chunked.resp");
    let Parse::Complete(_, head_len) = parse_response(chunked) else {
        panic!("chunked")
    };
    let body = &chunked[head_len..];
    let (in_first_data, second_size_line) = (3 + 4, 3 + 12 + 2);
    let mut decoder = BodyDecoder::new(BodyKind::Chunked);
    decoder.feed(&body[..in_first_data]).unwrap();
    assert_eq!(decoder.skip(8), Ok(progress(8, false)));
    assert_eq!(
        decoder.feed(&body[in_first_data + 8..]),
        Ok(progress(body.len() - 15, true))
    );
    // A gap may swallow the CRLF that ends chunk data...
    let mut decoder = BodyDecoder::new(BodyKind::Chunked);
    decoder.feed(&body[..in_first_data]).unwrap();
    assert_eq!(decoder.skip(10), Ok(progress(10, false)));
    assert_eq!(
        decoder.feed(&body[second_size_line..]),
        Ok(progress(body.len() - 17, true))
    );
    // ...but not a size line, whether it starts in the data or at the line.
    let mut decoder = BodyDecoder::new(BodyKind::Chunked);
    decoder.feed(&body[..in_first_data]).unwrap();
    assert_eq!(decoder.skip(12), Err(FramingLost::GapOverFraming));
    let mut decoder = BodyDecoder::new(BodyKind::Chunked);
    decoder.feed(&body[..second_size_line + 1]).unwrap();
    assert_eq!(decoder.skip(0), Ok(progress(0, false)));
    assert_eq!(decoder.skip(3), Err(FramingLost::GapOverFraming));
    assert_eq!(
        decoder.feed(&body[second_size_line + 4..]),
        Err(FramingLost::GapOverFraming)
    );

    let mut until_close = BodyDecoder::new(BodyKind::UntilClose);
    assert_eq!(until_close.skip(u64::MAX), Ok(progress(u64::MAX, false)));
    let mut none = BodyDecoder::new(BodyKind::None);
    assert_eq!(none.skip(5), Ok(progress(0, true)));
    assert_eq!(none.feed(b"GET"), Ok(progress(0, true)));
}

/// Mutated fixtures and noise: any answer is fine, a panic is not.
#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let requests = REQUESTS.iter().map(|((_, bytes), _)| *bytes);
    let fixtures = requests.chain(RESPONSES.iter().map(|((_, bytes), ..)| *bytes));
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for bytes in fixtures {
        for _ in 0..300 {
            let mut mutant = bytes.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (mutant.len() + 1);
                match next() % 4 {
                    0 if at < mutant.len() => mutant[at] = next() as u8,
                    1 => mutant.insert(at, b"\r\n:;, 0f"[(next() % 8) as usize]),
                    2 => mutant.truncate(at),
                    _ => mutant.extend_from_slice(b"0\r\n\r\n"),
                }
            }
            inputs.push(mutant);
        }
    }
    inputs.extend((0..500).map(|_| (0..next() % 200).map(|_| next() as u8).collect()));
    for input in &inputs {
        let _ = (looks_like_request(input), looks_like_response(input));
        let mut kinds = vec![
            BodyKind::Chunked,
            BodyKind::UntilClose,
            BodyKind::Length(next() % 64),
        ];
        if let Parse::Complete(head, _) = parse_request(input) {
            kinds.push(request_body(&head));
        }
        if let Parse::Complete(head, _) = parse_response(input) {
            kinds.push(response_body(&head, Some(&Method::Get)));
        }
        for kind in kinds {
            let split = (next() as usize) % (input.len() + 1);
            let mut decoder = BodyDecoder::new(kind);
            let first = decoder.feed(&input[..split]);
            let _ = decoder.skip(next() % 8);
            let second = decoder.feed(&input[split..]);
            for fed in [first, second].into_iter().flatten() {
                assert!(fed.consumed <= input.len());
            }
        }
    }
}
