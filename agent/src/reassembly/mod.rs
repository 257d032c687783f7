//! Reassembly: a bounded table of connections, each turned from captured chunks into
//! exchanges (a request and its response, with the times that bound them): HTTP/1 messages in
//! order, or HTTP/2 streams multiplexed on one connection ([`h2`]).
//!
//! Which side is the server is decided by the bytes, not by accept/connect: the direction that
//! carries requests. That also covers connections opened before the agent started.
pub mod db;
pub mod h2;
pub mod stream;

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use agent_common::{ConnOrigin, Direction};
use foldhash::{HashMap, HashMapExt};

use crate::{
    capture::{
        ConnKey,
        event::{ConnOpen, DataChunk, KernelCtx},
        process::{ProcessCache, ProcessInfo},
    },
    protocol::{
        db::{DbQuery, DbReply, DbSystem},
        http1::{self, BodyKind, RequestHead, ResponseHead},
        http2,
    },
    span::context::RequestStart,
    telemetry::{Drop, TELEMETRY},
};
use h2::{H2Conn, Http2Exchange};
use stream::{Chunk, Grammar, MessageStream, Step};

/// Which end of the connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What is known of a connection.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    /// None when the connection was first seen without its open record.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub origin: ConnOrigin,
    pub process: Arc<ProcessInfo>,
    /// The bytes were TLS, seen as plaintext through the OpenSSL probes (`url.scheme` https).
    pub tls: bool,
    /// The addresses' IPs as text, formatted once per connection rather than for every span
    /// (formatting was 4% of the agent at load). Reset with the addresses.
    pub ip_text: IpText,
}

#[derive(Debug, Clone, Default)]
pub struct IpText {
    local: std::sync::OnceLock<compact_str::CompactString>,
    remote: std::sync::OnceLock<compact_str::CompactString>,
}

impl ConnMeta {
    /// The local address's IP as text.
    pub fn local_ip(&self) -> Option<&compact_str::CompactString> {
        let a = self.local?;
        Some(self.ip_text.local.get_or_init(|| ip_text(a)))
    }

    /// The peer's IP as text.
    pub fn remote_ip(&self) -> Option<&compact_str::CompactString> {
        let a = self.remote?;
        Some(self.ip_text.remote.get_or_init(|| ip_text(a)))
    }
}

fn ip_text(a: SocketAddr) -> compact_str::CompactString {
    use compact_str::ToCompactString;
    a.ip().to_compact_string()
}

/// What reassembly tells the span stage, in stream order.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A request head was read (server) or written (client): its trace context is decided now,
    /// while the order of requests across a process's threads is still known.
    Started(RequestStart),
    /// The request got its response.
    Finished(Exchange),
    /// The request will never get a response (connection closed, or bounds).
    Abandoned { id: u64, tgid: u32 },
    /// A traced process wrote to its stdout or stderr (`logs.enabled`); in order with its
    /// requests, so the span stage knows which one the writing thread is serving.
    Log(LogNotice),
}

/// One write to stdout/stderr, with the process that made it.
#[derive(Debug, Clone)]
pub struct LogNotice {
    pub tid: u32,
    pub fd: u32,
    /// CLOCK_MONOTONIC, when the write returned.
    pub ts_ns: u64,
    pub payload: bytes::Bytes,
    pub truncated: bool,
    pub process: Arc<ProcessInfo>,
}

/// One request and its response on one connection: what a span is built from.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Matches the [`RequestStart`] of this request.
    pub id: u64,
    pub role: Role,
    pub conn: Arc<ConnMeta>,
    pub message: Message,
    /// CLOCK_MONOTONIC: server, the read that brought the first request byte returned;
    /// client, the write of the first request byte was entered.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC: the syscall that moved the last response byte returned.
    pub end_ns: u64,
    /// The thread that read (server) or wrote (client) the request.
    pub tid: u32,
}

/// What was exchanged, per protocol.
#[derive(Debug, Clone)]
pub enum Message {
    Http1 {
        request: RequestHead,
        /// None when the connection closed before a response.
        response: Option<ResponseHead>,
    },
    Http2(Box<Http2Exchange>),
    /// A database or cache query the traced process made (client side only).
    Db(Box<DbExchange>),
}

