//! Syscall tracepoints (`syscalls:sys_enter_*` / `sys_exit_*`, stable ABI since 4.7): the
//! read/write family carries payloads, accept/connect/close mark a connection's life.
//!
//! Cost discipline: every program first drops the agent's own threads, then a data syscall on an
//! fd we already classified costs one or two hash lookups. Only a never-seen (process, fd) pays
//! for the fd -> socket walk, once.
use agent_common::{
    ConnOpenEvent, ConnOrigin, DATA_OFFSET, DATA_TLS, DATA_TLS_UNBOUND, Direction, EventHeader,
    EventKind, FdKey, KernelCounter, MAX_CAPTURE, MAX_ENV, ProbeConfig, SELECT_CGROUP, SELECT_PID,
    SELECT_PORT, SOCK_TLS, SockInfo, TraceCtx,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_user, generated,
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    inject,
    maps::{
        ENV_SENT, EVENTS, IN_FLIGHT, INJECTED, InFlight, KIND_BUF, KIND_CONNECT, KIND_IOVEC,
        KIND_MSGHDR, KIND_NOCOPY, SCRATCH, SELECT_CGROUPS, SELECT_PIDS, SELECT_PORTS, SOCKETS,
        STAGES, Scratch, config, count, ignore, is_ignored, unignore,
    },
    sock, tls,
};

/// `sys_enter_*`: the syscall's arguments start at byte 16, 8 bytes each.
const ARG0: usize = 16;
/// `sys_exit_*`: the return value.
const RET: usize = 16;
const EINPROGRESS: i64 = 115;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// iovecs copied per readv/writev/sendmsg; the rest of the bytes are reported as a gap. gRPC
/// (C-core) writes one slice per frame header and payload piece: 20 calls in flight make a
/// sendmsg of dozens.
const MAX_IOV: u64 = 64;

/// Direct loads from the tracepoint record: the verifier allows them within the record's size,
/// and they cost a fraction of a bpf_probe_read_kernel call on a path run for every syscall.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: sys_enter_* records hold six 8-byte arguments from byte 16; n < 6 at every call.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(ARG0 + n * 8) as *const u64) }
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: sys_exit_* records hold the 8-byte return value at byte 16.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(RET) as *const i64) }
}

/// Ring-buffer wakeup policy: waking the reader on every record halves a busy server's
/// throughput, so records are submitted silently and the reader drains on a short timer,
/// unless the buffer is filling up.
#[inline(always)]
fn wakeup_flag(cfg: &ProbeConfig) -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// A zero LLVM cannot see: adjacent zero stores are otherwise merged into a call of the
/// byte-at-a-time memset subprogram (the BPF backend does not inline odd-sized or unaligned
/// ones), which the verifier then walks byte by byte on every path; with port selection on,
/// the sys_exit program went over the verifier's million-instruction budget.
#[inline(always)]
fn zero<T: Default>() -> T {
    core::hint::black_box(T::default())
}

#[inline(always)]
fn header(kind: EventKind, pid_tgid: u64, fd: u32, sock: u64) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        direction: zero(),
        origin: zero(),
        flags: zero(),
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
        sock,
        start_ns: zero(),
        end_ns: zero(),
        total_len: zero(),
        captured_len: zero(),
    }
}

/// Is the current process one the operator selected (`--pid`, `--exe`, `--cgroup`)?
#[inline(always)]
pub fn process_selected(cfg: &ProbeConfig, tgid: u32) -> bool {
    let by_process = cfg.select & (SELECT_PID | SELECT_CGROUP);
    if by_process == 0 {
        return true;
    }
    // SAFETY: map lookups return references into map memory valid for this program run.
    if cfg.select & SELECT_PID != 0 && unsafe { SELECT_PIDS.get(&tgid) }.is_some() {
        return true;
    }
    if cfg.select & SELECT_CGROUP != 0 {
        // SAFETY: helper without preconditions.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        if unsafe { SELECT_CGROUPS.get(&cgroup) }.is_some() {
            return true;
        }
    }
    false
}

