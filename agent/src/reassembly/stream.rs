//! One direction of one connection as a sequence of HTTP/1 messages: head bytes are buffered
//! (bounded) until they parse, then the body is framed without being kept.
use bytes::{Buf, Bytes, BytesMut};

use crate::{
    protocol::http1::{BodyDecoder, BodyKind, Parse},
    telemetry::Drop,
};

#[derive(Debug)]
enum State {
    /// At a message boundary, waiting for a head.
    Idle,
    /// Part of a head is buffered.
    Head { buf: BytesMut, start_ns: u64 },
    /// Inside a body.
    Body(BodyDecoder),
    /// Framing was lost: skip until a chunk starts like a message again.
    Lost,
}

/// What the stream found, in stream order.
#[derive(Debug)]
pub enum Step<H> {
    /// A complete head; `start_ns` is the time of the chunk it began in. The callback answers
    /// with how the body is framed.
    Head { head: H, start_ns: u64 },
    /// The current message's body ended.
    BodyEnd,
    /// The message was given up for this reason; the stream resynchronises by itself.
    Dropped(Drop),
}

/// How to recognise and parse one kind of message.
pub struct Grammar<H> {
    pub looks_like: fn(&[u8]) -> bool,
    pub parse: fn(&[u8]) -> Parse<H>,
}

/// One captured chunk of a direction.
pub struct Chunk {
    pub data: Bytes,
    /// Bytes moved after `data` but not captured.
    pub gap: u64,
    /// Time that counts for a message starting in this chunk.
    pub ts_ns: u64,
}

#[derive(Debug)]
pub struct MessageStream {
    state: State,
    max_head: usize,
}

impl MessageStream {
    pub fn new(max_head: usize) -> Self {
        MessageStream {
            state: State::Idle,
            max_head,
        }
    }

    pub fn max_head(&self) -> usize {
        self.max_head
    }

