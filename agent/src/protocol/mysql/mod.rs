//! The MySQL / MariaDB client/server protocol, as far as a span needs it: which query the client
//! sent, and whether the server answered with rows, an affected-row count or an error number.
//!
//! Covered: the plaintext handshake (server version → [`DbSystem::MariaDb`] or MySQL, the
//! database named in the HandshakeResponse41, auth switch / auth-more-data rounds until the
//! server's OK or ERR, an SSLRequest → [`DbEvent::StartTls`]); COM_QUERY (also with MySQL 8
//! query attributes), COM_STMT_PREPARE / COM_STMT_EXECUTE (statement ids remembered in a bounded
//! map, binary rows, MariaDB's "last prepared" id `0xFFFFFFFF` for direct execution),
//! COM_PING, COM_INIT_DB; text and binary result sets, with or without CLIENT_DEPRECATE_EOF (inferred
//! from the EOF after the column definitions when the handshake was not seen), multi-result
//! replies (SERVER_MORE_RESULTS_EXISTS: multi-statements, CALL) answered as one reply whose row
//! count is the sum of rows returned and affected; the schema in an OK's session-state tracking
//! (`USE db` sent as a query); logical packets over 16 MiB, which are only framed.
//!
//! Spans: COM_QUERY, COM_STMT_PREPARE, COM_STMT_EXECUTE (and MariaDB's bulk execute) and
//! COM_PING (operation `PING`, no text) emit [`DbEvent::Query`] and their answer a
//! [`DbEvent::Reply`]. COM_INIT_DB emits only [`DbEvent::Namespace`], once the server said OK.
//! Commands without a span whose reply is one packet (COM_STMT_RESET, COM_SET_OPTION, ...) or rows
//! (COM_STMT_FETCH) have their replies swallowed: the parser keeps its own queue of expected reply
//! shapes, so a reply is never matched to somebody else's query. Commands whose reply shape is
//! not followed (COM_FIELD_LIST, replication, ...) make the parser ignore the server until the
//! next command.
//!
//! Not covered: LOCAL INFILE (the server's 0xFB request is reported as [`DbEvent::Lost`]), the
//! compressed protocol, COM_CHANGE_USER's new database, pipelined commands across a capture gap.
//! Error messages are never kept: they quote data.
//!
//! Capture gaps: a gap that ends inside the current packet is skipped by length (a COM_QUERY
//! then yields its captured prefix, `truncated`). A gap over a packet boundary loses framing: the
//! parser emits [`DbEvent::Lost`], forgets the queries waiting for replies, ignores server bytes
//! until the client's next command, and, when the client's own bytes were cut, waits for a
//! client chunk that starts with a command packet ([`looks_like_command`]). A connection joined
//! mid-stream ([`MySqlParser::joined`]) starts in that same state.

use std::collections::VecDeque;

use super::db::{DbEvent, DbParser, DbQuery, DbReply, DbSystem};
use super::sql::{self, Dialect};

#[cfg(test)]
mod tests;

/// 3-byte payload length and 1-byte sequence number before every packet.
const HEADER: usize = 4;
/// A physical packet of this length continues in the next one (payloads of 16 MiB and more).
const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Query text kept from one client command: far more than the sanitized text keeps
/// ([`super::db::MAX_QUERY_TEXT`]), since literals shrink to `?`.
const CLIENT_PREFIX: usize = 16 * 1024;
/// Start of a server packet kept when it may be a greeting or an OK with session-state
/// tracking (the schema name comes after the human-readable info string).
const SERVER_PREFIX: usize = 512;
/// Start of a packet inside a result set: a row's first byte, or a terminator's status flags.
const ROW_PREFIX: usize = 32;
/// Prepared statements remembered per connection, and the bytes of their summaries.
const MAX_STATEMENTS: usize = 256;
const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Commands sent without a reply seen yet; more means the server side is not being captured.
const MAX_PENDING: usize = 64;
/// Most columns a table (so a result set) can have; anything larger is not a column count.
const MAX_COLUMNS: u64 = 4096;
/// Longest database name kept (names are at most 64 characters).
const MAX_NAMESPACE: usize = 256;

/// Upper bound of [`DbParser::buffered`] for a [`MySqlParser`].
pub const MAX_BUFFERED: usize = 2 * HEADER + CLIENT_PREFIX + SERVER_PREFIX + MAX_STATEMENT_BYTES;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_REFRESH: u8 = 0x07;
const COM_SHUTDOWN: u8 = 0x08;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_KILL: u8 = 0x0c;
const COM_DEBUG: u8 = 0x0d;
const COM_PING: u8 = 0x0e;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_STMT_FETCH: u8 = 0x1c;
const COM_RESET_CONNECTION: u8 = 0x1f;
const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

