//! The client side of a Redis connection: RESP arrays and inline commands, each described as a
//! query of its name and a `?` per argument.

use super::{
    ARG_KEEP, CommandState, MAX_ARGS, MAX_BULK, MAX_INLINE, MAX_PLACEHOLDERS, RedisParser,
    ReplyState, content, keep_prefix, parse_int,
};
use crate::protocol::db::{DbEvent, DbQuery, MAX_QUERY_TEXT, truncate_text};

/// Commands whose first argument names the operation rather than carrying data.
const SUBCOMMAND_CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

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
pub(super) struct Command {
    argc: u64,
    /// Arguments whose `$` header was read, the name included.
    started: u64,
    /// Length of the argument being read.
    arg_len: u64,
    pub(super) name: Vec<u8>,
    name_whole: bool,
    pub(super) first_arg: Vec<u8>,
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

impl RedisParser {
    /// Reads from `data` and returns how many bytes it consumed.
    pub(super) fn read_command(&mut self, data: &[u8], out: &mut Vec<DbEvent>) -> usize {
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
    pub(super) fn skip_command_bytes(&mut self, gap: u64, out: &mut Vec<DbEvent>) {
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
}
