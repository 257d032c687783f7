//! Pure protocol parsers over captured bytes: no I/O, no allocation without a bound, no panics.
pub mod db;
pub mod grpc;
pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;