    /// Bytes held in the head buffer (for the global budget).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Head { buf, .. } => buf.len(),
            _ => 0,
        }
    }

    /// Inside a body (e.g. one framed by the connection's close).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Gives up on the stream until a chunk starts like a message (e.g. after a protocol
    /// switch).
    pub fn abandon(&mut self) {
        self.state = State::Lost;
    }

    fn lose<H>(&mut self, on: &mut dyn FnMut(Step<H>) -> BodyKind, reason: Drop) {
        self.state = State::Lost;
        on(Step::Dropped(reason));
    }

    /// Feeds one chunk. `budget_left` bounds how many more head bytes may be buffered.
    pub fn feed<H>(
        &mut self,
        grammar: &Grammar<H>,
        chunk: Chunk,
        budget_left: usize,
        on: &mut dyn FnMut(Step<H>) -> BodyKind,
    ) {
        let Chunk {
            mut data,
            gap,
            ts_ns,
        } = chunk;
        if matches!(self.state, State::Lost) {
            if !data.is_empty() && (grammar.looks_like)(&data) {
                self.state = State::Idle;
            } else {
                return;
            }
        }
        // Loop over the messages in this chunk (pipelining, or a body end then a new head).
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Idle => {
                    if !(grammar.looks_like)(&data) {
                        self.lose(on, Drop::NotHttp);
                        return;
                    }
                    self.state = State::Head {
                        buf: BytesMut::new(),
                        start_ns: ts_ns,
                    };
                }
                State::Head { buf, start_ns } => {
                    // The usual case, a whole head in one read, is parsed where it lies: no
                    // buffer is allocated and nothing is copied. A partial head is buffered.
                    let fresh = buf.is_empty();
                    if fresh {
                        match (grammar.parse)(&data) {
                            Parse::Complete(head, used) => {
                                let start_ns = *start_ns;
                                let rest = data.slice(used.min(data.len())..);
                                let kind = on(Step::Head { head, start_ns });
                                self.state = match kind {
                                    BodyKind::None => State::Idle,
                                    kind => State::Body(BodyDecoder::new(kind)),
                                };
                                data = rest;
                                continue;
                            }
                            Parse::Partial => {}
                            Parse::Invalid(_) => {
                                self.lose(on, Drop::InvalidHead);
                                return;
                            }
                        }
                    }
                    if buf.len().saturating_add(data.len()) > self.max_head.min(budget_left) {
                        let reason = if budget_left < self.max_head {
                            Drop::BufferBudget
                        } else {
                            Drop::HeadTooLarge
                        };
                        self.lose(on, reason);
                        return;
                    }
                    buf.extend_from_slice(&data);
                    data = Bytes::new();
                    if fresh {
                        // Just parsed: partial.
                        continue;
                    }
                    match (grammar.parse)(buf) {
                        Parse::Complete(head, used) => {
                            let start_ns = *start_ns;
                            let rest = if used < buf.len() {
                                buf.split_off(used).freeze()
                            } else {
                                Bytes::new()
                            };
                            let kind = on(Step::Head { head, start_ns });
                            self.state = match kind {
                                BodyKind::None => State::Idle,
                                kind => State::Body(BodyDecoder::new(kind)),
                            };
                            data = rest;
                        }
                        Parse::Partial => {}
                        Parse::Invalid(_) => {
                            self.lose(on, Drop::InvalidHead);
                            return;
                        }
                    }
                }
                State::Body(decoder) => match decoder.feed(&data) {
                    Ok(progress) => {
                        data.advance(progress.consumed.min(data.len()));
                        if progress.complete {
                            self.state = State::Idle;
                            on(Step::BodyEnd);
                        } else if progress.consumed == 0 {
                            // A decoder that takes nothing and is not done would spin.
                            self.lose(on, Drop::FramingLost);
                            return;
                        }
                    }
                    Err(_) => {
                        self.lose(on, Drop::FramingLost);
                        return;
                    }
                },
            }
        }
        if gap == 0 {
            return;
        }
        match &mut self.state {
            State::Body(decoder) => match decoder.skip(gap) {
                Ok(progress) => {
                    if progress.complete {
                        self.state = State::Idle;
                        on(Step::BodyEnd);
                        if progress.consumed < gap {
                            // The uncaptured rest starts the next message: its head is lost.
                            self.lose(on, Drop::TruncatedHead);
                        }
                    }
                }
                Err(_) => self.lose(on, Drop::FramingLost),
            },
            State::Head { .. } | State::Idle => self.lose(on, Drop::TruncatedHead),
            State::Lost => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::{self, RequestHead};

    const REQUESTS: Grammar<RequestHead> = Grammar {
        looks_like: http1::looks_like_request,
        parse: http1::parse_request,
    };

    fn run(chunks: &[(&[u8], u64)]) -> Vec<String> {
        let mut s = MessageStream::new(1024);
        let mut seen = Vec::new();
        for (i, (data, gap)) in chunks.iter().enumerate() {
            s.feed(
                &REQUESTS,
                Chunk {
                    data: Bytes::copy_from_slice(data),
                    gap: *gap,
                    ts_ns: i as u64,
                },
                1 << 20,
                &mut |step| match step {
                    Step::Head { head, start_ns } => {
                        seen.push(format!(
                            "{} {} @{start_ns}",
                            head.method.as_str(),
                            head.target
                        ));
                        http1::request_body(&head)
                    }
                    Step::BodyEnd => {
                        seen.push("end".into());
                        BodyKind::None
                    }
                    Step::Dropped(d) => {
                        seen.push(format!("drop {}", d.label()));
                        BodyKind::None
                    }
                },
            );
        }
        seen
    }

    #[test]
    fn pipelined_and_split() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(
            run(&[(two, 0)]),
            ["GET /a @0", "POST /b @0", "end", "GET /c @0"]
        );
        let (a, b) = two.split_at(40);
        assert_eq!(
            run(&[(a, 0), (b, 0)]),
            ["GET /a @0", "POST /b @0", "end", "GET /c @1"]
        );
    }

    #[test]
    fn gaps_in_body_and_head() {
        // Body bytes beyond the capture are skipped by length.
        assert_eq!(
            run(&[
                (b"POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", 8),
                (b"GET /n HTTP/1.1\r\n\r\n", 0)
            ]),
            ["POST /u @0", "end", "GET /n @1"]
        );
        // A gap inside a head loses it; the next message resynchronises.
        assert_eq!(
            run(&[
                (b"GET /long HTTP/1.1\r\nX-A: ", 500),
                (b"garbage", 0),
                (b"GET /ok HTTP/1.1\r\n\r\n", 0)
            ]),
            ["drop truncated_head", "GET /ok @2"]
        );
    }

    #[test]
    fn bounds_and_garbage() {
        let big = [b'a'; 2000];
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend_from_slice(&big);
        assert_eq!(run(&[(&head, 0)]), ["drop head_too_large"]);
        assert_eq!(run(&[(b"\x16\x03\x01\x02\x00", 0)]), ["drop not_http"]);
        // A whole head in one read is parsed where it lies, whatever the buffer bound; only
        // a head that must be buffered is held to it.
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&[(&head, 0)]), ["GET / @0"]);
        let (first, second) = head.split_at(600);
        assert_eq!(run(&[(first, 0), (second, 0)]), ["drop head_too_large"]);
    }
}
