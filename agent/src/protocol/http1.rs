//! HTTP/1.0 and HTTP/1.1 over captured bytes: a cheap content check, head parsing (a thin wrapper over
//! `httparse`), and body framing that copes with bytes arriving in pieces and with capture gaps.
//!
//! Everything here is a pure function of caller-owned bytes; the reassembly stage owns the buffers and
//! calls [`parse_request`]/[`parse_response`] until a head is complete, then streams the body through a
//! [`BodyDecoder`], whose leftover bytes start the next (pipelined) message.
//!
//! Privacy: of all header values only Host, User-Agent, traceparent and tracestate are kept, each capped.
//! Framing headers (Content-Length, Transfer-Encoding, Connection, Expect, Upgrade) are read to derive the
//! fields below and dropped; every other value (Authorization, Cookie, ...) is never copied.

use thiserror::Error;

/// httparse needs a fixed header array; a head with more is [`Invalid::TooManyHeaders`].
pub const MAX_HEADERS: usize = 64;
/// A head still incomplete after this many bytes is given up on. Servers refuse far less (nginx 32 KiB,
/// Node 16 KiB), and the bound also caps the work of re-parsing a growing buffer.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longer request-targets are truncated (at a UTF-8 boundary).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
const MAX_METHOD_BYTES: usize = 32;
const MAX_HOST_BYTES: usize = 256;
const MAX_USER_AGENT_BYTES: usize = 512;
/// traceparent version 00 is 55 bytes; later versions may append fields.
const MAX_TRACEPARENT_BYTES: usize = 128;
/// W3C Trace Context asks to propagate at least 512 characters of tracestate.
const MAX_TRACESTATE_BYTES: usize = 512;
/// A chunk-size line (size and extensions) longer than this loses the framing.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// The whole trailer section after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Methods the content check recognises; `parse_request` accepts any token.
const DETECTED_METHODS: [&[u8]; 16] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
];

