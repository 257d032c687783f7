//! The operation and collection read from the lexer's tokens: the statement's first keyword,
//! and the one table it plainly targets.

use super::lexer::{Kind, Token};
use super::{MAX_COLLECTION, MAX_OPERATION};

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
pub(super) fn analyze(src: &[u8], tokens: &[Token]) -> (Option<String>, Option<String>) {
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
