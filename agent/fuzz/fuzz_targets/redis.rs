//! Hostile bytes through the Redis parser as commands and as replies: no panic, bounded buffers and
//! query texts, and events that do not depend on where the capture split the bytes (up to the
//! first loss of framing, after which resynchronising depends on where writes start).
//!
//! From `agent/`, seeded with the real captures the unit tests use (the first directory collects new
//! inputs and is gitignored; the fixtures are record files, which the fuzzer reads as raw bytes
//! full of RESP):
//! `cargo +nightly fuzz run redis fuzz/corpus/redis src/protocol/fixtures/redis`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::db::{DbEvent, DbParser, MAX_QUERY_TEXT};
use tracewire::protocol::redis::{self, RedisParser};

/// Header line, command name and first argument, nesting stack, inline command: well under this.
const MAX_BUFFERED: usize = 128 * 1024;

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

fuzz_target!(|input: &[u8]| {
    // Split point and gap size come from the input's own edge bytes, so seeds stay plain captures.
    let split = usize::from(input.first().copied().unwrap_or(0)) * input.len() / 256;
    let gap = u64::from(input.last().copied().unwrap_or(0) % 32);
    let (first, second) = input.split_at(split);

    let _ = redis::looks_like_command(input);

    for side in [Side::Client, Side::Server] {
        let whole = run(&[(side, input, 0)]);
        let pieces = run(&[(side, first, 0), (side, second, 0)]);
        let until_lost = whole
            .iter()
            .position(|event| *event == DbEvent::Lost)
            .map_or(whole.len(), |lost| lost + 1);
        assert_eq!(whole.get(..until_lost), pieces.get(..until_lost));
        // After a Lost the parser resumes at a write that starts like a command, and where the
        // writes begin is exactly what splitting changes: only a run without Lost must agree
        // to the end.
        if !whole.contains(&DbEvent::Lost) {
            assert_eq!(whole, pieces);
        }
        run(&[(side, first, gap), (side, second, 0)]);
    }
    // A conversation: the first part as a command, the rest as its reply, then both again.
    run(&[
        (Side::Client, first, gap),
        (Side::Server, second, gap),
        (Side::Client, second, 0),
        (Side::Server, first, 0),
    ]);
});

/// Feeds the chunks through one parser, checking its bounds after each, and returns the events.
fn run(chunks: &[(Side, &[u8], u64)]) -> Vec<DbEvent> {
    let mut parser = RedisParser::new();
    let mut events = Vec::new();
    for &(side, data, gap) in chunks {
        match side {
            Side::Client => parser.client(data, gap, &mut events),
            Side::Server => parser.server(data, gap, &mut events),
        }
        assert!(parser.buffered() <= MAX_BUFFERED);
    }
    for event in &events {
        if let DbEvent::Query(query) = event {
            assert!(
                query
                    .text
                    .as_ref()
                    .is_none_or(|text| text.len() <= MAX_QUERY_TEXT)
            );
            assert_eq!(query.batch_size, 1);
        }
    }
    events
}