const OK: u8 = 0x00;
const EOF: u8 = 0xfe;
const ERR: u8 = 0xff;
const LOCAL_INFILE: u8 = 0xfb;

const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;
const CLIENT_QUERY_ATTRIBUTES: u32 = 0x800_0000;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;
const SERVER_SESSION_STATE_CHANGED: u16 = 0x4000;
const SESSION_TRACK_SCHEMA: u8 = 0x01;
/// MariaDB sends progress reports as ERR packets with this number; the command goes on.
const PROGRESS_REPORT: u16 = 0xffff;
/// MariaDB's statement id for "the statement prepared just before" (direct execution).
const LAST_PREPARED: u32 = 0xffff_ffff;

/// The server's first packet on a new connection: Initial Handshake v10 (seq 0, protocol 10,
/// a NUL-terminated version string of printable ASCII that starts with a digit). Cheap; false
/// for HTTP, TLS, PostgreSQL and RESP.
pub fn looks_like_greeting(data: &[u8]) -> bool {
    let [a, b, c, 0, 10, rest @ ..] = data else {
        return false;
    };
    let len = u24(*a, *b, *c);
    if !(20..=1024).contains(&len) {
        return false;
    }
    let version_area = rest.get(..len - 1).unwrap_or(rest);
    let Some(nul) = version_area.iter().position(|&byte| byte == 0) else {
        return false;
    };
    let version = &version_area[..nul];
    version.first().is_some_and(u8::is_ascii_digit)
        && version.len() <= 64
        && version.iter().all(|&byte| (0x20..0x7f).contains(&byte))
}

/// A client command at a packet boundary, for a connection joined mid-stream: seq 0 and
/// COM_QUERY with SQL-looking text (the chunk may end inside a long query, never run past the
/// packet), or COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_PING / COM_INIT_DB exactly filling the
/// chunk. False for HTTP/1 requests, TLS records, RESP and PostgreSQL messages.
pub fn looks_like_command(data: &[u8]) -> bool {
    let [a, b, c, 0, command, args @ ..] = data else {
        return false;
    };
    let len = u24(*a, *b, *c);
    if len == 0 || len >= MAX_PAYLOAD || data.len() > HEADER + len {
        return false;
    }
    let whole = data.len() == HEADER + len;
    match *command {
        COM_QUERY => {
            let text = match args {
                [0, 1, text @ ..] => text,
                text => text,
            };
            // A chunk that stops inside the packet must still show enough text to judge.
            (whole || text.len() >= 16) && looks_like_sql(text)
        }
        COM_STMT_PREPARE => whole && looks_like_sql(args),
        // Statement id, flags, then an iteration count that is always 1.
        COM_STMT_EXECUTE => whole && args.get(5..9) == Some(&[1, 0, 0, 0]),
        COM_PING => whole && args.is_empty(),
        COM_INIT_DB => {
            whole
                && !args.is_empty()
                && args.len() <= MAX_NAMESPACE
                && args
                    .iter()
                    .all(|&byte| byte.is_ascii_graphic() || byte >= 0x80)
        }
        _ => false,
    }
}

/// The start of `text` reads like SQL: a keyword, comment or parenthesis first, then printable
/// UTF-8 (ciphertext fails within a few bytes).
fn looks_like_sql(text: &[u8]) -> bool {
    let head = &text[..text.len().min(64)];
    let Some(&first) = head.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || b"(/-#{ \t\r\n".contains(&first)) {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        // The 64-byte window may cut a character; anything else is not text.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|ch| !ch.is_control() || matches!(ch, '\t' | '\r' | '\n'))
}

fn u24(a: u8, b: u8, c: u8) -> usize {
    usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Seen from its start: the server speaks first.
    Greeting,
    /// The client's HandshakeResponse (or SSLRequest) comes next.
    ClientHello,
    /// After an SSLRequest: ciphertext, until plaintext of the login shows up (from the TLS
    /// library probes) or never.
    Encrypted,
    /// Commands and their replies (auth rounds included, as an expected reply).
    Command,
}

/// What the reply to a command the client sent looks like, and what to say about it.
#[derive(Debug)]
enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE: a Query was emitted, its reply becomes a Reply.
    Answer,
    /// COM_PING: a Query was emitted; its OK counts no rows.
    Ping,
    /// COM_STMT_PREPARE: a Query was emitted; the OK carries the id the query is remembered by.
    Prepare(DbQuery),
    /// Login or COM_CHANGE_USER: auth rounds until OK or ERR, then the database asked for.
    Auth(Option<String>),
    /// COM_INIT_DB: the database becomes the namespace once the server agrees.
    InitDb(String),
    /// A command without a span answered by one packet (OK, ERR, EOF or a string).
    Silent,
    /// COM_STMT_FETCH: rows and a terminator, no span.
    Fetch,
    /// A command whose reply is not followed: the server is ignored until the next command.
    Opaque,
}