/// Classifies `fd` of the current process: a selected TCP socket gets a socket-table entry and
/// a ConnOpen record; anything else is remembered as ignored. Returns the `struct sock *`.
#[inline(always)]
fn track(cfg: &ProbeConfig, pid_tgid: u64, fd: u32, origin: ConnOrigin) -> Option<u64> {
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    let Some(sk) = sock::tcp_sock_of_fd(fd, &cfg.offsets) else {
        ignore(&key);
        return None;
    };
    let tuple = sock::tuple_of(sk, &cfg.offsets);
    if cfg.select & SELECT_PORT != 0 {
        // black_box keeps LLVM from OR-ing the two map-value pointers, which the verifier
        // rejects ("pointer |= pointer prohibited").
        // SAFETY: map lookups as above.
        let local = core::hint::black_box(unsafe { SELECT_PORTS.get(&tuple.local_port) }.is_some());
        // SAFETY: as above.
        let remote =
            core::hint::black_box(unsafe { SELECT_PORTS.get(&tuple.remote_port) }.is_some());
        if !local && !remote {
            ignore(&key);
            return None;
        }
    }
    unignore(&key);
    let info = SockInfo {
        sock: sk,
        req_key: zero(),
        body_left: zero(),
        flags: zero(),
    };
    let _ = SOCKETS.insert(&key, &info, 0);
    // Before the open record, so user space knows the process when it sees the connection.
    send_env(cfg, pid_tgid);
    let mut event = ConnOpenEvent {
        header: header(EventKind::ConnOpen, pid_tgid, fd, sk),
        tuple,
        comm: current_comm(),
    };
    event.header.origin = origin as u8;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    event.header.start_ns = now;
    event.header.end_ns = now;
    if EVENTS
        .output::<ConnOpenEvent>(&event, wakeup_flag(cfg))
        .is_err()
    {
        count(KernelCounter::RingFull);
    }
    count(KernelCounter::ConnsOpened);
    Some(sk)
}

/// The calling thread's `comm`. aya's helper zero-fills a byte array first, which LLVM turns
/// into a call of a byte-at-a-time memset subprogram the verifier walks byte by byte on every
/// path through the classification; two 8-byte stores instead (the kernel writes all 16 bytes,
/// zeroes on failure).
#[inline(always)]
fn current_comm() -> [u8; 16] {
    let mut comm: [u64; 2] = [zero(), zero()];
    // SAFETY: the helper writes at most 16 bytes into a 16-byte buffer.
    unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), 16) };
    // SAFETY: [u64; 2] and [u8; 16] have the same size, and every byte pattern is a valid u8.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(comm) }
}

