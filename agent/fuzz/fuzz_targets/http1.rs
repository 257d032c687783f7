//! Hostile bytes through the HTTP/1 parsers and body framing: no panic, and framing that does not
//! depend on where the capture split the bytes.
//!
//! From `agent/`, seeded with the real captures the unit tests use (the first directory collects new
//! inputs and is gitignored):
//! `cargo +nightly fuzz run http1 fuzz/corpus/http1 src/protocol/fixtures/http1`
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::protocol::http1::{self, BodyDecoder, BodyKind, Method, Parse};

fuzz_target!(|input: &[u8]| {
    // Split point and gap size come from the input's own edge bytes, so seeds stay plain captures.
    let split = usize::from(input.first().copied().unwrap_or(0)) * input.len() / 256;
    let gap = u64::from(input.last().copied().unwrap_or(0) % 32);

    let _ = http1::looks_like_request(input);
    let _ = http1::looks_like_response(input);

    let mut bodies = vec![
        (BodyKind::None, input),
        (BodyKind::Length(gap * 3), input),
        (BodyKind::Chunked, input),
        (BodyKind::UntilClose, input),
    ];
    if let Parse::Complete(head, consumed) = http1::parse_request(input) {
        assert!(consumed <= input.len());
        assert!(head.target.len() <= http1::MAX_TARGET_BYTES);
        bodies.push((
            http1::request_body(&head),
            input.get(consumed..).unwrap_or_default(),
        ));
    }
    if let Parse::Complete(head, consumed) = http1::parse_response(input) {
        assert!(consumed <= input.len());
        let body = input.get(consumed..).unwrap_or_default();
        for method in [
            None,
            Some(Method::Get),
            Some(Method::Head),
            Some(Method::Connect),
        ] {
            bodies.push((http1::response_body(&head, method.as_ref()), body));
        }
    }
    for (kind, data) in bodies {
        check_body(kind, data, split.min(data.len()), gap);
    }
});

/// Fed whole or in two pieces, a body must frame identically; with a gap between the pieces it must
/// still stay within what it was given.
fn check_body(kind: BodyKind, data: &[u8], split: usize, gap: u64) {
    let (first, second) = data.split_at(split);

    let whole = BodyDecoder::new(kind).feed(data);
    let mut pieces = BodyDecoder::new(kind);
    let in_pieces = pieces.feed(first).and_then(|head| {
        if head.complete {
            return Ok(head);
        }
        assert_eq!(
            head.consumed,
            first.len(),
            "an open body takes all it is fed"
        );
        pieces.feed(second).map(|tail| http1::BodyProgress {
            consumed: head.consumed + tail.consumed,
            complete: tail.complete,
        })
    });
    assert_eq!(whole, in_pieces);
    if let Ok(progress) = whole {
        assert!(progress.consumed <= data.len());
    }

    let mut gapped = BodyDecoder::new(kind);
    let _ = gapped.feed(first);
    if let Ok(skipped) = gapped.skip(gap) {
        assert!(skipped.consumed <= gap);
    }
    if let Ok(progress) = gapped.feed(second) {
        assert!(progress.consumed <= second.len());
        assert_eq!(progress.complete, gapped.is_complete());
    }
}