/// Where the reply at the front of the queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Its first packet (or the first of the next result set after MORE_RESULTS) comes next.
    Start,
    /// Column definitions still to come.
    Columns(u64),
    /// After the column definitions: a classic EOF, or (CLIENT_DEPRECATE_EOF) a row or the
    /// terminator.
    AfterColumns,
    Rows,
    /// A prepare OK's parameter then column definitions; each section may close with an EOF.
    Definitions {
        left: u32,
        then: u32,
    },
}

/// A logical packet (physical packets of 16 MiB - 1 joined), as far as it was kept.
struct Packet<'a> {
    seq: u8,
    /// Payload length on the wire.
    len: u64,
    /// The payload's first bytes: up to the prefix limit, fewer when `missed`.
    body: &'a [u8],
    /// A capture gap fell inside the payload.
    missed: bool,
}

impl Packet<'_> {
    fn first(&self) -> Option<u8> {
        self.body.first().copied()
    }

    /// An EOF packet: 0xFE and shorter than any row or OK that can start with 0xFE.
    fn is_eof(&self) -> bool {
        self.first() == Some(EOF) && self.len < 9
    }

    /// The end of a result set: a classic EOF or, with CLIENT_DEPRECATE_EOF, an OK packet with
    /// the 0xFE header. A row starting with 0xFE holds a value of 16 MiB or more, so its packet
    /// is at least that long.
    fn is_terminator(&self) -> bool {
        self.first() == Some(EOF) && self.len < MAX_PAYLOAD as u64
    }
}

/// Splits one direction's bytes into packets, keeping only the start of each payload and
/// skipping the rest by length.
#[derive(Default)]
struct Framer {
    header: [u8; HEADER],
    header_len: usize,
    /// Inside a physical packet's payload.
    in_body: bool,
    /// Payload bytes of the current physical packet not seen yet.
    remaining: usize,
    /// The current physical packet has the maximum length: another physical packet continues
    /// the same logical one.
    continues: bool,
    /// The next header belongs to a continuation packet.
    continuation: bool,
    seq: u8,
    total: u64,
    prefix: Vec<u8>,
    missed: bool,
    /// The last call returned the buffered packet; its state is dropped on the next call.
    delivered: bool,
}

impl Framer {
    fn settle(&mut self) {
        if self.delivered {
            self.delivered = false;
            self.in_body = false;
            self.continuation = false;
            self.prefix.clear();
            self.missed = false;
            self.total = 0;
        }
    }

    /// The next complete packet from `data` (advanced past it), or None once `data` is used up.
    /// A packet entirely inside `data` is lent from it without copying.
    fn next<'s, 'd: 's>(&'s mut self, data: &mut &'d [u8], limit: usize) -> Option<Packet<'s>> {
        self.settle();
        loop {
            if self.in_body {
                if self.remaining == 0 {
                    if self.continues {
                        self.in_body = false;
                        self.continuation = true;
                        continue;
                    }
                    self.delivered = true;
                    return Some(Packet {
                        seq: self.seq,
                        len: self.total,
                        body: &self.prefix,
                        missed: self.missed,
                    });
                }
                if data.is_empty() {
                    return None;
                }
                let take = self.remaining.min(data.len());
                let (bytes, rest) = data.split_at(take);
                if !self.missed {
                    let room = limit.saturating_sub(self.prefix.len());
                    self.prefix.extend_from_slice(&bytes[..room.min(take)]);
                }
                self.remaining -= take;
                *data = rest;
                continue;
            }
            if self.header_len == 0
                && !self.continuation
                && let [a, b, c, seq, rest @ ..] = *data
            {
                let len = u24(*a, *b, *c);
                if len < MAX_PAYLOAD && rest.len() >= len {
                    let seq = *seq;
                    let (payload, after) = rest.split_at(len);
                    *data = after;
                    return Some(Packet {
                        seq,
                        len: len as u64,
                        body: &payload[..len.min(limit)],
                        missed: false,
                    });
                }
            }
            let want = HEADER - self.header_len;
            let take = want.min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            *data = &data[take..];
            if self.header_len < HEADER {
                return None;
            }
            self.header_len = 0;
            let [a, b, c, seq] = self.header;
            let len = u24(a, b, c);
            if !self.continuation {
                self.seq = seq;
                self.total = 0;
            }
            self.continuation = false;
            self.total = self.total.saturating_add(len as u64);
            self.remaining = len;
            self.continues = len == MAX_PAYLOAD;
            self.in_body = true;
        }
    }

