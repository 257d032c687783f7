//! End-to-end test harness for Tracewire: the real agent binary, real eBPF, real peer programs, and a
//! real OTLP receiver on loopback.
//!
//! A test reads as the deployment it models:
//! 1. [`collector::OtlpReceiver`] listens on `127.0.0.1:0` (gRPC or HTTP/protobuf) and stores every
//!    export request;
//! 2. a peer server starts from [`peers`] (python `http.server`, nginx, node, Java, Go) on a free port;
//! 3. [`agent::AgentGuard`] starts `tracewire run --port <that port>` and waits for `/ready`;
//! 4. a peer client ([`peers::curl`] or a runtime's own client) makes requests;
//! 5. the test waits for both spans of each request ([`exchange::check_exchanges`]) and checks
//!    them against the OpenTelemetry HTTP semantic conventions ([`semconv`]).
//!
//! Every process a test starts is owned by a guard ([`process::ChildGuard`], [`agent::AgentGuard`]) that
//! stops it in `Drop`, and every cgroup it creates by a [`cgroup::CgroupGuard`] that removes it, so a
//! failing test leaves no peer, agent, cgroup or BPF program behind.
//!
//! `tests/harness.rs` checks the harness alone, with no agent: the peers answer their routes, the
//! receivers store what a real OTLP client sends, and the span checks accept conforming spans and
//! name each mismatch. When an end-to-end test fails and those pass, look at the agent.
//!
//! Tests are run by `cargo xtask test`, which installs the peers (curl, nginx, node, JDK, Go, bpftool),
//! builds the agent, sets `TRACEWIRE_BIN`, and runs this crate as root with `--test-threads=1`.
//! Cargo runs test binaries one after another, and [`serial`] keeps two tests of one binary from
//! running agents at the same time even without `--test-threads=1`.

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod collector;
pub mod db;
pub mod exchange;
pub mod http1;
pub mod metrics;
pub mod net;
pub mod peers;
pub mod process;
pub mod semconv;
pub mod tempdir;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use agent::{AgentGuard, Export, Selection, agent_binary};
pub use cgroup::CgroupGuard;
pub use collector::{OtlpProtocol, OtlpReceiver, SpanQuery, SpanRecord};
pub use exchange::{CurlRequests, Exchange, check_exchanges};
pub use peers::{PeerServer, ProcessIdentity};
pub use process::ChildGuard;
pub use semconv::Window;
pub use tempdir::TempDir;

/// Two agents attached at once would share the kernel's hooks and each other's failures, and the
/// clean-stop test could not tell whose programs are left; [`AgentGuard::start`] holds this for
/// the agent's whole life.
static AGENT_SLOT: Mutex<()> = Mutex::new(());

/// Waits until no other test of this binary runs an agent. A test that panicked while holding the
/// slot has already stopped its agent in `Drop`, so a poisoned lock is safe to take over.
pub fn serial() -> MutexGuard<'static, ()> {
    AGENT_SLOT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The workspace root (`tests/..`).
pub fn workspace_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory, where built peers (the Go binary) and their caches live.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// The checked-in peer programs (`tests/peers/`).
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}
