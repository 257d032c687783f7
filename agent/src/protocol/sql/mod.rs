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
use analyze::analyze;
use lexer::Lexer;

mod analyze;
mod lexer;
#[cfg(test)]
mod tests;

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
