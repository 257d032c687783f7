//! TLS plaintext from OpenSSL (`libssl.so.3`, and binaries that link it statically):
//! uprobes on `SSL_read`, `SSL_write`, `SSL_read_ex`, `SSL_write_ex` and their returns.
//!
//! Which connection an `SSL *` belongs to is learnt without struct offsets: with a socket
//! BIO (what curl, nginx, Python's `ssl` and most C programs use), OpenSSL's own read/write
//! syscalls run inside SSL_read/SSL_write on the same thread, and the syscall tracepoints see
//! them. Those name the socket and are not captured themselves (they are ciphertext); the
//! return probe then sends the plaintext as a data record of that socket, flagged TLS. A call
//! that made no syscall (bytes already buffered) uses the socket its `SSL *` used before.
//! Memory BIOs (Node's TLS, which writes the ciphertext later from libuv) never show a nested
//! syscall: their calls are counted as `TlsNoSocket`.
//!
//! Needs uprobes (perf_event uprobe PMU) and helpers of kernel 5.8 (ring buffer).
use agent_common::{Direction, KernelCounter};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    maps::{NO_FD, SSL_FDS, TLS_CALLS, TlsCall, config, count},
    syscalls,
};

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: Direction, ex: bool) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        return 0;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let count_ptr = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let call = TlsCall {
        ssl,
        buf,
        count_ptr,
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        fd: NO_FD,
        direction: direction as u8,
        _pad: [0; 3],
    };
    let _ = TLS_CALLS.insert(&pid_tgid, &call, 0);
    0
}

#[uprobe]
pub fn tw_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Egress, false)
}

#[uprobe]
pub fn tw_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Egress, true)
}

#[uprobe]
pub fn tw_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Ingress, false)
}

#[uprobe]
pub fn tw_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::Ingress, true)
}

/// One return probe for the four calls: the entry recorded which one it was.
#[uretprobe]
pub fn tw_ssl_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: map lookup; the value is copied out before the entry is removed.
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    // All four return a C int: the register's upper half is not part of it.
    let ret: i32 = ctx.ret();
    let moved = if call.count_ptr != 0 {
        // SSL_*_ex return 1 on success and store the byte count.
        if ret != 1 {
            return 0;
        }
        // SAFETY: user memory through the fault-tolerant helper.
        match unsafe { bpf_probe_read_user(call.count_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    } else {
        if ret <= 0 {
            return 0;
        }
        ret as u64
    };
    if moved == 0 {
        return 0;
    }
    let tgid = pid_tgid >> 32;
    let fd = if call.fd != NO_FD {
        call.fd
    } else {
        // SAFETY: map lookup as above.
        match unsafe { SSL_FDS.get(&[tgid, call.ssl]) } {
            Some(fd) => *fd,
            None => {
                count(KernelCounter::TlsNoSocket);
                return 0;
            }
        }
    };
    let direction = if call.direction == Direction::Egress as u8 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    if syscalls::send_plaintext(pid_tgid, fd, direction, call.buf, moved, call.start_ns) {
        count(KernelCounter::TlsEvents);
    }
    0
}

/// Called by the syscall entry of the read/write family: is this syscall OpenSSL's own, inside
/// an SSL call on this thread? Then it names the call's socket, marks the socket TLS, and is
/// not captured.
#[inline(always)]
pub fn inside_ssl_call(pid_tgid: u64, fd: u32) -> bool {
    // SAFETY: the pointer is into map memory, valid for this program run.
    let Some(call) = TLS_CALLS.get_ptr_mut(&pid_tgid) else {
        return false;
    };
    // SAFETY: as above.
    let call = unsafe { &mut *call };
    call.fd = fd;
    let _ = SSL_FDS.insert(&[pid_tgid >> 32, call.ssl], &fd, 0);
    true
}
