//! HTTP/2 connections: streams multiplexed on one connection, each paired from its request
//! header block to the end of its response (END_STREAM, RST_STREAM or GOAWAY).
//!
//! A connection seen from its preface knows its role at once (the preface is the client's).
//! One joined in the middle (open before the agent started) learns it from the first decodable
//! block with `:method` (a request) or `:status` (a response); until then its streams are
//! not followed.
use std::{collections::HashMap, sync::Arc};

use agent_common::Direction;

use super::{ConnMeta, Exchange, Message, Notice, Role};
use crate::{
    capture::event::DataChunk,
    protocol::http2::{self, HeaderFields, Http2Direction, StreamEvent},
    span::context::RequestStart,
    telemetry::{Drop, TELEMETRY},
};

/// What one HTTP/2 stream was: request and response header fields, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Http2Exchange {
    pub request: HeaderFields,
    /// None when no response header block arrived.
    pub response: Option<HeaderFields>,
    /// From the trailers (or a trailers-only response).
    pub grpc_status: Option<u32>,
    /// RST_STREAM error code, when the stream was reset.
    pub reset: Option<u32>,
    /// The peer's GOAWAY said this stream would not be processed.
    pub refused: bool,
    /// A response block (headers or trailers) could not be wholly decoded: an absent status
    /// may have been there.
    pub response_incomplete: bool,
}

impl Http2Exchange {
    /// gRPC by its content type, from the request or else the response.
    pub fn is_grpc(&self) -> bool {
        self.request.is_grpc() || self.response.as_ref().is_some_and(|r| r.is_grpc())
    }

    /// Why the stream ended without its response ending normally, for `error.type`.
    pub fn ended_by(&self) -> Option<&'static str> {
        if self.refused {
            return Some("REFUSED_STREAM");
        }
        self.reset
            .map(|code| http2::error_code_name(code).unwrap_or("_OTHER"))
    }
}

struct OpenStream {
    id: u64,
    start_ns: u64,
    tid: u32,
    exchange: Http2Exchange,
}

pub struct H2Conn {
    role: Option<Role>,
    ingress: Http2Direction,
    egress: Http2Direction,
    streams: HashMap<u32, OpenStream>,
}

/// Where a chunk's events go.
pub struct Sink<'a> {
    pub meta: &'a Arc<ConnMeta>,
    pub max_streams: usize,
    pub next_id: &'a mut u64,
    pub out: &'a mut Vec<Notice>,
}

impl H2Conn {
    /// A connection whose client preface was just seen going `direction`.
    pub fn from_preface(direction: Direction) -> Self {
        let role = match direction {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        };
        H2Conn {
            role: Some(role),
            ingress: Http2Direction::from_start(direction == Direction::Ingress),
            egress: Http2Direction::from_start(direction == Direction::Egress),
            streams: HashMap::new(),
        }
    }

    /// A connection seen from its start whose first bytes were frames going `direction`:
    /// servers send their SETTINGS without waiting for the client's preface, so that direction
    /// is the server's, and the preface is still to come the other way.
    pub fn from_server_frames(direction: Direction) -> Self {
        let (role, client_dir) = match direction {
            Direction::Egress => (Role::Server, Direction::Ingress),
            Direction::Ingress => (Role::Client, Direction::Egress),
        };
        H2Conn {
            role: Some(role),
            ingress: Http2Direction::from_start(client_dir == Direction::Ingress),
            egress: Http2Direction::from_start(client_dir == Direction::Egress),
            streams: HashMap::new(),
        }
    }

    /// A connection joined in the middle.
    pub fn joined() -> Self {
        H2Conn {
            role: None,
            ingress: Http2Direction::joined(),
            egress: Http2Direction::joined(),
            streams: HashMap::new(),
        }
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn buffered(&self) -> usize {
        self.ingress.buffered() + self.egress.buffered()
    }

    pub fn on_chunk(&mut self, chunk: &DataChunk, sink: &mut Sink<'_>) {
        let mut events = Vec::new();
        let dir = match chunk.direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        };
        dir.feed(&chunk.payload, chunk.gap(), &mut |e| events.push(e));
        for event in events {
            self.on_event(chunk, event, sink);
        }
    }

