//! Wire types shared by the kernel programs (`agent-ebpf`) and user space (`agent`).
//!
//! Everything here is `#[repr(C)]` and checked by const size asserts, so the two sides cannot
//! drift. The `user` feature adds `aya::Pod` impls for use with maps and globals.
#![no_std]

/// Largest payload slice one event can carry. A power of two so the kernel side can mask the
/// length, which is how the verifier is convinced the copy is bounded.
pub const MAX_CAPTURE: usize = 8192;
/// Default bytes captured per read/write syscall (`--capture-bytes`).
pub const DEFAULT_CAPTURE: u32 = 4096;

/// What a ring-buffer record is; the first byte of every record.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A TCP socket was accepted, connected, or first seen on a read/write.
    ConnOpen = 1,
    /// Bytes read from or written to a tracked socket.
    Data = 2,
    /// A tracked socket's file descriptor was closed.
    ConnClose = 3,
    /// The environment block of a process seen for the first time, sent with its first
    /// connection so that `OTEL_SERVICE_NAME` is known even when the process exits before user
    /// space can read /proc.
    ProcessEnv = 4,
    /// A process that had tracked connections exited: its sockets were closed without close(2).
    ProcessExit = 5,
    /// The TLS plaintext a thread wrote last ([`DATA_TLS_UNBOUND`]) belongs to this socket.
    TlsBind = 6,
    /// Bytes a traced process wrote to its stdout or stderr (`fd` 1 or 2), with `logs` on.
    Log = 7,
}

/// Bytes of a process's environment block sent with [`EventKind::ProcessEnv`].
pub const MAX_ENV: usize = MAX_CAPTURE;

/// Which way bytes moved, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// read, readv, recvfrom, recvmsg
    Ingress = 0,
    /// write, writev, sendto, sendmsg, sendfile
    Egress = 1,
}

/// How the kernel learnt about a connection; a hint for which side is the server.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnOrigin {
    /// Seen first on a read/write (opened before the agent, inherited, or dup'ed).
    Unknown = 0,
    /// Returned by accept/accept4: the process is the server.
    Accepted = 1,
    /// Made by connect: the process is the client.
    Connected = 2,
}

/// Header that starts every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u8,
    /// A [`Direction`] (data events).
    pub direction: u8,
    /// A [`ConnOrigin`] (open events).
    pub origin: u8,
    /// [`DATA_TLS`] (data events).
    pub flags: u8,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// Kernel address of the `struct sock`: identifies the connection while it is open.
    pub sock: u64,
    /// CLOCK_MONOTONIC at syscall entry.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC at syscall exit.
    pub end_ns: u64,
    /// Bytes the syscall moved (its return value).
    pub total_len: u32,
    /// Bytes that follow this header in the record (<= total_len, <= capture size).
    pub captured_len: u32,
}

/// Addresses of a TCP connection, local first, as the kernel's `sock_common` holds them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnTuple {
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    /// Host byte order.
    pub remote_port: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// A [`EventKind::ConnOpen`] record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    pub header: EventHeader,
    pub tuple: ConnTuple,
    /// The calling thread's `comm`, used when the process is gone before user space looks.
    pub comm: [u8; 16],
}

/// Trace context the kernel decided for a data record (only with `--inject-cgroup`): the ids
/// a server span must take so that the calls it causes, whose `traceparent` the kernel writes
/// microseconds later, name it as their parent; and the ids the kernel wrote into a request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    /// [`CTX_NONE`], [`CTX_SERVER`] or [`CTX_INJECTED`].
    pub kind: u8,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    pub _pad: [u8; 6],
    pub trace_id: [u8; 16],
    /// Server: the server span's id. Injected: the client span's id written in the header.
    pub span_id: [u8; 8],
    /// Server: the caller's span from an incoming `traceparent`. Injected: the server span the
    /// call was made for. All zero: none.
    pub parent_id: [u8; 8],
}

pub const CTX_NONE: u8 = 0;
/// The record read a request head; the kernel gave its server span these ids.
pub const CTX_SERVER: u8 = 1;
/// The record wrote a request head into which the kernel inserted a `traceparent`.
pub const CTX_INJECTED: u8 = 2;

/// A [`EventKind::Data`] or [`EventKind::ProcessEnv`] record: the header, the kernel's trace
/// context, then `captured_len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: EventHeader,
    pub ctx: TraceCtx,
    pub data: [u8; MAX_CAPTURE],
}

/// Where the payload starts in a [`DataEvent`] record.
pub const DATA_OFFSET: usize =
    core::mem::size_of::<EventHeader>() + core::mem::size_of::<TraceCtx>();

/// Struct member offsets inside the running kernel, resolved from its BTF by user space at load
/// time (aya-ebpf has no CO-RE relocations), and handed to the kernel programs as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_type: u32,
    pub socket_file: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_protocol: u32,
    pub sock_num: u32,
    pub sock_dport: u32,
    pub sock_rcv_saddr: u32,
    pub sock_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_v6_daddr: u32,
    pub task_mm: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub _pad: u32,
}

