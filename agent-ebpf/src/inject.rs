//! Trace-context propagation (`--inject-cgroup`): request contexts decided in the kernel. The
//! part that writes `traceparent` into outgoing requests is `sockmap` (injection object only).
//!
//! Why in the kernel: a server makes its downstream call microseconds after it read the
//! request, long before user space has seen either; the header must be written by then. So
//! the kernel gives each server request its ids (joining an incoming `traceparent`), keeps them
//! per thread (per process for Go, whose goroutines move between threads), and the sk_msg
//! program running inside the client's write copies them into the new header. Both sets of
//! ids travel to user space in the data records, and the spans take them.
//!
//! Scope (the hard rule): sk_msg only runs on sockets that `tw_sockops` added, and sock_ops
//! runs only for sockets of the cgroups the program is attached to. Nothing else is changed.
//! Within those sockets only a whole HTTP/1.x request head at the start of a write, with no
//! `traceparent`, gets one line; everything else passes untouched and is counted.
use agent_common::{
    CTX_SERVER, Direction, FdKey, KernelCounter, MAX_CAPTURE, MODE_PER_PROCESS, ProbeConfig,
    SockInfo, TraceCtx,
};
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_prandom_u32},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::{
    INJECT_CGROUPS, INJECTED, PROC_MODE, SCAN, SCRATCH, SERVER_CTX, SOCKETS, Scan, ServerCtx,
    config, count,
};

/// Bytes of a request head the kernel looks at. A longer head is passed untouched.
const SCAN_BYTES: u32 = 1024;
pub const LOWER: u64 = 0x2020_2020_2020_2020;

/// Is the current process in an injection cgroup?
#[inline(always)]
pub fn in_scope() -> bool {
    // SAFETY: helper without preconditions; map lookup returns a reference valid for this run.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    unsafe { INJECT_CGROUPS.get(&cgroup) }.is_some()
}

/// The key of the request context of the current thread: the thread, or for Go the process.
#[inline(always)]
pub fn ctx_key(pid_tgid: u64) -> u64 {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map lookup as above.
    match unsafe { PROC_MODE.get(&tgid) } {
        Some(mode) if *mode == MODE_PER_PROCESS => (tgid as u64) << 32,
        _ => pid_tgid,
    }
}

#[inline(always)]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        // SAFETY: helper without preconditions.
        let r = unsafe { bpf_get_prandom_u32() }.to_le_bytes();
        let mut j = 0;
        while j < 4 && i + j < N {
            out[i + j] = r[j];
            j += 1;
        }
        i += 4;
    }
    // An all-zero id is invalid; 2^-64 odds, but cheap to rule out.
    out[0] |= 1;
    out
}

/// The sampled flag of a trace the kernel starts: the same ratio rule as user space.
#[inline(always)]
pub fn root_flags(cfg: &ProbeConfig, trace_id: &[u8; 16]) -> u8 {
    if cfg.root_sample_bound == u64::MAX {
        return 1;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    (x < cfg.root_sample_bound) as u8
}

#[inline(always)]
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parses `00-{trace}-{parent}-{flags}` at `p` (W3C level 1, version 00 only; other versions
/// and anything invalid give None, and user space counts it).
#[inline(always)]
fn parse_traceparent(p: *const u8) -> Option<([u8; 16], [u8; 8], u8)> {
    // SAFETY (all reads): the caller guarantees 56 readable bytes at p.
    let at = |i: usize| unsafe { *p.add(i) };
    if at(0) != b'0' || at(1) != b'0' || at(2) != b'-' || at(35) != b'-' || at(52) != b'-' {
        return None;
    }
    let end = at(55);
    if end != b'\r' && end != b' ' && end != b'\t' {
        return None;
    }
    let mut trace = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        trace[i] = (nibble(at(3 + 2 * i))? << 4) | nibble(at(4 + 2 * i))?;
        i += 1;
    }
    let mut parent = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        parent[i] = (nibble(at(36 + 2 * i))? << 4) | nibble(at(37 + 2 * i))?;
        i += 1;
    }
    let flags = (nibble(at(53))? << 4) | nibble(at(54))?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags))
}