/// httparse-style result: "need more bytes" is not an error, so reassembly can simply wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// The head, and how many bytes it took: the body, if any, starts at that offset.
    Complete(T, usize),
    /// A prefix of a head that may still become valid.
    Partial,
    Invalid(Invalid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Invalid {
    #[error("bytes do not start like an HTTP/1 message")]
    NotHttp,
    #[error("malformed HTTP/1 head")]
    BadHead,
    #[error("HTTP version other than 1.0 or 1.1")]
    BadVersion,
    #[error("method longer than {MAX_METHOD_BYTES} bytes")]
    MethodTooLong,
    #[error("status code below 100")]
    BadStatus,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("head not complete within {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("Content-Length is not a decimal length")]
    BadContentLength,
    /// RFC 9112 §6.3 rule 5: differing lengths make the framing (and our pairing) ambiguous: smuggling.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// RFC 9112 §6.3 rule 4: a request whose final transfer coding is not chunked cannot be framed.
    #[error("request Transfer-Encoding does not end in chunked")]
    BadTransferEncoding,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Any other token, at most 32 bytes.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Result<Self, Invalid> {
        Ok(match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            "PATCH" => Self::Patch,
            other if other.len() <= MAX_METHOD_BYTES => Self::Other(other.to_owned()),
            _ => return Err(Invalid::MethodTooLong),
        })
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other(token) => token,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The request-target as sent (origin-, absolute-, authority- or asterisk-form), capped.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// None when absent, and when a Transfer-Encoding overrides it (RFC 9112 §6.3 rule 3).
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub traceparent: Option<String>,
    /// All tracestate fields joined with ',', cut back to whole list members when over the cap.
    pub tracestate: Option<String>,
    /// The connection closes after this exchange: `Connection: close`, or HTTP/1.0 without keep-alive.
    pub connection_close: bool,
    pub expect_continue: bool,
    /// Upgrade offered (Upgrade field plus the `upgrade` connection option), e.g. Java's h2c attempt;
    /// only a `101` response actually switches the stream away from HTTP/1.
    pub upgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    /// None when absent, and when a Transfer-Encoding overrides it (RFC 9112 §6.3 rule 3).
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The connection closes after this response: `Connection: close`, or HTTP/1.0 without keep-alive.
    pub connection_close: bool,
}

/// Content check before a full parse: does `buf` start like a request (a known method and a space)?
/// A buffer shorter than that decides on what is there: it must be a prefix of `METHOD `.
#[must_use]
pub fn looks_like_request(buf: &[u8]) -> bool {
    !buf.is_empty()
        && DETECTED_METHODS
            .iter()
            .any(|method| buf.starts_with(method) || method.starts_with(buf))
}

/// Content check before a full parse: does `buf` start with `HTTP/1.` (or a prefix of it)?
#[must_use]
pub fn looks_like_response(buf: &[u8]) -> bool {
    const PREFIX: &[u8] = b"HTTP/1.";
    !buf.is_empty() && (buf.starts_with(PREFIX) || PREFIX.starts_with(buf))
}

/// Parses a request head from the start of `buf`; `Partial` until the empty line that ends it arrives.
#[must_use]
pub fn parse_request(buf: &[u8]) -> Parse<RequestHead> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(head_window(buf)) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial_or_too_large(buf),
        Err(error) => {
            return Parse::Invalid(classify(error, looks_like_request(skip_empty_lines(buf))));
        }
    };
    let (Some(token), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Parse::Invalid(Invalid::BadHead);
    };
    let method = match Method::from_token(token) {
        Ok(method) => method,
        Err(invalid) => return Parse::Invalid(invalid),
    };
    let mut kept = KeptFields::default();
    let mut framing = Framing::default();
    for field in request.headers.iter() {
        if let Err(invalid) = framing.observe(field.name, field.value) {
            return Parse::Invalid(invalid);
        }
        kept.observe(field.name, field.value);
    }
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; in a request, a final coding other
    // than chunked leaves no way to find the body's end.
    let chunked = framing.transfer_encoding && framing.ends_in_chunked() && minor_version == 1;
    if framing.transfer_encoding && !chunked {
        return Parse::Invalid(Invalid::BadTransferEncoding);
    }
    let head = RequestHead {
        method,
        target: truncate_utf8(target, MAX_TARGET_BYTES).to_owned(),
        minor_version,
        host: kept.host,
        user_agent: kept.user_agent,
        content_length: framing
            .content_length
            .filter(|_| !framing.transfer_encoding),
        chunked,
        traceparent: kept.traceparent,
        tracestate: kept
            .tracestate
            .and_then(|list| cap_list(&list, MAX_TRACESTATE_BYTES)),
        connection_close: framing.closes(minor_version),
        expect_continue: kept.expect_continue,
        upgrade: kept.upgrade_offered && framing.upgrade_option,
    };
    Parse::Complete(head, head_len)
}

/// Parses a response head from the start of `buf`; `Partial` until the empty line that ends it arrives.
#[must_use]
pub fn parse_response(buf: &[u8]) -> Parse<ResponseHead> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    // We observe rather than serve: accept the legacy forms that real clients tolerate from servers.
    let mut config = httparse::ParserConfig::default();
    config
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true);
    let head_len = match config.parse_response(&mut response, head_window(buf)) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial_or_too_large(buf),
        Err(error) => {
            return Parse::Invalid(classify(error, looks_like_response(skip_empty_lines(buf))));
        }
    };
    let (Some(status), Some(minor_version)) = (response.code, response.version) else {
        return Parse::Invalid(Invalid::BadHead);
    };
    if status < 100 {
        return Parse::Invalid(Invalid::BadStatus);
    }
    let mut framing = Framing::default();
    for field in response.headers.iter() {
        if let Err(invalid) = framing.observe(field.name, field.value) {
            return Parse::Invalid(invalid);
        }
    }
    // RFC 9112 §6.3 rule 4: a response whose final coding is not chunked (or any HTTP/1.0 one with
    // Transfer-Encoding, §6.1) is delimited by the close; both leave chunked and content_length unset.
    let head = ResponseHead {
        status,
        minor_version,
        content_length: framing
            .content_length
            .filter(|_| !framing.transfer_encoding),
        chunked: framing.transfer_encoding && framing.ends_in_chunked() && minor_version == 1,
        connection_close: framing.closes(minor_version),
    };
    Parse::Complete(head, head_len)
}

