//! The part of injection that changes traffic, built only into the injection object
//! (`agent-ebpf-inject`): its socket map needs CAP_NET_ADMIN to exist, which the tracing-only
//! agent must not need. `sock_ops` (attached to the `--inject-cgroup` cgroups only) adds their
//! client sockets to [`CLIENT_SOCKS`]; `sk_msg` on that map writes `traceparent` into whole
//! HTTP/1.x request heads. See `inject` for the contexts it reads.
use agent_common::{
    BODY_UNKNOWN, CTX_INJECTED, FdKey, KernelCounter, ProbeConfig, SockInfo, TraceCtx,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_msg_pull_data},
    macros::{map, sk_msg, sock_ops},
    maps::SockHash,
    programs::{SkMsgContext, SockOpsContext},
};

use crate::{
    inject::{LOWER, ctx_key, is_method, random_bytes, root_flags, scan_state},
    maps::{
        IN_FLIGHT, INJECTED, KIND_BUF, KIND_IOVEC, KIND_MSGHDR, PROC_MODE, SERVER_CTX, SOCKETS,
        Scan, config, count,
    },
};

const SK_PASS: u32 = 1;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
const BPF_ANY: u64 = 0;
/// Bytes of a request head the kernel looks at. A longer head is passed untouched.
const SCAN_BYTES: u32 = 1024;
/// `traceparent: 00-{32}-{16}-{2}\r\n`
const LINE: u32 = 70;
/// Bytes from the start of an injected message made linear (one scatterlist element).
const LINEAR_BYTES: u32 = 4096;

/// Case-insensitive header-name words (ASCII letters OR 0x20; '-', ':' are unchanged by it).
const TRACEPAR: u64 = u64::from_le_bytes(*b"tracepar");
const ENT_COLON: u32 = u32::from_le_bytes(*b"ent:");
const CONTENT_: u64 = u64::from_le_bytes(*b"content-");
const LENGTH: u64 = u64::from_le_bytes(*b"length:\0");
const TRANSFER: u64 = u64::from_le_bytes(*b"transfer");

/// Key of the client sockets sock_ops adds to [`CLIENT_SOCKS`].
#[repr(C)]
pub struct SockKey {
    pub family: u32,
    pub local_port: u32,
    pub remote_port: u32,
    pub local_ip: [u32; 4],
    pub remote_ip: [u32; 4],
}

/// Client TCP sockets made in the injection cgroups; the sk_msg program runs on their writes.
/// The kernel removes a socket when it closes.
#[map]
pub static CLIENT_SOCKS: SockHash<SockKey> = SockHash::with_max_entries(65536, 0);

/// Adds each client TCP connection made in an injection cgroup to [`CLIENT_SOCKS`], so the
/// sk_msg program runs on its writes. Runs in softirq context, so no process helpers are used:
/// kernels before 6.10 reject bpf_get_current_pid_tgid here.
#[sock_ops]
pub fn tw_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 0;
    }
    let family = ctx.family();
    let mut key = SockKey {
        family,
        local_port: ctx.local_port(),
        remote_port: ctx.remote_port(),
        local_ip: [0; 4],
        remote_ip: [0; 4],
    };
    if family == 10 {
        let ops = ctx.ops;
        let mut i = 0;
        while i < 4 {
            // SAFETY: direct loads of the context's fields, one word at a time (the verifier
            // rejects a copy through a moved context pointer).
            unsafe {
                key.local_ip[i] = core::ptr::read_volatile(&(*ops).local_ip6[i]);
                key.remote_ip[i] = core::ptr::read_volatile(&(*ops).remote_ip6[i]);
            }
            i += 1;
        }
    } else {
        key.local_ip[0] = ctx.local_ip4();
        key.remote_ip[0] = ctx.remote_ip4();
    }
    // SAFETY: the context pointer is the kernel's bpf_sock_ops for this call.
    let _ = CLIENT_SOCKS.update(&mut key, unsafe { &mut *ctx.ops }, BPF_ANY);
    0
}

/// Writes `traceparent` into a request head at the start of a write on a client socket of an
/// injection cgroup. Always passes the message.
#[sk_msg]
pub fn tw_inject(ctx: SkMsgContext) -> u32 {
    inject(&ctx);
    SK_PASS
}

