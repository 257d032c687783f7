//! Database and cache connections: which protocol a connection speaks (by its first bytes, not
//! its port), and the parser's queries and replies turned into exchanges.
//!
//! Only the client's side is reported: a database server's own connections (the process that
//! reads the startup message or writes the greeting) are recognised and left alone, so that one
//! query is one span, the one that shows the wait where it happened.
use std::{collections::VecDeque, sync::Arc};

use agent_common::{ConnOrigin, Direction};

use super::{ConnMeta, DbExchange, Exchange, Message, Notice, Role};
use crate::{
    capture::event::DataChunk,
    protocol::{
        db::{DbEvent, DbParser, DbQuery, DbSystem},
        mysql::{self, MySqlParser},
        postgres::{self, PostgresParser},
        redis::{self, RedisParser},
    },
    span::context::RequestStart,
    telemetry::{Drop, TELEMETRY},
};

/// Queries awaiting replies on one connection (Redis pipelines run deeper than HTTP's).
const MAX_PENDING: usize = 256;

/// What the first bytes of a connection say about databases.
pub enum Detected {
    /// The traced process is a database client: parse with this.
    Client(Box<DbConn>),
    /// The traced process is the database server: not reported.
    Server,
}

/// Recognises a database protocol from the first chunk of a connection (or the first after
/// the agent joined it mid-stream). `from_start`: the connection's opening was seen.
pub fn detect(chunk: &DataChunk, from_start: bool) -> Option<Detected> {
    let data = &chunk.payload[..];
    let egress = chunk.direction == Direction::Egress;
    let client = |parser: Box<dyn DbParser>| Some(Detected::Client(Box::new(DbConn::new(parser))));
    if postgres::looks_like_startup(data) {
        return if egress {
            client(Box::<PostgresParser>::default())
        } else {
            Some(Detected::Server)
        };
    }
    if postgres::looks_like_client_messages(data) {
        return if egress {
            client(Box::new(PostgresParser::joined()))
        } else {
            Some(Detected::Server)
        };
    }
    if from_start && mysql::looks_like_greeting(data) {
        // The server speaks first: the greeting is read by the client, written by the server.
        return if egress {
            Some(Detected::Server)
        } else {
            client(Box::<MySqlParser>::default())
        };
    }
    if mysql::looks_like_command(data) {
        return if egress {
            client(Box::new(MySqlParser::joined()))
        } else {
            Some(Detected::Server)
        };
    }
    if redis::looks_like_command(data) {
        return if egress {
            client(Box::<RedisParser>::default())
        } else {
            Some(Detected::Server)
        };
    }
    None
}

/// Is a connection's first chunk its opening (accepted or connected while the agent watched)?
pub fn opened_while_watched(origin: ConnOrigin, chunks_before: u8) -> bool {
    matches!(origin, ConnOrigin::Accepted | ConnOrigin::Connected) && chunks_before == 0
}

struct PendingQuery {
    id: u64,
    query: DbQuery,
    start_ns: u64,
    tid: u32,
}

/// One database connection of a client process.
pub struct DbConn {
    parser: Box<dyn DbParser>,
    system: DbSystem,
    namespace: Option<String>,
    pending: VecDeque<PendingQuery>,
    /// When the client last read from the server: a reply found complete while reading the
    /// client's next write ended then.
    last_read_ns: u64,
    events: Vec<DbEvent>,
}

/// What [`DbConn::on_chunk`] needs from the connection table.
pub struct Sink<'a> {
    pub meta: &'a Arc<ConnMeta>,
    pub next_id: &'a mut u64,
    pub out: &'a mut Vec<Notice>,
}

/// What the connection must do after a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// The connection switched to TLS: what follows is ciphertext.
    StartTls,
}

impl DbConn {
    fn new(parser: Box<dyn DbParser>) -> Self {
        DbConn {
            system: parser.system(),
            parser,
            namespace: None,
            pending: VecDeque::new(),
            last_read_ns: 0,
            events: Vec::new(),
        }
    }

    pub fn buffered(&self) -> usize {
        self.parser.buffered()
    }

    pub fn on_chunk(&mut self, chunk: &DataChunk, sink: &mut Sink<'_>) -> After {
        let gap = chunk.gap();
        let mut events = std::mem::take(&mut self.events);
        match chunk.direction {
            Direction::Egress => self.parser.client(&chunk.payload, gap, &mut events),
            Direction::Ingress => self.parser.server(&chunk.payload, gap, &mut events),
        }
        let mut after = After::Continue;
        for event in events.drain(..) {
            match event {
                DbEvent::Query(query) => self.started(query, chunk, sink),
                DbEvent::Reply(reply) => {
                    let end_ns = match chunk.direction {
                        Direction::Ingress => chunk.end_ns,
                        Direction::Egress => self.last_read_ns,
                    };
                    let Some(q) = self.pending.pop_front() else {
                        TELEMETRY.drop(Drop::UnmatchedResponse);
                        continue;
                    };
                    TELEMETRY
                        .requests_parsed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sink.out.push(Notice::Finished(Exchange {
                        id: q.id,
                        role: Role::Client,
                        conn: Arc::clone(sink.meta),
                        message: Message::Db(Box::new(DbExchange {
                            system: self.system,
                            namespace: self.namespace.clone(),
                            query: q.query,
                            reply: Some(reply),
                        })),
                        start_ns: q.start_ns,
                        end_ns: end_ns.max(q.start_ns),
                        tid: q.tid,
                    }));
                }
                DbEvent::Namespace(name) => self.namespace = Some(name),
                DbEvent::System(system) => self.system = system,
                DbEvent::StartTls => after = After::StartTls,
                DbEvent::Lost => {
                    TELEMETRY.drop(Drop::FramingLost);
                    self.abandon(sink.meta, sink.out);
                }
            }
        }
        self.events = events;
        if chunk.direction == Direction::Ingress {
            self.last_read_ns = chunk.end_ns;
        }
        after
    }

    fn started(&mut self, query: DbQuery, chunk: &DataChunk, sink: &mut Sink<'_>) {
        if self.pending.len() >= MAX_PENDING {
            TELEMETRY.drop(Drop::TooManyPending);
            return;
        }
        let id = *sink.next_id;
        *sink.next_id = sink.next_id.wrapping_add(1);
        let process = &sink.meta.process;
        sink.out.push(Notice::Started(RequestStart {
            id,
            server: false,
            tgid: process.pid,
            tid: chunk.tid,
            threading: process.threading,
            traceparent: None,
            tracestate: None,
            kernel: None,
        }));
        self.pending.push_back(PendingQuery {
            id,
            query,
            start_ns: chunk.start_ns,
            tid: chunk.tid,
        });
    }

    /// The queries waiting for replies will not get them (framing lost, connection over).
    pub fn abandon(&mut self, meta: &ConnMeta, out: &mut Vec<Notice>) {
        if self.pending.is_empty() {
            return;
        }
        TELEMETRY.drop_n(Drop::NoResponse, self.pending.len() as u64);
        let tgid = meta.process.pid;
        for q in self.pending.drain(..) {
            out.push(Notice::Abandoned { id: q.id, tgid });
        }
    }
}