    /// Accounts for `gap` bytes the capture missed; false when they covered a header (framing
    /// is lost). A packet the gap completes is returned by the next [`Framer::next`].
    fn skip(&mut self, gap: u64) -> bool {
        self.settle();
        if gap == 0 {
            return true;
        }
        if !self.in_body || gap > self.remaining as u64 {
            return false;
        }
        self.remaining -= gap as usize;
        self.missed = true;
        true
    }

    fn buffered(&self) -> usize {
        self.header_len + if self.delivered { 0 } else { self.prefix.len() }
    }
}

/// Prepared statements by id, oldest evicted first, bounded in count and bytes.
#[derive(Default)]
struct Statements {
    entries: VecDeque<(u32, DbQuery)>,
    bytes: usize,
}

fn query_bytes(query: &DbQuery) -> usize {
    [&query.operation, &query.collection, &query.text]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum()
}

impl Statements {
    fn insert(&mut self, id: u32, query: DbQuery) {
        self.remove(id);
        self.bytes += query_bytes(&query);
        self.entries.push_back((id, query));
        while self.entries.len() > MAX_STATEMENTS || self.bytes > MAX_STATEMENT_BYTES {
            let Some((_, evicted)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= query_bytes(&evicted);
        }
    }

    fn get(&self, id: u32) -> Option<&DbQuery> {
        self.entries
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, q)| q)
    }

    fn remove(&mut self, id: u32) {
        if let Some(at) = self.entries.iter().position(|(known, _)| *known == id)
            && let Some((_, removed)) = self.entries.remove(at)
        {
            self.bytes -= query_bytes(&removed);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// One MySQL or MariaDB connection, seen from the client.
pub struct MySqlParser {
    system: DbSystem,
    phase: Phase,
    server_caps: Option<u32>,
    /// Both sides agreed on CLIENT_DEPRECATE_EOF; None until the login or a result set told.
    deprecate_eof: Option<bool>,
    /// Both sides agreed on CLIENT_QUERY_ATTRIBUTES (MySQL 8): COM_QUERY carries attributes
    /// before the text.
    query_attributes: Option<bool>,
    client: Framer,
    server: Framer,
    /// The client's bytes are at a packet boundary we know of.
    client_in_sync: bool,
    /// The server's bytes are at a reply boundary we know of.
    server_in_sync: bool,
    pending: VecDeque<Expect>,
    stage: Stage,
    /// Rows returned and affected so far by the reply at the front.
    rows: u64,
    /// A classic EOF may still close the prepare reply just finished.
    swallow_eof: bool,
    statements: Statements,
    /// For MariaDB's direct execution, which names "the statement prepared just before".
    last_prepared: Option<DbQuery>,
    namespace: Option<String>,
    /// Lost was said and no query has been sent since.
    lost_reported: bool,
}

impl Default for MySqlParser {
    fn default() -> Self {
        Self::new()
    }
}

impl MySqlParser {
    /// A connection seen from its start: the server's greeting comes first.
    pub fn new() -> Self {
        MySqlParser {
            system: DbSystem::MySql,
            phase: Phase::Greeting,
            server_caps: None,
            deprecate_eof: None,
            query_attributes: None,
            client: Framer::default(),
            server: Framer::default(),
            client_in_sync: true,
            server_in_sync: true,
            pending: VecDeque::new(),
            stage: Stage::Start,
            rows: 0,
            swallow_eof: false,
            statements: Statements::default(),
            last_prepared: None,
            namespace: None,
            lost_reported: false,
        }
    }

    /// A connection joined mid-stream: both directions wait for the client's next command.
    pub fn joined() -> Self {
        MySqlParser {
            phase: Phase::Command,
            client_in_sync: false,
            server_in_sync: false,
            ..Self::new()
        }
    }

    /// Framing or the reply shape is unknown: the waiting queries will get no reply, and the
    /// server is ignored until the client's next command.
    fn lose(&mut self, out: &mut Vec<DbEvent>) {
        self.pending.clear();
        self.reset_reply();
        self.server_in_sync = false;
        if matches!(self.phase, Phase::Greeting | Phase::ClientHello) {
            self.phase = Phase::Command;
        }
        if !self.lost_reported {
            self.lost_reported = true;
            out.push(DbEvent::Lost);
        }
    }

    fn reset_reply(&mut self) {
        self.stage = Stage::Start;
        self.rows = 0;
        self.swallow_eof = false;
    }

    fn set_namespace(&mut self, name: &[u8], out: &mut Vec<DbEvent>) {
        let name = &name[..name.len().min(MAX_NAMESPACE)];
        let name = String::from_utf8_lossy(name).into_owned();
        if name.is_empty() || self.namespace.as_deref() == Some(name.as_str()) {
            return;
        }
        self.namespace = Some(name.clone());
        out.push(DbEvent::Namespace(name));
    }

    fn server_limit(&self) -> usize {
        match (self.phase, self.stage) {
            (Phase::Command, Stage::Start) | (Phase::Greeting, _) => SERVER_PREFIX,
            _ => ROW_PREFIX,
        }
    }

    // ---- client side ----

    fn on_client_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        match self.phase {
            Phase::Greeting | Phase::Encrypted => {}
            Phase::ClientHello => self.on_login(packet, out),
            // Other sequence numbers continue an exchange: auth data, LOCAL INFILE contents.
            Phase::Command if packet.seq == 0 => self.on_command(packet, out),
            Phase::Command => {}
        }
    }

    /// HandshakeResponse41 (or the SSLRequest that stops after its first 32 bytes).
    fn on_login(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body);
        let Some(caps) = r.u32() else {
            // HandshakeResponse320 from a pre-4.1 client: only the auth outcome matters.
            self.phase = Phase::Command;
            self.pending.push_back(Expect::Auth(None));
            return;
        };
        if caps & CLIENT_SSL != 0 && packet.len == 32 {
            self.phase = Phase::Encrypted;
            out.push(DbEvent::StartTls);
            return;
        }
        let agreed = |flag: u32| caps & flag != 0 && self.server_caps.is_none_or(|s| s & flag != 0);
        self.deprecate_eof = Some(agreed(CLIENT_DEPRECATE_EOF));
        self.query_attributes = Some(agreed(CLIENT_QUERY_ATTRIBUTES));
        self.phase = Phase::Command;
        let database = if caps & CLIENT_PROTOCOL_41 != 0 && caps & CLIENT_CONNECT_WITH_DB != 0 {
            login_database(&mut r, caps)
        } else {
            None
        };
        self.pending.push_back(Expect::Auth(database));
    }

    fn on_command(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        // The server answers only after the command: whatever it said before is over.
        if !self.server_in_sync {
            self.server_in_sync = true;
            self.server = Framer::default();
            self.reset_reply();
        }
        let Some((&command, args)) = packet.body.split_first() else {
            if packet.len > 0 {
                // The command byte itself fell in a gap: a reply comes, of unknown shape.
                self.expect(Expect::Opaque, None, out);
            }
            return;
        };
        // The whole payload was kept: the command byte plus all of `args`.
        let truncated = packet.missed || (packet.body.len() as u64) < packet.len;
        match command {
            COM_QUERY => {
                let query = self.summarize_query(args, truncated);
                self.expect(Expect::Answer, Some(query), out);
            }
            COM_STMT_PREPARE => {
                let query = sql::summarize(args, Dialect::MySql, truncated);
                self.last_prepared = Some(query.clone());
                self.expect(Expect::Prepare(query.clone()), Some(query), out);
            }
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                let known = Reader(args).u32().and_then(|id| {
                    if id == LAST_PREPARED {
                        self.last_prepared.clone()
                    } else {
                        self.statements.get(id).cloned()
                    }
                });
                let query = known.unwrap_or_else(unknown_statement);
                self.expect(Expect::Answer, Some(query), out);
            }
            COM_PING => {
                let ping = DbQuery {
                    operation: Some("PING".into()),
                    batch_size: 1,
                    ..DbQuery::default()
                };
                self.expect(Expect::Ping, Some(ping), out);
            }
            COM_INIT_DB => {
                let name = &args[..args.len().min(MAX_NAMESPACE)];
                let name = String::from_utf8_lossy(name).into_owned();
                self.expect(Expect::InitDb(name), None, out);
            }
            COM_STMT_CLOSE => {
                if let Some(id) = Reader(args).u32() {
                    self.statements.remove(id);
                }
            }
            COM_QUIT | COM_STMT_SEND_LONG_DATA => {}
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.expect(Expect::Silent, None, out);
            }
            COM_STMT_RESET | COM_SET_OPTION | COM_PROCESS_KILL | COM_REFRESH | COM_SHUTDOWN
            | COM_DEBUG | COM_STATISTICS => self.expect(Expect::Silent, None, out),
            COM_STMT_FETCH => self.expect(Expect::Fetch, None, out),
            COM_CHANGE_USER => {
                self.statements.clear();
                self.expect(Expect::Auth(None), None, out);
            }
            _ => self.expect(Expect::Opaque, None, out),
        }
    }

    /// COM_QUERY's text, after the query attributes MySQL 8 puts before it when both sides
    /// agreed on them (or, joined mid-stream, when the payload starts with "no attributes":
    /// text never starts with a NUL byte).
    fn summarize_query(&self, args: &[u8], truncated: bool) -> DbQuery {
        let text = match (self.query_attributes, args) {
            (Some(false), _) => Some(args),
            (None, [0, 1, text @ ..]) => Some(text),
            (None, _) => Some(args),
            (Some(true), _) => {
                let mut r = Reader(args);
                // Attribute values precede the text; with none, only the two counts do.
                match (r.lenenc(), r.lenenc()) {
                    (Some(0), Some(_)) => Some(r.0),
                    _ => None,
                }
            }
        };
        match text {
            Some(text) => sql::summarize(text, Dialect::MySql, truncated),
            None => unknown_statement(),
        }
    }

    fn expect(&mut self, expect: Expect, query: Option<DbQuery>, out: &mut Vec<DbEvent>) {
        if self.pending.len() >= MAX_PENDING {
            // The replies are not being captured. This command is a boundary on the server
            // side too: it answers nothing before it.
            self.lose(out);
            self.server_in_sync = true;
            self.server = Framer::default();
        }
        self.pending.push_back(expect);
        if let Some(query) = query {
            self.lost_reported = false;
            out.push(DbEvent::Query(query));
        }
    }

    // ---- server side ----

    fn on_server_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        match self.phase {
            Phase::Greeting => self.on_greeting(packet, out),
            Phase::ClientHello | Phase::Encrypted => {}
            Phase::Command => self.on_reply_packet(packet, out),
        }
    }

    fn on_greeting(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body);
        match r.u8() {
            Some(10) => {}
            // The server refused the connection (too many connections, host blocked).
            Some(ERR) => return,
            _ => return self.lose(out),
        }
        let version = r.nul_str().unwrap_or_default();
        self.system = if contains(version, b"MariaDB") {
            DbSystem::MariaDb
        } else {
            DbSystem::MySql
        };
        out.push(DbEvent::System(self.system));
        // Connection id, first 8 bytes of the scramble, a filler, then capability flags.
        let low = r.skip(13).and_then(|()| r.u16());
        let high = r.skip(3).and_then(|()| r.u16());
        self.server_caps = low.map(|low| u32::from(low) | u32::from(high.unwrap_or(0)) << 16);
        self.phase = Phase::ClientHello;
    }

    fn on_reply_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        if std::mem::take(&mut self.swallow_eof) && packet.is_eof() {
            return;
        }
        if self.pending.is_empty() {
            // Unsolicited: an ERR before the server closes, or a reply to a lost command.
            return;
        }
        match self.stage {
            Stage::Start => self.on_reply_start(packet, out),
            Stage::Columns(left) => {
                if packet.first() == Some(ERR) {
                    return self.finish_error(packet, out);
                }
                self.stage = match left.saturating_sub(1) {
                    0 => Stage::AfterColumns,
                    left => Stage::Columns(left),
                };
            }
            Stage::AfterColumns => {
                if packet.first() == Some(EOF) && packet.len < 7 {
                    // Classic EOF (an OK terminator is at least 7 bytes).
                    self.deprecate_eof.get_or_insert(false);
                    let status = Reader(packet.body.get(3..).unwrap_or_default()).u16();
                    if status.is_some_and(|s| s & SERVER_STATUS_CURSOR_EXISTS != 0) {
                        // Rows come on COM_STMT_FETCH.
                        return self.finish(out);
                    }
                    self.stage = Stage::Rows;
                } else {
                    self.deprecate_eof.get_or_insert(true);
                    self.stage = Stage::Rows;
                    self.on_row(packet, out);
                }
            }
            Stage::Rows => self.on_row(packet, out),
            Stage::Definitions { left, then } => {
                if packet.is_eof() {
                    return;
                }
                self.stage = match (left.saturating_sub(1), then) {
                    (0, 0) => return self.finish_prepare(out),
                    (0, then) => Stage::Definitions {
                        left: then,
                        then: 0,
                    },
                    (left, then) => Stage::Definitions { left, then },
                };
            }
        }
    }

    fn on_reply_start(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let first = packet.first();
        let Some(expect) = self.pending.front_mut() else {
            return;
        };
        match expect {
            Expect::Opaque => {
                self.pending.pop_front();
                self.server_in_sync = false;
            }
            Expect::Silent => {
                self.pending.pop_front();
            }
            Expect::Fetch => self.on_row(packet, out),
            Expect::Auth(database) => match first {
                Some(OK) => {
                    let database = database.take();
                    self.pending.pop_front();
                    let schema = ok_packet(packet.body).and_then(|ok| ok.schema);
                    if let Some(name) = schema.or(database.as_deref().map(str::as_bytes)) {
                        self.set_namespace(name, out);
                    }
                }
                Some(ERR) => {
                    self.pending.pop_front();
                }
                // Auth switch, auth-more-data: another round.
                _ => {}
            },
            Expect::InitDb(name) => {
                let name = std::mem::take(name);
                self.pending.pop_front();
                if first == Some(OK) {
                    let schema = ok_packet(packet.body).and_then(|ok| ok.schema);
                    self.set_namespace(schema.unwrap_or(name.as_bytes()), out);
                }
            }
            Expect::Answer | Expect::Prepare(_) | Expect::Ping => {
                let prepare = matches!(expect, Expect::Prepare(_));
                match first {
                    Some(OK) if prepare => self.on_prepare_ok(packet, out),
                    Some(OK) => {
                        let Some(ok) = ok_packet(packet.body) else {
                            return self.lose(out);
                        };
                        self.rows = self.rows.saturating_add(ok.affected);
                        if let Some(name) = ok.schema {
                            self.set_namespace(name, out);
                        }
                        if ok.status & SERVER_MORE_RESULTS_EXISTS == 0 {
                            self.finish(out);
                        }
                    }
                    Some(ERR) => self.finish_error(packet, out),
                    Some(LOCAL_INFILE | EOF) | None => self.lose(out),
                    Some(_) if prepare => self.lose(out),
                    Some(_) => match Reader(packet.body).lenenc() {
                        Some(columns @ 1..=MAX_COLUMNS) => self.stage = Stage::Columns(columns),
                        _ => self.lose(out),
                    },
                }
            }
        }
    }

    /// A row, or the packet that ends the result set.
    fn on_row(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        if packet.is_terminator() {
            let status = if packet.len < 7 {
                Reader(packet.body.get(3..).unwrap_or_default()).u16()
            } else {
                ok_packet(packet.body).map(|ok| ok.status)
            };
            if status.is_some_and(|s| s & SERVER_MORE_RESULTS_EXISTS != 0) {
                self.stage = Stage::Start;
            } else {
                self.finish(out);
            }
        } else if packet.first() == Some(ERR) {
            // Text rows never start with 0xFF, binary rows start with 0x00.
            self.finish_error(packet, out);
        } else {
            self.rows = self.rows.saturating_add(1);
            self.stage = Stage::Rows;
        }
    }

    fn on_prepare_ok(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body.get(1..).unwrap_or_default());
        let (Some(id), Some(columns), Some(params)) = (r.u32(), r.u16(), r.u16()) else {
            return self.lose(out);
        };
        if let Some(Expect::Prepare(query)) = self.pending.front_mut() {
            self.statements.insert(id, std::mem::take(query));
        }
        self.stage = match (params, columns) {
            (0, 0) => return self.finish_prepare(out),
            (0, columns) => Stage::Definitions {
                left: columns.into(),
                then: 0,
            },
            (params, columns) => Stage::Definitions {
                left: params.into(),
                then: columns.into(),
            },
        };
    }

    fn finish_prepare(&mut self, out: &mut Vec<DbEvent>) {
        self.pending.pop_front();
        self.reset_reply();
        // Without CLIENT_DEPRECATE_EOF an EOF closes the last definitions.
        self.swallow_eof = self.deprecate_eof != Some(true);
        out.push(DbEvent::Reply(DbReply::default()));
    }

    fn finish(&mut self, out: &mut Vec<DbEvent>) {
        let rows = self.rows;
        let expect = self.pending.pop_front();
        self.reset_reply();
        let rows = match expect {
            Some(Expect::Answer | Expect::Prepare(_)) => Some(rows),
            Some(Expect::Ping) => None,
            _ => return,
        };
        out.push(DbEvent::Reply(DbReply {
            error_code: None,
            rows,
        }));
    }

    fn finish_error(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let code = Reader(packet.body.get(1..).unwrap_or_default()).u16();
        if code == Some(PROGRESS_REPORT) {
            return;
        }
        let expect = self.pending.pop_front();
        self.reset_reply();
        if matches!(
            expect,
            Some(Expect::Answer | Expect::Prepare(_) | Expect::Ping)
        ) {
            out.push(DbEvent::Reply(DbReply {
                error_code: code.map(|code| code.to_string()),
                rows: None,
            }));
        }
    }
}

