//! Kernel struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`,
//! kernels >= 5.4 built with CONFIG_DEBUG_INFO_BTF). aya-ebpf programs written in Rust get no
//! CO-RE relocations, so the loader resolves the few offsets the fd -> socket walk needs and
//! hands them to the kernel programs in their configuration.
use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "cannot read the kernel's BTF at {path}: {source}; the agent needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (every major distribution since 2020)"
    )]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("the kernel's BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("the kernel's struct {owner} has no member {member} (unsupported kernel layout)")]
    NoMember { owner: String, member: String },
    #[error("{owner}.{member} is a bit-field in this kernel; kernels before 5.6 are not supported")]
    Bitfield { owner: String, member: String },
    #[error("malformed BTF while resolving {owner}.{member}: {source}")]
    Malformed {
        owner: String,
        member: String,
        #[source]
        source: btf_rs::Error,
    },
}

/// Resolves every offset the kernel programs use.
pub fn resolve(path: &str) -> Result<KernelOffsets, OffsetError> {
    let btf = Btf::from_file(path).map_err(|source| OffsetError::Read {
        path: path.to_string(),
        source,
    })?;
    let r = Resolver { btf: &btf };
    Ok(KernelOffsets {
        task_files: r.offset("task_struct", &["files"])?,
        files_fdt: r.offset("files_struct", &["fdt"])?,
        fdtable_fd: r.offset("fdtable", &["fd"])?,
        fdtable_max_fds: r.offset("fdtable", &["max_fds"])?,
        file_private_data: r.offset("file", &["private_data"])?,
        socket_type: r.offset("socket", &["type"])?,
        socket_file: r.offset("socket", &["file"])?,
        socket_sk: r.offset("socket", &["sk"])?,
        sock_family: r.offset("sock", &["__sk_common", "skc_family"])?,
        sock_protocol: r.offset("sock", &["sk_protocol"])?,
        sock_num: r.offset("sock", &["__sk_common", "skc_num"])?,
        sock_dport: r.offset("sock", &["__sk_common", "skc_dport"])?,
        sock_rcv_saddr: r.offset("sock", &["__sk_common", "skc_rcv_saddr"])?,
        sock_daddr: r.offset("sock", &["__sk_common", "skc_daddr"])?,
        sock_v6_rcv_saddr: r.offset("sock", &["__sk_common", "skc_v6_rcv_saddr"])?,
        sock_v6_daddr: r.offset("sock", &["__sk_common", "skc_v6_daddr"])?,
        task_mm: r.offset("task_struct", &["mm"])?,
        mm_env_start: r.offset("mm_struct", &["env_start"])?,
        mm_env_end: r.offset("mm_struct", &["env_end"])?,
        _pad: 0,
    })
}

struct Resolver<'a> {
    btf: &'a Btf,
}

impl Resolver<'_> {
    /// Byte offset of `path` (nested named members) inside `struct owner`, looking through
    /// anonymous structs and unions the way C does.
    fn offset(&self, owner: &str, path: &[&str]) -> Result<u32, OffsetError> {
        let mut current = self.named_struct(owner)?;
        let mut total_bits = 0u32;
        for (i, member) in path.iter().enumerate() {
            let (bits, member_type) =
                self.find_member(&current, member)?
                    .ok_or_else(|| OffsetError::NoMember {
                        owner: owner.to_string(),
                        member: path.join("."),
                    })?;
            total_bits = total_bits.saturating_add(bits);
            if i + 1 < path.len() {
                current = member_type;
            }
        }
        if !total_bits.is_multiple_of(8) {
            return Err(OffsetError::Bitfield {
                owner: owner.to_string(),
                member: path.join("."),
            });
        }
        Ok(total_bits / 8)
    }

    fn named_struct(&self, name: &str) -> Result<Type, OffsetError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| OffsetError::NoStruct {
                name: name.to_string(),
            })?;
        types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| OffsetError::NoStruct {
                name: name.to_string(),
            })
    }

    /// Strips typedefs and qualifiers.
    fn concrete(&self, mut t: Type, member: &str) -> Result<Type, OffsetError> {
        for _ in 0..16 {
            match t {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let Some(bt) = t.as_btf_type() else { break };
                    t = self
                        .btf
                        .resolve_chained_type(bt)
                        .map_err(|source| self.malformed(member, source))?;
                }
                _ => break,
            }
        }
        Ok(t)
    }

    fn malformed(&self, member: &str, source: btf_rs::Error) -> OffsetError {
        OffsetError::Malformed {
            owner: String::new(),
            member: member.to_string(),
            source,
        }
    }

    /// Finds `name` among the members of a struct or union, descending into anonymous ones.
    /// Returns the member's bit offset and its (concrete) type.
    fn find_member(&self, owner: &Type, name: &str) -> Result<Option<(u32, Type)>, OffsetError> {
        self.find_member_depth(owner, name, 0)
    }

    fn find_member_depth(
        &self,
        owner: &Type,
        name: &str,
        depth: u32,
    ) -> Result<Option<(u32, Type)>, OffsetError> {
        let members = match owner {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        if depth > 8 {
            return Ok(None);
        }
        for m in members {
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            if m.bitfield_size().is_some_and(|size| size != 0) && member_name == name {
                return Err(OffsetError::Bitfield {
                    owner: String::new(),
                    member: name.to_string(),
                });
            }
            let member_type = self
                .btf
                .resolve_chained_type(m)
                .map_err(|source| self.malformed(name, source))?;
            let member_type = self.concrete(member_type, name)?;
            if member_name == name {
                return Ok(Some((m.bit_offset(), member_type)));
            }
            if member_name.is_empty()
                && let Some((inner, t)) = self.find_member_depth(&member_type, name, depth + 1)?
            {
                return Ok(Some((m.bit_offset().saturating_add(inner), t)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel: the layout must resolve and be self-consistent.
    #[test]
    fn resolves_running_kernel() {
        let off = resolve(VMLINUX_BTF).expect("this host has BTF");
        assert!(off.task_files > 0);
        assert_eq!(
            off.sock_daddr, 0,
            "skc_daddr starts sock_common on every kernel"
        );
        assert_eq!(off.sock_rcv_saddr, 4);
        assert!(off.sock_v6_daddr > off.sock_family);
        assert!(off.sock_protocol > off.sock_v6_rcv_saddr);
    }
}
