//! Redis commands and replies (RESP2 and RESP3) for `db.*` spans.
//!
//! Client side: RESP arrays of bulk strings, the form every client library and `redis-cli` send,
//! and inline commands (`PING\r\n`, as typed into telnet). Each command becomes a query whose text
//! is the command name and a `?` per argument: keys and values are application data (user ids,
//! session tokens, whole documents) and never leave the agent. Only the subcommand word of the
//! container commands (`CLIENT SETNAME ?`, `CONFIG GET ?`) is kept, because without it the
//! operation says nothing. `SELECT <n>` (and `RESET`) also give `db.namespace` once answered.
//!
//! Server side: every RESP2 and RESP3 type, nested aggregates, streamed strings and aggregates
//! (`$?`, `*?`). A top-level value is one reply; its error prefix (`WRONGTYPE`) is kept, its
//! message is not (it quotes keys and arguments). RESP3 pushes (`>`: client-side caching
//! invalidations, pub/sub in RESP3) are out of band and attributes (`|`) only decorate the value
//! after them, so neither is a reply.
//!
//! Values are never held: bulk payloads are skipped by their length, so a 512 MB GET costs a
//! counter, and a capture gap inside a payload costs nothing. What is held is one header line
//! (64 bytes kept, the rest of an overlong line skipped), the first bytes of a command's name and
//! its first argument, an inline command (64 KiB, Redis's own limit), and a nesting stack of at
//! most 64 levels. Lengths read from the wire are counted down, never allocated.
//!
//! Framing is lost when a gap swallows a message boundary or bytes do not parse. The client side
//! then waits for a write that starts with `*`; the server side waits for the client's next
//! command, since a client reads the previous reply before sending it.
//!
//! Not covered: commands that get no reply (`CLIENT REPLY OFF`, RESP2 subscribe mode, where one
//! SUBSCRIBE gets a reply per channel and messages arrive unasked) are queued like any other;
//! reassembly ignores replies that find no query, so this costs the pairing of those commands
//! only. MULTI/EXEC commands are queries of their own (each gets `+QUEUED`).

use super::db::{DbEvent, DbParser, DbSystem};
use command::Command;

mod command;
mod reply;
#[cfg(test)]
mod tests;

/// Bytes of a header line kept: lengths and error prefixes fit; the rest of a line (a long
/// simple string, an error message) is skipped.
const LINE_KEEP: usize = 64;
/// Redis refuses longer inline commands (PROTO_INLINE_MAX_SIZE).
const MAX_INLINE: usize = 64 * 1024;
/// Bytes kept of a command's name and first argument, enough for any command or subcommand.
const ARG_KEEP: usize = 64;
/// Redis's own limit on a command's argument count.
const MAX_ARGS: i64 = i32::MAX as i64;
/// Larger bulk lengths are not Redis (proto-max-bulk-len defaults to 512 MB).
const MAX_BULK: i64 = 1 << 40;
/// No Redis collection holds more than 2^32 - 1 elements.
const MAX_AGGREGATE: i64 = u32::MAX as i64;
/// Real replies nest a few levels (COMMAND DOCS: 7); deeper is hostile.
const MAX_DEPTH: usize = 64;
/// Placeholders written into a query text at most; MAX_QUERY_TEXT cuts earlier anyway.
const MAX_PLACEHOLDERS: u64 = 1024;
/// Longest error prefix kept (`db.response.status_code`).
const MAX_ERROR_CODE: usize = 32;

/// Cheap detection on the first bytes a client wrote: `*<n>\r\n$<len>\r\n` with n in 1..=1024 and
/// a command name that is a short printable word. HTTP, TLS, PostgreSQL and MySQL openings fail on
/// the first bytes already.
pub fn looks_like_command(data: &[u8]) -> bool {
    let Some(rest) = data.strip_prefix(b"*") else {
        return false;
    };
    let Some((argc, rest)) = short_number_line(rest, 4) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b"$") else {
        return false;
    };
    let Some((name_len, rest)) = short_number_line(rest, 2) else {
        return false;
    };
    (1..=1024).contains(&argc)
        && (1..=ARG_KEEP as u64).contains(&name_len)
        && rest
            .iter()
            .take(name_len as usize)
            .all(u8::is_ascii_graphic)
}

/// `<digits>\r\n` with at most `max_digits` digits.
fn short_number_line(data: &[u8], max_digits: usize) -> Option<(u64, &[u8])> {
    let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > max_digits {
        return None;
    }
    let (number, rest) = data.split_at(digits);
    let rest = rest.strip_prefix(b"\r\n")?;
    let value = number
        .iter()
        .fold(0u64, |value, d| value * 10 + u64::from(d - b'0'));
    Some((value, rest))
}

/// A header line being read: its first [`LINE_KEEP`] bytes and whether it was longer.
#[derive(Default)]
struct Line {
    kept: Vec<u8>,
    overlong: bool,
}

impl Line {
    /// Reads up to the end of the line (LF; a CR before it is stripped by [`content`]). Returns
    /// the bytes consumed and whether the line ended.
    fn read(&mut self, data: &[u8]) -> (usize, bool) {
        let (body, consumed, ended) = match data.iter().position(|&b| b == b'\n') {
            Some(end) => (data.split_at(end).0, end + 1, true),
            None => (data, data.len(), false),
        };
        let room = LINE_KEEP.saturating_sub(self.kept.len());
        if body.len() > room {
            self.overlong = true;
        }
        self.kept
            .extend_from_slice(body.get(..room.min(body.len())).unwrap_or_default());
        (consumed, ended)
    }

