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
mod tests;
