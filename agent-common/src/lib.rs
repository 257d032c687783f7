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
    pub _pad: u8,
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

/// A [`EventKind::Data`] record: the header, then `captured_len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: EventHeader,
    pub data: [u8; MAX_CAPTURE],
}

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
    /// Ring-buffer fill (bytes) past which a submit wakes the reader; below it records are
    /// submitted with BPF_RB_NO_WAKEUP and the reader drains on its timer.
    pub wakeup_bytes: u32,
    pub offsets: KernelOffsets,
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
}

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
}
pub const KERNEL_COUNTERS: u32 = 5;

const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);
const _: () = assert!(core::mem::size_of::<ConnTuple>() == 40);
const _: () = assert!(core::mem::size_of::<ConnOpenEvent>() == 48 + 40 + 16);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 48 + MAX_CAPTURE);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 16 + 80);
const _: () = assert!(MAX_CAPTURE.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, made of integers and byte arrays with explicit
    // padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::SockInfo {}
}
