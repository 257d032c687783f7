//! Builds the kernel programs (`agent-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker (both installed by `cargo xtask setup`); `capture` embeds the object. Skipped
//! without the `runtime` feature (the fuzz targets need only the parsers).
fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_RUNTIME").is_none() {
        return Ok(());
    }
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
