//! HTTP/2 framing (RFC 9113 §4) over one direction of captured bytes: frame headers are read
//! across chunk boundaries, payloads are kept only as far as the parser needs them (a header
//! block, the few bytes of a control frame) and skipped otherwise, so DATA costs no memory.
//!
//! A capture gap that falls inside a skipped payload costs nothing; one that falls anywhere
//! else loses the framing: the reader says so once and waits for a chunk that starts like a
//! frame again (senders write frames whole, so a syscall boundary is nearly always a frame
//! boundary).

/// The connection preface a client sends before its first frame (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;
/// Largest frame length the protocol can express (SETTINGS_MAX_FRAME_SIZE upper bound).
pub const MAX_FRAME_LEN: u32 = (1 << 24) - 1;
/// Frames longer than this are not believed when looking for framing (detection, resync):
/// peers raise SETTINGS_MAX_FRAME_SIZE from 16 KiB rarely, and a TLS record or other binary
/// data would otherwise pass for a long DATA frame.
const MAX_PLAUSIBLE_LEN: u32 = 1 << 20;
/// Control-frame bytes kept: enough for the fields read (GOAWAY's first 8, RST_STREAM's 4).
const MAX_CONTROL_KEEP: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames: ignored, as RFC 9113 §4.1 requires.
    Unknown(u8),
}

impl FrameType {
    pub fn from_u8(t: u8) -> Self {
        match t {
            0 => Self::Data,
            1 => Self::Headers,
            2 => Self::Priority,
            3 => Self::RstStream,
            4 => Self::Settings,
            5 => Self::PushPromise,
            6 => Self::Ping,
            7 => Self::GoAway,
            8 => Self::WindowUpdate,
            9 => Self::Continuation,
            other => Self::Unknown(other),
        }
    }
}

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: FrameType,
    pub flags: u8,
    /// Without the reserved bit.
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: FrameType::from_u8(b[3]),
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether the header obeys the rules a real peer's frames do: known type, the stream
    /// id the type requires, and the fixed lengths. Used to find frames again after a gap,
    /// and to recognise HTTP/2 on a connection seen without its preface.
    pub fn plausible(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            FrameType::Data | FrameType::Headers | FrameType::Continuation => on_stream,
            FrameType::PushPromise => on_stream && self.len >= 4,
            FrameType::Priority => on_stream && self.len == 5,
            FrameType::RstStream => on_stream && self.len == 4,
            FrameType::Settings => {
                !on_stream
                    && self.len.is_multiple_of(6)
                    && (self.flags & FLAG_ACK == 0 || self.len == 0)
            }
            FrameType::Ping => !on_stream && self.len == 8,
            FrameType::GoAway => !on_stream && self.len >= 8,
            FrameType::WindowUpdate => self.len == 4,
            FrameType::Unknown(_) => false,
        }
    }

    /// Payload bytes the parser needs; the rest is skipped.
    fn keep(&self, header_budget: u32) -> u32 {
        match self.kind {
            FrameType::Headers | FrameType::Continuation | FrameType::PushPromise => {
                self.len.min(header_budget)
            }
            FrameType::RstStream | FrameType::GoAway | FrameType::Settings => {
                self.len.min(MAX_CONTROL_KEEP)
            }
            _ => 0,
        }
    }
}

/// What the reader hands on.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A whole frame; `payload` is its kept prefix, `truncated` when that is not all of it.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        truncated: bool,
    },
    /// Bytes went missing where framing needed them: what was in flight is unknown.
    Lost,
}

#[derive(Debug)]
enum State {
    /// Skipping the client preface (request direction of a connection seen from its start).
    Preface { left: usize },
    /// Reading a frame header; `n` bytes of it are in `head`.
    Header {
        head: [u8; FRAME_HEADER_LEN],
        n: usize,
    },
    /// Reading a payload: keeping the first `keep` bytes, then skipping to `left` = 0.
    Payload {
        header: FrameHeader,
        keep: u32,
        left: u32,
    },
    /// Framing lost: wait for a chunk that starts with a plausible frame.
    Lost,
}

/// One direction's frames.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    kept: Vec<u8>,
    header_budget: u32,
}

impl FrameReader {
    /// A reader at a frame boundary; `preface` when the client preface comes first.
    /// Header-block frames keep at most `header_budget` bytes each.
    pub fn new(preface: bool, header_budget: u32) -> Self {
        FrameReader {
            state: if preface {
                State::Preface {
                    left: PREFACE.len(),
                }
            } else {
                State::Header {
                    head: [0; FRAME_HEADER_LEN],
                    n: 0,
                }
            },
            kept: Vec::new(),
            header_budget,
        }
    }

