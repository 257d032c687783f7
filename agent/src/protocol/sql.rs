//! SQL text as the database conventions want it: literals replaced by `?`, and the operation
//! and collection read from the statement.
//!
//! `db.query.text` must not carry the values a query was sent with: they are often personal data
//! (names, e-mail addresses, tokens), and drivers such as psycopg and PyMySQL interpolate them
//! into the text on the client. So every literal becomes `?` and every comment goes (sqlcommenter
//! and friends put request data there). This is a lexer, not a parser: it only has to know where
//! literals, comments and quoted identifiers begin and end, which is what keeps it O(n) and
//! unable to panic. Where it must guess (a capture that stops inside a string, a dialect quirk),
//! it guesses towards hiding: an unterminated literal is still a `?`.
//!
//! The operation and collection come from the same tokens, read conservatively: a collection is
//! only named when the statement plainly targets one table, because a wrong table name on a span
//! misleads more than a missing one.

use super::db::{DbQuery, MAX_QUERY_TEXT, truncate_text};

/// Whose quoting rules apply: in MySQL `"..."` is a string literal, in PostgreSQL an identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// Input scanned at most; the text kept is far shorter, and beyond this the statement's shape
/// no longer matters enough to pay for reading it.
const MAX_SCAN: usize = 64 * 1024;
/// Longest `db.operation.name`: keywords are short, anything longer is not one.
const MAX_OPERATION: usize = 32;
/// Longest `db.collection.name`, in bytes.
const MAX_COLLECTION: usize = 128;
/// Sanitized bytes kept while scanning: enough that [`truncate_text`] sees the text is too long
/// and marks the cut, without building output that will be thrown away.
const OUT_CAP: usize = MAX_QUERY_TEXT + 4;
/// PostgreSQL caps identifiers (and so dollar-quote tags) at 63 bytes; a longer "tag" is not one,
/// and the bound keeps the search for the closing tag linear.
const MAX_DOLLAR_TAG: usize = 64;

/// The query `text` (possibly only its captured prefix: `truncated`) as a [`DbQuery`]:
/// sanitized text, operation, collection, batch size 1.
pub fn summarize(text: &[u8], dialect: Dialect, truncated: bool) -> DbQuery {
    let truncated = truncated || text.len() > MAX_SCAN;
    let src = text.get(..MAX_SCAN).unwrap_or(text);

    let mut lexer = Lexer {
        src,
        dialect,
        pos: 0,
        out: Vec::new(),
        space: false,
        tokens: Vec::new(),
    };
    lexer.run();
    let Lexer { out, tokens, .. } = lexer;

    // The last token of a prefix may be cut short (`SELECT * FROM us|ers`): reading a keyword or
    // table name from it would be a guess.
    let tokens = match tokens.split_last() {
        Some((last, rest)) if truncated && last.end as usize == src.len() => rest,
        _ => &tokens[..],
    };
    let (operation, collection) = analyze(src, tokens);

    DbQuery {
        operation,
        collection,
        text: finish_text(&out, truncated),
        truncated,
        batch_size: 1,
    }
}