    fn on_event(&mut self, chunk: &DataChunk, event: StreamEvent, sink: &mut Sink<'_>) {
        if self.role.is_none() {
            self.learn_role(chunk.direction, &event);
        }
        let Some(role) = self.role else {
            return;
        };
        let is_request = matches!(
            (role, chunk.direction),
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress)
        );
        match (is_request, event) {
            (_, StreamEvent::Lost) => TELEMETRY.drop(Drop::FramingLost),
            (true, StreamEvent::Headers { stream, fields, .. }) => {
                self.start(role, chunk, stream, *fields, sink)
            }
            (true, StreamEvent::HeadersLost { stream, .. }) => {
                self.start(role, chunk, stream, HeaderFields::default(), sink)
            }
            (true, StreamEvent::Reset { stream, code }) => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.exchange.reset = Some(code);
                    self.finish(stream, role, chunk.end_ns, sink);
                }
            }
            (true, StreamEvent::Data { .. } | StreamEvent::GoAway { .. }) => {}
            (
                false,
                StreamEvent::Headers {
                    stream,
                    end_stream,
                    fields,
                },
            ) => self.response_block(role, chunk, stream, end_stream, Some(*fields), sink),
            (false, StreamEvent::HeadersLost { stream, end_stream }) => {
                self.response_block(role, chunk, stream, end_stream, None, sink)
            }
            (
                false,
                StreamEvent::Data {
                    stream,
                    end_stream: true,
                },
            ) => self.finish(stream, role, chunk.end_ns, sink),
            (false, StreamEvent::Data { .. }) => {}
            (false, StreamEvent::Reset { stream, code }) => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.exchange.reset = Some(code);
                    self.finish(stream, role, chunk.end_ns, sink);
                }
            }
            (false, StreamEvent::GoAway { last_stream, .. }) => {
                let refused: Vec<u32> = self
                    .streams
                    .keys()
                    .filter(|s| **s > last_stream)
                    .copied()
                    .collect();
                for stream in refused {
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.exchange.refused = true;
                    }
                    self.finish(stream, role, chunk.end_ns, sink);
                }
            }
        }
    }

    fn learn_role(&mut self, direction: Direction, event: &StreamEvent) {
        let StreamEvent::Headers { fields, .. } = event else {
            return;
        };
        // The direction that carries `:method` is the client's.
        let client_dir = if fields.method.is_some() {
            direction
        } else if fields.status.is_some() {
            match direction {
                Direction::Ingress => Direction::Egress,
                Direction::Egress => Direction::Ingress,
            }
        } else {
            return;
        };
        self.role = Some(match client_dir {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        });
    }

    fn start(
        &mut self,
        role: Role,
        chunk: &DataChunk,
        stream: u32,
        fields: HeaderFields,
        sink: &mut Sink<'_>,
    ) {
        // Clients open odd streams (RFC 9113 §5.1.1); a second block on an open stream is the
        // request's trailers.
        if stream.is_multiple_of(2) || self.streams.contains_key(&stream) {
            return;
        }
        if self.streams.len() >= sink.max_streams {
            TELEMETRY.drop(Drop::TooManyPending);
            return;
        }
        if !fields.complete {
            TELEMETRY.drop(Drop::HeaderFieldsUnknown);
        }
        TELEMETRY
            .requests_parsed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = *sink.next_id;
        *sink.next_id = sink.next_id.wrapping_add(1);
        let process = &sink.meta.process;
        sink.out.push(Notice::Started(RequestStart {
            id,
            server: role == Role::Server,
            tgid: process.pid,
            tid: chunk.tid,
            threading: process.threading,
            traceparent: fields.traceparent.clone(),
            tracestate: fields.tracestate.clone(),
            kernel: None,
        }));
        let start_ns = match role {
            Role::Server => chunk.end_ns,
            Role::Client => chunk.start_ns,
        };
        self.streams.insert(
            stream,
            OpenStream {
                id,
                start_ns,
                tid: chunk.tid,
                exchange: Http2Exchange {
                    request: fields,
                    ..Http2Exchange::default()
                },
            },
        );
    }

    fn response_block(
        &mut self,
        role: Role,
        chunk: &DataChunk,
        stream: u32,
        end_stream: bool,
        fields: Option<HeaderFields>,
        sink: &mut Sink<'_>,
    ) {
        let Some(open) = self.streams.get_mut(&stream) else {
            if stream % 2 == 1 {
                TELEMETRY.drop(Drop::UnmatchedResponse);
            }
            return;
        };
        let fields = fields.unwrap_or_default();
        if !fields.complete {
            TELEMETRY.drop(Drop::HeaderFieldsUnknown);
            open.exchange.response_incomplete = true;
        }
        match &open.exchange.response {
            // 1xx are interim: the real response follows.
            None if fields.status.is_some_and(|s| (100..200).contains(&s)) => return,
            None => {
                open.exchange.grpc_status = fields.grpc_status;
                open.exchange.response = Some(fields);
            }
            Some(_) => {
                if fields.grpc_status.is_some() {
                    open.exchange.grpc_status = fields.grpc_status;
                }
            }
        }
        if end_stream {
            self.finish(stream, role, chunk.end_ns, sink);
        }
    }

    fn finish(&mut self, stream: u32, role: Role, end_ns: u64, sink: &mut Sink<'_>) {
        let Some(open) = self.streams.remove(&stream) else {
            return;
        };
        sink.out
            .push(Notice::Finished(exchange(open, role, sink.meta, end_ns)));
    }

    /// The connection ended: streams with a response end now, the others never got one.
    pub fn close(&mut self, meta: &Arc<ConnMeta>, end_ns: u64, out: &mut Vec<Notice>) {
        let role = self.role.unwrap_or(Role::Server);
        let mut streams: Vec<(u32, OpenStream)> = self.streams.drain().collect();
        streams.sort_by_key(|(s, _)| *s);
        for (_, open) in streams {
            if open.exchange.response.is_some() {
                out.push(Notice::Finished(exchange(open, role, meta, end_ns)));
            } else {
                TELEMETRY.drop(Drop::NoResponse);
                out.push(Notice::Abandoned {
                    id: open.id,
                    tgid: meta.process.pid,
                });
            }
        }
    }
}

fn exchange(open: OpenStream, role: Role, meta: &Arc<ConnMeta>, end_ns: u64) -> Exchange {
    Exchange {
        id: open.id,
        role,
        conn: Arc::clone(meta),
        message: Message::Http2(Box::new(open.exchange)),
        start_ns: open.start_ns,
        end_ns: end_ns.max(open.start_ns),
        tid: open.tid,
    }
}