    /// A reader that joins a connection in the middle: it waits for a chunk that starts with
    /// a plausible frame.
    pub fn resyncing(header_budget: u32) -> Self {
        FrameReader {
            state: State::Lost,
            kept: Vec::new(),
            header_budget,
        }
    }

    /// Bytes held for a frame in progress (the buffer's spare capacity, at most 4 KiB once a
    /// frame is done, is the connection's fixed cost, not a held frame).
    pub fn buffered(&self) -> usize {
        self.kept.len()
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Feeds one chunk; `gap` bytes were moved after it but not captured.
    pub fn feed(&mut self, mut data: &[u8], gap: u64, out: &mut dyn FnMut(FrameEvent<'_>)) {
        if matches!(self.state, State::Lost) {
            if starts_with_frame(data) {
                self.state = State::Header {
                    head: [0; FRAME_HEADER_LEN],
                    n: 0,
                };
            } else {
                return;
            }
        }
        while !data.is_empty() {
            match &mut self.state {
                State::Preface { left } => {
                    let done = PREFACE.len() - *left;
                    let take = (*left).min(data.len());
                    if data[..take] != PREFACE[done..done + take] {
                        self.lose(out);
                        return;
                    }
                    *left -= take;
                    data = &data[take..];
                    if *left == 0 {
                        self.state = State::Header {
                            head: [0; FRAME_HEADER_LEN],
                            n: 0,
                        };
                    }
                }
                State::Header { head, n } => {
                    let take = (FRAME_HEADER_LEN - *n).min(data.len());
                    head[*n..*n + take].copy_from_slice(&data[..take]);
                    *n += take;
                    data = &data[take..];
                    if *n == FRAME_HEADER_LEN {
                        let header = FrameHeader::parse(head);
                        let keep = header.keep(self.header_budget);
                        self.kept.clear();
                        self.state = State::Payload {
                            header,
                            keep,
                            left: header.len,
                        };
                        self.finish_if_done(out);
                    }
                }
                State::Payload { keep, left, .. } => {
                    let take = (*left as usize).min(data.len());
                    let want = (*keep as usize).saturating_sub(self.kept.len()).min(take);
                    self.kept.extend_from_slice(&data[..want]);
                    // take <= left, a u32.
                    *left -= take as u32;
                    data = &data[take..];
                    self.finish_if_done(out);
                }
                State::Lost => return,
            }
        }
        if gap > 0 {
            self.skip_gap(gap, out);
        }
    }

    fn finish_if_done(&mut self, out: &mut dyn FnMut(FrameEvent<'_>)) {
        let State::Payload { header, keep, left } = self.state else {
            return;
        };
        if left > 0 {
            return;
        }
        out(FrameEvent::Frame {
            header,
            payload: &self.kept,
            truncated: keep < header.len,
        });
        self.kept.clear();
        if self.kept.capacity() > 4096 {
            self.kept = Vec::new();
        }
        self.state = State::Header {
            head: [0; FRAME_HEADER_LEN],
            n: 0,
        };
    }

    /// Bytes that were not captured: harmless inside a payload nobody keeps.
    fn skip_gap(&mut self, gap: u64, out: &mut dyn FnMut(FrameEvent<'_>)) {
        match &mut self.state {
            State::Payload { keep, left, .. }
                if self.kept.len() >= *keep as usize && u64::from(*left) >= gap =>
            {
                // gap <= left, a u32.
                *left -= gap as u32;
                self.finish_if_done(out);
            }
            State::Lost => {}
            _ => self.lose(out),
        }
    }

    fn lose(&mut self, out: &mut dyn FnMut(FrameEvent<'_>)) {
        self.state = State::Lost;
        self.kept = Vec::new();
        out(FrameEvent::Lost);
    }
}

/// Whether `data` begins with the client preface, or enough of it to tell (a chunk may be
/// cut short).
pub fn starts_with_preface(data: &[u8]) -> bool {
    data.len() >= 14 && PREFACE.starts_with(&data[..data.len().min(PREFACE.len())])
}

/// Whether `data` starts with plausible frames: every whole frame header in it is plausible
/// and they chain to its end (or past it, a frame cut by the capture).
pub fn starts_with_frame(data: &[u8]) -> bool {
    let mut at = 0usize;
    let mut frames = 0;
    while let Some(raw) = data.get(at..at + FRAME_HEADER_LEN) {
        let Ok(raw) = <&[u8; FRAME_HEADER_LEN]>::try_from(raw) else {
            break;
        };
        let header = FrameHeader::parse(raw);
        if !header.plausible() || header.len > MAX_PLAUSIBLE_LEN {
            return false;
        }
        frames += 1;
        at = at
            .saturating_add(FRAME_HEADER_LEN)
            .saturating_add(header.len as usize);
    }
    frames > 0 && (at >= data.len())
}
