//! The server side of a Redis connection: RESP2 and RESP3 values read to their end, each
//! top-level one a reply (pushes and attributes aside).

use super::{
    Aggregate, MAX_AGGREGATE, MAX_BULK, MAX_DEPTH, MAX_ERROR_CODE, RedisParser, ReplyState,
    content, keep_prefix, parse_int,
};
use crate::protocol::db::{DbEvent, DbReply};

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

impl RedisParser {
    pub(super) fn read_reply(&mut self, data: &[u8], out: &mut Vec<DbEvent>) -> usize {
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
    pub(super) fn skip_reply_bytes(&mut self, gap: u64, out: &mut Vec<DbEvent>) {
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

    pub(super) fn lose_replies(&mut self, out: &mut Vec<DbEvent>) {
        if !matches!(self.reply_state, ReplyState::Lost) {
            out.push(DbEvent::Lost);
            self.reset_replies();
            self.reply_state = ReplyState::Lost;
            self.pending_namespace = None;
        }
    }

    pub(super) fn reset_replies(&mut self) {
        self.reply_state = ReplyState::Header;
        self.reply_line.clear();
        self.nesting.clear();
        self.in_push = false;
        self.blob_error = None;
        self.error = None;
    }
}