impl DbParser for MySqlParser {
    fn system(&self) -> DbSystem {
        self.system
    }

    fn client(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        if self.phase == Phase::Encrypted {
            if !looks_like_plaintext_login(data) {
                return;
            }
            // The TLS library probes hand over the login's plaintext: the handshake goes on.
            self.phase = Phase::ClientHello;
            self.client = Framer::default();
            self.server = Framer::default();
            self.client_in_sync = true;
            self.server_in_sync = true;
        }
        if !self.client_in_sync {
            if !looks_like_command(data) {
                return;
            }
            self.client_in_sync = true;
            self.client = Framer::default();
        }
        let mut framer = std::mem::take(&mut self.client);
        let mut rest = data;
        while let Some(packet) = framer.next(&mut rest, CLIENT_PREFIX) {
            self.on_client_packet(&packet, out);
            if self.phase == Phase::Encrypted {
                return;
            }
        }
        if !framer.skip(gap) {
            self.client_in_sync = false;
            self.client = Framer::default();
            return self.lose(out);
        }
        while let Some(packet) = framer.next(&mut &[][..], CLIENT_PREFIX) {
            self.on_client_packet(&packet, out);
        }
        self.client = framer;
    }

    fn server(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        if self.phase == Phase::Encrypted || !self.server_in_sync {
            return;
        }
        let mut framer = std::mem::take(&mut self.server);
        let mut rest = data;
        loop {
            let limit = self.server_limit();
            let Some(packet) = framer.next(&mut rest, limit) else {
                break;
            };
            self.on_server_packet(&packet, out);
            if !self.server_in_sync {
                return;
            }
        }
        if !framer.skip(gap) {
            return self.lose(out);
        }
        loop {
            let limit = self.server_limit();
            let Some(packet) = framer.next(&mut &[][..], limit) else {
                break;
            };
            self.on_server_packet(&packet, out);
            if !self.server_in_sync {
                return;
            }
        }
        self.server = framer;
    }

