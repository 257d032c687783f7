//! Hostile bytes through the MySQL/MariaDB parser, as either side of a connection seen from its
//! start or joined mid-stream: no panic, buffers within their bound, and events that do not
//! depend on where the capture split the bytes.
//!
//! From `agent/`, seeded with the real captures the unit tests use (the first directory collects new
//! inputs and is gitignored):
//! `cargo +nightly fuzz run mysql fuzz/corpus/mysql src/protocol/fixtures/mysql`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::db::{DbEvent, DbParser};
use tracewire::protocol::mysql::{self, MAX_BUFFERED, MySqlParser};

fuzz_target!(|input: &[u8]| {
    // Split point and gap size come from the input's own edge bytes, so seeds stay plain captures.
    let split = usize::from(input.first().copied().unwrap_or(0)) * input.len() / 256;
    let gap = u64::from(input.last().copied().unwrap_or(0) % 32);

    let _ = mysql::looks_like_greeting(input);
    let _ = mysql::looks_like_command(input);

    let (first, second) = input.split_at(split);
    for client in [true, false] {
        for joined in [false, true] {
            let start = if joined {
                MySqlParser::joined
            } else {
                MySqlParser::new
            };
            let whole = run(start(), client, &[(input, 0)]);
            let pieces = run(start(), client, &[(first, 0), (second, 0)]);
            // A joined client is picked up at a chunk that starts with a command, so where the
            // split falls may decide which one.
            let same_pickup = !(joined && client)
                || (mysql::looks_like_command(input) && mysql::looks_like_command(first));
            if same_pickup {
                assert_eq!(whole, pieces, "events depend on the split");
            }
            run(start(), client, &[(first, gap), (second, 0)]);
        }
    }
    // A whole capture file (the seeds) as a conversation: records of 'C'/'S', u32 BE length.
    let mut parser = MySqlParser::new();
    let mut out = Vec::new();
    let mut rest = input;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (data, after) = tail.split_at(len.min(tail.len()));
        if *tag == b'C' {
            parser.client(data, 0, &mut out);
        } else {
            parser.server(data, 0, &mut out);
        }
        assert!(parser.buffered() <= MAX_BUFFERED);
        rest = after;
    }
});

/// Feeds `chunks` (bytes, then the gap after them) to one direction of `parser`.
fn run(mut parser: MySqlParser, client: bool, chunks: &[(&[u8], u64)]) -> Vec<DbEvent> {
    let mut out = Vec::new();
    for &(data, gap) in chunks {
        if client {
            parser.client(data, gap, &mut out);
        } else {
            parser.server(data, gap, &mut out);
        }
        assert!(parser.buffered() <= MAX_BUFFERED);
    }
    out
}
