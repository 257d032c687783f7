//! Builds the kernel programs (`agent-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker (both installed by `cargo xtask setup`); `main.rs` embeds the object.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
