//! HTTP/2 (RFC 9113) over captured bytes, one direction at a time: frames ([`frame`]), header
//! blocks reassembled from HEADERS + CONTINUATION with padding and priority removed, decoded
//! with HPACK ([`hpack`]), and handed on as stream events. Flow control, PING, PRIORITY and
//! SETTINGS other than the table size need nothing from a passive observer and are skipped.
//!
//! Which stream is a request and which a response is the reassembly stage's business; this
//! module only says what each direction carried.
pub mod frame;
pub mod hpack;

use frame::{
    FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, FrameEvent, FrameHeader,
    FrameReader, FrameType,
};
pub use frame::{starts_with_frame, starts_with_preface};
pub use hpack::{HeaderDecoder, HeaderFields};

/// A header block (HEADERS plus its CONTINUATIONs) larger than this is not decoded (the
/// table is reset instead). Servers refuse far smaller ones (16 KiB is common).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What one direction carried, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A header block on a stream: request or response headers, or trailers.
    Headers {
        stream: u32,
        end_stream: bool,
        fields: Box<HeaderFields>,
    },
    /// A header block that could not be decoded at all (too large, cut by a gap).
    HeadersLost { stream: u32, end_stream: bool },
    /// DATA; only its end-of-stream flag matters.
    Data { stream: u32, end_stream: bool },
    /// The stream was cancelled with this error code.
    Reset { stream: u32, code: u32 },
    /// The sender will process no stream above `last_stream`.
    GoAway { last_stream: u32, code: u32 },
    /// Framing was lost (capture gap); header state starts over.
    Lost,
}

/// A header block whose CONTINUATIONs are still coming.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE blocks are decoded only to keep the table in step.
    push: bool,
    bytes: Vec<u8>,
    overflow: bool,
}

/// One direction of one HTTP/2 connection.
pub struct Http2Direction {
    frames: FrameReader,
    headers: HeaderDecoder,
    block: Option<PendingBlock>,
}

impl Http2Direction {
    /// A direction seen from the connection's start; `preface` for the client's.
    pub fn from_start(preface: bool) -> Self {
        Http2Direction {
            frames: FrameReader::new(preface, MAX_HEADER_BLOCK as u32),
            headers: HeaderDecoder::new(true),
            block: None,
        }
    }

    /// A direction joined in the middle: frames are found again, the HPACK table is unknown.
    pub fn joined() -> Self {
        Http2Direction {
            frames: FrameReader::resyncing(MAX_HEADER_BLOCK as u32),
            headers: HeaderDecoder::new(false),
            block: None,
        }
    }

    /// Bytes held (a frame or a header block in progress).
    pub fn buffered(&self) -> usize {
        self.frames.buffered() + self.block.as_ref().map_or(0, |b| b.bytes.len())
    }

    /// Whether the HPACK table has been followed from the connection's start.
    pub fn synced(&self) -> bool {
        self.headers.synced
    }

    pub fn feed(&mut self, data: &[u8], gap: u64, out: &mut dyn FnMut(StreamEvent)) {
        let Http2Direction {
            frames,
            headers,
            block,
        } = self;
        frames.feed(data, gap, &mut |ev| match ev {
            FrameEvent::Lost => {
                *block = None;
                headers.reset();
                out(StreamEvent::Lost);
            }
            FrameEvent::Frame {
                header,
                payload,
                truncated,
            } => on_frame(header, payload, truncated, headers, block, out),
        });
    }
}

fn on_frame(
    header: FrameHeader,
    payload: &[u8],
    truncated: bool,
    headers: &mut HeaderDecoder,
    block: &mut Option<PendingBlock>,
    out: &mut dyn FnMut(StreamEvent),
) {
    // RFC 9113 §6.10: nothing but CONTINUATION of the same stream may follow an unfinished
    // header block; anything else means bytes were missed.
    if let Some(pending) = block.as_ref()
        && (header.kind != FrameType::Continuation || header.stream != pending.stream)
    {
        let lost = block.take().map(|b| (b.stream, b.end_stream, b.push));
        headers.reset();
        if let Some((stream, end_stream, false)) = lost {
            out(StreamEvent::HeadersLost { stream, end_stream });
        }
    }
    let end_stream = header.flags & FLAG_END_STREAM != 0;
    match header.kind {
        FrameType::Data => out(StreamEvent::Data {
            stream: header.stream,
            end_stream,
        }),
        FrameType::Headers | FrameType::PushPromise => {
            let push = header.kind == FrameType::PushPromise;
            let fragment = if truncated {
                None
            } else {
                header_fragment(header, payload)
            };
            let mut pending = PendingBlock {
                stream: header.stream,
                end_stream: end_stream && !push,
                push,
                bytes: Vec::new(),
                overflow: fragment.is_none(),
            };
            if let Some(f) = fragment {
                pending.bytes.extend_from_slice(f);
            }
            *block = Some(pending);
            if header.flags & FLAG_END_HEADERS != 0 {
                finish_block(headers, block, out);
            }
        }
        FrameType::Continuation => {
            let Some(pending) = block.as_mut() else {
                // A CONTINUATION without its HEADERS: the start was missed.
                headers.reset();
                return;
            };
            if truncated || pending.bytes.len() + payload.len() > MAX_HEADER_BLOCK {
                pending.overflow = true;
                pending.bytes = Vec::new();
            } else if !pending.overflow {
                pending.bytes.extend_from_slice(payload);
            }
            if header.flags & FLAG_END_HEADERS != 0 {
                finish_block(headers, block, out);
            }
        }
        FrameType::RstStream => {
            if let Some(code) = be_u32(payload, 0) {
                out(StreamEvent::Reset {
                    stream: header.stream,
                    code,
                });
            }
        }
        FrameType::GoAway => {
            if let (Some(last), Some(code)) = (be_u32(payload, 0), be_u32(payload, 4)) {
                out(StreamEvent::GoAway {
                    last_stream: last & 0x7fff_ffff,
                    code,
                });
            }
        }
        FrameType::Priority
        | FrameType::Settings
        | FrameType::Ping
        | FrameType::WindowUpdate
        | FrameType::Unknown(_) => {}
    }
}

/// The header-block fragment of a HEADERS or PUSH_PROMISE payload: padding, priority and the
/// promised stream id removed. None when the lengths do not add up.
fn header_fragment(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0usize;
    let mut end = payload.len();
    if header.flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    match header.kind {
        FrameType::Headers if header.flags & FLAG_PRIORITY != 0 => start += 5,
        FrameType::PushPromise => start += 4,
        _ => {}
    }
    payload.get(start..end)
}

fn finish_block(
    headers: &mut HeaderDecoder,
    block: &mut Option<PendingBlock>,
    out: &mut dyn FnMut(StreamEvent),
) {
    let Some(pending) = block.take() else {
        return;
    };
    if pending.overflow {
        headers.reset();
        if !pending.push {
            out(StreamEvent::HeadersLost {
                stream: pending.stream,
                end_stream: pending.end_stream,
            });
        }
        return;
    }
    let fields = headers.decode(&pending.bytes);
    if !pending.push {
        out(StreamEvent::Headers {
            stream: pending.stream,
            end_stream: pending.end_stream,
            fields: Box::new(fields),
        });
    }
}

/// RFC 9113 §7 error code names, as RST_STREAM and GOAWAY carry them.
pub fn error_code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return None,
    })
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(raw))
}

#[cfg(test)]
mod tests;
