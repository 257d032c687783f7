//! PostgreSQL frontend/backend protocol 3.0, from the client's side, for `db.*` spans.
//!
//! Covered: the startup (its `database` parameter gives `db.namespace`; SSLRequest and
//! GSSENCRequest, with TLS left to the OpenSSL probes), the simple query protocol (`Query`,
//! several statements in one), and the extended protocol: `Parse`/`Bind`/`Execute` up to `Sync`
//! is one round trip, and so one query; named prepared statements are remembered (bounded), so a
//! statement executed without its `Parse` (psycopg prepares after five runs) still has its text.
//! Several `Execute`s before one `Sync` (pipeline mode) are a batch. Pipelined round trips are
//! answered in order, each ending at the server's `ReadyForQuery`, so a queue of what each
//! `ReadyForQuery` answers pairs them. An `ErrorResponse` gives its SQLSTATE, never its message
//! (it quotes values); `CommandComplete` gives the row count.
//!
//! Messages are framed by their length: row data is skipped without being kept, and a capture gap
//! inside one message costs nothing. A gap over a message boundary loses the framing; the server
//! side then finds its feet again at a read that ends with `ReadyForQuery`, or when the client
//! sends its next message (a client reads a whole reply before its next round trip, so the reply
//! in flight ended with the last read). The client side waits for a write that is a whole run of
//! well-formed client messages.
//!
//! Not covered: the replication protocol, `COPY` data (skipped), function calls (`F`, answered
//! but not reported), a `Describe`-only round trip (not reported: nothing ran).
use std::collections::{HashMap, VecDeque};

use super::{
    db::{DbEvent, DbParser, DbQuery, DbReply, DbSystem, MAX_QUERY_TEXT},
    sql::{self, Dialect},
};

/// StartupMessage protocol 3.0, and the codes of the special requests that share its shape.
const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// The server rejects larger startup packets (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP: u32 = 10_000;
/// The server's limit on one message (PQ_LARGE_MESSAGE_LIMIT is 1 GB).
const MAX_MESSAGE: u32 = 1 << 30;

/// Bytes kept of a query text (`Query`, `Parse`): what the sanitized text can show and more.
const QUERY_KEEP: usize = 2 * MAX_QUERY_TEXT;
/// Bytes kept of messages read only for short fields (names, SQLSTATE, command tags).
const FIELDS_KEEP: usize = 256;
/// Bytes kept of a startup message (its parameters).
const STARTUP_KEEP: usize = 1024;
/// Named prepared statements remembered per connection, and their summaries' bytes together.
const MAX_STATEMENTS: usize = 256;
const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Queries of one batch kept for its summary; the rest are counted.
const MAX_BATCH: usize = 64;
/// Round trips awaiting their `ReadyForQuery`.
const MAX_AWAITING: usize = 64;

/// Most bytes a parser holds: both framers' kept bytes and the statement map.
pub const MAX_BUFFERED: usize = QUERY_KEEP + 2 * FIELDS_KEEP + STARTUP_KEEP + MAX_STATEMENT_BYTES;

/// The client's first message on a connection: a StartupMessage (protocol 3.0, with a `user`
/// parameter), an SSLRequest or a GSSENCRequest. Their length-then-code shape starts with zero
/// bytes that no HTTP, TLS, RESP or MySQL opening has.
pub fn looks_like_startup(data: &[u8]) -> bool {
    let (Some(len), Some(code)) = (be_u32(data, 0), be_u32(data, 4)) else {
        return false;
    };
    match code {
        SSL_REQUEST | GSSENC_REQUEST => len == 8 && data.len() == 8,
        CANCEL_REQUEST => len == 16 && data.len() == 16,
        PROTOCOL_3_0 => {
            (9..=MAX_STARTUP).contains(&len)
                && (data.get(8..13) == Some(b"user\0".as_slice())
                    || data.windows(6).any(|w| w == b"\0user\0"))
        }
        _ => false,
    }
}

/// A write on a connection joined mid-stream that is a whole run of client messages, starting
/// with a `Query`, `Parse` or `Bind`, each of a plausible type and length, ending exactly at the
/// end of the write.
pub fn looks_like_client_messages(data: &[u8]) -> bool {
    if !matches!(data.first(), Some(b'Q' | b'P' | b'B')) {
        return false;
    }
    let mut at = 0usize;
    while at < data.len() {
        let Some(&typ) = data.get(at) else {
            return false;
        };
        let Some(len) = be_u32(data, at + 1) else {
            return false;
        };
        if !is_client_type(typ) || !(4..=MAX_MESSAGE).contains(&len) {
            return false;
        }
        at = at.saturating_add(1).saturating_add(len as usize);
    }
    at == data.len() && (data.first() != Some(&b'Q') || data.get(at - 1) == Some(&0))
}