    /// Hands the finished line over, leaving the buffer (and its capacity) for the next one.
    fn finish(&mut self) -> (Vec<u8>, bool) {
        let overlong = std::mem::take(&mut self.overlong);
        (std::mem::take(&mut self.kept), overlong)
    }

    fn recycle(&mut self, mut kept: Vec<u8>) {
        kept.clear();
        self.kept = kept;
    }

    fn clear(&mut self) {
        self.kept.clear();
        self.overlong = false;
    }
}

fn content(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Appends the bytes of `chunk`, which starts `offset` bytes into a value, that extend the
/// contiguous prefix kept so far, up to `limit` bytes. After a gap the prefix stays short instead
/// of gaining bytes from later in the value.
fn keep_prefix(kept: &mut Vec<u8>, chunk: &[u8], offset: u64, limit: u64) {
    if offset != kept.len() as u64 || offset >= limit {
        return;
    }
    let wanted = (limit - offset).min(chunk.len() as u64) as usize;
    kept.extend_from_slice(chunk.get(..wanted).unwrap_or_default());
}

enum CommandState {
    /// Between commands.
    Boundary,
    /// In the `*<argc>` line.
    ArrayHeader,
    /// In an argument's `$<len>` line.
    BulkHeader,
    /// In an argument's bytes: `remaining` of them and the CRLF after.
    Argument { remaining: u64 },
    /// In an inline command's line.
    Inline,
    /// Framing lost: waiting for a write that starts with `*`.
    Lost,
}

enum ReplyState {
    /// At a type byte or in a header line.
    Header,
    /// In a `$`, `=` or `!` payload: `remaining` bytes and the CRLF after.
    Payload { remaining: u64 },
    /// Between the chunks of a streamed string (`$?`), at a `;<len>` line.
    ChunkHeader,
    /// In a streamed string's chunk.
    Chunk { remaining: u64 },
    /// Framing lost: waiting for the client's next command.
    Lost,
}

/// An aggregate whose elements are being read.
struct Aggregate {
    /// Elements still to come; unused for streamed aggregates.
    remaining: u64,
    /// `*?`-style: ends at a `.` line instead of a count.
    streamed: bool,
    /// An attribute: metadata about the next value, not a value itself.
    attribute: bool,
}

/// One Redis connection's parser.
pub struct RedisParser {
    command_state: CommandState,
    command_line: Line,
    inline: Vec<u8>,
    command: Command,

    reply_state: ReplyState,
    reply_line: Line,
    /// Open aggregates, innermost last, at most [`MAX_DEPTH`].
    nesting: Vec<Aggregate>,
    /// The top-level value being read is a push, not a reply.
    in_push: bool,
    /// Length of the payload being read.
    payload_len: u64,
    /// The payload being read is a top-level blob error whose prefix is kept.
    blob_error: Option<Vec<u8>>,
    /// Error code of the top-level reply being read.
    error: Option<String>,

    /// Queries emitted and replies seen, to know which reply answers a SELECT.
    queries: u64,
    replies: u64,
    /// The database the query numbered `.0` switches to if it succeeds.
    pending_namespace: Option<(u64, String)>,
}

impl Default for RedisParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisParser {
    pub fn new() -> Self {
        RedisParser {
            command_state: CommandState::Boundary,
            command_line: Line::default(),
            inline: Vec::new(),
            command: Command::default(),
            reply_state: ReplyState::Header,
            reply_line: Line::default(),
            nesting: Vec::new(),
            in_push: false,
            payload_len: 0,
            blob_error: None,
            error: None,
            queries: 0,
            replies: 0,
            pending_namespace: None,
        }
    }
}

impl DbParser for RedisParser {
    fn system(&self) -> DbSystem {
        DbSystem::Redis
    }

    fn client(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        if matches!(self.command_state, CommandState::Lost) {
            if data.first() != Some(&b'*') {
                return;
            }
            self.command_state = CommandState::Boundary;
        }
        let mut rest = data;
        while !rest.is_empty() {
            let consumed = self.read_command(rest, out);
            if matches!(self.command_state, CommandState::Lost) {
                return;
            }
            rest = rest.get(consumed..).unwrap_or_default();
        }
        if gap > 0 {
            self.skip_command_bytes(gap, out);
        }
    }

    fn server(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
        let mut rest = data;
        while !rest.is_empty() {
            if matches!(self.reply_state, ReplyState::Lost) {
                return;
            }
            let consumed = self.read_reply(rest, out);
            rest = rest.get(consumed..).unwrap_or_default();
        }
        if gap > 0 {
            self.skip_reply_bytes(gap, out);
        }
    }

    fn buffered(&self) -> usize {
        self.command_line.kept.len()
            + self.inline.len()
            + self.command.name.len()
            + self.command.first_arg.len()
            + self.reply_line.kept.len()
            + self.blob_error.as_ref().map_or(0, Vec::len)
            + self.nesting.len() * std::mem::size_of::<Aggregate>()
    }
}
