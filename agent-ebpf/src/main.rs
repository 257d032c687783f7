//! Tracewire's kernel programs: syscall tracepoints that find TCP sockets and stream their
//! payloads to user space through one ring buffer.
//!
//! Only stable syscall tracepoints (kernel >= 4.7) and helpers available to tracepoint programs
//! since 5.8 (ring buffer) are used: no kprobes, no fentry, so this runs under lockdown.
//!
//! This is the tracing object. `main_inject.rs` builds the same programs plus `sockmap`
//! (trace-context injection), whose socket map needs CAP_NET_ADMIN to be created.
#![no_std]
#![no_main]

mod inject;
mod maps;
mod rt;
mod sock;
mod syscalls;
mod tls;