/// How the end of a message body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// The body runs until the server closes the connection.
    UntilClose,
}

/// Chunked wins over Content-Length; a request without either, or with a zero length, has no body
/// (never `UntilClose`): `BodyKind::None` means the message ends with its head.
#[must_use]
pub fn request_body(head: &RequestHead) -> BodyKind {
    match (head.chunked, head.content_length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(0) | None) => BodyKind::None,
        (false, Some(length)) => BodyKind::Length(length),
    }
}

/// `request_method` is the method of the request this response answers, when the pairing knows it.
///
/// An interim `1xx` response (`100 Continue`, `103 Early Hints`) has no body and does not answer the
/// request: the caller keeps the request open and parses the real response that follows on the same
/// stream. The exception is `101 Switching Protocols`: after its head the stream is no longer HTTP/1.
#[must_use]
pub fn response_body(head: &ResponseHead, request_method: Option<&Method>) -> BodyKind {
    match (head.status, request_method) {
        (100..=199 | 204 | 304, _) | (_, Some(Method::Head)) => BodyKind::None,
        // A successful CONNECT turns the connection into a tunnel.
        (200..=299, Some(Method::Connect)) => BodyKind::UntilClose,
        _ if head.chunked => BodyKind::Chunked,
        _ => match head.content_length {
            Some(0) => BodyKind::None,
            Some(length) => BodyKind::Length(length),
            None => BodyKind::UntilClose,
        },
    }
}

/// How far a [`BodyDecoder`] got: bytes that belong to this body, and whether it has ended. Bytes after
/// `consumed` belong to the next message on the stream (pipelining). `N` is `u64` for capture gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyProgress<N = usize> {
    pub consumed: N,
    pub complete: bool,
}

/// Why a body's end can no longer be found; the caller ends the message by other means (close, idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FramingLost {
    #[error("capture gap covers chunk framing")]
    GapOverFraming,
    #[error("malformed chunk-size line")]
    BadChunkSize,
    #[error("chunk size overflows 64 bits")]
    ChunkSizeOverflow,
    #[error("chunk-size line longer than {MAX_CHUNK_LINE_BYTES} bytes")]
    ChunkLineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingChunkCrlf,
    #[error("malformed trailer line")]
    BadTrailer,
    #[error("trailer section longer than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLong,
}

/// Incremental framing of one body: feed it captured bytes as they come, and the gaps between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    UntilClose,
    Chunked(Chunk),
    Done,
    Lost(FramingLost),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size(SizeLine),
    Data {
        remaining: u64,
    },
    /// The CRLF after chunk data.
    DataEnd {
        cr: bool,
    },
    /// Trailer fields after the last chunk: only the empty line that ends them matters.
    Trailer {
        line: usize,
        cr: bool,
        total: usize,
    },
}

/// A chunk-size line read so far: `1*HEXDIG [BWS] *(";" chunk-ext) CRLF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeLine {
    size: u64,
    digits: bool,
    part: SizePart,
    cr: bool,
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    Digits,
    /// Whitespace after the digits (BWS before an extension, tolerated before CRLF).
    Space,
    Extension,
}

const SIZE_LINE: Chunk = Chunk::Size(SizeLine {
    size: 0,
    digits: false,
    part: SizePart::Digits,
    cr: false,
    len: 0,
});

