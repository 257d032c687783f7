//! The lexer: SQL split into tokens, and the sanitized text written as it goes (literals as
//! `?`, comments dropped, whitespace collapsed).

use super::{Dialect, MAX_DOLLAR_TAG, OUT_CAP};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A bare word: a keyword or an identifier.
    Word,
    /// A quoted identifier (`"Users"` in PostgreSQL, `` `users` `` in MySQL), kept as written.
    Quoted,
    /// Any literal, written out as `?`.
    Literal,
    /// A PostgreSQL `$1` placeholder.
    Param,
    /// One byte of punctuation or operator.
    Punct,
}

/// Byte offsets into the scanned input, which [`super::MAX_SCAN`] keeps well inside `u32`:
/// tokens are held for the whole statement, so they are kept small.
#[derive(Clone, Copy, Debug)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: u32,
    pub(super) end: u32,
}

pub(super) struct Lexer<'a> {
    pub(super) src: &'a [u8],
    pub(super) dialect: Dialect,
    pub(super) pos: usize,
    pub(super) out: Vec<u8>,
    /// Whitespace or a comment since the last token: one space is owed before the next.
    pub(super) space: bool,
    pub(super) tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn mysql(&self) -> bool {
        self.dialect == Dialect::MySql
    }

    pub(super) fn run(&mut self) {
        while let Some(b) = self.at(self.pos) {
            let start = self.pos;
            let next = self.at(start + 1);
            match b {
                _ if is_space(b) => {
                    self.pos += 1;
                    self.space = true;
                }
                b'-' if next == Some(b'-') && self.dash_comment() => self.skip_line(),
                b'#' if self.mysql() => self.skip_line(),
                b'/' if next == Some(b'*') => self.skip_block_comment(),
                b'\'' => {
                    self.pos = self.string_end(start + 1, b'\'', self.mysql());
                    self.emit(Kind::Literal, start);
                }
                b'"' if self.mysql() => {
                    self.pos = self.string_end(start + 1, b'"', true);
                    self.emit(Kind::Literal, start);
                }
                b'"' => {
                    self.pos = self.string_end(start + 1, b'"', false);
                    self.emit(Kind::Quoted, start);
                }
                b'`' if self.mysql() => {
                    self.pos = self.string_end(start + 1, b'`', false);
                    self.emit(Kind::Quoted, start);
                }
                b'$' if !self.mysql() => self.dollar(),
                b'0'..=b'9' => self.number(),
                b'.' if next.is_some_and(|n| n.is_ascii_digit()) => self.number(),
                _ if is_word_start(b, self.dialect) => self.word(),
                _ => {
                    self.pos += 1;
                    self.emit(Kind::Punct, start);
                }
            }
        }
    }

    /// Records the token `start..self.pos` and writes it out (a literal as `?`).
    fn emit(&mut self, kind: Kind, start: usize) {
        // `MAX_SCAN` keeps offsets far below `u32::MAX`.
        self.tokens.push(Token {
            kind,
            start: start as u32,
            end: self.pos as u32,
        });
        if self.out.len() > OUT_CAP {
            return;
        }
        if self.space && !self.out.is_empty() {
            self.out.push(b' ');
        }
        self.space = false;
        if kind == Kind::Literal {
            self.out.push(b'?');
        } else {
            let room = (OUT_CAP + 1).saturating_sub(self.out.len());
            let bytes = self.src.get(start..self.pos).unwrap_or_default();
            self.out.extend(bytes.iter().take(room));
        }
    }

    /// `--` starts a comment, except in MySQL where it needs whitespace after it (`1--1` is
    /// arithmetic there). Reading a comment where the server reads code would hide the rest of
    /// the line from the string-literal rules, so MySQL's rule is followed exactly.
    fn dash_comment(&self) -> bool {
        if !self.mysql() {
            return true;
        }
        match self.at(self.pos + 2) {
            None => true,
            Some(c) => is_space(c),
        }
    }

    fn skip_line(&mut self) {
        let rest = self.src.get(self.pos..).unwrap_or_default();
        self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        self.space = true;
    }

    /// `/* ... */`, nested in PostgreSQL; MySQL's `/*! ... */` version comments go too (they
    /// are code, but code the text can do without). Unterminated: to the end.
    fn skip_block_comment(&mut self) {
        let nests = !self.mysql();
        let mut depth = 0usize;
        let mut i = self.pos;
        while let Some(c) = self.at(i) {
            let next = self.at(i + 1);
            if c == b'/' && next == Some(b'*') && (nests || depth == 0) {
                depth += 1;
                i += 2;
            } else if c == b'*' && next == Some(b'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                i += 1;
            }
        }
        self.pos = i.min(self.src.len());
        self.space = true;
    }

    /// Just past the `quote` closing a quoted run whose content starts at `from` (a doubled
    /// quote stands for itself; with `backslash`, so does an escaped one), or the end of the
    /// input when it never closes.
    fn string_end(&self, from: usize, quote: u8, backslash: bool) -> usize {
        let mut i = from;
        while let Some(c) = self.at(i) {
            if backslash && c == b'\\' {
                i += 2;
            } else if c == quote {
                if self.at(i + 1) == Some(quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.src.len()
    }

    /// PostgreSQL's `$`: a `$1` placeholder (kept), a `$tag$...$tag$` string (a literal), or an
    /// operator character.
    fn dollar(&mut self) {
        let start = self.pos;
        let rest = self.src.get(start + 1..).unwrap_or_default();
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            self.pos = start + 1 + digits;
            self.emit(Kind::Param, start);
            return;
        }
        // The digit case is gone, so whatever follows is a valid tag start or not a tag at all.
        let tag_len = rest
            .iter()
            .take_while(|&&c| c != b'$' && is_word_char(c))
            .count();
        if tag_len <= MAX_DOLLAR_TAG && rest.get(tag_len) == Some(&b'$') {
            let tag = self.src.get(start..start + tag_len + 2).unwrap_or_default();
            let body = start + tag.len();
            self.pos = self
                .find(tag, body)
                .map_or(self.src.len(), |i| i + tag.len());
            self.emit(Kind::Literal, start);
            return;
        }
        self.pos += 1;
        self.emit(Kind::Punct, start);
    }

    /// The first occurrence of `tag` (which starts with `$` and holds no other `$` but its last
    /// byte) at or after `from`. Each comparison stops at the first mismatch, which comes at the
    /// latest at the next `$` of the input, so the whole search is linear.
    fn find(&self, tag: &[u8], from: usize) -> Option<usize> {
        let hay = self.src.get(from..)?;
        let mut i = 0;
        while let Some(off) = hay.get(i..)?.iter().position(|&c| c == b'$') {
            let at = i + off;
            let candidate = hay.get(at..).unwrap_or_default();
            if candidate.len() >= tag.len() && tag.iter().zip(candidate).all(|(a, b)| a == b) {
                return Some(from + at);
            }
            i = at + 1;
        }
        None
    }

    /// Integers, decimals, exponents, `0x..`/`0b..`, PostgreSQL's `1_000`: greedily, so a
    /// number never leaves digits behind. (A MySQL identifier that starts with a digit is eaten
    /// too: hidden, never leaked.)
    fn number(&mut self) {
        let start = self.pos;
        let hex = self.at(start) == Some(b'0') && matches!(self.at(start + 1), Some(b'x' | b'X'));
        let mut i = start;
        while let Some(c) = self.at(i) {
            let exponent_sign = matches!(c, b'+' | b'-')
                && !hex
                && i > start
                && matches!(self.at(i - 1), Some(b'e' | b'E'))
                && self.at(i + 1).is_some_and(|d| d.is_ascii_digit());
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exponent_sign {
                i += 1;
            } else {
                break;
            }
        }
        self.pos = i;
        self.emit(Kind::Literal, start);
    }

    /// A bare word, or the prefix of a string that it is glued to: PostgreSQL `E'..'` and
    /// `U&'..'`, `B'..'`/`X'..'`/`N'..'`, MySQL's charset introducers (`_binary'..'`, which
    /// PyMySQL sends for every bytes value).
    fn word(&mut self) {
        let start = self.pos;
        let rest = self.src.get(start..).unwrap_or_default();
        let len = rest.iter().take_while(|&&c| is_word_char(c)).count().max(1);
        let end = start + len;
        let word = rest.get(..len).unwrap_or_default();
        let one = |c: u8| matches!(word, [w] if w.eq_ignore_ascii_case(&c));
        let mysql = self.mysql();
        let quote_at = match self.at(end) {
            Some(b'\'') => Some(end),
            Some(b'&') if !mysql && one(b'u') && self.at(end + 1) == Some(b'\'') => Some(end + 1),
            _ => None,
        };
        let prefix = match quote_at {
            Some(q) if q > end => Some(false),
            Some(_) if !mysql && one(b'e') => Some(true),
            Some(_) if one(b'b') || one(b'x') || one(b'n') => Some(mysql),
            Some(_) if mysql && word.first() == Some(&b'_') => Some(true),
            _ => None,
        };
        match (quote_at, prefix) {
            (Some(q), Some(backslash)) => {
                self.pos = self.string_end(q + 1, b'\'', backslash);
                self.emit(Kind::Literal, start);
            }
            _ => {
                self.pos = end;
                self.emit(Kind::Word, start);
            }
        }
    }
}

fn is_space(c: u8) -> bool {
    // Other control bytes count as whitespace too: they mean nothing to SQL outside literals
    // and have no business in an attribute.
    c.is_ascii_control() || c == b' '
}

fn is_word_start(c: u8, dialect: Dialect) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || (c == b'$' && dialect == Dialect::MySql)
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}
