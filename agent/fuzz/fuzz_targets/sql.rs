//! Hostile bytes through the SQL sanitizer: no panic, every attribute within its bound, and a
//! string literal's content never reaching `db.query.text`, closed or cut off.
//!
//! From `agent/` (the directory collects new inputs and is gitignored):
//! `cargo +nightly fuzz run sql fuzz/corpus/sql`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::db::MAX_QUERY_TEXT;
use tracewire::protocol::sql::{self, Dialect};

fuzz_target!(|input: &[u8]| {
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        for truncated in [false, true] {
            let q = sql::summarize(input, dialect, truncated);
            assert_eq!(q.batch_size, 1);
            assert!(q.truncated || !truncated);
            if let Some(text) = &q.text {
                assert!(!text.is_empty() && text.len() <= MAX_QUERY_TEXT);
                assert!(!q.truncated || text.ends_with("..."));
            }
            if let Some(op) = &q.operation {
                assert!(!op.is_empty() && op.len() <= 32);
            }
            if let Some(collection) = &q.collection {
                assert!(!collection.is_empty() && collection.len() <= 128);
            }
        }
    }

    // The input as a string value (without the bytes that would end or escape it in either
    // dialect): whatever it holds, the text shows only `?` for it.
    let secret: Vec<u8> = input
        .iter()
        .copied()
        .filter(|&b| b != b'\'' && b != b'\\')
        .take(1024)
        .collect();
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        for closed in [false, true] {
            let mut query = b"SELECT a FROM b WHERE c = '".to_vec();
            query.extend_from_slice(&secret);
            if closed {
                query.push(b'\'');
            }
            let q = sql::summarize(&query, dialect, !closed);
            let want = if closed {
                "SELECT a FROM b WHERE c = ?"
            } else {
                "SELECT a FROM b WHERE c = ?..."
            };
            assert_eq!(q.text.as_deref(), Some(want));
            assert_eq!(q.operation.as_deref(), Some("SELECT"));
            assert_eq!(q.collection.as_deref(), Some("b"));
        }
    }
});
