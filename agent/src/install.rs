//! `tracewire install-systemd`: what an operator runs once on a host. It installs this very
//! binary, the hardened unit of `deploy/systemd/tracewire.service` and, when there is none yet,
//! the commented configuration of `deploy/tracewire.yaml` (root-only: it may hold collector
//! credentials), then enables and starts the service. Both files are compiled in, so the
//! binary alone is enough.
//!
//! `--root DIR` writes under DIR instead of `/` and starts nothing: for images, packages and
//! tests.
use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

/// The unit, as shipped in `deploy/systemd/`.
pub const UNIT: &str = include_str!("../../deploy/systemd/tracewire.service");
/// The default configuration, as shipped in `deploy/`.
pub const CONFIG: &str = include_str!("../../deploy/tracewire.yaml");

pub const BINARY_PATH: &str = "usr/local/bin/tracewire";
pub const UNIT_PATH: &str = "etc/systemd/system/tracewire.service";
pub const CONFIG_PATH: &str = "etc/tracewire/config.yaml";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot tell which binary is running (to copy it to {to})")]
    CurrentExe {
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed (run as root, or pass --root DIR to install elsewhere)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the existing {path} is not a valid configuration: fix it (or move it away to get the \
         default) and run install-systemd again"
    )]
    InvalidConfig {
        path: PathBuf,
        #[source]
        source: crate::config::ConfigError,
    },
    #[error(
        "`{command}` failed ({detail}): is systemd running this host (/run/systemd/system)? \
         The files are installed; start the service by hand or use --root"
    )]
    Systemctl { command: String, detail: String },
}

/// What was done, for the operator.
#[derive(Debug, Default)]
pub struct Installed {
    pub lines: Vec<String>,
}

/// Installs under `root`; starts the service only when `root` is `/` and `start` is set.
pub fn install(root: &Path, start: bool) -> Result<Installed, InstallError> {
    let mut done = Installed::default();
    let binary = root.join(BINARY_PATH);
    let current = std::env::current_exe().map_err(|source| InstallError::CurrentExe {
        to: binary.clone(),
        source,
    })?;
    if same_file(&current, &binary) {
        done.lines
            .push(format!("{} is this binary: kept", binary.display()));
    } else {
        let bytes = std::fs::read(&current).map_err(|source| InstallError::Write {
            path: current.clone(),
            source,
        })?;
        write_atomically(&binary, &bytes, 0o755)?;
        done.lines.push(format!("installed {}", binary.display()));
    }

    let unit = root.join(UNIT_PATH);
    write_atomically(&unit, UNIT.as_bytes(), 0o644)?;
    done.lines.push(format!("installed {}", unit.display()));

    let config = root.join(CONFIG_PATH);
    if config.exists() {
        crate::config::FileConfig::load(&config).map_err(|source| InstallError::InvalidConfig {
            path: config.clone(),
            source,
        })?;
        done.lines.push(format!(
            "kept the existing {} (it is valid)",
            config.display()
        ));
    } else {
        write_atomically(&config, CONFIG.as_bytes(), 0o600)?;
        done.lines.push(format!(
            "installed {} (root-only): set otlp.endpoint to your collector",
            config.display()
        ));
    }

    if root == Path::new("/") && start {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", "tracewire.service"])?;
        done.lines.push(
            "enabled and started tracewire.service: `systemctl status tracewire`, \
             `journalctl -u tracewire`"
                .to_string(),
        );
    } else {
        done.lines.push(
            "not started: `systemctl daemon-reload && systemctl enable --now tracewire`"
                .to_string(),
        );
    }
    Ok(done)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes through a temporary file renamed into place: a running binary is replaced, not
/// rewritten under its feet ("text file busy"), and a crash leaves the old file whole.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let err = |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tracewire-new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    let command = format!("systemctl {}", args.join(" "));
    let output =
        Command::new("systemctl")
            .args(args)
            .output()
            .map_err(|e| InstallError::Systemctl {
                command: command.clone(),
                detail: e.to_string(),
            })?;
    if output.status.success() {
        return Ok(());
    }
    Err(InstallError::Systemctl {
        command,
        detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_valid_and_the_unit_reads_it() {
        crate::config::FileConfig::parse(Path::new(CONFIG_PATH), CONFIG)
            .unwrap_or_else(|e| panic!("deploy/tracewire.yaml: {e}"));
        assert!(UNIT.contains("LoadCredential=config.yaml:/etc/tracewire/config.yaml"));
        assert!(UNIT.contains(&format!("ExecStart=/{BINARY_PATH} run --config")));
    }
}