#[inline(always)]
fn inject(ctx: &SkMsgContext) {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        return;
    }
    let size = ctx.size();
    // The write this message belongs to, as the syscall tracepoints saw it: which socket (for
    // its body state) and how long its first buffer is.
    // SAFETY: map lookup as above.
    let Some(call) = (unsafe { IN_FLIGHT.get(&pid_tgid) }).copied() else {
        if looks_like_request(ctx) {
            count(KernelCounter::InjectUntraced);
        }
        return;
    };
    let key = FdKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: call.fd,
    };
    let Some(info) = SOCKETS.get_ptr_mut(&key) else {
        if looks_like_request(ctx) {
            count(KernelCounter::InjectUntraced);
        }
        return;
    };
    // SAFETY: map value pointer valid for this run.
    let info: &mut SockInfo = unsafe { &mut *info };
    if info.body_left == BODY_UNKNOWN {
        if looks_like_request(ctx) {
            count(KernelCounter::InjectUnknownBody);
        }
        return;
    }
    if info.body_left > 0 {
        // Body bytes of the previous request: never looked at. Whatever follows them in this
        // write is a pipelined request and stays as it is.
        if size > info.body_left {
            info.body_left = 0;
            count(KernelCounter::InjectPipelined);
        } else {
            info.body_left -= size;
        }
        return;
    }
    if size < 16 {
        return;
    }
    let want = if size < SCAN_BYTES { size } else { SCAN_BYTES };
    if ctx.data_end() - ctx.data() < want as usize {
        // SAFETY: the helper linearises [0, want) of the message; it checks its arguments.
        if unsafe { bpf_msg_pull_data(ctx.msg, 0, want, 0) } != 0 {
            return;
        }
    }
    if !looks_like_request(ctx) {
        return;
    }
    let Some(st) = scan_state() else {
        return;
    };
    scan(ctx, st);
    // SAFETY: volatile reads of our per-CPU scan state (see scan()).
    let (line_end, head_end, flags, length) = unsafe {
        (
            core::ptr::read_volatile(&st.line_end),
            core::ptr::read_volatile(&st.head_end),
            core::ptr::read_volatile(&st.flags),
            core::ptr::read_volatile(&st.content_length),
        )
    };
    if head_end == 0 {
        // The head does not end in what was scanned: it continues in a later write, or is
        // longer than the scan window. Its framing is unknown from here on.
        info.body_left = BODY_UNKNOWN;
        count(if size > SCAN_BYTES {
            KernelCounter::InjectHeadTooLong
        } else {
            KernelCounter::InjectSplitHead
        });
        return;
    }
    // Body framing of this request, for the next writes.
    let after = size.saturating_sub(head_end);
    if flags & SCAN_CHUNKED != 0 {
        info.body_left = BODY_UNKNOWN;
    } else if flags & SCAN_LENGTH != 0 && length > after {
        info.body_left = length - after;
    } else {
        info.body_left = 0;
        let body = if flags & SCAN_LENGTH != 0 { length } else { 0 };
        if after > body {
            count(KernelCounter::InjectPipelined);
        }
    }
    if flags & SCAN_TRACEPARENT != 0 {
        count(KernelCounter::InjectHasTraceparent);
        return;
    }
    if flags & SCAN_TOO_MANY != 0 {
        info.body_left = BODY_UNKNOWN;
        count(KernelCounter::InjectHeadTooLong);
        return;
    }
    if flags & SCAN_HTTP1 == 0 || line_end == 0 || line_end >= head_end {
        return;
    }
    let first_len = match call.kind {
        KIND_BUF | KIND_IOVEC | KIND_MSGHDR => call.first_len,
        _ => 0,
    };
    if head_end as u64 > first_len {
        count(KernelCounter::InjectSplitHead);
        return;
    }
    write_header(ctx, cfg, pid_tgid, line_end);
}

const SCAN_TRACEPARENT: u32 = 1;
const SCAN_LENGTH: u32 = 2;
const SCAN_CHUNKED: u32 = 4;
/// The request line ends in ` HTTP/1.0` or ` HTTP/1.1`.
const SCAN_HTTP1: u32 = 8;
/// More header lines than the scan records.
const SCAN_TOO_MANY: u32 = 16;
/// Header lines the scan records per request head.
const MAX_LINES: u32 = 32;

#[inline(always)]
fn looks_like_request(ctx: &SkMsgContext) -> bool {
    let data = ctx.data();
    if data + 4 > ctx.data_end() {
        return false;
    }
    // SAFETY: 4 bytes checked readable above.
    is_method(unsafe { core::ptr::read_unaligned(data as *const u32) })
}

