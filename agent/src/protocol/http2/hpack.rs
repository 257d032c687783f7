//! HPACK (RFC 7541) decoding with `loona-hpack`, keeping only the fields a span needs.
//!
//! Honest about unknown state: a connection seen from its middle, or after a capture gap, has a
//! dynamic table we never saw. The decoder then starts empty. Entries added from then on are the
//! newest of the peer's table too, and HPACK indexes from the newest, so every index we can
//! resolve means what it means to the peer; an index we cannot resolve is an error, never a
//! wrong value. After any error the table is emptied again (entries the failed block would have
//! added are missing, which would shift every later index), so a field is either right or absent.
use std::borrow::Cow;

use loona_hpack::Decoder;

/// Dynamic table bound: what peers use in practice (4 KiB default, 64 KiB at most in
/// nghttp2); a size update above it is treated as a decoding error.
const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Longer `:path` values are cut at a UTF-8 boundary.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
const MAX_AUTHORITY_BYTES: usize = 256;
const MAX_SHORT_BYTES: usize = 128;
const MAX_USER_AGENT_BYTES: usize = 512;
const MAX_TRACEPARENT_BYTES: usize = 128;
const MAX_TRACESTATE_BYTES: usize = 512;

/// The fields of one header block that the agent keeps. Every other value (authorization,
/// cookies, custom metadata) is never copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderFields {
    pub method: Option<String>,
    /// `:path` as sent, query included (the span stage decides what to export).
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub grpc_status: Option<u32>,
    /// Every field of the block was decoded; when false, the absent fields may have been there.
    pub complete: bool,
}

impl HeaderFields {
    pub fn is_grpc(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c == "application/grpc" || c.starts_with("application/grpc+"))
            || self
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/grpc;"))
    }

    fn take(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => set(&mut self.method, value, MAX_SHORT_BYTES),
            b":path" => set(&mut self.path, value, MAX_PATH_BYTES),
            b":scheme" => set(&mut self.scheme, value, MAX_SHORT_BYTES),
            b":authority" => set(&mut self.authority, value, MAX_AUTHORITY_BYTES),
            b":status" => {
                self.status = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| s.len() == 3)
                    .and_then(|s| s.parse().ok())
            }
            b"content-type" => set(&mut self.content_type, value, MAX_SHORT_BYTES),
            b"user-agent" => set(&mut self.user_agent, value, MAX_USER_AGENT_BYTES),
            b"traceparent" => set(&mut self.traceparent, value, MAX_TRACEPARENT_BYTES),
            b"tracestate" => set(&mut self.tracestate, value, MAX_TRACESTATE_BYTES),
            b"grpc-status" => {
                self.grpc_status = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| (1..=3).contains(&s.len()))
                    .and_then(|s| s.parse().ok())
            }
            _ => {}
        }
    }
}

/// The first value wins (a repeated pseudo-header is a protocol error; keep the first).
fn set(slot: &mut Option<String>, value: &[u8], cap: usize) {
    if slot.is_some() {
        return;
    }
    let text = String::from_utf8_lossy(&value[..value.len().min(cap)]);
    let mut s = text.into_owned();
    // A cut through a multi-byte character leaves a replacement character at the end: drop it.
    if value.len() > cap && s.ends_with('\u{fffd}') {
        s.pop();
    }
    *slot = Some(s);
}

/// One direction's HPACK state.
pub struct HeaderDecoder {
    decoder: Decoder<'static>,
    /// False until the table has been seen from a connection's start (or after a reset).
    pub synced: bool,
}

impl HeaderDecoder {
    /// `synced` when the connection is seen from its preface.
    pub fn new(synced: bool) -> Self {
        HeaderDecoder {
            decoder: fresh(),
            synced,
        }
    }

    /// Forget the dynamic table: bytes that may have changed it were not seen.
    pub fn reset(&mut self) {
        self.decoder = fresh();
        self.synced = false;
    }

    /// Decodes a whole header block. `complete` in the result is false when some field could
    /// not be decoded; the fields returned are right regardless.
    ///
    /// The block is decoded one field at a time, so that a field naming an entry we never saw
    /// costs only that field: an indexed reference or a literal that is not indexed leaves the
    /// table as it was, and decoding goes on; a literal the peer added to its table (or a size
    /// update) that we could not follow empties ours.
    pub fn decode(&mut self, block: &[u8]) -> HeaderFields {
        let mut fields = HeaderFields {
            complete: true,
            ..HeaderFields::default()
        };
        let mut rest = block;
        while !rest.is_empty() {
            let Some((len, changes_table)) = next_field(rest) else {
                // Not HPACK as far as we can tell: nothing after this point is trustworthy.
                fields.complete = false;
                self.reset();
                break;
            };
            let (field, after) = rest.split_at(len);
            rest = after;
            let result = self
                .decoder
                .decode_with_cb(field, |name: Cow<[u8]>, value: Cow<[u8]>| {
                    fields.take(&name, &value)
                });
            if result.is_err() {
                fields.complete = false;
                if changes_table {
                    self.reset();
                }
            }
        }
        fields
    }
}

