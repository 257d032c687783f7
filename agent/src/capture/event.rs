//! Decoding of ring-buffer records into owned events. Records come from our own kernel
//! programs, but are still length-checked: a short record is counted and skipped.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use agent_common::{
    CTX_INJECTED, CTX_SERVER, ConnOpenEvent, ConnOrigin, DATA_OFFSET, Direction, EventHeader,
    EventKind, TraceCtx,
};
use bytes::Bytes;

/// A connection, as the kernel names it for one process: the `struct sock` address is unique
/// while the socket lives, the tgid keeps two processes sharing a socket apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub sock: u64,
}

#[derive(Clone, Debug)]
pub struct ConnOpen {
    pub key: ConnKey,
    pub fd: u32,
    pub origin: ConnOrigin,
    pub ts_ns: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The calling thread's name, kept for processes gone before /proc is read.
    pub comm: String,
}

/// What the kernel decided for a record when injection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCtxKind {
    /// The record read a request head; the server span must take these ids, because the calls
    /// it causes were (or will be) given them in their `traceparent`.
    Server,
    /// The record wrote a request head into which the kernel inserted `traceparent`.
    Injected,
}

/// A trace context the kernel decided (see agent_common::TraceCtx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCtx {
    pub kind: KernelCtxKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Server: the caller's span from the incoming `traceparent`. Injected: the server span
    /// the call was made for.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl KernelCtx {
    fn from_wire(ctx: &TraceCtx) -> Option<Self> {
        let kind = match ctx.kind {
            CTX_SERVER => KernelCtxKind::Server,
            CTX_INJECTED => KernelCtxKind::Injected,
            _ => return None,
        };
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(KernelCtx {
            kind,
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_id: (ctx.parent_id != [0; 8]).then_some(ctx.parent_id),
            sampled: ctx.flags & 1 == 1,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DataChunk {
    pub key: ConnKey,
    pub tid: u32,
    pub direction: Direction,
    /// CLOCK_MONOTONIC at syscall entry and exit.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Bytes the syscall moved; `payload` is the captured prefix of them.
    pub total_len: u32,
    pub payload: Bytes,
    /// Only with injection, on the records that read or wrote a request head.
    pub kernel_ctx: Option<KernelCtx>,
    /// TLS plaintext from the OpenSSL probes (not the socket's own bytes).
    pub tls: bool,
}

impl DataChunk {
    /// Bytes moved but not captured (the capture size cut them).
    pub fn gap(&self) -> u64 {
        u64::from(self.total_len).saturating_sub(self.payload.len() as u64)
    }
}

#[derive(Clone, Debug)]
pub enum CaptureEvent {
    Open(ConnOpen),
    Data(DataChunk),
    /// TLS plaintext written behind a memory BIO (Node) before its socket was known: its `key`
    /// has no socket yet. The [`CaptureEvent::TlsBind`] of the same thread that follows names it.
    TlsUnbound(DataChunk),
    /// The thread's last unbound TLS plaintext belongs to the connection `key`.
    TlsBind {
        key: ConnKey,
        tid: u32,
    },
    Close {
        key: ConnKey,
        /// The descriptor closed; the socket lives on while the process holds another.
        fd: u32,
        ts_ns: u64,
    },
    /// What a process's environment says its service is (None: it does not say). Only these
    /// variables are kept from the environment block.
    ProcessService {
        tgid: u32,
        service_name: Option<String>,
    },
    /// A process that had tracked connections exited.
    ProcessExit {
        tgid: u32,
    },
    /// Bytes a traced process wrote to its stdout or stderr (`logs.enabled`).
    Log(LogChunk),
}

/// One write to stdout (`fd` 1) or stderr (2): possibly several lines, or part of one.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// CLOCK_MONOTONIC: when the write returned.
    pub ts_ns: u64,
    pub payload: Bytes,
    /// The write moved more than was captured.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u8 },
}

/// The `captured_len` payload bytes after the header and trace context.
fn payload<'a>(record: &'a [u8], header: &EventHeader) -> Result<&'a [u8], DecodeError> {
    let short = || DecodeError::Short { len: record.len() };
    let start = DATA_OFFSET;
    let end = start
        .checked_add(header.captured_len as usize)
        .ok_or_else(short)?;
    record.get(start..end).ok_or_else(short)
}