impl BodyDecoder {
    #[must_use]
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(remaining) => State::Length { remaining },
            BodyKind::Chunked => State::Chunked(SIZE_LINE),
            BodyKind::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Feed captured bytes; after an error every later call returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<BodyProgress, FramingLost> {
        let mut consumed = 0usize;
        while let Some(rest) = data.get(consumed..).filter(|rest| !rest.is_empty()) {
            match &mut self.state {
                State::Done | State::Lost(_) => break,
                State::UntilClose => consumed = data.len(),
                State::Length { remaining } | State::Chunked(Chunk::Data { remaining }) => {
                    let take = rest
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    consumed = consumed.saturating_add(take);
                    *remaining = remaining.saturating_sub(take as u64);
                    if *remaining == 0 {
                        self.state = match self.state {
                            State::Length { .. } => State::Done,
                            _ => State::Chunked(Chunk::DataEnd { cr: false }),
                        };
                    }
                }
                // Size, CRLF and trailer lines are short and bounded: byte at a time.
                State::Chunked(chunk) => {
                    let byte = rest.first().copied().unwrap_or_default();
                    consumed = consumed.saturating_add(1);
                    self.state = chunk_line_byte(*chunk, byte).unwrap_or_else(State::Lost);
                }
            }
        }
        match self.state {
            State::Lost(lost) => Err(lost),
            state => Ok(BodyProgress {
                consumed,
                complete: state == State::Done,
            }),
        }
    }

    /// The capture dropped `n` bytes here: the kernel copies at most so many bytes per syscall but
    /// reports the full length. Content-Length bodies and chunk data can be skipped; so can the CRLF
    /// that ends chunk data (assumed to be the two bytes every real sender writes: if it was a bare LF,
    /// the next size line fails to parse). A gap over a size or trailer line loses the framing.
    ///
    /// `consumed` is how much of the gap belongs to this body; the rest starts the next message.
    pub fn skip(&mut self, n: u64) -> Result<BodyProgress<u64>, FramingLost> {
        if n == 0 {
            return match self.state {
                State::Lost(lost) => Err(lost),
                _ => Ok(BodyProgress {
                    consumed: 0,
                    complete: self.is_complete(),
                }),
            };
        }
        let consumed = match &mut self.state {
            State::Lost(lost) => return Err(*lost),
            State::Done => 0,
            State::UntilClose => n,
            State::Length { remaining } => {
                let take = n.min(*remaining);
                *remaining = remaining.saturating_sub(take);
                if *remaining == 0 {
                    self.state = State::Done;
                }
                take
            }
            State::Chunked(chunk) => {
                // Bytes of chunk data and of its CRLF still ahead: a gap may end anywhere inside them.
                let skippable = match *chunk {
                    Chunk::Data { remaining } => remaining.saturating_add(2),
                    Chunk::DataEnd { cr } => 2u64.saturating_sub(u64::from(cr)),
                    Chunk::Size(_) | Chunk::Trailer { .. } => 0,
                };
                if n > skippable {
                    self.state = State::Lost(FramingLost::GapOverFraming);
                    return Err(FramingLost::GapOverFraming);
                }
                *chunk = match skippable.saturating_sub(n) {
                    0 => SIZE_LINE,
                    1 => Chunk::DataEnd { cr: true },
                    2 => Chunk::DataEnd { cr: false },
                    left => Chunk::Data {
                        remaining: left.saturating_sub(2),
                    },
                };
                n
            }
        };
        Ok(BodyProgress {
            consumed,
            complete: self.is_complete(),
        })
    }

    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }
}

