//! Wire formats: read incrementally where they stream, never panicking on any input (each has
//! a fuzz target in `fuzz/`).

pub mod json_framing;
pub mod json_scan;
pub mod jsonrpc;
pub mod protobuf;
pub mod raw_object;
pub mod sse;
pub mod trace;