fn read_pod<T: Copy>(record: &[u8]) -> Option<T> {
    if record.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; T is a repr(C) plain-old-data type from agent-common for
    // which every bit pattern is valid; read_unaligned copes with the ring's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<CaptureEvent, DecodeError> {
    let short = || DecodeError::Short { len: record.len() };
    let header: EventHeader = read_pod(record).ok_or_else(short)?;
    let key = ConnKey {
        tgid: header.tgid,
        sock: header.sock,
    };
    match header.kind {
        k if k == EventKind::ConnOpen as u8 => {
            let open: ConnOpenEvent = read_pod(record).ok_or_else(short)?;
            let t = open.tuple;
            let origin = match header.origin {
                o if o == ConnOrigin::Accepted as u8 => ConnOrigin::Accepted,
                o if o == ConnOrigin::Connected as u8 => ConnOrigin::Connected,
                _ => ConnOrigin::Unknown,
            };
            let comm_len = open.comm.iter().position(|b| *b == 0).unwrap_or(16);
            Ok(CaptureEvent::Open(ConnOpen {
                key,
                fd: header.fd,
                origin,
                ts_ns: header.start_ns,
                local: socket_addr(t.family, t.local_addr, t.local_port),
                remote: socket_addr(t.family, t.remote_addr, t.remote_port),
                comm: String::from_utf8_lossy(&open.comm[..comm_len]).into_owned(),
            }))
        }
        k if k == EventKind::Data as u8 => {
            let payload = payload(record, &header)?;
            let ctx: TraceCtx = record
                .get(size_of::<EventHeader>()..)
                .and_then(read_pod)
                .ok_or_else(short)?;
            let unbound = header.flags & agent_common::DATA_TLS_UNBOUND != 0;
            let chunk = DataChunk {
                key,
                tid: header.tid,
                direction: if header.direction == Direction::Egress as u8 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                start_ns: header.start_ns,
                end_ns: header.end_ns,
                total_len: header.total_len.max(header.captured_len),
                payload: Bytes::copy_from_slice(payload),
                kernel_ctx: KernelCtx::from_wire(&ctx),
                tls: header.flags & agent_common::DATA_TLS != 0,
            };
            Ok(if unbound {
                CaptureEvent::TlsUnbound(chunk)
            } else {
                CaptureEvent::Data(chunk)
            })
        }
        k if k == EventKind::Log as u8 => {
            let bytes = payload(record, &header)?;
            Ok(CaptureEvent::Log(LogChunk {
                tgid: header.tgid,
                tid: header.tid,
                fd: header.fd,
                ts_ns: header.end_ns,
                payload: Bytes::copy_from_slice(bytes),
                truncated: header.total_len > header.captured_len,
            }))
        }
        k if k == EventKind::TlsBind as u8 => Ok(CaptureEvent::TlsBind {
            key,
            tid: header.tid,
        }),
        k if k == EventKind::ProcessEnv as u8 => {
            let env = payload(record, &header)?;
            Ok(CaptureEvent::ProcessService {
                tgid: header.tgid,
                service_name: super::process::service_name_from_environ(env),
            })
        }
        k if k == EventKind::ProcessExit as u8 => {
            Ok(CaptureEvent::ProcessExit { tgid: header.tgid })
        }
        k if k == EventKind::ConnClose as u8 => Ok(CaptureEvent::Close {
            key,
            fd: header.fd,
            ts_ns: header.start_ns,
        }),
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener accepting IPv4) are shown as IPv4, as
/// every other tool shows them.
fn socket_addr(family: u16, addr: [u8; 16], port: u16) -> SocketAddr {
    let ip = if family == libc::AF_INET6 as u16 {
        let v6 = Ipv6Addr::from(addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::ConnTuple;

    fn header(kind: EventKind, captured: u32) -> EventHeader {
        EventHeader {
            kind: kind as u8,
            direction: Direction::Egress as u8,
            origin: ConnOrigin::Accepted as u8,
            flags: 0,
            tgid: 42,
            tid: 43,
            fd: 5,
            sock: 0xffff_8880_0000_1000,
            start_ns: 10,
            end_ns: 20,
            total_len: 100,
            captured_len: captured,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) POD value for the test.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_data_with_gap() {
        let mut rec = bytes_of(&header(EventKind::Data, 3));
        rec.extend_from_slice(&bytes_of(&TraceCtx::default()));
        rec.extend_from_slice(b"GET");
        let CaptureEvent::Data(d) = decode(&rec).expect("decodes") else {
            panic!("not data")
        };
        assert_eq!(&d.payload[..], b"GET");
        assert_eq!(d.gap(), 97);
        assert_eq!(d.direction, Direction::Egress);
        assert_eq!(d.key.tgid, 42);
        assert_eq!(d.kernel_ctx, None);
    }

    #[test]
    fn decodes_kernel_context() {
        let mut rec = bytes_of(&header(EventKind::Data, 3));
        let ctx = TraceCtx {
            kind: CTX_INJECTED,
            flags: 1,
            trace_id: [7; 16],
            span_id: [8; 8],
            ..TraceCtx::default()
        };
        rec.extend_from_slice(&bytes_of(&ctx));
        rec.extend_from_slice(b"GET");
        let CaptureEvent::Data(d) = decode(&rec).expect("decodes") else {
            panic!("not data")
        };
        let k = d.kernel_ctx.expect("context");
        assert_eq!(k.kind, KernelCtxKind::Injected);
        assert_eq!(k.parent_id, None);
        assert!(k.sampled);
        assert_eq!(&d.payload[..], b"GET");
    }

    #[test]
    fn rejects_short_records() {
        let rec = bytes_of(&header(EventKind::Data, 50));
        assert!(matches!(decode(&rec), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&rec[..10]), Err(DecodeError::Short { .. })));
        let mut bad = rec.clone();
        bad[0] = 99;
        assert_eq!(
            decode(&bad).err(),
            Some(DecodeError::UnknownKind { kind: 99 })
        );
    }

    #[test]
    fn decodes_open_and_maps_v4_in_v6() {
        let mut local = [0u8; 16];
        local[10] = 0xff;
        local[11] = 0xff;
        local[12..].copy_from_slice(&[127, 0, 0, 1]);
        let ev = ConnOpenEvent {
            header: header(EventKind::ConnOpen, 0),
            tuple: ConnTuple {
                family: libc::AF_INET6 as u16,
                local_port: 8080,
                remote_port: 5555,
                _pad: 0,
                local_addr: local,
                remote_addr: Ipv6Addr::LOCALHOST.octets(),
            },
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
        };
        let CaptureEvent::Open(o) = decode(&bytes_of(&ev)).expect("decodes") else {
            panic!("not open")
        };
        assert_eq!(o.local, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(o.remote, "[::1]:5555".parse().expect("addr"));
        assert_eq!(o.comm, "python3");
        assert_eq!(o.origin, ConnOrigin::Accepted);
    }
}