/// One query on a database connection and how it was answered.
#[derive(Debug, Clone)]
pub struct DbExchange {
    pub system: DbSystem,
    /// `db.namespace`: the database the connection was opened on or switched to.
    pub namespace: Option<String>,
    pub query: DbQuery,
    /// None when the connection ended before the reply.
    pub reply: Option<DbReply>,
}

/// Bounds of the table.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Largest message head buffered per direction.
    pub max_head: usize,
    /// All head buffers together.
    pub buffer_budget: usize,
    /// Requests in flight per connection (pipelining depth).
    pub max_pending: usize,
    /// HTTP/2 streams in flight per connection.
    pub max_streams: usize,
    /// Connections without traffic for this long are forgotten.
    pub idle_timeout_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 65536,
            max_head: 16 * 1024,
            buffer_budget: 64 << 20,
            max_pending: 32,
            max_streams: 256,
            idle_timeout_ns: 300 * 1_000_000_000,
        }
    }
}

const REQUESTS: Grammar<RequestHead> = Grammar {
    looks_like: http1::looks_like_request,
    parse: http1::parse_request,
};
const RESPONSES: Grammar<ResponseHead> = Grammar {
    looks_like: http1::looks_like_response,
    parse: http1::parse_response,
};

/// Threads with TLS plaintext waiting for its socket.
const MAX_UNBOUND: usize = 4096;

/// Chunks of a connection before any request was recognised after which it is declared
/// not HTTP/1 and ignored.
const DETECT_CHUNKS: u8 = 4;

struct PendingRequest {
    id: u64,
    head: RequestHead,
    start_ns: u64,
    tid: u32,
}

/// Descriptors of one socket tracked per process (dup, dup2 onto 0 and 1 by inetd-style and
/// busybox servers); more are not followed.
const MAX_FDS: usize = 8;

struct Connection {
    meta: Arc<ConnMeta>,
    /// The process's descriptors for this socket; the connection ends when the last closes.
    /// Empty when it was first seen without an open record: then any close ends it.
    fds: Vec<u32>,
    role: Option<Role>,
    requests: MessageStream,
    responses: MessageStream,
    pending: VecDeque<PendingRequest>,
    /// A response whose head was seen and whose body is still coming.
    answering: Option<(PendingRequest, ResponseHead)>,
    last_response_ns: u64,
    last_activity_ns: u64,
    undetected_chunks: u8,
    ignored: bool,
    /// The kernel's context from the chunk where the next request head starts (injection).
    kernel_ctx: Option<KernelCtx>,
    /// Set once the connection is known to speak HTTP/2; the HTTP/1 fields then stay idle.
    h2: Option<Box<H2Conn>>,
    /// Set once the connection is known to be a database client's; HTTP then stays idle.
    db: Option<Box<db::DbConn>>,
    /// TLS records were seen on the socket (its plaintext may come from the OpenSSL probes).
    tls_records: bool,
    /// ... and application-data records among them (a failed or probing handshake has none).
    tls_app_data: bool,
}

/// How long a connection goes without traffic before it gives back its idle buffers.
const QUIET_NS: u64 = 2_000_000_000;

/// Everything the agent knows about live connections.
pub struct ConnTable {
    /// Boxed: a connection is ~460 bytes, and a hash table keeps up to twice as many slots as
    /// entries; inline, 10k connections (20k ends) would cost 15 MB of slots, boxed 10 MB.
    conns: HashMap<ConnKey, Box<Connection>>,
    /// TLS plaintext written before its socket was known, by (tgid, tid), until the thread's
    /// bind names the socket (see `capture::tls`).
    unbound: HashMap<(u32, u32), DataChunk>,
    processes: ProcessCache,
    limits: Limits,
    buffered: usize,
    next_id: u64,
}

impl ConnTable {
    pub fn new(limits: Limits, processes: ProcessCache) -> Self {
        ConnTable {
            conns: HashMap::new(),
            unbound: HashMap::new(),
            processes,
            limits,
            buffered: 0,
            next_id: 1,
        }
    }