/// Run-time settings for the kernel programs, written by user space before load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// The agent's own tgid: never traced.
    pub agent_tgid: u32,
    /// Bytes of payload copied per syscall, <= [`MAX_CAPTURE`].
    pub capture_bytes: u32,
    /// Bitset of [`SELECT_PID`], [`SELECT_CGROUP`], [`SELECT_PORT`]; 0 traces everything.
    pub select: u32,
    /// Bytes of records a CPU submits with BPF_RB_NO_WAKEUP (the reader drains on its timer)
    /// before one submit wakes the reader; rare records also wake it once the ring holds this
    /// much.
    pub wakeup_bytes: u32,
    pub offsets: KernelOffsets,
    /// Non-zero: `--inject-cgroup` is set; the kernel keeps per-thread request contexts for
    /// processes in the injection cgroups and the sk_msg program writes `traceparent`.
    pub inject: u32,
    /// Non-zero: the sampler follows a parent's sampled flag (the `parentbased_*` samplers).
    pub parent_based: u32,
    /// A trace the kernel starts is sampled when its id's last 8 bytes (big endian) shifted
    /// right by one are below this bound: the Go SDK's ratio rule; u64::MAX samples all.
    pub root_sample_bound: u64,
    /// Non-zero: writes of traced processes to their stdout and stderr (fds 1 and 2) are sent
    /// as [`EventKind::Log`] records (`logs.enabled`: their lines become OTLP log records).
    pub logs: u32,
    pub _pad_logs: u32,
}

pub const SELECT_PID: u32 = 1;
pub const SELECT_CGROUP: u32 = 2;
pub const SELECT_PORT: u32 = 4;

/// Key of the kernel's socket table: one entry per (process, fd) that is a tracked TCP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of the kernel's socket table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockInfo {
    pub sock: u64,
    /// Injection: the request context key (thread or process) of the server request read on
    /// this socket and not answered yet; 0 when none.
    pub req_key: u64,
    /// Injection, client sockets: request body bytes still to be written before the next
    /// request head; [`BODY_UNKNOWN`] when the framing cannot be followed (chunked), which
    /// stops injection on the connection.
    pub body_left: u32,
    /// [`SOCK_TLS`] once an OpenSSL call was seen using the socket.
    pub flags: u32,
}

/// The socket carries TLS: its syscall bytes are ciphertext and are not captured; the plaintext
/// comes from the OpenSSL uprobes.
pub const SOCK_TLS: u32 = 1;
/// `EventHeader::flags` of a data record: the payload is TLS plaintext (from OpenSSL).
pub const DATA_TLS: u8 = 1;
/// With [`DATA_TLS`]: plaintext an SSL_write produced before its socket is known (memory BIO);
/// a [`EventKind::TlsBind`] record of the same thread names the socket right after.
pub const DATA_TLS_UNBOUND: u8 = 2;

pub const BODY_UNKNOWN: u32 = u32::MAX;

/// Process modes (kernel map PROC_MODE): how a process maps requests to threads.
pub const MODE_PER_THREAD: u8 = 1;
/// Goroutines move between OS threads: one context per process.
pub const MODE_PER_PROCESS: u8 = 2;

/// Index into the per-CPU counters array; user space sums across CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug)]
pub enum KernelCounter {
    /// Records that did not fit in the ring buffer.
    RingFull = 0,
    /// Payload bytes that were truncated to the capture size.
    Truncated = 1,
    /// Failed reads of user or kernel memory.
    ReadFailed = 2,
    /// Data events submitted.
    DataEvents = 3,
    /// Connections tracked.
    ConnsOpened = 4,
    /// Request heads into which `traceparent` was inserted.
    Injected = 5,
    /// Not injected: the request already carries a `traceparent` (its ids are used).
    InjectHasTraceparent = 6,
    /// Not injected: the head is not whole in one write (or one writev piece).
    InjectSplitHead = 7,
    /// Not injected: the connection's body framing is unknown (chunked request bodies).
    InjectUnknownBody = 8,
    /// Not injected: the write is not one the agent traces, so no span could carry the ids.
    InjectUntraced = 9,
    /// Not injected: the head is longer than the kernel's scan window.
    InjectHeadTooLong = 10,
    /// Not injected: bpf_msg_push_data failed (memory).
    InjectFailed = 11,
    /// Request heads after the first one in a single write (pipelining): left unchanged.
    InjectPipelined = 12,
    /// Injected without a parent: the thread (or Go process) served several requests, or none
    /// known, so the call starts a new trace.
    InjectNoParent = 13,
    /// Server request contexts the kernel created.
    ServerContexts = 14,
    /// TLS plaintext records sent (OpenSSL uprobes).
    TlsEvents = 15,
    /// OpenSSL calls whose socket was never seen (e.g. data already buffered by a call the
    /// agent missed): their plaintext is lost.
    TlsNoSocket = 16,
    /// OpenSSL calls behind a memory BIO (Node) tied to their socket by the thread's socket
    /// read just before (SSL_read) or write just after (SSL_write).
    TlsInferred = 17,
}
pub const KERNEL_COUNTERS: u32 = 18;

const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);
const _: () = assert!(core::mem::size_of::<ConnTuple>() == 40);
const _: () = assert!(core::mem::size_of::<ConnOpenEvent>() == 48 + 40 + 16);
const _: () = assert!(core::mem::size_of::<TraceCtx>() == 40);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 48 + 40 + MAX_CAPTURE);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 16 + 80 + 16 + 8);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 24);
const _: () = assert!(MAX_CAPTURE.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, made of integers and byte arrays with explicit
    // padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::SockInfo {}
}
