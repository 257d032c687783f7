//! Tracewire's user-space agent, one module per pipeline stage, data flowing one way:
//! capture -> reassembly -> protocol -> span -> export (wired in `pipeline`).
pub mod capture;
pub mod export;
pub mod pipeline;
pub mod protocol;
pub mod reassembly;
pub mod span;
pub mod telemetry;
