//! SQL text as the database conventions want it: literals replaced by `?`, and the operation
//! and collection read from the statement. (Stub: being written.)
use super::db::DbQuery;

/// Whose quoting rules apply: in MySQL `"..."` is a string literal, in PostgreSQL an identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// The query `text` (possibly only its captured prefix: `truncated`) as a [`DbQuery`]:
/// sanitized text, operation, collection, batch size 1.
pub fn summarize(text: &[u8], dialect: Dialect, truncated: bool) -> DbQuery {
    let _ = (text, dialect);
    DbQuery {
        truncated,
        batch_size: 1,
        ..DbQuery::default()
    }
}
