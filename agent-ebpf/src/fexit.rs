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
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fexit},
    programs::{BtfTracePointContext, FExitContext},
};

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
    orig_ax: u64,
    ip: u64,
    cs: u64,
}

/// The syscall's first three arguments.
#[inline(always)]
fn args(ctx: &FExitContext) -> (u64, u64, u64) {
    regs_args(ctx.arg(0))
}

/// The first three syscall arguments in `regs`.
#[inline(always)]
fn regs_args(regs: *const PtRegs) -> (u64, u64, u64) {
    // SAFETY: `regs` is a `struct pt_regs *` argument of the hook, a kernel pointer the
    // verifier types from BTF; these loads are within the struct.
    unsafe { ((*regs).di, (*regs).si, (*regs).dx) }
}

/// The syscall's return value: fexit sees it after the arguments (here, one).
#[inline(always)]
fn ret(ctx: &FExitContext) -> i64 {
    ctx.arg(1)
}

#[inline(always)]
fn data(ctx: &FExitContext, kind: u32, direction: Direction) -> u32 {
    data_in(ctx, ctx.arg(0), ret(ctx), kind, direction)
}

/// A read/write-family syscall that returned `moved`, its arguments in `regs`.
#[inline(always)]
fn data_in<C: EbpfContext>(
    ctx: &C,
    regs: *const PtRegs,
    moved: i64,
    kind: u32,
    direction: Direction,
) -> u32 {
    if moved <= 0 {
        return 0;
    }
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    if syscalls::is_agent(cfg, pid_tgid) {
        return 0;
    }
    let (fd, mut ptr, mut len) = regs_args(regs);
    if kind == KIND_NOCOPY {
        (ptr, len) = (0, 0);
    }
    if let Some(mut call) = syscalls::begin(cfg, pid_tgid, fd as u32, kind, direction, ptr, len) {
        // The clock is read only for a call that is captured (files, pipes and untraced
        // sockets stop at the lookups above), and once: it is both ends of the call here.
        // SAFETY: helper without preconditions.
        call.start_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
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

/// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl, a stable ABI).
const NR_READ: u64 = 0;
const NR_WRITE: u64 = 1;
const NR_CLOSE: u64 = 3;
const NR_READV: u64 = 19;
const NR_WRITEV: u64 = 20;
const NR_SENDFILE: u64 = 40;
const NR_CONNECT: u64 = 42;
const NR_ACCEPT: u64 = 43;
const NR_SENDTO: u64 = 44;
const NR_RECVFROM: u64 = 45;
const NR_SENDMSG: u64 = 46;
const NR_RECVMSG: u64 = 47;
const NR_ACCEPT4: u64 = 288;
/// The code segment of a 64-bit syscall (`__USER_CS`). A 32-bit process's syscalls have
/// other numbers, and are left alone.
const USER_CS: u64 = 0x33;

/// The middle path, where fexit is refused (lockdown) but BTF tracepoints load: one program on
/// the `sys_exit` raw tracepoint, which sees every syscall's registers and return value
/// together. Like fexit it needs no enter program and no `IN_FLIGHT` entry, and the kernel
/// builds no trace record for it; unlike fexit it runs for every syscall of every process, so
/// the first thing it does is skip the ones not hooked (two loads and a compare).
#[btf_tracepoint(function = "sys_exit")]
pub fn tw_sys_exit(ctx: BtfTracePointContext) -> u32 {
    let regs: *const PtRegs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *` argument, typed from BTF.
    let (nr, cs) = unsafe { ((*regs).orig_ax, (*regs).cs) };
    if cs != USER_CS {
        return 0;
    }
    let (kind, direction) = match nr {
        NR_READ | NR_RECVFROM => (KIND_BUF, Direction::Ingress),
        NR_WRITE | NR_SENDTO => (KIND_BUF, Direction::Egress),
        NR_READV => (KIND_IOVEC, Direction::Ingress),
        NR_WRITEV => (KIND_IOVEC, Direction::Egress),
        NR_RECVMSG => (KIND_MSGHDR, Direction::Ingress),
        NR_SENDMSG => (KIND_MSGHDR, Direction::Egress),
        NR_SENDFILE => (KIND_NOCOPY, Direction::Egress),
        NR_ACCEPT | NR_ACCEPT4 => {
            syscalls::accepted(config(), bpf_get_current_pid_tgid(), ret);
            return 0;
        }
        NR_CONNECT => {
            let cfg = config();
            let pid_tgid = bpf_get_current_pid_tgid();
            if syscalls::is_agent(cfg, pid_tgid)
                || !syscalls::process_selected(cfg, (pid_tgid >> 32) as u32)
            {
                return 0;
            }
            let (fd, _, _) = regs_args(regs);
            syscalls::connected(cfg, pid_tgid, fd as u32, ret);
            return 0;
        }
        NR_CLOSE => {
            let (fd, _, _) = regs_args(regs);
            syscalls::closed(config(), bpf_get_current_pid_tgid(), fd as u32);
            return 0;
        }
        _ => return 0,
    };
    data_in(&ctx, regs, ret, kind, direction)
}
