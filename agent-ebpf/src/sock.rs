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

/// The connection's addresses, from `sock_common`. Addresses are read as 8-byte words: a
/// zero-filled byte array compiles to a memset subprogram call that the verifier walks byte by
/// byte.
#[inline(always)]
pub fn tuple_of(sk: u64, off: &KernelOffsets) -> ConnTuple {
    let family: u16 = read(sk, off.sock_family).unwrap_or(0);
    let (local, remote): ([u64; 2], [u64; 2]) = if family == AF_INET6 {
        (
            read(sk, off.sock_v6_rcv_saddr).unwrap_or([0; 2]),
            read(sk, off.sock_v6_daddr).unwrap_or([0; 2]),
        )
    } else {
        // IPv4 in the first 4 bytes, in network order as read (little-endian words).
        let local: u32 = read(sk, off.sock_rcv_saddr).unwrap_or(0);
        let remote: u32 = read(sk, off.sock_daddr).unwrap_or(0);
        ([u64::from(local), 0], [u64::from(remote), 0])
    };
    ConnTuple {
        family,
        local_port: read(sk, off.sock_num).unwrap_or(0),
        remote_port: u16::from_be(read(sk, off.sock_dport).unwrap_or(0)),
        _pad: 0,
        // SAFETY: [u64; 2] and [u8; 16] have the same size; any bytes are valid u8s.
        local_addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(local) },
        // SAFETY: as above.
        remote_addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(remote) },
    }
}