/// One pass over the head: where each line starts (up to [`MAX_LINES`]) and where the head
/// ends. The loop does no more than that, so the verifier has few branches to remember per
/// byte; the lines are looked at afterwards.
#[inline(always)]
fn scan(ctx: &SkMsgContext, st: &mut Scan) {
    // SAFETY: volatile writes/reads of our per-CPU slot keep the values out of the verifier's
    // sight (see scan_state).
    unsafe {
        core::ptr::write_volatile(&mut st.line_end, 0);
        core::ptr::write_volatile(&mut st.head_end, 0);
        core::ptr::write_volatile(&mut st.flags, 0);
        core::ptr::write_volatile(&mut st.content_length, 0);
        core::ptr::write_volatile(&mut st.last_lf, u32::MAX - 4);
        core::ptr::write_volatile(&mut st.lines, 0);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let mut i: u32 = 0;
    while i < SCAN_BYTES {
        let p = data + i as usize;
        if p + 1 > end {
            break;
        }
        // SAFETY: p < end, checked above.
        let c = unsafe { *(p as *const u8) };
        if c == b'\n' {
            // SAFETY: as above.
            unsafe {
                let last = core::ptr::read_volatile(&st.last_lf);
                if last.wrapping_add(2) == i {
                    // "\n\r\n": the empty line that ends the head.
                    core::ptr::write_volatile(&mut st.head_end, i + 1);
                    break;
                }
                core::ptr::write_volatile(&mut st.last_lf, i);
                let n = core::ptr::read_volatile(&st.lines);
                if n < MAX_LINES {
                    core::ptr::write_volatile(
                        &mut st.line_start[(n as usize) & (MAX_LINES as usize - 1)],
                        i + 1,
                    );
                    core::ptr::write_volatile(&mut st.lines, n + 1);
                }
            }
        }
        i += 1;
    }
    // SAFETY: as above.
    let (head_end, lines) = unsafe {
        (
            core::ptr::read_volatile(&st.head_end),
            core::ptr::read_volatile(&st.lines),
        )
    };
    if head_end == 0 || lines == 0 {
        return;
    }
    // SAFETY: as above.
    let line_end = unsafe { core::ptr::read_volatile(&st.line_start[0]) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut st.line_end, line_end) };
    // The request line: "... HTTP/1.x\r\n".
    if let Some(word) = read_u64(ctx, line_end.wrapping_sub(10)) {
        if word == u64::from_le_bytes(*b"HTTP/1.0") || word == u64::from_le_bytes(*b"HTTP/1.1") {
            or_flag(st, SCAN_HTTP1);
        }
    }
    let mut k: u32 = 1;
    while k < MAX_LINES {
        if k >= lines {
            break;
        }
        // SAFETY: as above.
        let at = unsafe { core::ptr::read_volatile(&st.line_start[k as usize]) };
        header_line(ctx, st, at);
        k += 1;
    }
    if lines >= MAX_LINES {
        // More header lines than looked at: one of the others could be a traceparent or a
        // body length. Leave this request alone.
        or_flag(st, SCAN_TOO_MANY);
    }
}

/// 8 bytes of the message at `off`, if it has them.
#[inline(always)]
fn read_u64(ctx: &SkMsgContext, off: u32) -> Option<u64> {
    let off = core::hint::black_box(off) as usize & (2 * SCAN_BYTES as usize - 1);
    let p = ctx.data() + off;
    if p + 8 > ctx.data_end() {
        return None;
    }
    // SAFETY: 8 bytes at p checked readable.
    Some(unsafe { core::ptr::read_unaligned(p as *const u64) })
}

#[inline(always)]
fn or_flag(st: &mut Scan, flag: u32) {
    // SAFETY: as in scan_state.
    unsafe {
        let f = core::ptr::read_volatile(&st.flags);
        core::ptr::write_volatile(&mut st.flags, f | flag);
    }
}

