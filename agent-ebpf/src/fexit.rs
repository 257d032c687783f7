//! The fast path of syscall capture: one fexit program per syscall, on its `__x64_sys_*`
//! entry point, instead of an enter and an exit tracepoint.
//!
//! Why it is cheaper, where the kernel allows it (fentry/fexit need BTF and a kernel >= 5.5
//! without lockdown; user space falls back to the tracepoints of `syscalls` otherwise):
//! - no `syscalls:*` tracepoint is enabled, so no task on the host takes the syscall
//!   slow path (`SYSCALL_WORK_SYSCALL_TRACEPOINT`) that an enabled syscall tracepoint forces on
//!   every syscall of every process;
//! - one program run per syscall, with its arguments and return value together: no per-thread
//!   `IN_FLIGHT` entry written at entry and deleted at exit;
//! - a call that failed or moved nothing (EAGAIN reads of an event loop) is dropped before any
//!   map lookup.
//!
//! What it cannot do: the time a write was entered (a client request's start) is not known at
//! exit, so records carry the exit time as their start (the write's own duration, microseconds,
//! moves to the span's gap); and trace-context injection needs the write's first buffer length
//! at entry and a tail call into a tracepoint stage, so an agent that injects uses tracepoints.
//!
//! The syscall arguments are in the `struct pt_regs` the entry point receives (x86-64 ABI:
//! di, si, dx); user space attaches this path only on x86-64.
use agent_common::Direction;
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::fexit, programs::FExitContext};

use crate::{
    maps::{KIND_BUF, KIND_IOVEC, KIND_MSGHDR, KIND_NOCOPY, config},
    syscalls,
};

/// The head of x86-64's `struct pt_regs`, up to the registers that carry the first three
/// syscall arguments. Loads go through the BTF-typed pointer the entry point gets, which the
/// verifier checks against the kernel's own layout.
#[repr(C)]
struct PtRegs {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    bp: u64,
    bx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    ax: u64,
    cx: u64,
    dx: u64,
    si: u64,
    di: u64,
}

/// The syscall's first three arguments.
#[inline(always)]
fn args(ctx: &FExitContext) -> (u64, u64, u64) {
    let regs: *const PtRegs = ctx.arg(0);
    // SAFETY: `regs` is the entry point's `const struct pt_regs *` argument, a kernel pointer
    // the verifier types from BTF; these loads are within the struct.
    unsafe { ((*regs).di, (*regs).si, (*regs).dx) }
}

/// The syscall's return value: fexit sees it after the arguments (here, one).
#[inline(always)]
fn ret(ctx: &FExitContext) -> i64 {
    ctx.arg(1)
}

#[inline(always)]
fn data(ctx: &FExitContext, kind: u32, direction: Direction) -> u32 {
    let moved = ret(ctx);
    if moved <= 0 {
        return 0;
    }
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if syscalls::is_agent(cfg, pid_tgid) {
        return 0;
    }
    let (fd, mut ptr, mut len) = args(ctx);
    if kind == KIND_NOCOPY {
        (ptr, len) = (0, 0);
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    if let Some(call) = syscalls::begin(cfg, pid_tgid, fd as u32, kind, direction, ptr, len, now) {
        syscalls::finish::<_, false>(ctx, cfg, pid_tgid, &call, moved);
    }
    0
}

#[fexit(function = "__x64_sys_read")]
pub fn tw_fx_read(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_BUF, Direction::Ingress)
}

#[fexit(function = "__x64_sys_recvfrom")]
pub fn tw_fx_recvfrom(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_BUF, Direction::Ingress)
}

#[fexit(function = "__x64_sys_write")]
pub fn tw_fx_write(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_BUF, Direction::Egress)
}

#[fexit(function = "__x64_sys_sendto")]
pub fn tw_fx_sendto(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_BUF, Direction::Egress)
}

#[fexit(function = "__x64_sys_readv")]
pub fn tw_fx_readv(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_IOVEC, Direction::Ingress)
}

#[fexit(function = "__x64_sys_writev")]
pub fn tw_fx_writev(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_IOVEC, Direction::Egress)
}

#[fexit(function = "__x64_sys_recvmsg")]
pub fn tw_fx_recvmsg(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_MSGHDR, Direction::Ingress)
}

#[fexit(function = "__x64_sys_sendmsg")]
pub fn tw_fx_sendmsg(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_MSGHDR, Direction::Egress)
}

/// sendfile moves file bytes the agent never sees; their count keeps body framing right.
#[fexit(function = "__x64_sys_sendfile64")]
pub fn tw_fx_sendfile(ctx: FExitContext) -> u32 {
    data(&ctx, KIND_NOCOPY, Direction::Egress)
}

#[inline(always)]
fn accept(ctx: &FExitContext) -> u32 {
    syscalls::accepted(config(), bpf_get_current_pid_tgid(), ret(ctx));
    0
}

#[fexit(function = "__x64_sys_accept")]
pub fn tw_fx_accept(ctx: FExitContext) -> u32 {
    accept(&ctx)
}

#[fexit(function = "__x64_sys_accept4")]
pub fn tw_fx_accept4(ctx: FExitContext) -> u32 {
    accept(&ctx)
}

#[fexit(function = "__x64_sys_connect")]
pub fn tw_fx_connect(ctx: FExitContext) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if syscalls::is_agent(cfg, pid_tgid)
        || !syscalls::process_selected(cfg, (pid_tgid >> 32) as u32)
    {
        return 0;
    }
    let (fd, _, _) = args(&ctx);
    syscalls::connected(cfg, pid_tgid, fd as u32, ret(&ctx));
    0
}

/// After close the descriptor is gone, but only its number is needed.
#[fexit(function = "__x64_sys_close")]
pub fn tw_fx_close(ctx: FExitContext) -> u32 {
    let (fd, _, _) = args(&ctx);
    syscalls::closed(config(), bpf_get_current_pid_tgid(), fd as u32);
    0
}