/// One byte of a chunk-size line, the CRLF after chunk data, or the trailer section (RFC 9112 §7.1).
/// A bare LF is accepted as a line end (RFC 9112 §2.2); a CR must be followed by LF.
fn chunk_line_byte(chunk: Chunk, byte: u8) -> Result<State, FramingLost> {
    let next = match chunk {
        Chunk::Size(line) => {
            let line = SizeLine {
                len: line.len.saturating_add(1),
                ..line
            };
            if line.len > MAX_CHUNK_LINE_BYTES {
                return Err(FramingLost::ChunkLineTooLong);
            }
            match (byte, line.part) {
                (b'\n', _) if line.digits && line.size == 0 => Chunk::Trailer {
                    line: 0,
                    cr: false,
                    total: 0,
                },
                (b'\n', _) if line.digits => Chunk::Data {
                    remaining: line.size,
                },
                _ if line.cr || byte == b'\n' => return Err(FramingLost::BadChunkSize),
                (b'\r', _) => Chunk::Size(SizeLine { cr: true, ..line }),
                (b';', _) if line.digits => Chunk::Size(SizeLine {
                    part: SizePart::Extension,
                    ..line
                }),
                (b' ' | b'\t', SizePart::Digits | SizePart::Space) if line.digits => {
                    Chunk::Size(SizeLine {
                        part: SizePart::Space,
                        ..line
                    })
                }
                // Extensions are skipped, not kept; only control bytes are refused.
                (_, SizePart::Extension) if byte == b'\t' || !byte.is_ascii_control() => {
                    Chunk::Size(line)
                }
                (_, SizePart::Digits) => {
                    let digit = char::from(byte)
                        .to_digit(16)
                        .ok_or(FramingLost::BadChunkSize)?;
                    let size = line
                        .size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .ok_or(FramingLost::ChunkSizeOverflow)?;
                    Chunk::Size(SizeLine {
                        size,
                        digits: true,
                        ..line
                    })
                }
                _ => return Err(FramingLost::BadChunkSize),
            }
        }
        Chunk::Data { .. } => chunk,
        Chunk::DataEnd { cr } => match byte {
            b'\r' if !cr => Chunk::DataEnd { cr: true },
            b'\n' => SIZE_LINE,
            _ => return Err(FramingLost::MissingChunkCrlf),
        },
        Chunk::Trailer { line, cr, total } => {
            let total = total.saturating_add(1);
            if total > MAX_TRAILER_BYTES {
                return Err(FramingLost::TrailersTooLong);
            }
            match byte {
                b'\n' if line == 0 => return Ok(State::Done),
                b'\n' => Chunk::Trailer {
                    line: 0,
                    cr: false,
                    total,
                },
                _ if cr => return Err(FramingLost::BadTrailer),
                b'\r' => Chunk::Trailer {
                    line,
                    cr: true,
                    total,
                },
                _ => Chunk::Trailer {
                    line: line.saturating_add(1),
                    cr,
                    total,
                },
            }
        }
    };
    Ok(State::Chunked(next))
}

/// What the framing headers say, gathered across all fields before any decision.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// The last transfer coding seen so far is chunked.
    chunked_last: bool,
    /// Some coding (chunked again, or another) followed chunked.
    chunked_misplaced: bool,
    close: bool,
    keep_alive: bool,
    upgrade_option: bool,
}

