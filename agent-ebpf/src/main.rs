//! Tracewire's kernel programs: syscall tracepoints that find TCP sockets and stream their
//! payloads to user space through one ring buffer.
//!
//! The base path uses only stable syscall tracepoints (kernel >= 4.7) and helpers available to
//! tracepoint programs since 5.8 (ring buffer), so it runs under lockdown; `fexit` is the fast
//! path user space picks where the kernel allows fexit programs.
//!
//! This is the tracing object. `main_inject.rs` builds the same programs plus `sockmap`
//! (trace-context injection), whose socket map needs CAP_NET_ADMIN to be created.
#![no_std]
#![no_main]

mod fexit;
mod inject;
mod maps;
mod rt;
mod sock;
mod syscalls;
mod tls;