fn is_client_type(typ: u8) -> bool {
    matches!(
        typ,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'S'
            | b'H'
            | b'C'
            | b'X'
            | b'F'
            | b'd'
            | b'c'
            | b'f'
            | b'p'
    )
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One whole message: its type (0 for the untyped startup messages), the bytes kept of its body,
/// and whether those are all of it.
#[derive(Debug)]
struct Frame {
    typ: u8,
    body: Vec<u8>,
    whole: bool,
}

#[derive(Debug)]
enum FrameState {
    /// Reading a header: `want` is 4 (untyped) or 5 bytes.
    Header { buf: [u8; 5], have: usize },
    Body {
        typ: u8,
        left: usize,
        keep: Vec<u8>,
        keep_max: usize,
        whole: bool,
    },
    /// Framing lost: bytes are ignored until the parser resets the framer.
    Lost,
}

/// Length-prefixed framing of one direction. `typed` is false while the next message is a
/// startup message (no type byte).
#[derive(Debug)]
struct Framer {
    state: FrameState,
    typed: bool,
    keep: fn(u8) -> usize,
}

impl Framer {
    fn new(typed: bool, keep: fn(u8) -> usize) -> Self {
        Framer {
            state: FrameState::Header {
                buf: [0; 5],
                have: 0,
            },
            typed,
            keep,
        }
    }

    fn reset(&mut self) {
        self.state = FrameState::Header {
            buf: [0; 5],
            have: 0,
        };
    }

    fn is_lost(&self) -> bool {
        matches!(self.state, FrameState::Lost)
    }

    fn buffered(&self) -> usize {
        match &self.state {
            FrameState::Body { keep, .. } => keep.len(),
            _ => 0,
        }
    }

    /// The next whole message from `data`, consuming what it used; None when `data` is used up
    /// (or framing is lost: see [`Framer::is_lost`]).
    fn next(&mut self, data: &mut &[u8]) -> Option<Frame> {
        loop {
            match &mut self.state {
                FrameState::Lost => {
                    *data = &[];
                    return None;
                }
                FrameState::Header { buf, have } => {
                    let want = if self.typed { 5 } else { 4 };
                    let take = (want - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    *data = &data[take..];
                    if *have < want {
                        return None;
                    }
                    let (typ, len) = if self.typed {
                        (buf[0], u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]))
                    } else {
                        (0, u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
                    };
                    // A zero type byte is no message of either side: the untyped startup
                    // messages are read as type 0, so it must not pass for one.
                    if !(4..=MAX_MESSAGE).contains(&len) || (self.typed && typ == 0) {
                        self.state = FrameState::Lost;
                        *data = &[];
                        return None;
                    }
                    let left = len as usize - 4;
                    let keep_max = (self.keep)(typ).min(left);
                    self.state = FrameState::Body {
                        typ,
                        left,
                        keep: Vec::with_capacity(keep_max.min(FIELDS_KEEP)),
                        keep_max,
                        whole: true,
                    };
                }
                FrameState::Body {
                    typ,
                    left,
                    keep,
                    keep_max,
                    whole,
                } => {
                    let take = (*left).min(data.len());
                    let room = keep_max.saturating_sub(keep.len()).min(take);
                    keep.extend_from_slice(&data[..room]);
                    *left -= take;
                    *data = &data[take..];
                    if *left > 0 {
                        return None;
                    }
                    let frame = Frame {
                        typ: *typ,
                        whole: *whole && keep.len() == *keep_max,
                        body: std::mem::take(keep),
                    };
                    self.reset();
                    return Some(frame);
                }
            }
        }
    }

    /// `gap` bytes were not captured: skipped when they fall inside the current message (which
    /// may then end: returned, marked not whole); anything else loses the framing.
    fn skip(&mut self, gap: u64) -> Option<Frame> {
        if gap == 0 {
            return None;
        }
        match &mut self.state {
            FrameState::Body {
                typ,
                left,
                keep,
                whole,
                ..
            } if gap <= *left as u64 => {
                *left -= gap as usize;
                *whole = false;
                if *left > 0 {
                    return None;
                }
                let frame = Frame {
                    typ: *typ,
                    whole: false,
                    body: std::mem::take(keep),
                };
                self.reset();
                Some(frame)
            }
            _ => {
                self.state = FrameState::Lost;
                None
            }
        }
    }
}

fn client_keep(typ: u8) -> usize {
    match typ {
        0 => STARTUP_KEEP,
        b'Q' | b'P' => QUERY_KEEP,
        b'B' | b'E' | b'C' => FIELDS_KEEP,
        _ => 0,
    }
}

fn server_keep(typ: u8) -> usize {
    match typ {
        b'E' | b'C' | b'Z' => FIELDS_KEEP,
        _ => 0,
    }
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's startup message (or SSLRequest).
    Startup,
    /// An SSLRequest or GSSENCRequest was sent: the server answers with one byte.
    EncryptionAsked,
    /// Encrypted from here: nothing is read (the plaintext starts a new parser).
    Encrypted,
    /// Typed messages both ways.
    Running,
}

/// What a `ReadyForQuery` answers.
#[derive(Debug)]
enum Awaiting {
    /// The startup, a function call, a Sync without Execute: no span.
    Silent,
    /// A query reported with [`DbEvent::Query`].
    Query,
}

/// Named prepared statements and their summaries, oldest evicted first.
#[derive(Debug, Default)]
struct Statements {
    by_name: HashMap<Vec<u8>, DbQuery>,
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

fn query_bytes(name: &[u8], q: &DbQuery) -> usize {
    name.len()
        + q.text.as_ref().map_or(0, String::len)
        + q.operation.as_ref().map_or(0, String::len)
        + q.collection.as_ref().map_or(0, String::len)
}

impl Statements {
    fn insert(&mut self, name: &[u8], query: DbQuery) {
        self.remove(name);
        let size = query_bytes(name, &query);
        while !self.order.is_empty()
            && (self.order.len() >= MAX_STATEMENTS || self.bytes + size > MAX_STATEMENT_BYTES)
        {
            if let Some(old) = self.order.pop_front()
                && let Some(q) = self.by_name.remove(&old)
            {
                self.bytes = self.bytes.saturating_sub(query_bytes(&old, &q));
            }
        }
        if size > MAX_STATEMENT_BYTES {
            return;
        }
        self.bytes += size;
        self.order.push_back(name.to_vec());
        self.by_name.insert(name.to_vec(), query);
    }

    fn remove(&mut self, name: &[u8]) {
        if let Some(q) = self.by_name.remove(name) {
            self.bytes = self.bytes.saturating_sub(query_bytes(name, &q));
            self.order.retain(|n| n != name);
        }
    }

    fn get(&self, name: &[u8]) -> Option<&DbQuery> {
        self.by_name.get(name)
    }
}

/// One PostgreSQL connection seen from its client.
#[derive(Debug)]
pub struct PostgresParser {
    phase: Phase,
    client: Framer,
    server: Framer,
    statements: Statements,
    /// The statement the last Bind named (the portal an Execute runs).
    bound: Option<DbQuery>,
    /// Executes since the last Sync.
    batch: Vec<DbQuery>,
    batch_size: u32,
    awaiting: VecDeque<Awaiting>,
    /// Of the round trip being answered.
    error_code: Option<String>,
    rows: Option<u64>,
}

impl Default for PostgresParser {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresParser {
    /// A connection seen from its start: the startup message comes first.
    pub fn new() -> Self {
        PostgresParser {
            phase: Phase::Startup,
            client: Framer::new(false, client_keep),
            server: Framer::new(true, server_keep),
            statements: Statements::default(),
            bound: None,
            batch: Vec::new(),
            batch_size: 0,
            awaiting: VecDeque::new(),
            error_code: None,
            rows: None,
        }
    }

    /// A connection joined mid-stream, at a client message boundary.
    pub fn joined() -> Self {
        let mut p = Self::new();
        p.phase = Phase::Running;
        p.client.typed = true;
        p
    }

    fn on_client(&mut self, frame: Frame, out: &mut Vec<DbEvent>) {
        match frame.typ {
            0 => self.on_startup(&frame.body, out),
            b'Q' => {
                let text = cstr(&frame.body);
                out.push(DbEvent::Query(sql::summarize(
                    text,
                    Dialect::Postgres,
                    !frame.whole,
                )));
                self.expect(Awaiting::Query, out);
            }
            b'P' => {
                let name = cstr(&frame.body);
                let text = frame.body.get(name.len() + 1..).map(cstr).unwrap_or(&[]);
                let summary = sql::summarize(text, Dialect::Postgres, !frame.whole);
                self.statements.insert(name, summary);
            }
            b'B' => {
                let portal = cstr(&frame.body);
                let statement = frame.body.get(portal.len() + 1..).map(cstr).unwrap_or(&[]);
                self.bound = Some(self.statements.get(statement).cloned().unwrap_or_default());
            }
            b'E' => {
                self.batch_size = self.batch_size.saturating_add(1);
                if self.batch.len() < MAX_BATCH {
                    self.batch.push(self.bound.clone().unwrap_or_default());
                }
            }
            // Close of a statement ('S'; 'P' closes a portal), then its name.
            b'C' if frame.body.first() == Some(&b'S') => {
                let name = frame.body.get(1..).map(cstr).unwrap_or(&[]);
                self.statements.remove(name);
            }
            b'S' => {
                if self.batch_size == 0 {
                    self.expect(Awaiting::Silent, out);
                } else {
                    let batch = std::mem::take(&mut self.batch);
                    let size = std::mem::take(&mut self.batch_size);
                    out.push(DbEvent::Query(merge_batch(batch, size)));
                    self.expect(Awaiting::Query, out);
                }
            }
            b'F' => self.expect(Awaiting::Silent, out),
            _ => {}
        }
    }

    fn on_startup(&mut self, body: &[u8], out: &mut Vec<DbEvent>) {
        let code = be_u32(body, 0).unwrap_or(0);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => self.phase = Phase::EncryptionAsked,
            PROTOCOL_3_0 => {
                let mut user = None;
                let mut database = None;
                let mut fields = body.get(4..).unwrap_or(&[]).split(|b| *b == 0);
                while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
                    if key.is_empty() {
                        break;
                    }
                    match key {
                        b"user" => user = Some(value),
                        b"database" => database = Some(value),
                        _ => {}
                    }
                }
                // The database defaults to the user's name.
                if let Some(name) = database.filter(|d| !d.is_empty()).or(user)
                    && !name.is_empty()
                {
                    out.push(DbEvent::Namespace(
                        String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned(),
                    ));
                }
                self.client.typed = true;
                self.phase = Phase::Running;
                self.expect(Awaiting::Silent, out);
            }
            // A cancel request closes its connection without an answer.
            _ => self.phase = Phase::Encrypted,
        }
    }

    fn expect(&mut self, what: Awaiting, out: &mut Vec<DbEvent>) {
        if self.awaiting.len() >= MAX_AWAITING {
            // More round trips in flight than any driver pipelines: the pairing is suspect.
            self.awaiting.clear();
            out.push(DbEvent::Lost);
        }
        self.awaiting.push_back(what);
    }

    fn on_server(&mut self, frame: Frame, out: &mut Vec<DbEvent>) {
        match frame.typ {
            // The first error of a round trip is the one that ended it.
            b'E' if self.error_code.is_none() => self.error_code = sqlstate(&frame.body),
            b'C' => {
                if let Some(n) = command_rows(&frame.body) {
                    self.rows = Some(self.rows.unwrap_or(0).saturating_add(n));
                }
            }
            b'Z' => self.ready(out),
            _ => {}
        }
    }

    /// `ReadyForQuery`: the oldest round trip is answered.
    fn ready(&mut self, out: &mut Vec<DbEvent>) {
        let error_code = self.error_code.take();
        let rows = self.rows.take();
        if let Some(Awaiting::Query) = self.awaiting.pop_front() {
            out.push(DbEvent::Reply(DbReply { error_code, rows }));
        }
    }

    /// The server framing was lost. A reply ended with the client's next message or with a read
    /// ending in `ReadyForQuery`; only when one round trip was in flight is it known which.
    fn recover_server(&mut self, out: &mut Vec<DbEvent>) {
        self.server.reset();
        if self.awaiting.len() <= 1 {
            self.ready(out);
        } else {
            self.awaiting.clear();
            self.error_code = None;
            self.rows = None;
            out.push(DbEvent::Lost);
        }
    }
}

/// A batch of Executes as one query: the operation and collection they share, `BATCH` before
/// the operation, the texts joined by `; ` (the conventions' rule for batches).
fn merge_batch(mut batch: Vec<DbQuery>, size: u32) -> DbQuery {
    if size <= 1 && batch.len() == 1 {
        let mut q = batch.pop().unwrap_or_default();
        q.batch_size = 1;
        return q;
    }
    let same = |f: fn(&DbQuery) -> &Option<String>| {
        let first = batch.first().map(f).cloned().flatten();
        if batch.iter().all(|q| f(q) == &first) {
            first
        } else {
            None
        }
    };
    let operation = same(|q| &q.operation).map(|op| format!("BATCH {op}"));
    let collection = same(|q| &q.collection);
    let mut texts: Vec<&str> = Vec::new();
    for q in &batch {
        if let Some(t) = q.text.as_deref()
            && !texts.contains(&t)
        {
            texts.push(t);
        }
    }
    let text =
        (!texts.is_empty()).then(|| super::db::truncate_text(texts.join("; "), MAX_QUERY_TEXT));
    DbQuery {
        operation: operation.or_else(|| Some("BATCH".to_string())),
        collection,
        text,
        truncated: batch.iter().any(|q| q.truncated),
        batch_size: size,
    }
}

/// The bytes before the first NUL (a C string field).
fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// The SQLSTATE (`C` field) of an ErrorResponse.
fn sqlstate(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let value = cstr(tail);
        if code == b'C' {
            return (value.len() == 5 && value.iter().all(u8::is_ascii_alphanumeric))
                .then(|| String::from_utf8_lossy(value).into_owned());
        }
        rest = tail.get(value.len() + 1..)?;
    }
    None
}

