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

use super::db::{DbEvent, DbParser, DbQuery, DbReply, DbSystem, MAX_QUERY_TEXT, truncate_text};

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

/// Commands whose first argument names the operation rather than carrying data.
const SUBCOMMAND_CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

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

/// The error kind Redis puts first in an error message (`ERR`, `WRONGTYPE`, `MOVED`); messages
/// from elsewhere that do not follow the convention count as `ERR`.
fn error_code(message: &[u8]) -> String {
    let word = message
        .iter()
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    let ends_word = matches!(message.get(word), None | Some(b' ' | b'\r' | b'\n'));
    match message.get(..word) {
        Some(code) if word > 0 && word <= MAX_ERROR_CODE && ends_word => {
            String::from_utf8_lossy(code).into_owned()
        }
        _ => "ERR".to_owned(),
    }
}

/// A word safe to show as a subcommand: letters, digits and `-`/`_`, as command names are.
fn is_subcommand_word(word: &[u8]) -> bool {
    !word.is_empty()
        && word.len() <= 32
        && word
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The command being read: its shape and the two arguments that can name the operation.
#[derive(Default)]
struct Command {
    argc: u64,
    /// Arguments whose `$` header was read, the name included.
    started: u64,
    /// Length of the argument being read.
    arg_len: u64,
    name: Vec<u8>,
    name_whole: bool,
    first_arg: Vec<u8>,
    first_arg_whole: bool,
}

impl Command {
    fn clear(&mut self) {
        self.argc = 0;
        self.started = 0;
        self.arg_len = 0;
        self.name.clear();
        self.name_whole = false;
        self.first_arg.clear();
        self.first_arg_whole = false;
    }
}

/// The query for a command with `name` and `args` arguments after it, of which the first is
/// `first_arg` when known whole; and the namespace it switches to once answered.
fn describe(
    name: Option<&[u8]>,
    first_arg: Option<&[u8]>,
    args: u64,
    truncated: bool,
) -> (DbQuery, Option<String>) {
    let Some(name) = name else {
        // The capture missed part of the name: the command still gets a reply to pair with.
        let query = DbQuery {
            truncated: true,
            batch_size: 1,
            ..DbQuery::default()
        };
        return (query, None);
    };
    let operation = String::from_utf8_lossy(name).into_owned();
    let mut text = operation.clone();
    let mut placeholders = args;
    if let Some(sub) = first_arg.filter(|sub| {
        is_subcommand_word(sub)
            && SUBCOMMAND_CONTAINERS
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(name))
    }) {
        text.push(' ');
        text.push_str(&String::from_utf8_lossy(sub));
        placeholders -= 1;
    }
    for _ in 0..placeholders.min(MAX_PLACEHOLDERS) {
        if text.len() > MAX_QUERY_TEXT {
            break;
        }
        text.push_str(" ?");
    }
    let namespace = if name.eq_ignore_ascii_case(b"SELECT") && args == 1 {
        first_arg
            .filter(|db| !db.is_empty() && db.len() <= 10 && db.iter().all(u8::is_ascii_digit))
            .map(|db| String::from_utf8_lossy(db).into_owned())
    } else if name.eq_ignore_ascii_case(b"RESET") && args == 0 {
        Some("0".to_owned())
    } else {
        None
    };
    let query = DbQuery {
        operation: Some(operation),
        collection: None,
        text: Some(truncate_text(text, MAX_QUERY_TEXT)),
        truncated,
        batch_size: 1,
    };
    (query, namespace)
}

