//! `cargo xtask image`: the agent's container image (deploy/container/Containerfile), built
//! offline from the release binary. The image's root is assembled here — the binary, the
//! libraries `ldd` lists, the CA bundle — and checked by running the binary chrooted into it,
//! then handed to whichever builder this host has: buildah, podman or docker.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{agent_binary, kernels::libraries, run, setup::has, workspace_root};

/// The image's name, as the Kubernetes base refers to it.
pub fn tag() -> String {
    format!("localhost/tracewire:{}", env!("CARGO_PKG_VERSION"))
}

/// Copies `from` to the same absolute path under `root`, following symlinks.
fn place(root: &Path, from: &Path, mode: u32) -> Result<()> {
    let relative = from.strip_prefix("/").unwrap_or(from);
    copy_into(from, &root.join(relative), mode)
}

fn copy_into(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} into the image", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

/// Assembles target/image (rootfs/ and the Containerfile) and checks the binary runs there.
pub fn assemble() -> Result<PathBuf> {
    let context = workspace_root().join("target/image");
    let rootfs = context.join("rootfs");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    fs::create_dir_all(&rootfs)?;
    let binary = agent_binary();
    if !binary.is_file() {
        bail!(
            "{} is missing: `cargo xtask build --release` first",
            binary.display()
        );
    }
    let inside = rootfs.join("usr/local/bin/tracewire");
    copy_into(&binary, &inside, 0o755)?;
    // The release profile keeps line tables for profiling; the image needs none of them.
    if has("strip") {
        run(
            Command::new("strip").arg("--strip-debug").arg(&inside),
            "stripping debug information from the image's copy of the agent",
            "strip comes with binutils",
        )?;
    }
    for lib in libraries(&binary)? {
        place(&rootfs, &lib, 0o755)?;
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.is_file() {
        place(&rootfs, ca, 0o644)?;
    }
    for dir in ["tmp", "etc/tracewire", "proc", "sys"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::copy(
        workspace_root().join("deploy/container/Containerfile"),
        context.join("Containerfile"),
    )
    .context("copying deploy/container/Containerfile")?;

    // The image has no shell: the binary must start from its own libraries alone.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(["/usr/local/bin/tracewire", "--version"])
            .output()
            .context("running the agent chrooted into the image's root")?;
        if !out.status.success() {
            bail!(
                "the agent does not start inside the image's root ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!(
            "    the image's root runs the agent: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(context)
}

/// For `cargo xtask test`: the image builds, its entrypoint is the agent, and it is removed
/// again (the test leaves no image behind).
pub fn check() -> Result<()> {
    image()?;
    let tag = tag();
    let out = Command::new("buildah")
        .args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.OCIv1.Config.Entrypoint}}",
        ])
        .arg(&tag)
        .output()
        .context("running buildah inspect")?;
    let entrypoint = String::from_utf8_lossy(&out.stdout);
    let removed = Command::new("buildah").args(["rmi", &tag]).output();
    if entrypoint.trim() != "[/usr/local/bin/tracewire]" {
        bail!("the image's entrypoint is {entrypoint:?}, not the agent");
    }
    removed.context("removing the test image")?;
    Ok(())
}

/// Builds the image with the first builder found.
pub fn image() -> Result<()> {
    let context = assemble()?;
    let tag = tag();
    let containerfile = context.join("Containerfile");
    let mut cmd = if has("buildah") {
        let mut c = Command::new("buildah");
        c.args(["build", "--isolation", "chroot"]);
        c
    } else if has("podman") {
        let mut c = Command::new("podman");
        c.arg("build");
        c
    } else if has("docker") {
        let mut c = Command::new("docker");
        c.arg("build");
        c
    } else {
        bail!(
            "no image builder: install buildah or podman (`apt-get install buildah`); the \
             image's root is ready at {}",
            context.display()
        );
    };
    cmd.arg("-f")
        .arg(&containerfile)
        .args(["-t", &tag])
        .arg(&context);
    run(
        &mut cmd,
        &format!("building the container image {tag}"),
        "read the builder's output above",
    )?;
    eprintln!("==> image {tag} built (deploy/kubernetes refers to it)");
    Ok(())
}
