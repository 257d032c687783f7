//! The agent's watch endpoint: a unix socket only root can reach (mode 0600 in a 0700
//! directory): it holds URLs and queries, so it is never on the network. One request line in,
//! the recent spans out as one JSON line, then the connection closes.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::watch,
};

use super::Recent;

/// A bound watch socket, and the directory made for it (removed with it).
pub struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
    made_dir: Option<PathBuf>,
}

/// Binds `path` (replacing a stale socket, making its directory 0700 if missing).
pub fn bind(path: &Path) -> std::io::Result<Bound> {
    let mut made_dir = None;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        made_dir = Some(dir.to_path_buf());
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Bound {
        listener,
        path: path.to_path_buf(),
        made_dir,
    })
}

/// Answers watchers until `shutdown`, then removes the socket (and the directory made for it).
pub async fn serve(bound: Bound, recent: Arc<Recent>, mut shutdown: watch::Receiver<bool>) {
    let Bound {
        listener,
        path,
        made_dir,
    } = bound;
    // Removes them however this future ends: shutdown, or dropped with the runtime.
    let _cleanup = Cleanup { path, made_dir };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let recent = Arc::clone(&recent);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut read = BufReader::new(read.take(256));
                    if read.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let spans = recent.snapshot();
                    let Ok(mut body) = serde_json::to_vec(&spans) else { return };
                    body.push(b'\n');
                    let _ = write.write_all(&body).await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

struct Cleanup {
    path: PathBuf,
    made_dir: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
