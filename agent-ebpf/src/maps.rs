//! Maps and the run-time configuration global. Sizes here are defaults; user space overrides
//! the ring buffer and table sizes at load time (`--ring-buffer-bytes`, `--max-connections`).
use agent_common::{
    DataEvent, FdKey, KERNEL_COUNTERS, KernelCounter, MAX_CAPTURE, ProbeConfig, SockInfo, TraceCtx,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};

/// Written by user space before load (aya `set_global`); all zero means "trace everything,
/// capture nothing".
#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig {
    agent_tgid: 0,
    capture_bytes: 0,
    select: 0,
    wakeup_bytes: 0,
    offsets: agent_common::KernelOffsets {
        task_files: 0,
        files_fdt: 0,
        fdtable_fd: 0,
        fdtable_max_fds: 0,
        file_private_data: 0,
        socket_type: 0,
        socket_file: 0,
        socket_sk: 0,
        sock_family: 0,
        sock_protocol: 0,
        sock_num: 0,
        sock_dport: 0,
        sock_rcv_saddr: 0,
        sock_daddr: 0,
        sock_v6_rcv_saddr: 0,
        sock_v6_daddr: 0,
        task_mm: 0,
        mm_env_start: 0,
        mm_env_end: 0,
        _pad: 0,
    },
    inject: 0,
    parent_based: 0,
    root_sample_bound: 0,
    logs: 0,
    _pad_logs: 0,
};

/// The configuration, behind a pointer the compiler cannot see through, so it cannot fold the
/// zeros above; each field is then one load from the frozen map, not a copy of the whole struct.
#[inline(always)]
pub fn config() -> &'static ProbeConfig {
    // SAFETY: CONFIG is a plain static; the loader patches its contents before any program runs
    // and the map is frozen (read-only) afterwards.
    unsafe { &*core::hint::black_box(&raw const CONFIG) }
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Tracked TCP sockets by (process, fd).
#[map]
pub static SOCKETS: LruHashMap<FdKey, SockInfo> = LruHashMap::with_max_entries(65536, 0);

/// (process, fd) pairs known not to be TCP sockets, or excluded by `--port`, checked before
/// anything else on every read/write of the host: a direct-mapped cache, one slot per hash of
/// the pair holding the pair itself (`ignored_key`). An array lookup is inlined by the JIT, where
/// a hash-map miss cost ~40 ns; a collision overwrites the older pair, which is classified again
/// on its next call (a few reads). Cleared by close().
#[map]
pub static IGNORED: Array<u64> = Array::with_max_entries(IGNORED_SLOTS, 0);

/// Slots of `IGNORED`: a power of two (the slot is the hash's top 16 bits), 512 KiB.
pub const IGNORED_SLOTS: u32 = 1 << 16;

/// A (process, fd) pair as one word; never 0, as no user process has tgid 0.
#[inline(always)]
pub fn ignored_key(key: &FdKey) -> u64 {
    (u64::from(key.tgid) << 32) | u64::from(key.fd)
}

/// The slot of a word in a table of `IGNORED_SLOTS`: Fibonacci hashing, the product's top 16
/// bits.
#[inline(always)]
fn ignored_slot(word: u64) -> u32 {
    (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u32
}

/// Is the pair remembered as ignored?
#[inline(always)]
pub fn is_ignored(key: &FdKey) -> bool {
    let word = ignored_key(key);
    IGNORED
        .get(ignored_slot(word))
        .is_some_and(|slot| *slot == word)
}

/// Remembers the pair as ignored (replacing whatever shared its slot).
#[inline(always)]
pub fn ignore(key: &FdKey) {
    let word = ignored_key(key);
    if let Some(slot) = IGNORED.get_ptr_mut(ignored_slot(word)) {
        // SAFETY: pointer into map memory, valid for this program run; an aligned 8-byte
        // store, so a racing CPU reads the old pair or the new one.
        unsafe { *slot = word };
    }
}

/// Forgets the pair if its slot holds it.
#[inline(always)]
pub fn unignore(key: &FdKey) {
    let word = ignored_key(key);
    if let Some(slot) = IGNORED.get_ptr_mut(ignored_slot(word)) {
        // SAFETY: as in `ignore`.
        unsafe {
            if *slot == word {
                *slot = 0;
            }
        }
    }
}

/// A syscall between its enter and exit tracepoints, by thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InFlight {
    pub fd: u32,
    pub kind: u32,
    /// Buffer, iovec array or msghdr, depending on `kind`.
    pub ptr: u64,
    /// Buffer length or iovec count.
    pub len: u64,
    pub start_ns: u64,
    pub sock: u64,
    pub direction: u8,
    pub _pad: [u8; 7],
    /// Injection: bytes of the first buffer of a write (the first iovec of writev/sendmsg):
    /// a head is only changed when it ends inside it.
    pub first_len: u64,
}

pub const KIND_BUF: u32 = 1;
pub const KIND_IOVEC: u32 = 2;
pub const KIND_MSGHDR: u32 = 3;
pub const KIND_NOCOPY: u32 = 4;
pub const KIND_CONNECT: u32 = 5;

#[map]
pub static IN_FLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU staging area for one data record, with room after the payload so that the verifier
/// can prove every copy in bounds from masks alone (offset < MAX, length < 2 * MAX): older
/// verifiers (5.10, 6.1) lose a compared bound once the compiler spills it to the stack.
#[repr(C)]
pub struct Scratch {
    /// Record bytes this CPU submitted without waking the reader (see `syscalls::submit_staged`).
    pub unannounced: u64,
    pub event: DataEvent,
    pub spill: [u8; 2 * MAX_CAPTURE],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Processes whose environment was already sent.
#[map]
pub static ENV_SENT: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KERNEL_COUNTERS, 0);

