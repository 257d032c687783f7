//! Just enough HTTP/1.1 framing for the harness: the OTLP/HTTP receiver reads requests with it, and
//! [`crate::net::http_get`] reads the agent's `/ready` and `/metrics` replies. Parsers follow
//! httparse's shape: "need more bytes" is [`Framed::Partial`], not an error.

/// Headers as owned `(name, value)` pairs, in arrival order.
pub type Headers = Vec<(String, String)>;

/// The value of the first header called `name` (ASCII case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Headers {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// How the body after a message head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
    /// Only for responses: the body runs until the server closes the connection.
    UntilClose,
}

impl BodyFraming {
    /// `is_request` matters only without both headers: a request then has no body, a response
    /// runs until close.
    pub fn of(headers: &Headers, is_request: bool) -> Result<Self, String> {
        if let Some(coding) = header(headers, "transfer-encoding") {
            return if coding.to_ascii_lowercase().trim_end().ends_with("chunked") {
                Ok(Self::Chunked)
            } else {
                Err(format!("unsupported Transfer-Encoding {coding:?}"))
            };
        }
        match header(headers, "content-length") {
            Some(length) => length
                .trim()
                .parse()
                .map(Self::Length)
                .map_err(|_| format!("bad Content-Length {length:?}")),
            None if is_request => Ok(Self::Length(0)),
            None => Ok(Self::UntilClose),
        }
    }
}

/// The outcome of reading a body from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    Complete { body: Vec<u8>, consumed: usize },
    Partial,
    Invalid(String),
}

/// Reads one body framed as `framing` from the start of `buf`. `closed` says the peer has closed
/// the connection, which is what ends an [`BodyFraming::UntilClose`] body.
pub fn read_body(buf: &[u8], framing: BodyFraming, closed: bool) -> Framed {
    match framing {
        BodyFraming::Length(length) if buf.len() >= length => Framed::Complete {
            body: buf[..length].to_vec(),
            consumed: length,
        },
        BodyFraming::Length(_) => Framed::Partial,
        BodyFraming::UntilClose if closed => Framed::Complete {
            body: buf.to_vec(),
            consumed: buf.len(),
        },
        BodyFraming::UntilClose => Framed::Partial,
        BodyFraming::Chunked => decode_chunked(buf),
    }
}

fn decode_chunked(buf: &[u8]) -> Framed {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_line, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Framed::Partial,
            Err(_) => return Framed::Invalid(format!("bad chunk size at byte {at}")),
        };
        at += size_line;
        let Ok(size) = usize::try_from(size) else {
            return Framed::Invalid(format!("chunk of {size} bytes"));
        };
        if size == 0 {
            // The last chunk is followed by optional trailer lines and an empty line.
            return match find_empty_line(&buf[at..]) {
                Some(end) => Framed::Complete {
                    body,
                    consumed: at + end,
                },
                None => Framed::Partial,
            };
        }
        let Some(chunk) = buf.get(at..at + size) else {
            return Framed::Partial;
        };
        body.extend_from_slice(chunk);
        at += size;
        match buf.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Framed::Invalid(format!("chunk not followed by CRLF at byte {at}")),
            None => return Framed::Partial,
        }
    }
}

/// The length up to and including the empty line that ends a trailer section.
fn find_empty_line(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_body_with_trailers() {
        let wire = b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            read_body(wire, BodyFraming::Chunked, false),
            Framed::Complete {
                body: b"abcde".to_vec(),
                consumed: wire.len() - 4
            }
        );
    }

    #[test]
    fn chunked_body_needs_more_bytes() {
        assert_eq!(
            read_body(b"5\r\nab", BodyFraming::Chunked, false),
            Framed::Partial
        );
        assert_eq!(
            read_body(b"0\r\n", BodyFraming::Chunked, false),
            Framed::Partial
        );
    }

    #[test]
    fn framing_from_headers() {
        let chunked = vec![("Transfer-Encoding".to_string(), "chunked".to_string())];
        assert_eq!(BodyFraming::of(&chunked, true), Ok(BodyFraming::Chunked));
        let sized = vec![("content-length".to_string(), "12".to_string())];
        assert_eq!(BodyFraming::of(&sized, false), Ok(BodyFraming::Length(12)));
        assert_eq!(
            BodyFraming::of(&Vec::new(), true),
            Ok(BodyFraming::Length(0))
        );
        assert_eq!(
            BodyFraming::of(&Vec::new(), false),
            Ok(BodyFraming::UntilClose)
        );
    }
}
