//! Tracewire's user-space agent, one module per pipeline stage, data flowing one way:
//! capture -> reassembly -> protocol -> span -> sampling -> export (wired in `pipeline`).
//!
//! Without the `runtime` feature only the pure protocol parsers are built (for fuzzing).
#[cfg(feature = "runtime")]
pub mod capture;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod export;
#[cfg(feature = "runtime")]
pub mod install;
#[cfg(feature = "runtime")]
pub mod pipeline;
pub mod protocol;
#[cfg(feature = "runtime")]
pub mod queue;
#[cfg(feature = "runtime")]
pub mod reassembly;
#[cfg(feature = "runtime")]
pub mod sampling;
#[cfg(feature = "runtime")]
pub mod span;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod watch;