/// Does `word` (the first 4 bytes of a message) start an HTTP/1.x request?
#[inline(always)]
pub fn is_method(word: u32) -> bool {
    matches!(
        &word.to_le_bytes(),
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC"
    )
}

/// Case-insensitive header-name words (ASCII letters OR 0x20; '-', ':' are unchanged by it).
const TRACEPAR: u64 = u64::from_le_bytes(*b"tracepar");
const ENT_COLON: u32 = u32::from_le_bytes(*b"ent:");

/// The data-exit context stage, tail-called from `tw_exit_data` when injection is on, with the
/// record staged in the per-CPU scratch slot: decides the record's trace context, then sends it.
#[tracepoint]
pub fn tw_data_ctx(_ctx: TracePointContext) -> u32 {
    let cfg = config();
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch slot is ours for this program run (the tail call keeps the
    // CPU), and the exit stage left a complete record in it.
    let scratch = unsafe { &mut *scratch };
    if in_scope() {
        decide(cfg, scratch);
    }
    if crate::syscalls::submit_staged(cfg, scratch) {
        count(KernelCounter::DataEvents);
    }
    0
}

#[inline(always)]
fn decide(cfg: &ProbeConfig, scratch: &mut crate::maps::Scratch) {
    let head = scratch.event.header;
    let pid_tgid = ((head.tgid as u64) << 32) | head.tid as u64;
    let key = FdKey {
        tgid: head.tgid,
        fd: head.fd,
    };
    let Some(info) = SOCKETS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: map value pointer valid for this run; LRU entries are not freed under us.
    let info: &mut SockInfo = unsafe { &mut *info };
    if head.direction == Direction::Egress as u8 {
        if info.req_key != 0 {
            // The response to the request read on this socket.
            release(info.req_key, head.sock);
            info.req_key = 0;
        }
        // SAFETY: map lookup as above; copied out before removal.
        if let Some(done) = unsafe { INJECTED.get(&pid_tgid) }.copied() {
            scratch.event.ctx = done;
            let _ = INJECTED.remove(&pid_tgid);
        }
        return;
    }
    if info.req_key != 0 || head.captured_len < 16 {
        return;
    }
    let data = scratch.event.data.as_ptr();
    // SAFETY: the scratch data holds captured_len >= 16 bytes.
    let first = unsafe { core::ptr::read_unaligned(data as *const u32) };
    if !is_method(first) {
        return;
    }
    let mut ctx = TraceCtx {
        kind: CTX_SERVER,
        ..TraceCtx::default()
    };
    match find_incoming(data, &scratch.event.header.captured_len) {
        Some((trace, parent, flags)) => {
            ctx.trace_id = trace;
            ctx.parent_id = parent;
            ctx.flags = if cfg.parent_based != 0 {
                flags & 1
            } else {
                root_flags(cfg, &trace)
            };
        }
        None => {
            ctx.trace_id = random_bytes();
            ctx.flags = root_flags(cfg, &ctx.trace_id);
        }
    }
    ctx.span_id = random_bytes();
    let ckey = ctx_key(pid_tgid);
    open(ckey, head.sock, &ctx);
    info.req_key = ckey;
    scratch.event.ctx = ctx;
    count(KernelCounter::ServerContexts);
}

/// A thread (or Go process) starts serving a request with these ids.
#[inline(always)]
fn open(ckey: u64, sock: u64, ctx: &TraceCtx) {
    let mut entry = ServerCtx {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        sock,
        open: 1,
        flags: ctx.flags,
        valid: 1,
        _pad: [0; 2],
    };
    if let Some(old) = SERVER_CTX.get_ptr_mut(&ckey) {
        // SAFETY: map value pointer valid for this run.
        let old = unsafe { &mut *old };
        // Never wraps or resets: a count that is too high only costs links (calls start new
        // traces), a count that is too low would give a call the wrong parent.
        entry.open = old.open.saturating_add(1);
        *old = entry;
    } else {
        let _ = SERVER_CTX.insert(&ckey, &entry, 0);
    }
}

/// The request read on `sock` was answered (or its connection closed).
#[inline(always)]
pub fn release(ckey: u64, sock: u64) {
    if let Some(entry) = SERVER_CTX.get_ptr_mut(&ckey) {
        // SAFETY: map value pointer valid for this run.
        let entry = unsafe { &mut *entry };
        entry.open = entry.open.saturating_sub(1);
        if entry.sock == sock {
            entry.valid = 0;
        }
    }
}

/// An incoming `traceparent` in the captured request head at `data` (a map value with room to
/// spare after the captured bytes). The loop only finds the header; its value is parsed once,
/// after the loop, so the verifier walks the parser once rather than at every position.
#[inline(always)]
fn find_incoming(data: *const u8, captured: &u32) -> Option<([u8; 16], [u8; 8], u8)> {
    let st = scan_state()?;
    // SAFETY: volatile access to our per-CPU slot (see scan_state).
    unsafe { core::ptr::write_volatile(&mut st.head_end, 0) };
    // The loop's own copy of the bound: the verifier narrows the range of what the loop
    // compares at each exit, and a value still used afterwards would make every exit a
    // different state to walk.
    // SAFETY: a plain u32 in the scratch slot.
    let limit = unsafe { core::ptr::read_volatile(captured) };
    let mut i: u32 = 0;
    while i < SCAN_BYTES {
        if i + 14 >= limit {
            break;
        }
        // SAFETY: i < SCAN_BYTES and the scratch data is MAX_CAPTURE bytes followed by spill.
        let c = unsafe { *data.add(i as usize) };
        if c == b'\n' {
            // SAFETY: as above, i + 13 < MAX_CAPTURE.
            let (w0, w1) = unsafe {
                (
                    core::ptr::read_unaligned(data.add(i as usize + 1) as *const u64),
                    core::ptr::read_unaligned(data.add(i as usize + 9) as *const u32),
                )
            };
            if w0 | LOWER == TRACEPAR && w1 | LOWER as u32 == ENT_COLON {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(&mut st.head_end, i + 13) };
                break;
            }
        }
        i += 1;
    }
    // SAFETY: as above.
    let (mut at, limit) = unsafe {
        (
            core::ptr::read_volatile(&st.head_end),
            core::ptr::read_volatile(captured),
        )
    };
    if at == 0 || at + 2 + 56 > limit {
        return None;
    }
    let mut k = 0;
    while k < 2 {
        let s = data_at(data, at);
        if s == b' ' || s == b'\t' {
            at += 1;
        }
        k += 1;
    }
    // Through the mask the verifier sees the bound; 56 bytes at `at` stay inside the scratch
    // slot (data, then spill).
    let at = core::hint::black_box(at) as usize & (MAX_CAPTURE - 1);
    // SAFETY: at < MAX_CAPTURE; the spill after data makes at + 56 readable.
    parse_traceparent(unsafe { data.add(at) })
}

/// Loop state kept in a per-CPU map value: the verifier cannot know these values, so the states
/// of different paths through a loop compare equal and are pruned.
#[inline(always)]
pub fn scan_state() -> Option<&'static mut Scan> {
    // SAFETY: per-CPU slot, ours for this run.
    SCAN.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn data_at(data: *const u8, at: u32) -> u8 {
    let at = core::hint::black_box(at) as usize & (MAX_CAPTURE - 1);
    // SAFETY: at < MAX_CAPTURE inside the scratch slot.
    unsafe { *data.add(at) }
}