    pub fn learn_service(&mut self, tgid: u32, service_name: Option<String>) {
        self.processes.learn_service(tgid, service_name);
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn new_connection(&self, meta: ConnMeta, now_ns: u64) -> Connection {
        Connection {
            meta: Arc::new(meta),
            fds: Vec::new(),
            role: None,
            requests: MessageStream::new(self.limits.max_head),
            responses: MessageStream::new(self.limits.max_head),
            pending: VecDeque::new(),
            answering: None,
            last_response_ns: now_ns,
            last_activity_ns: now_ns,
            undetected_chunks: 0,
            ignored: false,
            kernel_ctx: None,
            h2: None,
            db: None,
            tls_records: false,
            tls_app_data: false,
        }
    }

    pub fn open(&mut self, open: ConnOpen, out: &mut Vec<Notice>) {
        let fresh = matches!(open.origin, ConnOrigin::Accepted | ConnOrigin::Connected);
        if fresh && let Some(old) = self.conns.remove(&open.key) {
            // accept/connect made a new socket at the address of one whose close we missed
            // (e.g. the ring buffer was full): the old connection is over.
            self.finish(old, out);
        }
        if let Some(conn) = self.conns.get_mut(&open.key) {
            // The same socket under another descriptor of the process (dup, dup2 onto 0/1):
            // one connection, one byte stream.
            if !conn.fds.contains(&open.fd) && conn.fds.len() < MAX_FDS {
                conn.fds.push(open.fd);
            }
            if conn.meta.local.is_none() {
                let mut meta = (*conn.meta).clone();
                meta.local = Some(open.local);
                meta.remote = Some(open.remote);
                meta.ip_text = IpText::default();
                conn.meta = Arc::new(meta);
            }
            return;
        }
        if self.conns.len() >= self.limits.max_connections {
            TELEMETRY.drop(Drop::ConnectionTableFull);
            return;
        }
        let process = self.processes.get(open.key.tgid, &open.comm);
        let meta = ConnMeta {
            local: Some(open.local),
            remote: Some(open.remote),
            origin: open.origin,
            process,
            tls: false,
            ip_text: IpText::default(),
        };
        let mut conn = self.new_connection(meta, open.ts_ns);
        conn.fds.push(open.fd);
        self.conns.insert(open.key, Box::new(conn));
        TELEMETRY
            .connections_tracked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One descriptor of the socket closed; the connection ends with its last one.
    pub fn close(&mut self, key: ConnKey, fd: u32, out: &mut Vec<Notice>) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.fds.retain(|f| *f != fd);
        if conn.fds.is_empty()
            && let Some(conn) = self.conns.remove(&key)
        {
            self.finish(conn, out);
        }
    }

    /// Ends a connection: a response framed by the close ends now; requests without a
    /// response are counted.
    fn finish(&mut self, mut conn: Box<Connection>, out: &mut Vec<Notice>) {
        self.buffered = self.buffered.saturating_sub(conn.buffered());
        if let Some(h2) = conn.h2.as_mut() {
            h2.close(&conn.meta, conn.last_activity_ns, out);
            return;
        }
        if let Some(db) = conn.db.as_mut() {
            db.abandon(&conn.meta, out);
            return;
        }
        let (req_buffered, resp_buffered) = (conn.requests.buffered(), conn.responses.buffered());
        if req_buffered > 0 {
            TELEMETRY.drop(Drop::IncompleteHead);
        }
        if resp_buffered > 0 {
            TELEMETRY.drop(Drop::IncompleteHead);
        }
        // Bytes were seen but never recognised as HTTP/1 (e.g. a TLS handshake that ended
        // before the detection window): count the connection rather than forget it silently.
        if conn.tls_records && !conn.meta.tls {
            // Encrypted traffic the agent could not read, or a handshake that carried none (a
            // port probe, a failed handshake, a TLS client at a plaintext server).
            TELEMETRY.drop(if conn.tls_app_data {
                Drop::TlsOpaque
            } else {
                Drop::TlsHandshakeOnly
            });
        } else if conn.role.is_none()
            && conn.undetected_chunks > 0
            && !conn.ignored
            && !conn.tls_records
        {
            TELEMETRY.drop(Drop::NotHttp);
        }
        if let Some((req, resp)) = conn.answering.take() {
            let end = conn.last_response_ns;
            out.push(Notice::Finished(conn.exchange(req, Some(resp), end)));
        }
        if !conn.pending.is_empty() {
            TELEMETRY.drop_n(Drop::NoResponse, conn.pending.len() as u64);
            let tgid = conn.meta.process.pid;
            for req in conn.pending.drain(..) {
                out.push(Notice::Abandoned { id: req.id, tgid });
            }
        }
    }

    pub fn data(&mut self, chunk: DataChunk, out: &mut Vec<Notice>) {
        tracing::trace!(
            tgid = chunk.key.tgid,
            sock = chunk.key.sock,
            dir = ?chunk.direction,
            tls = chunk.tls,
            len = chunk.total_len,
            head = ?String::from_utf8_lossy(&chunk.payload[..chunk.payload.len().min(24)]),
            "chunk"
        );
        if !self.conns.contains_key(&chunk.key) {
            // The open record was lost (ring full) or the connection predates the agent's
            // user space: track it without addresses.
            if self.conns.len() >= self.limits.max_connections {
                TELEMETRY.drop(Drop::ConnectionTableFull);
                return;
            }
            let process = self.processes.get(chunk.key.tgid, "");
            let meta = ConnMeta {
                local: None,
                remote: None,
                origin: ConnOrigin::Unknown,
                process,
                tls: false,
                ip_text: IpText::default(),
            };
            let conn = self.new_connection(meta, chunk.end_ns);
            self.conns.insert(chunk.key, Box::new(conn));
        }
        let budget_left = self.limits.buffer_budget.saturating_sub(self.buffered);
        let max_pending = self.limits.max_pending;
        let max_streams = self.limits.max_streams;
        let next_id = &mut self.next_id;
        let Some(conn) = self.conns.get_mut(&chunk.key) else {
            return;
        };
        let before = conn.buffered();
        if budget_left == 0 && conn.h2.is_some() {
            // HTTP/2 buffers only header blocks in progress; over the budget, lose them.
            TELEMETRY.drop(Drop::BufferBudget);
            conn.h2 = Some(Box::new(H2Conn::joined()));
        }
        conn.on_chunk(chunk, budget_left, max_pending, max_streams, next_id, out);
        let after = conn.buffered();
        self.buffered = (self.buffered + after).saturating_sub(before);
    }

    /// TLS plaintext whose socket is not known yet: kept (one per thread, bounded) until the
    /// thread's [`ConnTable::bind`].
    pub fn unbound(&mut self, chunk: DataChunk) {
        if self.unbound.len() >= MAX_UNBOUND
            && !self.unbound.contains_key(&(chunk.key.tgid, chunk.tid))
        {
            TELEMETRY.drop(Drop::TlsUnbound);
            return;
        }
        if self
            .unbound
            .insert((chunk.key.tgid, chunk.tid), chunk)
            .is_some()
        {
            TELEMETRY.drop(Drop::TlsUnbound);
        }
    }

    /// The thread's unbound plaintext belongs to the connection `key`.
    pub fn bind(&mut self, key: ConnKey, tid: u32, out: &mut Vec<Notice>) {
        if let Some(mut chunk) = self.unbound.remove(&(key.tgid, tid)) {
            chunk.key = key;
            self.data(chunk, out);
        }
    }

    /// A process exited: its descriptors were closed by the kernel, without close(2).
    /// A stdout/stderr write of a traced process: passed on in order.
    pub fn log(&mut self, chunk: crate::capture::event::LogChunk, out: &mut Vec<Notice>) {
        let process = self.processes.get(chunk.tgid, "");
        out.push(Notice::Log(LogNotice {
            tid: chunk.tid,
            fd: chunk.fd,
            ts_ns: chunk.ts_ns,
            payload: chunk.payload,
            truncated: chunk.truncated,
            process,
        }));
    }

    pub fn process_exit(&mut self, tgid: u32, out: &mut Vec<Notice>) {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect();
        for key in keys {
            if let Some(conn) = self.conns.remove(&key) {
                self.finish(conn, out);
            }
        }
        let before = self.unbound.len();
        self.unbound.retain(|(t, _), _| *t != tgid);
        TELEMETRY.drop_n(Drop::TlsUnbound, (before - self.unbound.len()) as u64);
        self.processes.forget(tgid);
    }

    /// Forgets connections idle for longer than the timeout.
    pub fn evict_idle(&mut self, now_ns: u64, out: &mut Vec<Notice>) {
        let timeout = self.limits.idle_timeout_ns;
        let idle: Vec<ConnKey> = self
            .conns
            .iter_mut()
            .filter_map(|(k, c)| {
                let quiet = now_ns.saturating_sub(c.last_activity_ns);
                // A connection quiet for a while (a keep-alive pool's spare) gives back its
                // request queue's buffer (4 slots once used: 768 bytes of the ~1.3 KiB a
                // connection holds); a busy one keeps it rather than allocate per request.
                if quiet > QUIET_NS && c.pending.is_empty() && c.pending.capacity() > 0 {
                    c.pending = VecDeque::new();
                }
                (quiet > timeout).then_some(*k)
            })
            .collect();
        for key in idle {
            if let Some(conn) = self.conns.remove(&key) {
                TELEMETRY.drop(Drop::ConnectionIdle);
                self.finish(conn, out);
            }
        }
        if self.conns.is_empty() {
            self.buffered = 0;
        }
    }
}

impl Connection {
    fn buffered(&self) -> usize {
        self.requests.buffered()
            + self.responses.buffered()
            + self.h2.as_ref().map_or(0, |h| h.buffered())
            + self.db.as_ref().map_or(0, |d| d.buffered())
    }