/// Sends the environment block of a process the first time one of its connections is
/// tracked. Short-lived clients (curl, a Go CLI) are often gone before user space could read
/// /proc/PID/environ, and `OTEL_SERVICE_NAME` would be lost. User space keeps only the
/// service-name variables of it.
#[inline(always)]
fn send_env(cfg: &ProbeConfig, pid_tgid: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map lookup as above.
    if unsafe { ENV_SENT.get(&tgid) }.is_some() {
        return;
    }
    let _ = ENV_SENT.insert(&tgid, &1, 0);
    let off = &cfg.offsets;
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(mm) = sock::read::<u64>(task, off.task_mm) else {
        return;
    };
    if mm == 0 {
        return;
    }
    let (Some(start), Some(end)) = (
        sock::read::<u64>(mm, off.mm_env_start),
        sock::read::<u64>(mm, off.mm_env_end),
    ) else {
        return;
    };
    if end <= start {
        return;
    }
    let total = end - start;
    let mut len = total;
    if len > MAX_ENV as u64 {
        len = MAX_ENV as u64;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is ours for this program run.
    let scratch = unsafe { &mut *scratch };
    if !copy_user(scratch.event.data.as_mut_ptr(), 0, start, len) {
        count(KernelCounter::ReadFailed);
        return;
    }
    let len = len & (2 * MAX_CAPTURE as u64 - 1);
    if len > MAX_CAPTURE as u64 {
        return;
    }
    let head = header(EventKind::ProcessEnv, pid_tgid, 0, 0);
    let _ = submit_scratch(cfg, scratch, head, total, len);
}

/// Sends the scratch slot's record: `head`, then `captured` payload bytes already copied there.
/// `moved` is what the syscall moved (clamped to u32). False when the ring buffer was full.
#[inline(always)]
fn submit_scratch(
    cfg: &ProbeConfig,
    scratch: &mut Scratch,
    head: EventHeader,
    moved: u64,
    captured: u64,
) -> bool {
    stage(scratch, head, moved, captured);
    submit_staged(cfg, scratch)
}

/// Completes the record in the scratch slot, without a trace context.
#[inline(always)]
fn stage(scratch: &mut Scratch, mut head: EventHeader, moved: u64, captured: u64) {
    head.total_len = if moved > u32::MAX as u64 {
        u32::MAX
    } else {
        moved as u32
    };
    head.captured_len = captured as u32;
    // Word by word: a plain assignment let LLVM merge the header's zero fields into a call of
    // the byte-at-a-time memset subprogram, on every record (and on every path the verifier
    // walks).
    const HEAD_WORDS: usize = core::mem::size_of::<EventHeader>() / 8;
    // SAFETY: EventHeader is HEAD_WORDS * 8 bytes of plain integers (no padding: checked in
    // agent-common), 8-byte aligned at the start of DataEvent.
    let words = unsafe { core::mem::transmute::<EventHeader, [u64; HEAD_WORDS]>(head) };
    let dst = (&raw mut scratch.event.header).cast::<u64>();
    for (i, word) in words.into_iter().enumerate() {
        // SAFETY: inside the header, as above.
        unsafe { dst.add(i).write_volatile(word) };
    }
    // `= TraceCtx::default()` compiles to a call of a byte-at-a-time memset subprogram, on the
    // path of every record: five 8-byte stores instead.
    let ctx = (&raw mut scratch.event.ctx).cast::<u64>();
    const WORDS: usize = core::mem::size_of::<TraceCtx>() / 8;
    for i in 0..WORDS {
        // SAFETY: TraceCtx is WORDS * 8 bytes of plain integers, 8-byte aligned in DataEvent.
        unsafe { ctx.add(i).write_volatile(0) };
    }
}

/// Sends the record staged in the scratch slot. False when the ring buffer was full.
#[inline(always)]
pub fn submit_staged(cfg: &ProbeConfig, scratch: &mut Scratch) -> bool {
    // As in copy_user: a mask the verifier sees right before the call bounds the size by the
    // scratch slot (captured <= MAX_CAPTURE already, so it changes nothing).
    let captured = scratch.event.header.captured_len;
    let len = core::hint::black_box(captured as usize) & (2 * MAX_CAPTURE - 1);
    let size = DATA_OFFSET + len;
    // SAFETY: size <= header + MAX_CAPTURE, inside the scratch slot.
    let record =
        unsafe { core::slice::from_raw_parts((&raw const scratch.event).cast::<u8>(), size) };
    // Wakeup policy of the data path: asking the ring how full it is (bpf_ringbuf_query) reads
    // the producer and consumer positions every CPU writes, a shared cache line on every record
    // (1.3% of a saturated nginx's samples). Each CPU instead counts what it submitted
    // silently and wakes the reader once that passes its share of the threshold.
    scratch.unannounced += size as u64;
    let flag = if scratch.unannounced >= cfg.wakeup_bytes as u64 {
        scratch.unannounced = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<[u8]>(record, flag).is_err() {
        count(KernelCounter::RingFull);
        return false;
    }
    true
}

/// The socket behind `fd` if its bytes are to be captured, classifying it on first sight.
///
/// A syscall OpenSSL makes inside SSL_read/SSL_write (see `tls`) names that call's socket and
/// is not captured: it is ciphertext, and so is anything later on a socket marked TLS. Only
/// sockets pay for that check: reads and writes on files and pipes stay at two lookups.
#[inline(always)]
fn traced_sock(cfg: &ProbeConfig, pid_tgid: u64, fd: u32) -> Option<u64> {
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    // Files, pipes and untraced sockets stop here, at an inlined array lookup.
    if is_ignored(&key) {
        return None;
    }
    // SAFETY: map lookups as above.
    if let Some(info) = unsafe { SOCKETS.get(&key) } {
        let (sock, flags) = (info.sock, info.flags);
        if tls::inside_ssl_call(pid_tgid) {
            tls::ssl_call_used(pid_tgid, fd);
            let _ = tls_sock(cfg, pid_tgid, fd);
            return None;
        }
        if flags & SOCK_TLS != 0 {
            return None;
        }
        return Some(sock);
    }
    if !process_selected(cfg, key.tgid) {
        return None;
    }
    if tls::inside_ssl_call(pid_tgid) {
        if tls_sock(cfg, pid_tgid, fd).is_some() {
            tls::ssl_call_used(pid_tgid, fd);
        }
        return None;
    }
    track(cfg, pid_tgid, fd, ConnOrigin::Unknown)
}

/// Marks the process's socket `fd` as carrying TLS, tracking it first if it is new (and
/// selected). Returns its `struct sock *`.
#[inline(always)]
fn tls_sock(cfg: &ProbeConfig, pid_tgid: u64, fd: u32) -> Option<u64> {
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    if let Some(info) = SOCKETS.get_ptr_mut(&key) {
        // SAFETY: pointer into map memory, valid for this program run.
        let info = unsafe { &mut *info };
        info.flags |= SOCK_TLS;
        return Some(info.sock);
    }
    if is_ignored(&key) || !process_selected(cfg, key.tgid) {
        return None;
    }
    let sk = track(cfg, pid_tgid, fd, ConnOrigin::Unknown)?;
    if let Some(info) = SOCKETS.get_ptr_mut(&key) {
        // SAFETY: as above.
        unsafe { (*info).flags |= SOCK_TLS };
    }
    Some(sk)
}

/// Sends `moved` bytes of TLS plaintext at `buf` that an SSL_write behind a memory BIO produced,
/// before its socket is known (see `tls`): no socket, flagged unbound; a TlsBind record names
/// the socket. False when nothing was sent.
#[inline(always)]
pub fn send_unbound_plaintext(pid_tgid: u64, buf: u64, moved: u64, start_ns: u64) -> bool {
    let cfg = config();
    if !process_selected(cfg, (pid_tgid >> 32) as u32) {
        return false;
    }
    let mut head = header(EventKind::Data, pid_tgid, u32::MAX, 0);
    head.direction = Direction::Egress as u8;
    head.flags = DATA_TLS | DATA_TLS_UNBOUND;
    head.start_ns = start_ns;
    submit_plaintext(cfg, head, buf, moved)
}

/// Sends `moved` bytes of TLS plaintext at `buf` as a data record of socket `fd` (from the
/// OpenSSL return probe). False when nothing was sent.
#[inline(always)]
pub fn send_plaintext(
    pid_tgid: u64,
    fd: u32,
    direction: Direction,
    buf: u64,
    moved: u64,
    start_ns: u64,
) -> bool {
    let cfg = config();
    let Some(sk) = tls_sock(cfg, pid_tgid, fd) else {
        return false;
    };
    let mut head = header(EventKind::Data, pid_tgid, fd, sk);
    head.direction = direction as u8;
    head.flags = DATA_TLS;
    head.start_ns = start_ns;
    submit_plaintext(cfg, head, buf, moved)
}

/// Copies up to the capture size of the `moved` plaintext bytes at `buf` after `head` (its end
/// time is now) and sends the record.
#[inline(always)]
fn submit_plaintext(cfg: &ProbeConfig, mut head: EventHeader, buf: u64, moved: u64) -> bool {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the per-CPU scratch slot is ours for this program run.
    let scratch = unsafe { &mut *scratch };
    let mut limit = cfg.capture_bytes as u64;
    if limit > MAX_CAPTURE as u64 {
        limit = MAX_CAPTURE as u64;
    }
    if limit > moved {
        limit = moved;
    }
    if !copy_user(scratch.event.data.as_mut_ptr(), 0, buf, limit) {
        count(KernelCounter::ReadFailed);
        return false;
    }
    let captured = limit & (2 * MAX_CAPTURE as u64 - 1);
    if captured > MAX_CAPTURE as u64 {
        return false;
    }
    if captured < moved {
        count(KernelCounter::Truncated);
    }
    // SAFETY: helper without preconditions.
    head.end_ns = unsafe { bpf_ktime_get_ns() };
    stage(scratch, head, moved, captured);
    submit_staged(cfg, scratch)
}

#[inline(always)]
pub fn is_agent(cfg: &ProbeConfig, pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 == cfg.agent_tgid
}

/// Common entry of the read/write family: remember the arguments until the exit tracepoint.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, kind: u32, direction: Direction) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent(cfg, pid_tgid) {
        return 0;
    }
    let (ptr, len) = match kind {
        KIND_NOCOPY => (0, 0),
        _ => (arg(ctx, 1), arg(ctx, 2)),
    };
    if let Some(mut call) = begin(cfg, pid_tgid, arg(ctx, 0) as u32, kind, direction, ptr, len) {
        // Only a captured call reads the clock: files, pipes and untraced sockets stop at the
        // lookups in `begin`.
        // SAFETY: helper without preconditions.
        call.start_ns = unsafe { bpf_ktime_get_ns() };
        let _ = IN_FLIGHT.insert(&pid_tgid, &call, 0);
    }
    0
}