/// Looks at the header line starting at offset `at`.
#[inline(always)]
fn header_line(ctx: &SkMsgContext, st: &mut Scan, at: u32) {
    let (Some(w0), Some(w1)) = (read_u64(ctx, at), read_u64(ctx, at.wrapping_add(8))) else {
        return;
    };
    let w0 = w0 | LOWER;
    if w0 == TRACEPAR && (w1 as u32) | LOWER as u32 == ENT_COLON {
        or_flag(st, SCAN_TRACEPARENT);
    } else if w0 == TRANSFER {
        or_flag(st, SCAN_CHUNKED);
    } else if w0 == CONTENT_ && (w1 | LOWER) & 0x00ff_ffff_ffff_ffff == LENGTH {
        // Up to 9 digits after "content-length:" and its spaces (16 bytes read from +15).
        let (Some(d0), Some(d1)) = (
            read_u64(ctx, at.wrapping_add(15)),
            read_u64(ctx, at.wrapping_add(23)),
        ) else {
            or_flag(st, SCAN_CHUNKED);
            return;
        };
        let mut value: u32 = 0;
        let mut digits = 0;
        let mut k = 0;
        while k < 16 {
            let word = if k < 8 { d0 } else { d1 };
            let c = (word >> ((k & 7) * 8)) as u8;
            if c.is_ascii_digit() {
                if digits < 9 {
                    value = value * 10 + (c - b'0') as u32;
                }
                digits += 1;
            } else if !(digits == 0 && (c == b' ' || c == b'\t')) {
                break;
            }
            k += 1;
        }
        if digits > 0 && digits < 10 {
            or_flag(st, SCAN_LENGTH);
            // SAFETY: as in scan_state.
            unsafe { core::ptr::write_volatile(&mut st.content_length, value) };
        } else {
            // A length we cannot hold: the framing is unknown.
            or_flag(st, SCAN_CHUNKED);
        }
    }
}

/// Inserts `traceparent: 00-{trace}-{span}-{flags}\r\n` after the request line and records
/// the ids for the write's data record.
#[inline(always)]
fn write_header(ctx: &SkMsgContext, cfg: &ProbeConfig, pid_tgid: u64, line_end: u32) {
    let mut done = TraceCtx {
        kind: CTX_INJECTED,
        ..TraceCtx::default()
    };
    let tgid = (pid_tgid >> 32) as u32;
    // Linked only when the process's threading is known and exactly one request is open on
    // this thread (or Go process) with the ids still its own.
    // SAFETY: map lookups as above.
    let known = unsafe { PROC_MODE.get(&tgid) }.is_some();
    let parent = if known {
        unsafe { SERVER_CTX.get(&ctx_key(pid_tgid)) }
            .copied()
            .filter(|s| s.open == 1 && s.valid == 1)
    } else {
        None
    };
    match parent {
        Some(server) => {
            done.trace_id = server.trace_id;
            done.parent_id = server.span_id;
            done.flags = server.flags;
        }
        None => {
            done.trace_id = random_bytes();
            done.flags = root_flags(cfg, &done.trace_id);
            count(KernelCounter::InjectNoParent);
        }
    }
    done.span_id = random_bytes();
    if ctx.push_data(line_end, LINE, 0).is_err() {
        count(KernelCounter::InjectFailed);
        return;
    }
    // One linear piece from the start of the message through the new line and the rest of the
    // head (and a little more): written to the socket as one buffer, so the request leaves in
    // one segment as it would have without us. The kernel splits the scatterlist at the
    // insertion point; three small segments where there was one made connections to servers
    // whose accept queue overflows (SYN cookies) fail now and then.
    let size = ctx.size();
    let linear = if size < LINEAR_BYTES {
        size
    } else {
        LINEAR_BYTES
    };
    // SAFETY: the helper checks its range against the (now longer) message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, linear, 0) } != 0 {
        // The room is in the message but cannot be reached: take it out again.
        let _ = ctx.pop_data(line_end, LINE, 0);
        count(KernelCounter::InjectFailed);
        return;
    }
    let at = core::hint::black_box(line_end) as usize & (SCAN_BYTES as usize - 1);
    let data = ctx.data() + at;
    if data + LINE as usize > ctx.data_end() {
        let _ = ctx.pop_data(line_end, LINE, 0);
        count(KernelCounter::InjectFailed);
        return;
    }
    let out = data as *mut u8;
    // SAFETY: LINE bytes at data checked writable above.
    unsafe {
        let prefix = b"traceparent: 00-";
        let mut i = 0;
        while i < prefix.len() {
            *out.add(i) = prefix[i];
            i += 1;
        }
        hex_into(out.add(16), &done.trace_id);
        *out.add(48) = b'-';
        hex_into(out.add(49), &done.span_id);
        *out.add(65) = b'-';
        hex_into(out.add(66), &[done.flags]);
        *out.add(68) = b'\r';
        *out.add(69) = b'\n';
    }
    let _ = INJECTED.insert(&pid_tgid, &done, 0);
    count(KernelCounter::Injected);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// # Safety
/// `out` must have room for `2 * bytes.len()` bytes.
#[inline(always)]
unsafe fn hex_into(out: *mut u8, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // SAFETY: the caller's guarantee.
        unsafe {
            *out.add(2 * i) = HEX[(b >> 4) as usize];
            *out.add(2 * i + 1) = HEX[(b & 15) as usize];
        }
        i += 1;
    }
}
