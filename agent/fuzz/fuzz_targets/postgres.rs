//! Hostile bytes through the PostgreSQL parser: no panic, bounded memory, bounded texts, and the
//! same events whether a write arrives whole or in two pieces.
//!
//! From `agent/`, seeded with the recorded conversations the unit tests use:
//! `cargo +nightly fuzz run postgres fuzz/corpus/postgres src/protocol/fixtures/postgres`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::db::{DbEvent, DbParser, MAX_QUERY_TEXT};
use tracewire::protocol::postgres::{self, MAX_BUFFERED, PostgresParser};

fuzz_target!(|input: &[u8]| {
    let split = usize::from(input.first().copied().unwrap_or(0)) * input.len() / 256;
    let gap = u64::from(input.last().copied().unwrap_or(0) % 64);
    let _ = postgres::looks_like_startup(input);
    let _ = postgres::looks_like_client_messages(input);

    for make in [PostgresParser::new, PostgresParser::joined] {
        // Whole and split must agree, up to the first Lost: after it the parser resumes at a
        // write that starts like a message, and where writes begin is what splitting changes.
        let (mut whole, mut pieces) = (make(), make());
        let mut a = Vec::new();
        let mut b = Vec::new();
        whole.client(input, 0, &mut a);
        pieces.client(&input[..split], 0, &mut b);
        pieces.client(&input[split..], 0, &mut b);
        agree(&a, &b);
        whole.server(input, 0, &mut a);
        pieces.server(&input[..split], 0, &mut b);
        pieces.server(&input[split..], 0, &mut b);
        agree(&a, &b);
        check(&whole, &a);

        // As a recorded conversation (C/S records), with gaps.
        let mut p = make();
        let mut out = Vec::new();
        let mut rest = input;
        while let [tag, a, b, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
            let (data, after) = tail.split_at(len);
            if tag & 1 == 0 {
                p.client(data, gap * u64::from(tag >> 6), &mut out);
            } else {
                p.server(data, gap * u64::from(tag >> 6), &mut out);
            }
            check(&p, &out);
            rest = after;
        }
    }
});

fn agree(whole: &[DbEvent], pieces: &[DbEvent]) {
    match whole.iter().position(|e| *e == DbEvent::Lost) {
        Some(lost) => assert_eq!(whole.get(..=lost), pieces.get(..=lost)),
        None => assert_eq!(whole, pieces),
    }
}

fn check(p: &PostgresParser, events: &[DbEvent]) {
    assert!(p.buffered() <= MAX_BUFFERED);
    for e in events {
        if let DbEvent::Query(q) = e {
            assert!(q.text.as_ref().is_none_or(|t| t.len() <= MAX_QUERY_TEXT));
        }
    }
}