/// Rows from a CommandComplete tag: its last word (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`).
fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(cstr(body)).ok()?;
    let mut words = tag.split(' ');
    let verb = words.next()?;
    if !matches!(
        verb,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY"
    ) {
        return None;
    }
    words.next_back()?.parse().ok()
}

/// Does a read end with a whole `ReadyForQuery` (`Z`, length 5, a status byte)?
fn ends_with_ready(data: &[u8]) -> bool {
    matches!(
        data.get(data.len().saturating_sub(6)..),
        Some([b'Z', 0, 0, 0, 5, b'I' | b'T' | b'E'])
    )
}

impl DbParser for PostgresParser {
    fn system(&self) -> DbSystem {
        DbSystem::Postgres
    }

    fn client(&mut self, mut data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        if self.phase == Phase::Encrypted {
            return;
        }
        if self.client.is_lost() {
            if !looks_like_client_messages(data) {
                return;
            }
            self.client.reset();
            self.client.typed = true;
        }
        if self.server.is_lost() && !data.is_empty() {
            // The client speaks again: it has read the reply that was in flight.
            self.recover_server(out);
        }
        while let Some(frame) = self.client.next(&mut data) {
            self.on_client(frame, out);
            if self.phase == Phase::Encrypted {
                // The rest of the write is ciphertext, or follows a cancel request.
                return;
            }
        }
        if let Some(frame) = self.client.skip(gap) {
            self.on_client(frame, out);
        }
        if self.client.is_lost() {
            // What the gap hid may have been a Sync or a Query: the pairing is gone.
            self.awaiting.clear();
            self.batch.clear();
            self.batch_size = 0;
            self.error_code = None;
            self.rows = None;
            out.push(DbEvent::Lost);
        }
    }

    fn server(&mut self, mut data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        match self.phase {
            Phase::Encrypted => return,
            Phase::EncryptionAsked => {
                // One byte: 'S' (SSL) or 'G' (GSS) to go on encrypted, 'N' to go on in clear.
                match data.first() {
                    Some(b'S' | b'G') => {
                        self.phase = Phase::Encrypted;
                        out.push(DbEvent::StartTls);
                        return;
                    }
                    Some(b'N') => {
                        self.phase = Phase::Startup;
                        data = &data[1..];
                    }
                    Some(_) => {
                        self.phase = Phase::Encrypted;
                        return;
                    }
                    None => return,
                }
            }
            Phase::Startup | Phase::Running => {}
        }
        if self.server.is_lost() {
            if gap == 0 && ends_with_ready(data) {
                self.recover_server(out);
            }
            return;
        }
        while let Some(frame) = self.server.next(&mut data) {
            self.on_server(frame, out);
        }
        if let Some(frame) = self.server.skip(gap) {
            self.on_server(frame, out);
        }
    }

    fn buffered(&self) -> usize {
        self.client.buffered() + self.server.buffered() + self.statements.bytes
    }
}

#[cfg(test)]
mod tests;