/// The length of the next field representation (with any table size updates before it), and
/// whether it changes the dynamic table (RFC 7541 §6). None when the bytes do not frame.
fn next_field(block: &[u8]) -> Option<(usize, bool)> {
    let mut at = 0usize;
    let mut changes_table = false;
    loop {
        let first = *block.get(at)?;
        if first & 0xe0 == 0x20 {
            // §6.3 dynamic table size update: belongs with the field it precedes.
            at += integer_len(&block[at..], 5)?;
            changes_table = true;
            if at == block.len() {
                return Some((at, changes_table));
            }
            continue;
        }
        if first & 0x80 != 0 {
            // §6.1 indexed field.
            return Some((at + integer_len(&block[at..], 7)?, changes_table));
        }
        // §6.2 literals: with incremental indexing (01), without (0000) or never (0001).
        let (prefix, indexing) = if first & 0x40 != 0 {
            (6, true)
        } else {
            (4, false)
        };
        let (index, n) = integer(&block[at..], prefix)?;
        at += n;
        if index == 0 {
            at += string_len(block.get(at..)?)?;
        }
        at += string_len(block.get(at..)?)?;
        return (at <= block.len()).then_some((at, changes_table || indexing));
    }
}

/// RFC 7541 §5.1 integer with an `prefix`-bit prefix: its value and encoded length. At most
/// five continuation bytes, as any value a real peer sends fits in them.
fn integer(b: &[u8], prefix: u32) -> Option<(usize, usize)> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*b.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    for (i, byte) in b.iter().enumerate().skip(1).take(5) {
        value += usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn integer_len(b: &[u8], prefix: u32) -> Option<usize> {
    integer(b, prefix).map(|(_, n)| n)
}

/// RFC 7541 §5.2 string literal: its encoded length.
fn string_len(b: &[u8]) -> Option<usize> {
    let (len, n) = integer(b, 7)?;
    let total = n.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

fn fresh() -> Decoder<'static> {
    let mut d = Decoder::new();
    d.set_max_allowed_table_size(MAX_TABLE_SIZE);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        // RFC 7541 Appendix C.3: three requests sharing a dynamic table.
        let mut d = HeaderDecoder::new(true);
        let first = d.decode(&[
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', b'.', b'c', b'o', b'm',
        ]);
        assert!(first.complete);
        assert_eq!(first.method.as_deref(), Some("GET"));
        assert_eq!(first.path.as_deref(), Some("/"));
        assert_eq!(first.authority.as_deref(), Some("www.example.com"));
        // C.3.2: `:authority` now comes from the dynamic table (index 62).
        let second = d.decode(&[
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
        ]);
        assert!(second.complete);
        assert_eq!(second.authority.as_deref(), Some("www.example.com"));
    }

    #[test]
    fn unknown_dynamic_index_is_absent_never_wrong() {
        // Joined mid-connection: index 62 refers to an entry we never saw.
        let mut d = HeaderDecoder::new(false);
        let fields = d.decode(&[0x82, 0xbe, 0x84]);
        assert!(!fields.complete);
        assert_eq!(fields.method.as_deref(), Some("GET"));
        assert_eq!(fields.authority, None);
        assert_eq!(
            fields.path.as_deref(),
            Some("/"),
            "an unknown index costs only its own field"
        );
        // An unknown index changes no table: what follows still lines up.
        let mut d = HeaderDecoder::new(false);
        d.decode(&[0x40, 1, b'x', 1, b'a']); // adds x: a
        let partly = d.decode(&[0xbf, 0x40, 1, b'y', 1, b'b']); // unknown 63, then adds y: b
        assert!(!partly.complete);
        let mut seen = Vec::new();
        d.decoder
            .decode_with_cb(&[0xbe, 0xbf], |n, v| {
                seen.push((n.into_owned(), v.into_owned()))
            })
            .expect("62 and 63 are known");
        assert_eq!(
            seen,
            [
                (b"y".to_vec(), b"b".to_vec()),
                (b"x".to_vec(), b"a".to_vec())
            ]
        );
        // A literal the peer indexed under a name we cannot resolve: the peer's table grew by
        // an entry ours lacks, so ours is emptied rather than left shifted by one.
        let failed = d.decode(&[0x7f, 0x10, 1, b'z']); // name index 79: unknown
        assert!(!failed.complete);
        let after = d.decode(&[0xbe]);
        assert!(
            !after.complete,
            "62 is z's entry to the peer, y's to a stale table"
        );
    }

    #[test]
    fn hostile_blocks_do_not_panic() {
        let mut d = HeaderDecoder::new(true);
        for block in [
            &[0x3f][..],                           // size update cut short
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x7f], // size update too large
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x40, 0x7f],
            &[0x00, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff], // bad Huffman
        ] {
            let f = d.decode(block);
            assert!(!f.complete);
        }
    }

    #[test]
    fn values_are_capped_and_others_never_kept() {
        let mut d = HeaderDecoder::new(true);
        let mut block = vec![0x04, 0x7f, 0x81, 0x40]; // :path, 8320 bytes, not indexed
        block.extend(std::iter::repeat_n(b'a', 8320));
        block.extend([
            0x00, 13, b'a', b'u', b't', b'h', b'o', b'r', b'i', b'z', b'a', b't',
        ]);
        block.extend([b'i', b'o', b'n', 6, b's', b'e', b'c', b'r', b'e', b't']);
        let f = d.decode(&block);
        assert!(f.complete, "{f:?}");
        assert_eq!(f.path.map(|p| p.len()), Some(MAX_PATH_BYTES));
        assert!(!format!("{:?}", d.decode(&block)).contains("secret"));
    }
}
