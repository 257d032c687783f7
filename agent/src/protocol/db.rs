//! What the database and cache parsers ([`super::postgres`], [`super::mysql`], [`super::redis`])
//! tell reassembly, in one shape for all three: a client's query, a reply that ends the oldest
//! query still waiting, and the connection-level facts learnt on the way (the database name, the
//! server's flavour).
//!
//! A parser sees one connection from the client's side: `client` bytes were written by the
//! client, `server` bytes were read by it. Each is fed in capture order, with the byte count the
//! capture missed after the slice (`gap`). Parsers keep their own bounded buffers and never
//! panic on hostile bytes; when framing is lost they say so and find their feet again by
//! themselves.

/// The database's kind, as `db.system.name` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbSystem {
    Postgres,
    MySql,
    MariaDb,
    Redis,
}

impl DbSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgres => "postgresql",
            DbSystem::MySql => "mysql",
            DbSystem::MariaDb => "mariadb",
            DbSystem::Redis => "redis",
        }
    }
}

/// Longest sanitized query text kept (`db.query.text`); longer text is cut at a character
/// boundary and ends with `...`.
pub const MAX_QUERY_TEXT: usize = 2048;

/// One query or command the client sent, already stripped of literal values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbQuery {
    /// `db.operation.name`: the SQL keyword (`SELECT`) or the Redis command (`GET`), as written.
    pub operation: Option<String>,
    /// `db.collection.name`: the one table the statement is about, when there is exactly one.
    pub collection: Option<String>,
    /// `db.query.text`: literals replaced by `?`, comments removed, at most [`MAX_QUERY_TEXT`].
    pub text: Option<String>,
    /// Only a prefix of the query was captured (`text` is that prefix, sanitized).
    pub truncated: bool,
    /// Statements sent together and answered as one (a PostgreSQL extended-protocol batch with
    /// several Execute messages before its Sync, a Redis MULTI/EXEC block counts as its parts).
    pub batch_size: u32,
}

/// How the database answered a query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbReply {
    /// `db.response.status_code` of an error reply: the SQLSTATE (PostgreSQL), the error number
    /// (MySQL), the error prefix (Redis, e.g. `WRONGTYPE`). None when the query succeeded.
    pub error_code: Option<String>,
    /// Rows returned or affected, when the reply says (`db.response.returned_rows`).
    pub rows: Option<u64>,
}

/// What a parser found, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbEvent {
    /// The client sent a query that will be answered.
    Query(DbQuery),
    /// The oldest unanswered query got its whole answer.
    Reply(DbReply),
    /// The database (schema, Redis index) the connection uses from now on: `db.namespace`.
    Namespace(String),
    /// The server said what it is (a MariaDB server behind the MySQL protocol).
    System(DbSystem),
    /// The client asked to switch to TLS and the server agreed: what follows on the socket is
    /// ciphertext (its plaintext may come from the OpenSSL probes).
    StartTls,
    /// Framing was lost (a capture gap over a message boundary, bytes that do not parse): the
    /// queries waiting for replies will not get them. The parser resumes by itself.
    Lost,
}

/// One connection's parser, whichever protocol it speaks.
pub trait DbParser: Send {
    fn system(&self) -> DbSystem;
    /// Bytes the client wrote.
    fn client(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>);
    /// Bytes the client read.
    fn server(&mut self, data: &[u8], gap: u64, out: &mut Vec<DbEvent>);
    /// Bytes held in the parser's buffers (for the agent's global buffer budget).
    fn buffered(&self) -> usize;
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut with `...`.
pub fn truncate_text(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

/// Feeds a fixture recorded by `fixtures/capture.py` (records of `C`/`S`, a big-endian u32
/// length, the bytes) through `parser`, each record as one chunk without gap, and returns every
/// event in order.
#[cfg(test)]
pub fn replay(parser: &mut dyn DbParser, fixture: &[u8]) -> Vec<DbEvent> {
    let mut out = Vec::new();
    let mut rest = fixture;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let Some((data, after)) = tail.split_at_checked(len) else {
            panic!("fixture record of {len} bytes runs past the end");
        };
        match tag {
            b'C' => parser.client(data, 0, &mut out),
            b'S' => parser.server(data, 0, &mut out),
            _ => panic!("fixture record tag {tag} is neither C nor S"),
        }
        rest = after;
    }
    assert!(rest.is_empty(), "fixture ends inside a record header");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_text("abc".into(), 10), "abc");
        assert_eq!(truncate_text("abcdefghij".into(), 8), "abcde...");
        // 'é' is two bytes: the cut backs off to before it.
        assert_eq!(truncate_text("abcdé fgh".into(), 8), "abcd...");
    }
}
