//! Hostile bytes through the HTTP/2 framing and HPACK decoding: no panic, bounded memory, and
//! events that do not depend on where the capture split the bytes.
//!
//! From `agent/`, seeded with the real captures the unit tests use:
//! `cargo +nightly fuzz run http2 fuzz/corpus/http2 src/protocol/fixtures/http2`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::http2::{self, Http2Direction, MAX_HEADER_BLOCK, StreamEvent};

fuzz_target!(|input: &[u8]| {
    let split = usize::from(input.first().copied().unwrap_or(0)) * input.len() / 256;
    let _ = http2::starts_with_preface(input);
    let _ = http2::starts_with_frame(input);

    for preface in [true, false] {
        let whole = events(Http2Direction::from_start(preface), &[input]);
        let (a, b) = input.split_at(split);
        let pieces = events(Http2Direction::from_start(preface), &[a, b]);
        // Once framing is lost the reader waits for a chunk boundary, which the split moves.
        assert_eq!(until_lost(&whole), until_lost(&pieces), "split at {split}");
    }
    let _ = events(Http2Direction::joined(), &[input]);

    // A gap after the first piece: whatever happens, the reader stays bounded.
    let mut dir = Http2Direction::from_start(false);
    let (a, b) = input.split_at(split);
    dir.feed(a, u64::from(input.last().copied().unwrap_or(0)), &mut |_| {});
    dir.feed(b, 0, &mut |_| {});
    assert!(dir.buffered() <= 2 * MAX_HEADER_BLOCK + 4096);
});

fn until_lost(events: &[StreamEvent]) -> &[StreamEvent] {
    match events.iter().position(|e| *e == StreamEvent::Lost) {
        Some(at) => &events[..=at],
        None => events,
    }
}

fn events(mut dir: Http2Direction, pieces: &[&[u8]]) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for piece in pieces {
        dir.feed(piece, 0, &mut |e| out.push(e));
        assert!(dir.buffered() <= 2 * MAX_HEADER_BLOCK + 4096);
    }
    out
}