/// The sanitized bytes as the attribute: lossy UTF-8, cut to [`MAX_QUERY_TEXT`], and ending with
/// `...` when only a prefix of the query is known.
fn finish_text(out: &[u8], truncated: bool) -> Option<String> {
    if out.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(out).into_owned();
    let cut = text.len() > MAX_QUERY_TEXT;
    let mut text = truncate_text(text, MAX_QUERY_TEXT);
    if truncated && !cut {
        let mut end = text.len().min(MAX_QUERY_TEXT - 3);
        while end > 0 && !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    Some(text)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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

/// Byte offsets into the scanned input, which [`MAX_SCAN`] keeps well inside `u32`: tokens are
/// held for the whole statement, so they are kept small.
#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    start: u32,
    end: u32,
}

struct Lexer<'a> {
    src: &'a [u8],
    dialect: Dialect,
    pos: usize,
    out: Vec<u8>,
    /// Whitespace or a comment since the last token: one space is owed before the next.
    space: bool,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn mysql(&self) -> bool {
        self.dialect == Dialect::MySql
    }

    fn run(&mut self) {
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

/// Tokens that end a single-table `FROM t [alias]` of a SELECT.
const SELECT_FOLLOW: &[&str] = &[
    "WHERE",
    "GROUP",
    "ORDER",
    "LIMIT",
    "HAVING",
    "WINDOW",
    "FOR",
    "OFFSET",
    "FETCH",
    "LOCK",
    "INTO",
    "USE",
    "FORCE",
    "IGNORE",
    "PROCEDURE",
    "QUALIFY",
    "TABLESAMPLE",
];
/// Tokens that end a single-table `DELETE FROM t [alias]`.
const DELETE_FOLLOW: &[&str] = &["WHERE", "RETURNING", "ORDER", "LIMIT"];
/// Words that mean a second table (or a set operation over several queries) anywhere after the
/// operation keyword.
const OTHER_TABLE: &[&str] = &[
    "SELECT",
    "JOIN",
    "STRAIGHT_JOIN",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "LATERAL",
];
/// Words that cannot be a table alias.
const NOT_ALIAS: &[&str] = &[
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "NATURAL",
    "OUTER",
    "STRAIGHT_JOIN",
    "USING",
    "ON",
    "SET",
];
/// What a CTE list may lead to that is worth naming instead of `WITH`.
const MAIN_AFTER_WITH: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"];

/// The tokens of one statement, read with the input they index.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    src: &'a [u8],
    toks: &'a [Token],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn text(&self, t: &Token) -> &'a [u8] {
        self.src
            .get(t.start as usize..t.end as usize)
            .unwrap_or_default()
    }

    fn peek(&self) -> Option<Token> {
        self.toks.get(self.i).copied()
    }

    fn is_kw(&self, t: &Token, kw: &str) -> bool {
        t.kind == Kind::Word && self.text(t).eq_ignore_ascii_case(kw.as_bytes())
    }

    fn is_any(&self, t: &Token, kws: &[&str]) -> bool {
        kws.iter().any(|kw| self.is_kw(t, kw))
    }

    fn is_punct(&self, t: &Token, c: u8) -> bool {
        t.kind == Kind::Punct && self.text(t) == [c]
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| self.is_kw(&t, kw))
    }

    fn at_punct(&self, c: u8) -> bool {
        self.peek().is_some_and(|t| self.is_punct(&t, c))
    }

    fn eat(&mut self, kw: &str) -> bool {
        let hit = self.at_kw(kw);
        self.i += usize::from(hit);
        hit
    }

    fn eat_all(&mut self, kws: &[&str]) {
        while self.peek().is_some_and(|t| self.is_any(&t, kws)) {
            self.i += 1;
        }
    }

    /// `IF EXISTS` / `IF NOT EXISTS`, when present.
    fn eat_if_exists(&mut self) {
        if self.eat("IF") {
            self.eat("NOT");
            self.eat("EXISTS");
        }
    }

    /// A possibly qualified table name (`public.users`, `"Users"`, `` `db`.`t` ``) with the
    /// quoting taken off.
    fn name(&mut self) -> Option<String> {
        let mut name = String::new();
        loop {
            let t = self.peek()?;
            let part = match t.kind {
                Kind::Word => String::from_utf8_lossy(self.text(&t)).into_owned(),
                Kind::Quoted => unquote(self.text(&t)),
                _ => return None,
            };
            if part.is_empty() {
                return None;
            }
            name.push_str(&part);
            self.i += 1;
            if !self.at_punct(b'.') {
                break;
            }
            self.i += 1;
            name.push('.');
        }
        (name.len() <= MAX_COLLECTION).then_some(name)
    }

    /// After a table name: an optional alias, then a token from `follow`, a closing parenthesis
    /// or the end. Anything else (a comma, a join, a function call's arguments) means the table
    /// is not alone.
    fn table_ends(&mut self, follow: &[&str]) -> bool {
        if self.eat("AS") {
            match self.peek() {
                Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => self.i += 1,
                _ => return false,
            }
        } else if let Some(t) = self.peek() {
            let alias = t.kind == Kind::Quoted
                || (t.kind == Kind::Word
                    && !self.is_any(&t, follow)
                    && !self.is_any(&t, NOT_ALIAS));
            self.i += usize::from(alias);
        }
        match self.peek() {
            None => true,
            Some(t) => self.is_punct(&t, b')') || self.is_any(&t, follow),
        }
    }

    /// The first `kw` from the cursor on that is outside parentheses.
    fn top_level(&self, kw: &str) -> Option<usize> {
        let mut depth = 0usize;
        for (i, t) in self.toks.iter().enumerate().skip(self.i) {
            if self.is_punct(t, b'(') {
                depth += 1;
            } else if self.is_punct(t, b')') {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && self.is_kw(t, kw) {
                return Some(i);
            }
        }
        None
    }
}

/// `"a""b"` → `a"b`, `` `a``b` `` → ``a`b``; an unclosed identifier keeps what it has.
fn unquote(quoted: &[u8]) -> String {
    let Some((&quote, rest)) = quoted.split_first() else {
        return String::new();
    };
    let inner = match rest.split_last() {
        Some((&last, inner)) if last == quote => inner,
        _ => rest,
    };
    let mut bytes = Vec::with_capacity(inner.len());
    let mut it = inner.iter().peekable();
    while let Some(&c) = it.next() {
        bytes.push(c);
        if c == quote && it.peek() == Some(&&quote) {
            it.next();
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The operation and collection of the first statement in `tokens`.
fn analyze(src: &[u8], tokens: &[Token]) -> (Option<String>, Option<String>) {
    let all = Cursor {
        src,
        toks: tokens,
        i: 0,
    };
    let semicolon = tokens.iter().position(|t| all.is_punct(t, b';'));
    let (stmt, after) = tokens.split_at(semicolon.unwrap_or(tokens.len()));
    // Several statements in one query: a collection would only describe the first.
    let alone = after.iter().all(|t| all.is_punct(t, b';'));

    let mut c = Cursor {
        src,
        toks: stmt,
        i: 0,
    };
    while c.at_punct(b'(') {
        c.i += 1;
    }
    let Some(first) = c.peek() else {
        return (None, None);
    };
    let word = c.text(&first);
    let keyword = first.kind == Kind::Word
        && word.len() <= MAX_OPERATION
        && word.first().is_some_and(u8::is_ascii_alphabetic)
        && word.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if !keyword {
        return (None, None);
    }
    let operation = String::from_utf8_lossy(word).into_owned();
    c.i += 1;

    if word.eq_ignore_ascii_case(b"WITH") {
        // The CTE names would pass for tables: no collection.
        let main = main_after_with(&c).map(|t| String::from_utf8_lossy(c.text(&t)).into_owned());
        return (Some(main.unwrap_or(operation)), None);
    }

    let collection = if alone {
        collection(&mut c, word)
    } else {
        None
    };
    (Some(operation), collection)
}

/// The statement keyword after a `WITH` list: the first word that follows a CTE body's closing
/// parenthesis and is not part of the next CTE's definition.
fn main_after_with(c: &Cursor<'_>) -> Option<Token> {
    let mut depth = 0usize;
    let toks = c.toks.get(c.i..)?;
    for (i, t) in toks.iter().enumerate() {
        if c.is_punct(t, b'(') {
            depth += 1;
        } else if c.is_punct(t, b')') && depth > 0 {
            depth -= 1;
            if depth == 0 {
                match toks.get(i + 1) {
                    Some(next) if c.is_any(next, MAIN_AFTER_WITH) => return Some(*next),
                    Some(next) if c.is_punct(next, b',') || c.is_kw(next, "AS") => {}
                    _ => return None,
                }
            }
        }
    }
    None
}

/// The one table the statement starting with `op` (the cursor just past it) targets, if it
/// plainly targets one.
fn collection(c: &mut Cursor<'_>, op: &[u8]) -> Option<String> {
    if c.toks.iter().skip(c.i).any(|t| c.is_any(t, OTHER_TABLE)) {
        return None;
    }
    let is = |kw: &str| op.eq_ignore_ascii_case(kw.as_bytes());
    if is("SELECT") {
        c.i = c.top_level("FROM")? + 1;
        c.eat("ONLY");
        let name = c.name()?;
        c.table_ends(SELECT_FOLLOW).then_some(name)
    } else if is("INSERT") || is("REPLACE") {
        c.eat_all(&["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"]);
        c.eat("INTO");
        c.name()
    } else if is("UPDATE") {
        c.eat_all(&["LOW_PRIORITY", "IGNORE", "ONLY"]);
        let name = c.name()?;
        if !c.at_kw("SET") {
            // An alias, or a second table (`UPDATE a, b SET ..`).
            c.eat("AS");
            match c.peek() {
                Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => c.i += 1,
                _ => return None,
            }
        }
        // PostgreSQL's `UPDATE t SET .. FROM u` reads a second table.
        (c.at_kw("SET") && c.top_level("FROM").is_none()).then_some(name)
    } else if is("DELETE") {
        c.eat_all(&["LOW_PRIORITY", "QUICK", "IGNORE"]);
        if !c.eat("FROM") {
            return None;
        }
        c.eat("ONLY");
        let name = c.name()?;
        c.table_ends(DELETE_FOLLOW).then_some(name)
    } else if is("TRUNCATE") {
        c.eat("TABLE");
        c.eat("ONLY");
        let name = c.name()?;
        (!c.at_punct(b',')).then_some(name)
    } else if is("CREATE") {
        if c.eat("OR") {
            c.eat("REPLACE");
        }
        c.eat_all(&["TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL"]);
        if !c.eat("TABLE") {
            return None;
        }
        c.eat_if_exists();
        c.name()
    } else if is("DROP") {
        c.eat("TEMPORARY");
        if !c.eat("TABLE") {
            return None;
        }
        c.eat_if_exists();
        let name = c.name()?;
        (!c.at_punct(b',')).then_some(name)
    } else if is("ALTER") {
        if !c.eat("TABLE") {
            return None;
        }
        c.eat_if_exists();
        c.eat("ONLY");
        c.name()
    } else if is("COPY") {
        let name = c.name()?;
        (c.at_punct(b'(') || c.at_kw("FROM") || c.at_kw("TO")).then_some(name)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dialect::{MySql, Postgres};

    /// (dialect, input, sanitized text, operation, collection)
    type Case = (
        Dialect,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // As psycopg and PyMySQL send them: values interpolated on the client.
        (Postgres, "SELECT * FROM users WHERE id = 42 AND name = 'bob'", Some("SELECT * FROM users WHERE id = ? AND name = ?"), Some("SELECT"), Some("users")),
        (MySql, "SELECT * FROM users WHERE id = 42 AND name = 'bob'", Some("SELECT * FROM users WHERE id = ? AND name = ?"), Some("SELECT"), Some("users")),
        (MySql, "INSERT INTO `orders` (`user_id`, `total`, `note`) VALUES (7, 19.99, 'it\\'s ''ok''')", Some("INSERT INTO `orders` (`user_id`, `total`, `note`) VALUES (?, ?, ?)"), Some("INSERT"), Some("orders")),
        (MySql, "INSERT INTO blobs (data) VALUES (_binary'\\x00secret\\'')", Some("INSERT INTO blobs (data) VALUES (?)"), Some("INSERT"), Some("blobs")),
        (Postgres, "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') RETURNING id", Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING id"), Some("INSERT"), Some("t")),
        // Numbers: decimals, exponents, hex, a leading dot; digits inside names stay.
        (Postgres, "select col_2, t1.x from t1 where a = 1.5e-3 and b = .5 and c = 0xFF and d=-7", Some("select col_2, t1.x from t1 where a = ? and b = ? and c = ? and d=-?"), Some("select"), Some("t1")),
        (Postgres, "SELECT 1_000 + 2E10 - 3.", Some("SELECT ? + ? - ?"), Some("SELECT"), None),
        // Placeholders stay as written.
        (Postgres, "UPDATE accounts SET balance = $1 WHERE id = $2", Some("UPDATE accounts SET balance = $1 WHERE id = $2"), Some("UPDATE"), Some("accounts")),
        (MySql, "UPDATE accounts a SET a.balance = ? WHERE a.id = ?", Some("UPDATE accounts a SET a.balance = ? WHERE a.id = ?"), Some("UPDATE"), Some("accounts")),
        // PostgreSQL string forms.
        (Postgres, "SELECT E'it\\'s', B'1010', X'ff', U&'d\\0061t', e'x', N'nat' FROM t", Some("SELECT ?, ?, ?, ?, ?, ? FROM t"), Some("SELECT"), Some("t")),
        // Standard strings: a backslash is an ordinary character in PostgreSQL.
        (Postgres, "SELECT 'C:\\' || name FROM files", Some("SELECT ? || name FROM files"), Some("SELECT"), Some("files")),
        (Postgres, "SELECT $$it's a secret$$, $fn$ body $$ nested $$ $fn$ FROM t", Some("SELECT ?, ? FROM t"), Some("SELECT"), Some("t")),
        // Double quotes: an identifier in PostgreSQL, a string in MySQL.
        (Postgres, "SELECT \"Name\" FROM \"public\".\"Users\" WHERE \"Name\" = 'a'", Some("SELECT \"Name\" FROM \"public\".\"Users\" WHERE \"Name\" = ?"), Some("SELECT"), Some("public.Users")),
        (MySql, "SELECT * FROM `my db`.`t``x` WHERE name = \"bob \\\" smith\"", Some("SELECT * FROM `my db`.`t``x` WHERE name = ?"), Some("SELECT"), Some("my db.t`x")),
        (MySql, "SELECT x'4142', 0x4142, b'01', N'x' FROM t", Some("SELECT ?, ?, ?, ? FROM t"), Some("SELECT"), Some("t")),
        // Comments go, whatever they carry; whitespace collapses.
        (Postgres, "/* traceparent='00-abc' */ SELECT  a -- user=bob\n\tFROM  t /* x /* nested */ still */ WHERE b = 1", Some("SELECT a FROM t WHERE b = ?"), Some("SELECT"), Some("t")),
        (MySql, "# hello\nSELECT a FROM t # email@example.com\nWHERE b = 1 /*! STRAIGHT */", Some("SELECT a FROM t WHERE b = ?"), Some("SELECT"), Some("t")),
        // MySQL's `--` needs a space to be a comment; PostgreSQL's `#` is an operator.
        (MySql, "SELECT 1--1", Some("SELECT ?--?"), Some("SELECT"), None),
        (Postgres, "SELECT 5 # 3 --1", Some("SELECT ? # ?"), Some("SELECT"), None),
        (Postgres, "SELECT a/**/FROM t", Some("SELECT a FROM t"), Some("SELECT"), Some("t")),
        // Unterminated literals and comments at the end of a prefix never leak.
        (Postgres, "SELECT * FROM t WHERE note = 'my password is hunt", Some("SELECT * FROM t WHERE note = ?"), Some("SELECT"), Some("t")),
        (MySql, "SELECT * FROM t WHERE note = \"secret \\\" more", Some("SELECT * FROM t WHERE note = ?"), Some("SELECT"), Some("t")),
        (Postgres, "SELECT $tag$ secret", Some("SELECT ?"), Some("SELECT"), None),
        (Postgres, "SELECT 1 /* secret", Some("SELECT ?"), Some("SELECT"), None),
        // Collections: only one plain table.
        (Postgres, "SELECT * FROM users u JOIN orders o ON o.user_id = u.id", Some("SELECT * FROM users u JOIN orders o ON o.user_id = u.id"), Some("SELECT"), None),
        (Postgres, "SELECT * FROM a, b", Some("SELECT * FROM a, b"), Some("SELECT"), None),
        (Postgres, "SELECT * FROM (SELECT id FROM t) s", Some("SELECT * FROM (SELECT id FROM t) s"), Some("SELECT"), None),
        (Postgres, "SELECT * FROM t WHERE id IN (SELECT id FROM u)", Some("SELECT * FROM t WHERE id IN (SELECT id FROM u)"), Some("SELECT"), None),
        (Postgres, "SELECT * FROM generate_series(1, 3)", Some("SELECT * FROM generate_series(?, ?)"), Some("SELECT"), None),
        (Postgres, "SELECT a FROM t UNION SELECT a FROM u", Some("SELECT a FROM t UNION SELECT a FROM u"), Some("SELECT"), None),
        (Postgres, "SELECT extract(year FROM ts), count(*) FROM events AS e WHERE x IS DISTINCT FROM y", Some("SELECT extract(year FROM ts), count(*) FROM events AS e WHERE x IS DISTINCT FROM y"),
            Some("SELECT"),
            Some("events"),
        ),
        (Postgres, "SELECT 1", Some("SELECT ?"), Some("SELECT"), None),
        (Postgres, "((SELECT id FROM t LIMIT 1))", Some("((SELECT id FROM t LIMIT ?))"), Some("SELECT"), Some("t")),
        (MySql, "DELETE FROM sessions WHERE expires < 1700000000", Some("DELETE FROM sessions WHERE expires < ?"), Some("DELETE"), Some("sessions")),
        (Postgres, "DELETE FROM t USING u WHERE t.id = u.id", Some("DELETE FROM t USING u WHERE t.id = u.id"), Some("DELETE"), None),
        (Postgres, "UPDATE t SET a = u.a FROM u WHERE t.id = u.id", Some("UPDATE t SET a = u.a FROM u WHERE t.id = u.id"), Some("UPDATE"), None),
        (MySql, "REPLACE INTO kv (k, v) VALUES ('a', 'b')", Some("REPLACE INTO kv (k, v) VALUES (?, ?)"), Some("REPLACE"), Some("kv")),
        (Postgres, "INSERT INTO archive SELECT * FROM t", Some("INSERT INTO archive SELECT * FROM t"), Some("INSERT"), None),
        (Postgres, "TRUNCATE TABLE logs", Some("TRUNCATE TABLE logs"), Some("TRUNCATE"), Some("logs")),
        (Postgres, "TRUNCATE a, b", Some("TRUNCATE a, b"), Some("TRUNCATE"), None),
        (Postgres, "CREATE TABLE IF NOT EXISTS public.items (id serial PRIMARY KEY, n int DEFAULT 0)", Some("CREATE TABLE IF NOT EXISTS public.items (id serial PRIMARY KEY, n int DEFAULT ?)"),
            Some("CREATE"),
            Some("public.items"),
        ),
        (Postgres, "CREATE INDEX i ON t (a)", Some("CREATE INDEX i ON t (a)"), Some("CREATE"), None),
        (MySql, "DROP TABLE IF EXISTS `tmp_1`", Some("DROP TABLE IF EXISTS `tmp_1`"), Some("DROP"), Some("tmp_1")),
        (Postgres, "ALTER TABLE ONLY t ADD COLUMN c text DEFAULT 'x'", Some("ALTER TABLE ONLY t ADD COLUMN c text DEFAULT ?"), Some("ALTER"), Some("t")),
        (Postgres, "COPY items (a, b) FROM STDIN WITH (FORMAT csv)", Some("COPY items (a, b) FROM STDIN WITH (FORMAT csv)"), Some("COPY"), Some("items")),
        // WITH: the main statement's keyword, no collection.
        (Postgres, "WITH recent (id) AS (SELECT id FROM t WHERE ts > 5), x AS MATERIALIZED (SELECT 1) delete FROM t WHERE id IN (SELECT id FROM recent)", Some("WITH recent (id) AS (SELECT id FROM t WHERE ts > ?), x AS MATERIALIZED (SELECT ?) delete FROM t WHERE id IN (SELECT id FROM recent)"),
            Some("delete"),
            None,
        ),
        (Postgres, "WITH RECURSIVE", Some("WITH RECURSIVE"), Some("WITH"), None),
        // Statements without tables, several statements, no keyword.
        (Postgres, "BEGIN", Some("BEGIN"), Some("BEGIN"), None),
        (MySql, "COMMIT", Some("COMMIT"), Some("COMMIT"), None),
        (MySql, "SET NAMES utf8mb4", Some("SET NAMES utf8mb4"), Some("SET"), None),
        (MySql, "SHOW VARIABLES LIKE 'sql_mode'", Some("SHOW VARIABLES LIKE ?"), Some("SHOW"), None),
        (Postgres, "CALL refresh(1)", Some("CALL refresh(?)"), Some("CALL"), None),
        (Postgres, "SELECT * FROM a; SELECT * FROM b;", Some("SELECT * FROM a; SELECT * FROM b;"), Some("SELECT"), None),
        (Postgres, "SELECT * FROM a;", Some("SELECT * FROM a;"), Some("SELECT"), Some("a")),
        (Postgres, "'oops' SELECT", Some("? SELECT"), None, None),
        (Postgres, "  \n\t ", None, None, None),
        (Postgres, "", None, None, None),
        (MySql, "-- only a comment", None, None, None),
        // Unicode stays where it is not a value.
        (Postgres, "SELECT größe FROM maße WHERE name = 'Jürgen'", Some("SELECT größe FROM maße WHERE name = ?"), Some("SELECT"), Some("maße")),
        // Casts and array subscripts are not literals.
        (Postgres, "SELECT a::int, b[1] FROM t WHERE c = $1::text", Some("SELECT a::int, b[?] FROM t WHERE c = $1::text"), Some("SELECT"), Some("t")),
    ];

    #[test]
    fn table() {
        for &(dialect, input, text, operation, collection) in CASES {
            let q = summarize(input.as_bytes(), dialect, false);
            let want = (text, operation, collection);
            let got = (
                q.text.as_deref(),
                q.operation.as_deref(),
                q.collection.as_deref(),
            );
            assert_eq!(got, want, "{dialect:?} {input:?}");
            assert!(!q.truncated);
            assert_eq!(q.batch_size, 1);
        }
    }

    #[test]
    fn truncated_prefixes() {
        let q = summarize(
            b"SELECT * FROM users WHERE email = 'bob@exa",
            Postgres,
            true,
        );
        assert_eq!(
            q.text.as_deref(),
            Some("SELECT * FROM users WHERE email = ?...")
        );
        assert_eq!(q.operation.as_deref(), Some("SELECT"));
        assert_eq!(q.collection.as_deref(), Some("users"));
        assert!(q.truncated);

        // The last word may be cut: it names neither a table nor the operation.
        let q = summarize(b"SELECT * FROM us", Postgres, true);
        assert_eq!(q.text.as_deref(), Some("SELECT * FROM us..."));
        assert_eq!(q.collection, None);
        let q = summarize(b"SELE", MySql, true);
        assert_eq!(q.operation, None);
        assert_eq!(q.text.as_deref(), Some("SELE..."));
        // Trailing whitespace shows the word was whole.
        let q = summarize(b"DELETE FROM t ", MySql, true);
        assert_eq!(q.collection.as_deref(), Some("t"));
        assert_eq!(q.text.as_deref(), Some("DELETE FROM t..."));
    }

    #[test]
    fn long_text_is_cut() {
        let mut sql = String::from("INSERT INTO t (a) VALUES ");
        for i in 0..2000 {
            sql.push_str(&format!("({i}, 'secret{i}'), "));
        }
        sql.push_str("(0, 'x')");
        for truncated in [false, true] {
            let q = summarize(sql.as_bytes(), MySql, truncated);
            let text = q.text.unwrap_or_default();
            assert_eq!(text.len(), MAX_QUERY_TEXT);
            assert!(text.starts_with("INSERT INTO t (a) VALUES (?, ?), (?, ?)"));
            assert!(text.ends_with("..."));
            assert!(!text.contains("secret"));
            assert_eq!(q.collection.as_deref(), Some("t"));
        }

        // A prefix just under the limit still gets its mark within the limit.
        let sql = format!("SELECT {}", "a".repeat(MAX_QUERY_TEXT - 8));
        let q = summarize(sql.as_bytes(), Postgres, true);
        let text = q.text.unwrap_or_default();
        assert!(text.len() <= MAX_QUERY_TEXT && text.ends_with("..."));

        // Past the scan limit the query counts as a prefix.
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SCAN));
        let q = summarize(sql.as_bytes(), Postgres, false);
        assert!(q.truncated);
        assert_eq!(q.text.as_deref(), Some("SELECT ?..."));
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let q = summarize(b"SELECT \xff\xfe FROM t WHERE a = '\xc3('", MySql, false);
        assert_eq!(
            q.text.as_deref(),
            Some("SELECT \u{fffd}\u{fffd} FROM t WHERE a = ?")
        );
        assert_eq!(q.collection.as_deref(), Some("t"));
        let q = summarize(b"UPDATE \xe2\x82 SET a = 1", Postgres, false);
        assert_eq!(q.collection.as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn bounds_hold() {
        let long = "x".repeat(MAX_OPERATION + 1);
        assert_eq!(summarize(long.as_bytes(), Postgres, false).operation, None);
        let sql = format!("SELECT * FROM {}", "t".repeat(MAX_COLLECTION + 1));
        assert_eq!(summarize(sql.as_bytes(), Postgres, false).collection, None);
        // Odd bytes in odd places: no panic, nothing escapes a literal.
        for input in [
            &b"'"[..],
            b"\"",
            b"`",
            b"$",
            b"$$",
            b"$a",
            b"E'\\",
            b"U&",
            b"U&'",
            b"/*",
            b"/*/",
            b"--",
            b"0x",
            b"1e-",
            b".",
            b"\\",
            b"'\\",
            b"_'",
            b"WITH a AS (",
            b"WITH )",
            b"UPDATE",
            b"SELECT FROM",
            b"DELETE FROM t AS",
        ] {
            for dialect in [Postgres, MySql] {
                for truncated in [false, true] {
                    let q = summarize(input, dialect, truncated);
                    assert!(q.text.is_none_or(|t| t.len() <= MAX_QUERY_TEXT));
                }
            }
        }
    }
}
