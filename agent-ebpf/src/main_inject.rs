//! The injection object (`--inject-cgroup`): the tracing programs of `main.rs` plus `sockmap`,
//! which writes `traceparent` into outgoing requests of the selected cgroups.
#![no_std]
#![no_main]

mod inject;
mod maps;
mod rt;
mod sock;
mod sockmap;
mod syscalls;
mod tls;
