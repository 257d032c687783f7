//! Re-runs the eBPF build when bpf-linker changes (cargo does not track linkers).
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
