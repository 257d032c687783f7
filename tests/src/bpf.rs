//! What the kernel holds for the agent: loaded BPF programs (via `bpftool`) and bpffs pins.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::peers::require_tool;

/// Every program the agent loads is named with this prefix.
pub const PROGRAM_PREFIX: &str = "tw_";

#[derive(Clone, Debug)]
pub struct BpfProgram {
    pub id: u64,
    pub name: String,
    /// Processes holding the program, when bpftool can tell.
    pub owners: Vec<String>,
}

/// `bpftool -j prog show`.
pub fn loaded_programs() -> Result<Vec<BpfProgram>> {
    let bpftool = require_tool("bpftool")?;
    let output = Command::new(&bpftool)
        .args(["-j", "prog", "show"])
        .output()
        .with_context(|| format!("running {} -j prog show", bpftool.display()))?;
    ensure!(
        output.status.success(),
        "bpftool -j prog show failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("bpftool printed something other than JSON")?;
    let programs = listed
        .as_array()
        .context("bpftool -j prog show did not print an array")?;
    Ok(programs
        .iter()
        .map(|program| BpfProgram {
            id: program["id"].as_u64().unwrap_or_default(),
            name: program["name"].as_str().unwrap_or_default().to_string(),
            owners: program["pids"]
                .as_array()
                .map(|pids| {
                    pids.iter()
                        .map(|p| format!("{}({})", p["comm"].as_str().unwrap_or("?"), p["pid"]))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// Loaded programs whose name says they are the agent's.
pub fn agent_programs() -> Result<Vec<BpfProgram>> {
    Ok(loaded_programs()?
        .into_iter()
        .filter(|p| p.name.starts_with(PROGRAM_PREFIX))
        .collect())
}

/// Everything under `/sys/fs/bpf` whose name mentions tracewire (none if bpffs is not mounted).
pub fn tracewire_pins() -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/bpf"), &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry
            .file_name()
            .to_string_lossy()
            .to_ascii_lowercase()
            .contains("tracewire")
        {
            found.push(path.clone());
        }
        if entry.file_type()?.is_dir() {
            walk(&path, found)?;
        }
    }
    Ok(())
}
