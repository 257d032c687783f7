//! Tracewire's kernel programs: syscall tracepoints that find TCP sockets and stream their
//! payloads to user space through one ring buffer.
//!
//! Only stable syscall tracepoints (kernel >= 4.7) and helpers available to tracepoint programs
//! since 5.8 (ring buffer) are used: no kprobes, no fentry, so this runs under lockdown.
#![no_std]
#![no_main]

mod inject;
mod maps;
mod sock;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_{user,kernel} are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
