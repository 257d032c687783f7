//! From a file descriptor to its TCP socket, by walking task -> files -> fdtable -> file ->
//! socket -> sock with member offsets that user space resolved from the running kernel's BTF.
//! Everything is read with bpf_probe_read_kernel (any kernel >= 5.5), so a wrong guess reads
//! garbage and fails a check rather than faulting.
use agent_common::{ConnTuple, KernelOffsets};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;

#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address, returning an error on a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// The `struct sock *` behind `fd` in the current process, if it is a TCP socket.
#[inline(always)]
pub fn tcp_sock_of_fd(fd: u32, off: &KernelOffsets) -> Option<u64> {
    // SAFETY: the helper has no preconditions; it returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, off.task_files)?;
    let fdt: u64 = read(files, off.files_fdt)?;
    let max_fds: u32 = read(fdt, off.fdtable_max_fds)?;
    if fd >= max_fds {
        return None;
    }
    let fd_array: u64 = read(fdt, off.fdtable_fd)?;
    let file: u64 = read(fd_array, fd.wrapping_mul(8))?;
    if file == 0 {
        return None;
    }
    let socket: u64 = read(file, off.file_private_data)?;
    if socket == 0 {
        return None;
    }
    // A socket's file points back at it; any other file's private_data does not.
    let back: u64 = read(socket, off.socket_file)?;
    if back != file {
        return None;
    }
    let sock_type: u16 = read(socket, off.socket_type)?;
    if sock_type != SOCK_STREAM {
        return None;
    }
    let sk: u64 = read(socket, off.socket_sk)?;
    if sk == 0 {
        return None;
    }
    let family: u16 = read(sk, off.sock_family)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let protocol: u16 = read(sk, off.sock_protocol)?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    Some(sk)
}

/// The connection's addresses, from `sock_common`.
#[inline(always)]
pub fn tuple_of(sk: u64, off: &KernelOffsets) -> ConnTuple {
    let mut tuple = ConnTuple {
        family: read(sk, off.sock_family).unwrap_or(0),
        local_port: read(sk, off.sock_num).unwrap_or(0),
        remote_port: u16::from_be(read(sk, off.sock_dport).unwrap_or(0)),
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    if tuple.family == AF_INET6 {
        tuple.local_addr = read(sk, off.sock_v6_rcv_saddr).unwrap_or([0; 16]);
        tuple.remote_addr = read(sk, off.sock_v6_daddr).unwrap_or([0; 16]);
    } else {
        let local: [u8; 4] = read(sk, off.sock_rcv_saddr).unwrap_or([0; 4]);
        let remote: [u8; 4] = read(sk, off.sock_daddr).unwrap_or([0; 4]);
        tuple.local_addr[..4].copy_from_slice(&local);
        tuple.remote_addr[..4].copy_from_slice(&remote);
    }
    tuple
}
