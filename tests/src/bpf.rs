//! What the kernel holds for the agent: loaded BPF programs (via `bpftool`) and bpffs pins.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

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

/// A point in the kernel's program history: the kernel hands out program ids upward, so every
/// program loaded after the mark has a higher id. Another agent on the host (an operator's, or
/// one left over from an earlier run) then does not count as this test's.
#[derive(Clone, Copy, Debug)]
pub struct ProgramMark {
    newest_id: u64,
}

/// Marks the programs loaded so far.
pub fn mark() -> Result<ProgramMark> {
    let newest_id = loaded_programs()?.iter().map(|p| p.id).max().unwrap_or(0);
    Ok(ProgramMark { newest_id })
}

/// Programs of the agent loaded since `mark`.
pub fn agent_programs_since(mark: ProgramMark) -> Result<Vec<BpfProgram>> {
    Ok(agent_programs()?
        .into_iter()
        .filter(|p| p.id > mark.newest_id)
        .collect())
}

/// Waits up to `timeout` until no program of the agent loaded since `mark` is left. The kernel
/// frees a program once its last reference is gone, which can trail the exit of the process that
/// held it by a moment.
pub fn wait_until_agent_programs_gone(mark: ProgramMark, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = agent_programs_since(mark)?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("BPF programs left after the agent exited: {left:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
