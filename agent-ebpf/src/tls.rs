//! TLS plaintext from OpenSSL (`libssl.so.3`, and binaries that link it statically):
//! uprobes on `SSL_read`, `SSL_write`, `SSL_read_ex`, `SSL_write_ex` and their returns.
//!
//! Which connection an `SSL *` belongs to is learnt without struct offsets: with a socket
//! BIO (what curl, nginx, Python's `ssl` and most C programs use), OpenSSL's own read/write
//! syscalls run inside SSL_read/SSL_write on the same thread, and the syscall tracepoints see
//! them. Those name the socket and are not captured themselves (they are ciphertext); the
//! return probe then sends the plaintext as a data record of that socket, flagged TLS. A call
//! that made no syscall (bytes already buffered) uses the socket its `SSL *` used before.
//! Memory BIOs (Node's TLS) never show a nested syscall: the event loop reads the ciphertext and
//! then calls SSL_read on it, and writes what SSL_write produced right after SSL_write returns,
//! all on one thread. Their `SSL *` is tied to the socket read just before an SSL_read that
//! returned data, or to the next socket write of TLS records after an SSL_write, each within [`MEMORY_BIO_WINDOW_NS`] on the same thread (`TlsInferred`); calls
//! that fit neither are counted as `TlsNoSocket`.
//!
//! Needs uprobes (perf_event uprobe PMU) and helpers of kernel 5.8 (ring buffer).
use agent_common::{Direction, KernelCounter};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    maps::{
        LAST_TLS_READ, MEMORY_BIO_WINDOW_NS, NO_FD, PENDING_WRITES, PendingWrite, SSL_FDS,
        TLS_CALLS, TlsCall, config, count, mark_tls_thread, maybe_tls_thread,
    },
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
    mark_tls_thread(pid_tgid);
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

/// SSL_free: the `SSL *` may be reused for another connection; forget its socket.
#[uprobe]
pub fn tw_ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(ssl) = ctx.arg::<u64>(0) {
        let _ = SSL_FDS.remove(&[pid_tgid >> 32, ssl]);
    }
    0
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
    let direction = if call.direction == Direction::Egress as u8 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let fd = if call.fd != NO_FD {
        call.fd
    } else {
        // SAFETY: map lookup as above.
        match unsafe { SSL_FDS.get(&[tgid, call.ssl]) } {
            Some(fd) => *fd,
            None => match memory_bio_socket(pid_tgid, &call, direction, moved) {
                Some(fd) => fd,
                None => return 0,
            },
        }
    };
    if syscalls::send_plaintext(pid_tgid, fd, direction, call.buf, moved, call.start_ns) {
        count(KernelCounter::TlsEvents);
    }
    0
}

/// The socket of an `SSL *` behind a memory BIO, for a call that returned `moved` bytes: the
/// thread's TLS read just before an SSL_read (consumed, so it names one `SSL *` only). An
/// SSL_write's plaintext is sent now, unbound (its buffer may be freed before the ciphertext
/// is written), and the thread's next socket write names its socket (`take_pending_write`).
/// None when the call is not (yet) tied to a socket.
#[inline(always)]
fn memory_bio_socket(
    pid_tgid: u64,
    call: &TlsCall,
    direction: Direction,
    moved: u64,
) -> Option<u32> {
    if direction == Direction::Egress {
        if syscalls::send_unbound_plaintext(pid_tgid, call.buf, moved, call.start_ns) {
            let pending = PendingWrite {
                ssl: call.ssl,
                // SAFETY: helper without preconditions.
                end_ns: unsafe { bpf_ktime_get_ns() },
            };
            let _ = PENDING_WRITES.insert(&pid_tgid, &pending, 0);
        }
        return None;
    }
    // SAFETY: map lookup; the value is copied out.
    let read = unsafe { LAST_TLS_READ.get(&pid_tgid) }.copied();
    let _ = LAST_TLS_READ.remove(&pid_tgid);
    match read {
        Some(r)
            if call.start_ns >= r.end_ns && call.start_ns - r.end_ns <= MEMORY_BIO_WINDOW_NS =>
        {
            let _ = SSL_FDS.insert(&[pid_tgid >> 32, call.ssl], &r.fd, 0);
            count(KernelCounter::TlsInferred);
            Some(r.fd)
        }
        _ => {
            count(KernelCounter::TlsNoSocket);
            None
        }
    }
}

/// Called by the exit of a socket write on this thread whose bytes start like a TLS record:
/// the SSL_write parked just before, if any, produced them. True (and its `SSL *` is tied to
/// `fd`) when it is within the window.
#[inline(always)]
pub fn take_pending_write(pid_tgid: u64, fd: u32, write_start_ns: u64) -> bool {
    // SAFETY: map lookup; the value is copied out.
    let Some(pending) = (unsafe { PENDING_WRITES.get(&pid_tgid) }).copied() else {
        return false;
    };
    let _ = PENDING_WRITES.remove(&pid_tgid);
    if write_start_ns < pending.end_ns || write_start_ns - pending.end_ns > MEMORY_BIO_WINDOW_NS {
        count(KernelCounter::TlsNoSocket);
        return false;
    }
    let _ = SSL_FDS.insert(&[pid_tgid >> 32, pending.ssl], &fd, 0);
    count(KernelCounter::TlsInferred);
    true
}

/// Called by the exit of a socket read on this thread whose bytes start like a TLS record.
#[inline(always)]
pub fn note_tls_read(pid_tgid: u64, fd: u32, end_ns: u64) {
    let read = crate::maps::TlsRead {
        fd,
        _pad: 0,
        end_ns,
    };
    let _ = LAST_TLS_READ.insert(&pid_tgid, &read, 0);
}

/// Called by the syscall entry of the read/write family: is an SSL call in progress on this
/// thread?
#[inline(always)]
pub fn inside_ssl_call(pid_tgid: u64) -> bool {
    // SAFETY: map lookup; only presence is used.
    maybe_tls_thread(pid_tgid) && unsafe { TLS_CALLS.get(&pid_tgid) }.is_some()
}

/// The socket `fd` was used by a syscall inside the SSL call in progress on this thread: with a
/// socket BIO, it is that call's socket. Only called for TCP sockets: OpenSSL inside a call may
/// also touch other descriptors (Node's wakeup eventfd), which must not name the socket.
#[inline(always)]
pub fn ssl_call_used(pid_tgid: u64, fd: u32) {
    let Some(call) = TLS_CALLS.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: the pointer is into map memory, valid for this program run.
    let call = unsafe { &mut *call };
    call.fd = fd;
    let _ = SSL_FDS.insert(&[pid_tgid >> 32, call.ssl], &fd, 0);
}