    fn buffered(&self) -> usize {
        self.client.buffered() + self.server.buffered() + self.statements.bytes
    }
}

/// A HandshakeResponse41 sent after the SSLRequest (sequence 2), filling the chunk: the TLS
/// library's plaintext rather than ciphertext, whose record header never reads like this.
fn looks_like_plaintext_login(data: &[u8]) -> bool {
    let [a, b, c, 2, payload @ ..] = data else {
        return false;
    };
    let caps = Reader(payload).u32().unwrap_or(0);
    u24(*a, *b, *c) == payload.len()
        && payload.len() > 32
        && caps & CLIENT_PROTOCOL_41 != 0
        && payload
            .get(9..32)
            .is_some_and(|filler| filler.iter().all(|&b| b == 0))
}

/// The database a HandshakeResponse41 names, `r` standing just after the capability flags.
fn login_database(r: &mut Reader, caps: u32) -> Option<String> {
    // Max packet size, character set, filler; then the user.
    r.skip(4 + 1 + 23)?;
    r.nul_str()?;
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let len = r.lenenc()?;
        r.skip(usize::try_from(len).ok()?)?;
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let len = r.u8()?;
        r.skip(len.into())?;
    } else {
        r.nul_str()?;
    }
    let name = r.nul_str().unwrap_or(r.0);
    let name = &name[..name.len().min(MAX_NAMESPACE)];
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