    fn start_tls(&mut self) {
        let mut meta = (*self.meta).clone();
        meta.tls = true;
        self.meta = Arc::new(meta);
        self.role = None;
        self.ignored = false;
        self.undetected_chunks = 0;
        self.requests = MessageStream::new(self.requests.max_head());
        self.responses = MessageStream::new(self.responses.max_head());
        self.pending.clear();
        self.answering = None;
        self.h2 = None;
        self.db = None;
    }

    fn exchange(&self, req: PendingRequest, resp: Option<ResponseHead>, end_ns: u64) -> Exchange {
        Exchange {
            id: req.id,
            role: self.role.unwrap_or(Role::Server),
            conn: Arc::clone(&self.meta),
            message: Message::Http1 {
                request: req.head,
                response: resp,
            },
            start_ns: req.start_ns,
            end_ns: end_ns.max(req.start_ns),
            tid: req.tid,
        }
    }

    fn on_chunk(
        &mut self,
        chunk: DataChunk,
        budget_left: usize,
        max_pending: usize,
        max_streams: usize,
        next_id: &mut u64,
        out: &mut Vec<Notice>,
    ) {
        self.last_activity_ns = chunk.end_ns;
        if chunk.tls && !self.meta.tls {
            // The first plaintext from OpenSSL: what was seen before was the handshake (or
            // ciphertext the kernel did not yet know as such). Start over on the plaintext.
            self.start_tls();
        }
        if !chunk.tls
            && self.role.is_none()
            && self.h2.is_none()
            && self.db.is_none()
            && looks_like_tls_record(&chunk.payload)
        {
            self.tls_records = true;
        }
        // Ciphertext: the plaintext comes from the OpenSSL probes, or not at all (counted as
        // tls_opaque when the connection ends). Record bodies read apart from their headers
        // must not count as unrecognised traffic either.
        if !chunk.tls && (self.meta.tls || self.tls_records) {
            if chunk.payload.first() == Some(&23) {
                self.tls_app_data = true;
            }
            return;
        }
        if self.ignored {
            return;
        }
        if self.h2.is_none()
            && self.db.is_none()
            && self.role.is_none()
            && !http1::looks_like_request(&chunk.payload)
        {
            let from_start = db::opened_while_watched(self.meta.origin, self.undetected_chunks);
            match db::detect(&chunk, from_start) {
                Some(db::Detected::Client(conn)) => {
                    self.role = Some(Role::Client);
                    self.db = Some(conn);
                }
                Some(db::Detected::Server) => {
                    // The database server's side: its clients' spans tell the story.
                    self.ignored = true;
                    return;
                }
                None => {}
            }
        }
        if let Some(db) = self.db.as_mut() {
            let after = db.on_chunk(
                &chunk,
                &mut db::Sink {
                    meta: &self.meta,
                    next_id,
                    out,
                },
            );
            if after == db::After::StartTls {
                db.abandon(&self.meta, out);
                self.db = None;
                self.role = None;
                self.tls_records = true;
            }
            return;
        }
        if self.h2.is_none() && self.role.is_none() {
            if http2::starts_with_preface(&chunk.payload) {
                self.h2 = Some(Box::new(H2Conn::from_preface(chunk.direction)));
            } else if !http1::looks_like_request(&chunk.payload)
                && http2::starts_with_frame(&chunk.payload)
            {
                let from_start = matches!(
                    self.meta.origin,
                    ConnOrigin::Accepted | ConnOrigin::Connected
                ) && self.undetected_chunks == 0;
                self.h2 = Some(Box::new(if from_start {
                    // The first bytes of a new connection: the server's SETTINGS.
                    H2Conn::from_server_frames(chunk.direction)
                } else {
                    // Frames without the preface: a connection open before the agent started.
                    H2Conn::joined()
                }));
            }
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.on_chunk(
                &chunk,
                &mut h2::Sink {
                    meta: &self.meta,
                    max_streams,
                    next_id,
                    out,
                },
            );
            self.role = h2.role();
            return;
        }
        let role = match self.role {
            Some(role) => role,
            None => {
                if http1::looks_like_request(&chunk.payload) {
                    let role = match chunk.direction {
                        Direction::Ingress => Role::Server,
                        Direction::Egress => Role::Client,
                    };
                    self.role = Some(role);
                    role
                } else {
                    self.undetected_chunks = self.undetected_chunks.saturating_add(1);
                    if self.undetected_chunks >= DETECT_CHUNKS {
                        TELEMETRY.drop(Drop::NotHttp);
                        self.ignored = true;
                    }
                    return;
                }
            }
        };
        let is_request = matches!(
            (role, chunk.direction),
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress)
        );
        let gap = chunk.gap();
        if is_request {
            // Server: the request arrived when the read returned; client: it started when the
            // write was entered.
            let ts_ns = match role {
                Role::Server => chunk.end_ns,
                Role::Client => chunk.start_ns,
            };
            let tid = chunk.tid;
            if chunk.kernel_ctx.is_some() {
                self.kernel_ctx = chunk.kernel_ctx;
            }
            let kernel_ctx = &mut self.kernel_ctx;
            let pending = &mut self.pending;
            let process = &self.meta.process;
            self.requests.feed(
                &REQUESTS,
                Chunk {
                    data: chunk.payload,
                    gap,
                    ts_ns,
                },
                budget_left,
                &mut |step| match step {
                    Step::Head { head, start_ns } => {
                        TELEMETRY
                            .requests_parsed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let kind = http1::request_body(&head);
                        if pending.len() >= max_pending {
                            TELEMETRY.drop(Drop::TooManyPending);
                        } else {
                            let id = *next_id;
                            *next_id = next_id.wrapping_add(1);
                            out.push(Notice::Started(RequestStart {
                                id,
                                server: role == Role::Server,
                                tgid: process.pid,
                                tid,
                                threading: process.threading,
                                traceparent: head.traceparent.clone(),
                                tracestate: head.tracestate.clone(),
                                kernel: kernel_ctx.take(),
                            }));
                            // One slot for the usual one request in flight (the first push
                            // would take four: 768 bytes per connection); pipelining grows it.
                            if pending.capacity() == 0 {
                                pending.reserve_exact(1);
                            }
                            pending.push_back(PendingRequest {
                                id,
                                head,
                                start_ns,
                                tid,
                            });
                        }
                        kind
                    }
                    Step::BodyEnd => BodyKind::None,
                    Step::Dropped(reason) => {
                        TELEMETRY.drop(reason);
                        BodyKind::None
                    }
                },
            );
        } else {
            let end_ns = chunk.end_ns;
            self.last_response_ns = end_ns;
            let mut finished: Vec<(PendingRequest, Option<ResponseHead>)> = Vec::new();
            let mut switched = false;
            let pending = &mut self.pending;
            let answering = &mut self.answering;
            self.responses.feed(
                &RESPONSES,
                Chunk {
                    data: chunk.payload,
                    gap,
                    ts_ns: end_ns,
                },
                budget_left,
                &mut |step| match step {
                    Step::Head { head, .. } => {
                        // 1xx other than 101 are interim: the real response follows.
                        if (100..200).contains(&head.status) && head.status != 101 {
                            return BodyKind::None;
                        }
                        let Some(req) = pending.pop_front() else {
                            TELEMETRY.drop(Drop::UnmatchedResponse);
                            return http1::response_body(&head, None);
                        };
                        let kind = http1::response_body(&head, Some(&req.head.method));
                        if head.status == 101 {
                            switched = true;
                            finished.push((req, Some(head)));
                            return BodyKind::None;
                        }
                        match kind {
                            BodyKind::None => finished.push((req, Some(head))),
                            _ => *answering = Some((req, head)),
                        }
                        kind
                    }
                    Step::BodyEnd => {
                        if let Some((req, head)) = answering.take() {
                            finished.push((req, Some(head)));
                        }
                        BodyKind::None
                    }
                    Step::Dropped(reason) => {
                        TELEMETRY.drop(reason);
                        // The body's end is unknowable: end the response at this chunk.
                        if let Some((req, head)) = answering.take() {
                            finished.push((req, Some(head)));
                        }
                        BodyKind::None
                    }
                },
            );
            for (req, resp) in finished {
                out.push(Notice::Finished(self.exchange(req, resp, end_ns)));
            }
            if switched {
                // After 101 the connection speaks another protocol (WebSocket, h2c).
                self.requests.abandon();
                self.responses.abandon();
                self.ignored = true;
            }
        }
    }
}