impl Framing {
    fn observe(&mut self, name: &str, value: &[u8]) -> Result<(), Invalid> {
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of identical values is one length; differing ones are refused.
            for element in value.split(|&b| b == b',') {
                let length =
                    parse_decimal(element.trim_ascii()).ok_or(Invalid::BadContentLength)?;
                match self.content_length {
                    Some(seen) if seen != length => return Err(Invalid::ConflictingContentLength),
                    _ => self.content_length = Some(length),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list_tokens(value) {
                self.transfer_encoding = true;
                // "chunked" applied anywhere but last (or twice) makes the end unknowable.
                self.chunked_misplaced |= self.chunked_last;
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list_tokens(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                self.upgrade_option |= option.eq_ignore_ascii_case(b"upgrade");
            }
        }
        Ok(())
    }

    fn ends_in_chunked(&self) -> bool {
        self.chunked_last && !self.chunked_misplaced
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless told otherwise; HTTP/1.0 only with keep-alive.
    fn closes(&self, minor_version: u8) -> bool {
        self.close || (minor_version == 0 && !self.keep_alive)
    }
}

/// The only header values that survive parsing.
#[derive(Default)]
struct KeptFields {
    host: Option<String>,
    user_agent: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    expect_continue: bool,
    upgrade_offered: bool,
}

impl KeptFields {
    fn observe(&mut self, name: &str, value: &[u8]) {
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case("host") {
            self.host
                .get_or_insert_with(|| capped_lossy(value, MAX_HOST_BYTES));
        } else if name.eq_ignore_ascii_case("user-agent") {
            self.user_agent
                .get_or_insert_with(|| capped_lossy(value, MAX_USER_AGENT_BYTES));
        } else if name.eq_ignore_ascii_case("traceparent") {
            self.traceparent
                .get_or_insert_with(|| capped_lossy(value, MAX_TRACEPARENT_BYTES));
        } else if name.eq_ignore_ascii_case("tracestate") {
            // Repeated tracestate fields form one list (W3C Trace Context §3.3.1); past the cap
            // (plus one byte, so cap_list can tell a whole member from a cut one) nothing more is kept.
            let joined = self.tracestate.get_or_insert_with(String::new);
            let room = (MAX_TRACESTATE_BYTES + 1).saturating_sub(joined.len());
            if room > 1 {
                if !joined.is_empty() {
                    joined.push(',');
                }
                joined.push_str(&capped_lossy(value, room.saturating_sub(1)));
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade_offered |= !value.is_empty();
        }
    }
}

/// httparse is handed at most [`MAX_HEAD_BYTES`], so a stream that never ends its head costs bounded work.
fn head_window(buf: &[u8]) -> &[u8] {
    buf.get(..MAX_HEAD_BYTES).unwrap_or(buf)
}

fn partial_or_too_large<T>(buf: &[u8]) -> Parse<T> {
    if buf.len() >= MAX_HEAD_BYTES {
        Parse::Invalid(Invalid::HeadTooLarge)
    } else {
        Parse::Partial
    }
}

/// Malformed HTTP is told apart from other protocols by the same check that detects HTTP.
fn classify(error: httparse::Error, looks_like_http: bool) -> Invalid {
    match error {
        httparse::Error::TooManyHeaders => Invalid::TooManyHeaders,
        _ if !looks_like_http => Invalid::NotHttp,
        httparse::Error::Version => Invalid::BadVersion,
        _ => Invalid::BadHead,
    }
}

/// httparse skips empty lines before a start-line (RFC 9112 §2.2); so does classification.
fn skip_empty_lines(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf.get(start..).unwrap_or_default()
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &b| {
        let digit = char::from(b).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Elements of a comma-separated field value, parameters (`;q=...`) and empty elements dropped.
fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|element| {
            element
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        })
        .filter(|token| !token.is_empty())
}

fn capped_lossy(value: &[u8], cap: usize) -> String {
    let prefix = value.get(..cap).unwrap_or(value);
    let lossy = String::from_utf8_lossy(prefix);
    // Replacement characters are 3 bytes, so lossy text can outgrow the raw prefix.
    truncate_utf8(&lossy, cap).to_owned()
}

fn truncate_utf8(text: &str, cap: usize) -> &str {
    let end = (0..=cap.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.get(..end).unwrap_or_default()
}

/// Cuts a list back to whole members when it is longer than `cap`.
fn cap_list(list: &str, cap: usize) -> Option<String> {
    let kept = if list.len() <= cap {
        list
    } else {
        let cut = truncate_utf8(list, cap.saturating_add(1));
        cut.rfind(',')
            .and_then(|comma| cut.get(..comma))
            .unwrap_or_default()
    };
    let kept = kept.trim_end_matches([',', ' ', '\t']);
    (!kept.is_empty()).then(|| kept.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fixture = (&'static str, &'static [u8]);
    /// method, target, minor version, framing, body bytes
    type ExpectedRequest = (Method, &'static str, u8, BodyKind, usize);
    /// status, minor version, framing, body bytes, complete
    type ExpectedResponse = (u16, u8, BodyKind, usize, bool);

    macro_rules! fixture {
        ($name:literal) => {
            ($name, include_bytes!(concat!("fixtures/http1/", $name)))
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
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Invalid::NotHttp),
            (b"SSH-2.0-OpenSSH_9.2\r\n", Invalid::NotHttp),
            // HTTP/2 prior knowledge is another protocol's business.
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Invalid::NotHttp),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Invalid::ConflictingContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", Invalid::ConflictingContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", Invalid::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", Invalid::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", Invalid::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", Invalid::BadContentLength),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Invalid::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Invalid::BadTransferEncoding),
            (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Invalid::BadTransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Invalid::BadTransferEncoding),
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
}