fn unknown_statement() -> DbQuery {
    DbQuery {
        batch_size: 1,
        ..DbQuery::default()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the reply code needs from an OK packet.
struct OkPacket<'a> {
    affected: u64,
    status: u16,
    /// The schema the session switched to (session-state tracking).
    schema: Option<&'a [u8]>,
}

fn ok_packet(body: &[u8]) -> Option<OkPacket<'_>> {
    let mut r = Reader(body.get(1..)?);
    let affected = r.lenenc()?;
    // An OK cut short by a capture gap still tells the affected rows; without its status it
    // is taken as the last packet of the reply.
    let status = r.lenenc().and_then(|_insert_id| r.u16()).unwrap_or(0);
    let mut schema = None;
    if status & SERVER_SESSION_STATE_CHANGED != 0 {
        schema = r.u16().and_then(|_warnings| session_schema(&mut r));
    }
    Some(OkPacket {
        affected,
        status,
        schema,
    })
}

/// The SESSION_TRACK_SCHEMA entry of an OK's session state, `r` standing after the warnings.
fn session_schema<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    r.lenenc_str()?;
    let mut state = Reader(r.lenenc_str()?);
    while let Some(kind) = state.u8() {
        let data = state.lenenc_str()?;
        if kind == SESSION_TRACK_SCHEMA {
            return Reader(data).lenenc_str();
        }
    }
    None
}

/// Reads the protocol's integers and strings off a payload prefix; None when it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let [a, b] = *self.take(2)? else { return None };
        Some(u16::from_le_bytes([a, b]))
    }

    fn u32(&mut self) -> Option<u32> {
        let [a, b, c, d] = *self.take(4)? else {
            return None;
        };
        Some(u32::from_le_bytes([a, b, c, d]))
    }

    /// Length-encoded integer; 0xFB (NULL) and 0xFF are not integers.
    fn lenenc(&mut self) -> Option<u64> {
        let width = match self.u8()? {
            small @ 0..=0xfa => return Some(small.into()),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let bytes = self.take(width)?;
        let mut value = [0u8; 8];
        value[..width].copy_from_slice(bytes);
        Some(u64::from_le_bytes(value))
    }

    fn lenenc_str(&mut self) -> Option<&'a [u8]> {
        let len = self.lenenc()?;
        self.take(usize::try_from(len).ok()?)
    }

    fn nul_str(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = self.take(end)?;
        self.skip(1)?;
        Some(s)
    }
}