/// A TLS record header (RFC 8446 §5.1): handshake, alert, change-cipher-spec or application
/// data, legacy version 3.x.
fn looks_like_tls_record(b: &[u8]) -> bool {
    matches!(b, [20..=23, 3, 0..=4, ..])
}

/// The reassembly stage: events in, notices out, until the event queue closes. Idle
/// connections are swept every few seconds.
pub async fn run(
    mut events: crate::queue::BatchReceiver<crate::capture::CaptureEvent>,
    notices: crate::queue::BatchSender<Notice>,
    mut table: ConnTable,
) {
    use crate::capture::CaptureEvent;
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(5));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauge = tokio::time::interval(std::time::Duration::from_secs(1));
    gauge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = gauge.tick() => {
                use crate::telemetry::Queue;
                let (queued, bound) = events.depth();
                TELEMETRY.set_queue(Queue::Events, queued, bound);
                let (queued, bound) = notices.depth();
                TELEMETRY.set_queue(Queue::Notices, queued, bound);
                TELEMETRY
                    .connections_open
                    .store(table.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            batch = events.recv() => {
                // A batch is a drain of the ring buffer: one wakeup and one poll of the timers
                // per batch rather than per event.
                let Some(batch) = batch else {
                    break;
                };
                for ev in batch {
                    match ev {
                        CaptureEvent::Open(o) => table.open(o, &mut out),
                        CaptureEvent::Data(d) => table.data(d, &mut out),
                        CaptureEvent::TlsUnbound(d) => table.unbound(d),
                        CaptureEvent::TlsBind { key, tid } => table.bind(key, tid, &mut out),
                        CaptureEvent::Close { key, fd, .. } => table.close(key, fd, &mut out),
                        CaptureEvent::ProcessExit { tgid } => table.process_exit(tgid, &mut out),
                        CaptureEvent::Log(chunk) => table.log(chunk, &mut out),
                        CaptureEvent::ProcessService { tgid, service_name } => {
                            table.learn_service(tgid, service_name)
                        }
                    }
                }
            },
            _ = sweep.tick() => table.evict_idle(monotonic_now_ns(), &mut out),
        }
        if let Err(refused) = notices.try_send(std::mem::take(&mut out)) {
            TELEMETRY.drop_n(Drop::NoticeQueueFull, refused.len() as u64);
            out = refused;
            out.clear();
        }
    }
}

fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests;
