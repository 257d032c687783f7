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

use super::db::{DbEvent, DbParser, DbQuery, DbSystem};
use framing::{Framer, Reader, u24};

mod command;
mod framing;
mod reply;
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

fn unknown_statement() -> DbQuery {
    DbQuery {
        batch_size: 1,
        ..DbQuery::default()
    }
}