/// A read/write-family call on `fd`, if its socket is traced: what its exit needs.
#[inline(always)]
pub fn begin(
    cfg: &ProbeConfig,
    pid_tgid: u64,
    fd: u32,
    kind: u32,
    direction: Direction,
    ptr: u64,
    len: u64,
) -> Option<InFlight> {
    // A socket to capture, or (sock 0) a traced process's stdout/stderr write with `logs` on.
    let sk = match traced_sock(cfg, pid_tgid, fd) {
        Some(sk) => sk,
        None if log_write(cfg, pid_tgid, fd, kind, direction) => 0,
        None => return None,
    };
    let first_len =
        if cfg.inject != 0 && sk != 0 && direction == Direction::Egress && inject::in_scope() {
            first_buffer_len(kind, ptr, len)
        } else {
            0
        };
    Some(InFlight {
        fd,
        kind,
        ptr,
        len,
        // Set by the caller once the call is known to be captured.
        start_ns: 0,
        sock: sk,
        direction: direction as u8,
        _pad: [0; 7],
        first_len,
    })
}

/// A write to stdout or stderr (fd 1 or 2) by a process with a tracked connection, with
/// `logs` on: its bytes are a log line of the request the thread serves (user space decides
/// which, and whether any).
#[inline(always)]
fn log_write(cfg: &ProbeConfig, pid_tgid: u64, fd: u32, kind: u32, direction: Direction) -> bool {
    if cfg.logs == 0 || direction != Direction::Egress || !(fd == 1 || fd == 2) {
        return false;
    }
    if kind != KIND_BUF && kind != KIND_IOVEC {
        return false;
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map lookup; only presence is used.
    unsafe { ENV_SENT.get(&tgid) }.is_some()
}

/// Length of the first buffer a write passes: its buffer, or its first iovec.
#[inline(always)]
fn first_buffer_len(kind: u32, ptr: u64, len: u64) -> u64 {
    let iov = match kind {
        KIND_BUF => return len,
        KIND_IOVEC => ptr,
        KIND_MSGHDR => {
            // struct user_msghdr: msg_iov at 16.
            // SAFETY: user memory through the fault-tolerant helper.
            match unsafe { bpf_probe_read_user((ptr + 16) as *const u64) } {
                Ok(iov) => iov,
                Err(_) => return 0,
            }
        }
        _ => return 0,
    };
    // SAFETY: as above; iov_len is the second word of struct iovec.
    unsafe { bpf_probe_read_user((iov + 8) as *const u64) }.unwrap_or(0)
}

#[tracepoint]
pub fn tw_enter_read(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_BUF, Direction::Ingress)
}