/// Splits an inline command like Redis's sdssplitargs: words separated by whitespace, quotes
/// (with backslash escapes) inside a word. Returns the word count and the first two words, or
/// None for unbalanced quotes (Redis answers with an error and closes the connection).
fn split_inline(line: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let mut words = 0u64;
    let mut first: &[u8] = &[];
    let mut second: &[u8] = &[];
    let mut start = None;
    let mut quote = None;
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
                if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
            }
        } else if b.is_ascii_whitespace() {
            if let Some(s) = start.take() {
                let word = unquote(line.get(s..i).unwrap_or_default());
                words += 1;
                match words {
                    1 => first = word,
                    2 => second = word,
                    _ => {}
                }
            }
        } else {
            start.get_or_insert(i);
            if matches!(b, b'"' | b'\'') {
                quote = Some(b);
            }
        }
        i += 1;
    }
    if quote.is_some() {
        return None;
    }
    if let Some(s) = start {
        let word = unquote(line.get(s..).unwrap_or_default());
        words += 1;
        match words {
            1 => first = word,
            2 => second = word,
            _ => {}
        }
    }
    Some((words, first, second))
}

fn unquote(word: &[u8]) -> &[u8] {
    match word {
        [q @ (b'"' | b'\''), inner @ .., last] if last == q => inner,
        _ => word,
    }
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

    /// Reads from `data` and returns how many bytes it consumed.
    fn read_command(&mut self, data: &[u8], out: &mut Vec<DbEvent>) -> usize {
        match self.command_state {
            CommandState::Boundary => {
                self.command_state = match data.first() {
                    Some(b'*') => CommandState::ArrayHeader,
                    Some(_) => CommandState::Inline,
                    None => CommandState::Boundary,
                };
                0
            }
            CommandState::ArrayHeader | CommandState::BulkHeader => {
                let (consumed, ended) = self.command_line.read(data);
                if self.command_line.overlong {
                    // Lengths are short: this is not RESP, and waiting for its end would be
                    // waiting for nothing.
                    self.lose_commands(out);
                    return data.len();
                }
                if ended {
                    let (line, _) = self.command_line.finish();
                    self.command_header(content(&line), out);
                    self.command_line.recycle(line);
                }
                consumed
            }
            CommandState::Argument { remaining } => {
                let taken = remaining.min(data.len() as u64);
                let chunk = data.get(..taken as usize).unwrap_or_default();
                self.keep_argument(chunk, remaining);
                self.argument_progress(remaining - taken, out);
                taken as usize
            }
            CommandState::Inline => {
                let (body, consumed, ended) = match data.iter().position(|&b| b == b'\n') {
                    Some(end) => (data.split_at(end).0, end + 1, true),
                    None => (data, data.len(), false),
                };
                if self.inline.len() + body.len() > MAX_INLINE {
                    self.lose_commands(out);
                    return data.len();
                }
                self.inline.extend_from_slice(body);
                if ended {
                    self.inline_command(out);
                }
                consumed
            }
            CommandState::Lost => data.len(),
        }
    }

    fn command_header(&mut self, line: &[u8], out: &mut Vec<DbEvent>) {
        match (&self.command_state, line.split_first()) {
            (CommandState::ArrayHeader, Some((b'*', count))) => match parse_int(count) {
                // Redis skips empty arrays without a reply.
                Some(argc) if argc <= 0 => self.command_state = CommandState::Boundary,
                Some(argc) if argc <= MAX_ARGS => {
                    self.command.clear();
                    self.command.argc = argc as u64;
                    self.command_state = CommandState::BulkHeader;
                }
                _ => self.lose_commands(out),
            },
            (CommandState::BulkHeader, Some((b'$', len))) => match parse_int(len) {
                Some(len @ 0..=MAX_BULK) => {
                    self.command.started += 1;
                    self.command.arg_len = len as u64;
                    self.command_state = CommandState::Argument {
                        remaining: len as u64 + 2,
                    };
                }
                _ => self.lose_commands(out),
            },
            _ => self.lose_commands(out),
        }
    }

    /// Keeps the start of the name and of the first argument; `remaining` is counted before
    /// `chunk`.
    fn keep_argument(&mut self, chunk: &[u8], remaining: u64) {
        let command = &mut self.command;
        let offset = (command.arg_len + 2).saturating_sub(remaining);
        let limit = command.arg_len.min(ARG_KEEP as u64);
        match command.started {
            1 => keep_prefix(&mut command.name, chunk, offset, limit),
            2 => keep_prefix(&mut command.first_arg, chunk, offset, limit),
            _ => {}
        }
    }

    fn argument_progress(&mut self, remaining: u64, out: &mut Vec<DbEvent>) {
        if remaining > 0 {
            self.command_state = CommandState::Argument { remaining };
            return;
        }
        let command = &mut self.command;
        let whole = command.arg_len.min(ARG_KEEP as u64);
        match command.started {
            1 => command.name_whole = command.name.len() as u64 == whole,
            2 => command.first_arg_whole = command.first_arg.len() as u64 == whole,
            _ => {}
        }
        if command.started < command.argc {
            self.command_state = CommandState::BulkHeader;
            return;
        }
        self.command_state = CommandState::Boundary;
        self.emit_command(false, out);
    }

    /// Emits the command read so far; `truncated` when the capture lost its end.
    fn emit_command(&mut self, truncated: bool, out: &mut Vec<DbEvent>) {
        let command = &self.command;
        let name = command.name_whole.then_some(command.name.as_slice());
        let first_arg = command
            .first_arg_whole
            .then_some(command.first_arg.as_slice());
        let args = if truncated {
            command.started.saturating_sub(1)
        } else {
            command.argc.saturating_sub(1)
        };
        let (query, namespace) = describe(name, first_arg, args, truncated);
        self.command.clear();
        self.emit_query(query, namespace, out);
    }

    fn inline_command(&mut self, out: &mut Vec<DbEvent>) {
        let line = std::mem::take(&mut self.inline);
        self.command_state = CommandState::Boundary;
        match split_inline(&line) {
            // Redis ignores blank lines without a reply.
            Some((0, _, _)) => {}
            Some((words, name, first_arg)) => {
                let name = name.get(..ARG_KEEP.min(name.len())).unwrap_or_default();
                let first_arg = (words > 1 && first_arg.len() <= ARG_KEEP).then_some(first_arg);
                let (query, namespace) = describe(Some(name), first_arg, words - 1, false);
                self.emit_query(query, namespace, out);
            }
            None => self.lose_commands(out),
        }
        self.inline = line;
        self.inline.clear();
    }

    fn emit_query(&mut self, query: DbQuery, namespace: Option<String>, out: &mut Vec<DbEvent>) {
        if matches!(self.reply_state, ReplyState::Lost) {
            // The replies before this command are gone: this command's reply is the next one.
            self.reset_replies();
            self.replies = self.queries;
        }
        self.queries += 1;
        if let Some(db) = namespace {
            self.pending_namespace = Some((self.queries, db));
        }
        out.push(DbEvent::Query(query));
    }

    /// The capture missed `gap` bytes the client wrote after the last data.
    fn skip_command_bytes(&mut self, gap: u64, out: &mut Vec<DbEvent>) {
        match self.command_state {
            CommandState::Lost => {}
            CommandState::Argument { remaining } if gap <= remaining => {
                self.argument_progress(remaining - gap, out)
            }
            CommandState::Argument { .. } if self.command.started == self.command.argc => {
                // The command ended inside the gap and the next one started there.
                self.command_state = CommandState::Boundary;
                self.emit_command(false, out);
                self.lose_commands(out);
            }
            CommandState::Argument { .. } | CommandState::BulkHeader => {
                self.emit_command(true, out);
                self.lose_commands(out);
            }
            CommandState::Boundary | CommandState::ArrayHeader | CommandState::Inline => {
                self.lose_commands(out)
            }
        }
    }

    fn lose_commands(&mut self, out: &mut Vec<DbEvent>) {
        if !matches!(self.command_state, CommandState::Lost) {
            self.command_state = CommandState::Lost;
            self.command.clear();
            self.command_line.clear();
            self.inline.clear();
            // The replies to what was missed cannot be paired either: drop them until the client
            // is back in step.
            self.lose_replies(out);
        }
    }

    fn read_reply(&mut self, data: &[u8], out: &mut Vec<DbEvent>) -> usize {
        match self.reply_state {
            ReplyState::Header | ReplyState::ChunkHeader => {
                let (consumed, ended) = self.reply_line.read(data);
                let kind = self.reply_line.kept.first().copied();
                let free_text = matches!(self.reply_state, ReplyState::Header)
                    && matches!(kind, Some(b'+' | b'-' | b':' | b',' | b'(' | b'_' | b'#'));
                if self.reply_line.overlong && !free_text {
                    self.lose_replies(out);
                    return data.len();
                }
                if ended {
                    let (line, overlong) = self.reply_line.finish();
                    if matches!(self.reply_state, ReplyState::Header) {
                        self.reply_header(content(&line), overlong, out);
                    } else {
                        self.chunk_header(content(&line), overlong, out);
                    }
                    self.reply_line.recycle(line);
                }
                consumed
            }
            ReplyState::Payload { remaining } | ReplyState::Chunk { remaining } => {
                let taken = remaining.min(data.len() as u64);
                if let Some(kept) = &mut self.blob_error {
                    let chunk = data.get(..taken as usize).unwrap_or_default();
                    let offset = (self.payload_len + 2).saturating_sub(remaining);
                    let limit = self.payload_len.min(MAX_ERROR_CODE as u64 + 1);
                    keep_prefix(kept, chunk, offset, limit);
                }
                self.payload_progress(remaining - taken, out);
                taken as usize
            }
            ReplyState::Lost => data.len(),
        }
    }

    fn reply_header(&mut self, line: &[u8], overlong: bool, out: &mut Vec<DbEvent>) {
        let Some((&kind, rest)) = line.split_first() else {
            return self.lose_replies(out);
        };
        let top = self.nesting.is_empty();
        match kind {
            b'+' | b':' | b',' | b'(' | b'_' | b'#' => self.value_done(out),
            b'-' => {
                if top {
                    self.error = Some(error_code(rest));
                }
                self.value_done(out)
            }
            _ if overlong => self.lose_replies(out),
            b'$' if rest == b"?" => self.reply_state = ReplyState::ChunkHeader,
            b'$' | b'=' | b'!' => match parse_int(rest) {
                Some(-1) if kind == b'$' => self.value_done(out),
                Some(len @ 0..=MAX_BULK) => {
                    self.payload_len = len as u64;
                    self.blob_error = (kind == b'!' && top).then(Vec::new);
                    self.reply_state = ReplyState::Payload {
                        remaining: len as u64 + 2,
                    };
                }
                _ => self.lose_replies(out),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if top && kind == b'>' {
                    self.in_push = true;
                }
                let attribute = kind == b'|';
                if rest == b"?" {
                    return self.open_aggregate(0, true, attribute, out);
                }
                let per_entry = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
                match parse_int(rest) {
                    // RESP2's null array.
                    Some(-1) if kind == b'*' => self.value_done(out),
                    // An empty attribute decorates nothing; other empty aggregates are values.
                    Some(0) if attribute => {}
                    Some(0) => self.value_done(out),
                    Some(len @ 1..=MAX_AGGREGATE) => {
                        self.open_aggregate(len as u64 * per_entry, false, attribute, out)
                    }
                    _ => self.lose_replies(out),
                }
            }
            b'.' => match self.nesting.pop() {
                Some(aggregate) if aggregate.streamed => {
                    if !aggregate.attribute {
                        self.value_done(out);
                    }
                }
                _ => self.lose_replies(out),
            },
            _ => self.lose_replies(out),
        }
    }

    fn open_aggregate(
        &mut self,
        remaining: u64,
        streamed: bool,
        attribute: bool,
        out: &mut Vec<DbEvent>,
    ) {
        if self.nesting.len() >= MAX_DEPTH {
            return self.lose_replies(out);
        }
        self.nesting.push(Aggregate {
            remaining,
            streamed,
            attribute,
        });
    }

    fn chunk_header(&mut self, line: &[u8], overlong: bool, out: &mut Vec<DbEvent>) {
        match line.split_first() {
            Some((b';', len)) if !overlong => match parse_int(len) {
                Some(0) => {
                    self.reply_state = ReplyState::Header;
                    self.value_done(out);
                }
                Some(len @ 1..=MAX_BULK) => {
                    self.payload_len = len as u64;
                    self.reply_state = ReplyState::Chunk {
                        remaining: len as u64 + 2,
                    };
                }
                _ => self.lose_replies(out),
            },
            _ => self.lose_replies(out),
        }
    }

    fn payload_progress(&mut self, remaining: u64, out: &mut Vec<DbEvent>) {
        let in_chunk = matches!(self.reply_state, ReplyState::Chunk { .. });
        self.reply_state = match (in_chunk, remaining) {
            (true, 0) => ReplyState::ChunkHeader,
            (true, remaining) => ReplyState::Chunk { remaining },
            (false, 0) => {
                if let Some(kept) = self.blob_error.take() {
                    self.error = Some(error_code(&kept));
                }
                self.reply_state = ReplyState::Header;
                return self.value_done(out);
            }
            (false, remaining) => ReplyState::Payload { remaining },
        };
    }

    /// A value ended: it counts towards its aggregate, which may end in turn, up to the top.
    fn value_done(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            let Some(parent) = self.nesting.last_mut() else {
                return self.message_done(out);
            };
            if parent.streamed {
                return;
            }
            parent.remaining = parent.remaining.saturating_sub(1);
            if parent.remaining > 0 {
                return;
            }
            match self.nesting.pop() {
                Some(ended) if !ended.attribute => {}
                _ => return,
            }
        }
    }

    fn message_done(&mut self, out: &mut Vec<DbEvent>) {
        let error_code = self.error.take();
        if std::mem::take(&mut self.in_push) {
            return;
        }
        // Replies beyond the queries sent (a SUBSCRIBE's per-channel replies) answer nothing new.
        self.replies = (self.replies + 1).min(self.queries);
        let succeeded = error_code.is_none();
        out.push(DbEvent::Reply(DbReply {
            error_code,
            rows: None,
        }));
        match self.pending_namespace.take() {
            Some((query, db)) if query == self.replies && succeeded => {
                out.push(DbEvent::Namespace(db));
            }
            // Not answered yet; an earlier or failed switch is forgotten.
            Some(pending) if pending.0 > self.replies => self.pending_namespace = Some(pending),
            _ => {}
        }
    }

    /// The capture missed `gap` bytes the client read after the last data.
    fn skip_reply_bytes(&mut self, gap: u64, out: &mut Vec<DbEvent>) {
        match self.reply_state {
            ReplyState::Lost => {}
            ReplyState::Payload { remaining } | ReplyState::Chunk { remaining }
                if gap <= remaining =>
            {
                self.payload_progress(remaining - gap, out)
            }
            _ => self.lose_replies(out),
        }
    }

    fn lose_replies(&mut self, out: &mut Vec<DbEvent>) {
        if !matches!(self.reply_state, ReplyState::Lost) {
            out.push(DbEvent::Lost);
            self.reset_replies();
            self.reply_state = ReplyState::Lost;
            self.pending_namespace = None;
        }
    }

    fn reset_replies(&mut self) {
        self.reply_state = ReplyState::Header;
        self.reply_line.clear();
        self.nesting.clear();
        self.in_push = false;
        self.blob_error = None;
        self.error = None;
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

#[cfg(test)]
mod tests;
