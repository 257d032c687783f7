//! Packet framing: the 4-byte header, logical packets joined from 16 MiB physical ones, and
//! the reader for the integers and strings inside a payload.

use super::{EOF, HEADER, MAX_PAYLOAD};

pub(super) fn u24(a: u8, b: u8, c: u8) -> usize {
    usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16
}

/// A logical packet (physical packets of 16 MiB - 1 joined), as far as it was kept.
pub(super) struct Packet<'a> {
    pub(super) seq: u8,
    /// Payload length on the wire.
    pub(super) len: u64,
    /// The payload's first bytes: up to the prefix limit, fewer when `missed`.
    pub(super) body: &'a [u8],
    /// A capture gap fell inside the payload.
    pub(super) missed: bool,
}

impl Packet<'_> {
    pub(super) fn first(&self) -> Option<u8> {
        self.body.first().copied()
    }

    /// An EOF packet: 0xFE and shorter than any row or OK that can start with 0xFE.
    pub(super) fn is_eof(&self) -> bool {
        self.first() == Some(EOF) && self.len < 9
    }

    /// The end of a result set: a classic EOF or, with CLIENT_DEPRECATE_EOF, an OK packet with
    /// the 0xFE header. A row starting with 0xFE holds a value of 16 MiB or more, so its packet
    /// is at least that long.
    pub(super) fn is_terminator(&self) -> bool {
        self.first() == Some(EOF) && self.len < MAX_PAYLOAD as u64
    }
}

/// Splits one direction's bytes into packets, keeping only the start of each payload and
/// skipping the rest by length.
#[derive(Default)]
pub(super) struct Framer {
    header: [u8; HEADER],
    header_len: usize,
    /// Inside a physical packet's payload.
    in_body: bool,
    /// Payload bytes of the current physical packet not seen yet.
    remaining: usize,
    /// The current physical packet has the maximum length: another physical packet continues
    /// the same logical one.
    continues: bool,
    /// The next header belongs to a continuation packet.
    continuation: bool,
    seq: u8,
    total: u64,
    prefix: Vec<u8>,
    missed: bool,
    /// The last call returned the buffered packet; its state is dropped on the next call.
    delivered: bool,
}

impl Framer {
    fn settle(&mut self) {
        if self.delivered {
            self.delivered = false;
            self.in_body = false;
            self.continuation = false;
            self.prefix.clear();
            self.missed = false;
            self.total = 0;
        }
    }

    /// The next complete packet from `data` (advanced past it), or None once `data` is used up.
    /// A packet entirely inside `data` is lent from it without copying.
    pub(super) fn next<'s, 'd: 's>(
        &'s mut self,
        data: &mut &'d [u8],
        limit: usize,
    ) -> Option<Packet<'s>> {
        self.settle();
        loop {
            if self.in_body {
                if self.remaining == 0 {
                    if self.continues {
                        self.in_body = false;
                        self.continuation = true;
                        continue;
                    }
                    self.delivered = true;
                    return Some(Packet {
                        seq: self.seq,
                        len: self.total,
                        body: &self.prefix,
                        missed: self.missed,
                    });
                }
                if data.is_empty() {
                    return None;
                }
                let take = self.remaining.min(data.len());
                let (bytes, rest) = data.split_at(take);
                if !self.missed {
                    let room = limit.saturating_sub(self.prefix.len());
                    self.prefix.extend_from_slice(&bytes[..room.min(take)]);
                }
                self.remaining -= take;
                *data = rest;
                continue;
            }
            if self.header_len == 0
                && !self.continuation
                && let [a, b, c, seq, rest @ ..] = *data
            {
                let len = u24(*a, *b, *c);
                if len < MAX_PAYLOAD && rest.len() >= len {
                    let seq = *seq;
                    let (payload, after) = rest.split_at(len);
                    *data = after;
                    return Some(Packet {
                        seq,
                        len: len as u64,
                        body: &payload[..len.min(limit)],
                        missed: false,
                    });
                }
            }
            let want = HEADER - self.header_len;
            let take = want.min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            *data = &data[take..];
            if self.header_len < HEADER {
                return None;
            }
            self.header_len = 0;
            let [a, b, c, seq] = self.header;
            let len = u24(a, b, c);
            if !self.continuation {
                self.seq = seq;
                self.total = 0;
            }
            self.continuation = false;
            self.total = self.total.saturating_add(len as u64);
            self.remaining = len;
            self.continues = len == MAX_PAYLOAD;
            self.in_body = true;
        }
    }

    /// Accounts for `gap` bytes the capture missed; false when they covered a header (framing
    /// is lost). A packet the gap completes is returned by the next [`Framer::next`].
    pub(super) fn skip(&mut self, gap: u64) -> bool {
        self.settle();
        if gap == 0 {
            return true;
        }
        if !self.in_body || gap > self.remaining as u64 {
            return false;
        }
        self.remaining -= gap as usize;
        self.missed = true;
        true
    }

    pub(super) fn buffered(&self) -> usize {
        self.header_len + if self.delivered { 0 } else { self.prefix.len() }
    }
}

/// Reads the protocol's integers and strings off a payload prefix; None when it runs out.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        let [a, b] = *self.take(2)? else { return None };
        Some(u16::from_le_bytes([a, b]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let [a, b, c, d] = *self.take(4)? else {
            return None;
        };
        Some(u32::from_le_bytes([a, b, c, d]))
    }

    /// Length-encoded integer; 0xFB (NULL) and 0xFF are not integers.
    pub(super) fn lenenc(&mut self) -> Option<u64> {
        let width = match self.u8()? {
            small @ 0..=0xfa => return Some(small.into()),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let bytes = self.take(width)?;
        let mut value = [0u8; 8];
        value[..width].copy_from_slice(bytes);
        Some(u64::from_le_bytes(value))
    }

    pub(super) fn lenenc_str(&mut self) -> Option<&'a [u8]> {
        let len = self.lenenc()?;
        self.take(usize::try_from(len).ok()?)
    }

    pub(super) fn nul_str(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = self.take(end)?;
        self.skip(1)?;
        Some(s)
    }
}