#[tracepoint]
pub fn tw_enter_write(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_BUF, Direction::Egress)
}

#[tracepoint]
pub fn tw_enter_readv(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_IOVEC, Direction::Ingress)
}

#[tracepoint]
pub fn tw_enter_writev(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_IOVEC, Direction::Egress)
}

#[tracepoint]
pub fn tw_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_MSGHDR, Direction::Ingress)
}

#[tracepoint]
pub fn tw_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_MSGHDR, Direction::Egress)
}

/// sendfile/splice move file bytes the agent never sees; their count keeps body framing right.
#[tracepoint]
pub fn tw_enter_sendfile(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, KIND_NOCOPY, Direction::Egress)
}

/// Copies up to `want` bytes from user memory at `src` into the scratch area at `offset`.
/// Returns false when the read faulted.
#[inline(always)]
fn copy_user(data: *mut u8, offset: u64, src: u64, want: u64) -> bool {
    let mut n = want;
    if n > MAX_CAPTURE as u64 {
        n = MAX_CAPTURE as u64;
    }
    if n == 0 {
        return true;
    }
    // The masks are what the verifier checks, right before the call: black_box keeps the
    // compiler from folding them into the comparison above (which it may spill and older
    // verifiers then forget). They change no value: offset < MAX and n <= MAX already.
    let offset = core::hint::black_box(offset) & (MAX_CAPTURE as u64 - 1);
    let n = core::hint::black_box(n) & (2 * MAX_CAPTURE as u64 - 1);
    // SAFETY: offset < MAX_CAPTURE and n < 2 * MAX_CAPTURE, and the scratch area is
    // 3 * MAX_CAPTURE bytes long, so the destination range is inside it; the source is user
    // memory read through the fault-tolerant helper.
    let rc = unsafe {
        generated::bpf_probe_read_user(data.add(offset as usize).cast(), n as u32, src as *const _)
    };
    rc == 0
}