/// `--pid`/`--exe` selection: tgids to trace.
#[map]
pub static SELECT_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);
/// `--cgroup` selection: cgroup v2 ids to trace.
#[map]
pub static SELECT_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
/// `--port` selection: local or remote ports to trace.
#[map]
pub static SELECT_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn count(counter: KernelCounter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, programs do not migrate CPUs mid-run: no concurrent writer.
        unsafe { *slot += 1 };
    }
}

/// `--inject-cgroup`: cgroup v2 ids (the selected ones and their descendants) whose processes
/// get kernel request contexts.
#[map]
pub static INJECT_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// Process mode by tgid (MODE_PER_THREAD, MODE_PER_PROCESS), written by user space when it
/// first sees a process. Unknown processes get no parent links from the kernel.
#[map]
pub static PROC_MODE: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// The server request a thread (or a Go process) is serving, as the kernel decided its ids.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ServerCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The socket the request came on.
    pub sock: u64,
    /// Requests read and not answered yet by this thread or process.
    pub open: u32,
    pub flags: u8,
    /// The ids above belong to a request still open (cleared when that request is answered).
    pub valid: u8,
    pub _pad: [u8; 2],
}

#[map]
pub static SERVER_CTX: LruHashMap<u64, ServerCtx> = LruHashMap::with_max_entries(16384, 0);

/// What sk_msg wrote into the request of a write syscall in progress, by thread; the write's
/// exit tracepoint moves it into the data record.
#[map]
pub static INJECTED: LruHashMap<u64, TraceCtx> = LruHashMap::with_max_entries(4096, 0);

/// Slot 0: the context stage of the data exit (`tw_data_ctx`), loaded only with injection.
#[map]
pub static STAGES: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Per-CPU state of the sk_msg head scan (see `inject::scan_state`).
#[repr(C)]
pub struct Scan {
    pub line_end: u32,
    pub head_end: u32,
    pub flags: u32,
    pub content_length: u32,
    pub last_lf: u32,
    /// Header lines recorded in `line_start`.
    pub lines: u32,
    /// Offsets where lines start; [0] is just after the request line.
    pub line_start: [u32; 32],
}

#[map]
pub static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

/// An OpenSSL read or write between its uprobe and uretprobe, by thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// The `SSL *`.
    pub ssl: u64,
    pub buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the byte count is written; 0 for the classic calls.
    pub count_ptr: u64,
    pub start_ns: u64,
    /// The socket a syscall made inside this call used; [`NO_FD`] until one does.
    pub fd: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

pub const NO_FD: u32 = u32::MAX;

#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16384, 0);

/// Threads that ever entered SSL_read/SSL_write, as a filter in front of `TLS_CALLS`: a slot per
/// hash of the thread id, set on entry and never cleared. Every captured read/write asks
/// whether its thread is inside an SSL call; most threads never make one and stop at this
/// inlined array load instead of a hash lookup. A shared slot (or a reused thread id) only
/// sends a thread to the real lookup: never a wrong answer.
#[map]
pub static TLS_THREADS: Array<u8> = Array::with_max_entries(IGNORED_SLOTS, 0);

/// Marks the current thread as one that makes SSL calls.
#[inline(always)]
pub fn mark_tls_thread(pid_tgid: u64) {
    if let Some(slot) = TLS_THREADS.get_ptr_mut(ignored_slot(pid_tgid)) {
        // SAFETY: pointer into map memory, valid for this program run.
        unsafe { *slot = 1 };
    }
}

/// May the current thread be inside an SSL call? False only if it never entered one.
#[inline(always)]
pub fn maybe_tls_thread(pid_tgid: u64) -> bool {
    TLS_THREADS
        .get(ignored_slot(pid_tgid))
        .is_some_and(|slot| *slot != 0)
}

/// The socket behind an `SSL *`, learnt from the syscalls OpenSSL makes inside SSL_read and
/// SSL_write (a socket BIO reads and writes on the caller's thread). Keyed by [tgid, SSL *].
#[map]
pub static SSL_FDS: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(16384, 0);

/// Memory-BIO TLS (Node: OpenSSL never touches the socket; the event loop reads ciphertext,
/// then decrypts it with SSL_read, and writes what SSL_write produced right after it returns).
/// By thread: the last read of a socket whose bytes started like a TLS record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsRead {
    pub fd: u32,
    pub _pad: u32,
    pub end_ns: u64,
}

#[map]
pub static LAST_TLS_READ: LruHashMap<u64, TlsRead> = LruHashMap::with_max_entries(16384, 0);

/// By thread: an SSL_write whose socket is not known yet; the thread's next socket write of TLS
/// records, within [`MEMORY_BIO_WINDOW_NS`], carries its ciphertext.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingWrite {
    pub ssl: u64,
    pub end_ns: u64,
}

#[map]
pub static PENDING_WRITES: LruHashMap<u64, PendingWrite> = LruHashMap::with_max_entries(16384, 0);

/// How close (ns) the socket read before an SSL_read, or the socket write after an SSL_write,
/// must be on the same thread for the two to be taken as one another's ciphertext.
pub const MEMORY_BIO_WINDOW_NS: u64 = 200_000;
