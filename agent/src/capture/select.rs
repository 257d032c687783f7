//! `--exe` selection: executables matched by glob, resolved to pids from /proc when the agent
//! starts and again every second, so a selected service that restarts stays traced.
use std::collections::HashSet;

/// A set of `--exe` globs, matched against a process's executable path or its file name.
#[derive(Clone, Debug, Default)]
pub struct ExeSelector {
    patterns: Vec<glob::Pattern>,
}

#[derive(Debug, thiserror::Error)]
#[error("--exe {glob}: not a valid glob: {source}")]
pub struct BadGlob {
    glob: String,
    #[source]
    source: glob::PatternError,
}

impl ExeSelector {
    pub fn new(globs: &[String]) -> Result<Self, BadGlob> {
        let patterns = globs
            .iter()
            .map(|g| {
                glob::Pattern::new(g).map_err(|source| BadGlob {
                    glob: g.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ExeSelector { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, exe: &std::path::Path) -> bool {
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.patterns
            .iter()
            .any(|p| p.matches_path(exe) || p.matches(&name))
    }

    /// Pids of the running processes that match.
    pub fn running(&self) -> HashSet<u32> {
        let mut pids = HashSet::new();
        if self.is_empty() {
            return pids;
        }
        let Ok(all) = procfs::process::all_processes() else {
            return pids;
        };
        for p in all.flatten() {
            if let Ok(exe) = p.exe()
                && self.matches(&exe)
            {
                pids.insert(p.pid as u32);
            }
        }
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_path_or_name() {
        let s = ExeSelector::new(&["*python3*".into(), "/usr/sbin/ngin?".into()]).expect("globs");
        assert!(s.matches(std::path::Path::new("/usr/bin/python3.11")));
        assert!(s.matches(std::path::Path::new("/usr/sbin/nginx")));
        assert!(!s.matches(std::path::Path::new("/usr/bin/curl")));
        assert!(ExeSelector::new(&["[".into()]).is_err());
        // This test binary is running, so a glob of its own name finds it.
        let me = std::env::current_exe().expect("exe");
        let name = me.file_name().expect("name").to_string_lossy().into_owned();
        let own = ExeSelector::new(&[name]).expect("glob");
        assert!(own.running().contains(&std::process::id()));
    }
}