/// Copies the first `limit` bytes described by an iovec array.
#[inline(always)]
fn copy_iovecs(data: *mut u8, iov: u64, iovcnt: u64, limit: u64) -> u64 {
    let mut copied: u64 = 0;
    let mut i: u64 = 0;
    while i < MAX_IOV {
        if i >= iovcnt || copied >= limit {
            break;
        }
        // SAFETY: user memory through the fault-tolerant helper.
        let Ok(entry) = (unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }) else {
            count(KernelCounter::ReadFailed);
            break;
        };
        let mut n = entry[1];
        if n > limit - copied {
            n = limit - copied;
        }
        if !copy_user(data, copied, entry[0], n) {
            count(KernelCounter::ReadFailed);
            break;
        }
        copied += n & (2 * MAX_CAPTURE as u64 - 1);
        i += 1;
    }
    copied
}

/// Common exit of the read/write family: one Data record with the bytes actually moved.
#[tracepoint]
pub fn tw_exit_data(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: map lookup as above; the value is copied out before the entry is removed.
    let Some(call) = (unsafe { IN_FLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = IN_FLIGHT.remove(&pid_tgid);
    finish::<_, true>(&ctx, config(), pid_tgid, &call, ret(&ctx));
    0
}

/// The end of a read/write-family `call` that moved `moved` bytes (or failed): its Data
/// record. `STAGED`: hand the record to the injection context stage (a tail call between
/// tracepoint programs; the fexit path never injects, see `fexit`).
#[inline(always)]
pub fn finish<C: EbpfContext, const STAGED: bool>(
    ctx: &C,
    cfg: &ProbeConfig,
    pid_tgid: u64,
    call: &InFlight,
    moved: i64,
) {
    if moved <= 0 {
        if cfg.inject != 0 {
            // A failed write may still have run sk_msg; its ids must not stick to the next one.
            let _ = INJECTED.remove(&pid_tgid);
        }
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is ours for this program run.
    let scratch = unsafe { &mut *scratch };
    let moved = moved as u64;
    let mut limit = cfg.capture_bytes as u64;
    if limit > MAX_CAPTURE as u64 {
        limit = MAX_CAPTURE as u64;
    }
    if limit > moved {
        limit = moved;
    }
    let data = scratch.event.data.as_mut_ptr();
    let captured = match call.kind {
        KIND_BUF => {
            if copy_user(data, 0, call.ptr, limit) {
                limit
            } else {
                count(KernelCounter::ReadFailed);
                0
            }
        }
        KIND_IOVEC => copy_iovecs(data, call.ptr, call.len, limit),
        KIND_MSGHDR => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24 (64-bit ABI).
            // SAFETY: user memory through the fault-tolerant helper.
            match unsafe { bpf_probe_read_user((call.ptr + 16) as *const [u64; 2]) } {
                Ok([iov, iovlen]) => copy_iovecs(data, iov, iovlen, limit),
                Err(_) => 0,
            }
        }
        _ => 0,
    };
    let captured = captured & (2 * MAX_CAPTURE as u64 - 1);
    if captured > MAX_CAPTURE as u64 || captured > moved {
        return;
    }
    if captured < moved {
        count(KernelCounter::Truncated);
    }
    // The exit-only paths (fexit, tp_btf: not STAGED) read the clock once, at the exit, for
    // both ends of the call; a second read would cost as much as the lookups (pvclock in a VM).
    let end_ns = if STAGED {
        // SAFETY: helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        call.start_ns
    };
    // Memory-BIO TLS (see `tls`): a TLS record read or written by a thread that just called,
    // or is about to call, OpenSSL on it.
    // A client's first request often leaves in one write with its last handshake records
    // (TLS 1.3: change-cipher-spec, then encrypted records), so any record type counts.
    let log = call.sock == 0;
    if !log
        && captured >= 2
        && scratch.event.data[1] == 3
        && (20..=23).contains(&scratch.event.data[0])
    {
        if call.direction == Direction::Ingress as u8 {
            tls::note_tls_read(pid_tgid, call.fd, end_ns);
        } else if tls::take_pending_write(pid_tgid, call.fd, call.start_ns) {
            // The thread's unbound plaintext is this socket's; its ciphertext is not sent, and
            // the socket is marked TLS from now on.
            if let Some(sk) = tls_sock(cfg, pid_tgid, call.fd) {
                emit_now(cfg, header(EventKind::TlsBind, pid_tgid, call.fd, sk));
            }
            return;
        }
    }
    let kind = if log { EventKind::Log } else { EventKind::Data };
    let mut head = header(kind, pid_tgid, call.fd, call.sock);
    head.direction = call.direction;
    head.start_ns = call.start_ns;
    head.end_ns = end_ns;
    stage(scratch, head, moved, captured);
    if STAGED && cfg.inject != 0 && !log {
        // The context stage decides the record's trace context and sends it; it only returns
        // here if the tail call failed.
        // SAFETY: the slot holds a program of this type, loaded by user space.
        unsafe { STAGES.tail_call(ctx, 0) };
    }
    if submit_staged(cfg, scratch) {
        count(KernelCounter::DataEvents);
    }
}

/// accept/accept4 exit: the returned fd is the server side of a new connection.
#[tracepoint]
pub fn tw_exit_accept(ctx: TracePointContext) -> u32 {
    accepted(config(), bpf_get_current_pid_tgid(), ret(&ctx));
    0
}

/// An accept that returned `fd` (or an error).
#[inline(always)]
pub fn accepted(cfg: &ProbeConfig, pid_tgid: u64, fd: i64) {
    if fd < 0 || is_agent(cfg, pid_tgid) || !process_selected(cfg, (pid_tgid >> 32) as u32) {
        return;
    }
    let _ = track(cfg, pid_tgid, fd as u32, ConnOrigin::Accepted);
}

#[tracepoint]
pub fn tw_enter_connect(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_agent(cfg, pid_tgid) || !process_selected(cfg, (pid_tgid >> 32) as u32) {
        return 0;
    }
    let call = InFlight {
        fd: arg(&ctx, 0) as u32,
        kind: KIND_CONNECT,
        ptr: 0,
        len: 0,
        start_ns: 0,
        sock: 0,
        direction: 0,
        _pad: [0; 7],
        first_len: 0,
    };
    let _ = IN_FLIGHT.insert(&pid_tgid, &call, 0);
    0
}

/// connect exit: the fd is the client side of a new connection (non-blocking sockets return
/// EINPROGRESS; the local port is already bound then).
#[tracepoint]
pub fn tw_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: map lookup as above.
    let Some(call) = (unsafe { IN_FLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = IN_FLIGHT.remove(&pid_tgid);
    if call.kind == KIND_CONNECT {
        connected(config(), pid_tgid, call.fd, ret(&ctx));
    }
    0
}

/// A connect on `fd` that returned `rc`: 0, or EINPROGRESS for a non-blocking socket (whose
/// local port is already bound then), makes it the client side of a new connection.
#[inline(always)]
pub fn connected(cfg: &ProbeConfig, pid_tgid: u64, fd: u32, rc: i64) {
    if rc != 0 && rc != -EINPROGRESS {
        return;
    }
    let _ = track(cfg, pid_tgid, fd, ConnOrigin::Connected);
}

/// sched:sched_process_exit (stable since 2.6): a process closes its descriptors on exit without
/// close(2), which would leave a response framed by the connection's end open forever. Sent
/// once, for the thread-group leader of a process that had a tracked connection.
#[tracepoint]
pub fn tw_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0;
    }
    // SAFETY: map lookup as above.
    if unsafe { ENV_SENT.get(&tgid) }.is_none() {
        return 0;
    }
    let _ = ENV_SENT.remove(&tgid);
    emit_now(config(), header(EventKind::ProcessExit, pid_tgid, 0, 0));
    0
}

/// Sends a header-only record stamped with the current time.
#[inline(always)]
fn emit_now(cfg: &ProbeConfig, mut event: EventHeader) {
    // SAFETY: helper without preconditions.
    event.start_ns = unsafe { bpf_ktime_get_ns() };
    event.end_ns = event.start_ns;
    if EVENTS
        .output::<EventHeader>(&event, wakeup_flag(cfg))
        .is_err()
    {
        count(KernelCounter::RingFull);
    }
}

#[tracepoint]
pub fn tw_enter_close(ctx: TracePointContext) -> u32 {
    closed(config(), bpf_get_current_pid_tgid(), arg(&ctx, 0) as u32);
    0
}

/// The process closes `fd`: forget it, and end its connection if it was one.
#[inline(always)]
pub fn closed(cfg: &ProbeConfig, pid_tgid: u64, fd: u32) {
    if is_agent(cfg, pid_tgid) {
        return;
    }
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd,
    };
    unignore(&key);
    // SAFETY: map lookup as above.
    let Some(info) = (unsafe { SOCKETS.get(&key) }).copied() else {
        return;
    };
    let _ = SOCKETS.remove(&key);
    if cfg.inject != 0 && info.req_key != 0 {
        inject::release(info.req_key, info.sock);
    }
    emit_now(
        cfg,
        header(EventKind::ConnClose, pid_tgid, key.fd, info.sock),
    );
}
