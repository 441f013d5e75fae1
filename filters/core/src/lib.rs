//! Shared pieces of the Tollgate filters.
//!
//! Everything here is pure Rust that never touches the proxy-wasm host directly, except
//! [`wasm_host`], the one place that talks to Envoy. Filters take a `&dyn Host`, so their
//! decision logic runs natively in `cargo test` against [`host::MemoryHost`].

pub mod audit;
pub mod callback_host;
pub mod config;
pub mod exchange;
pub mod filter_state;
pub mod glob;
pub mod hash;
pub mod host;
pub mod identity;
pub mod json_framing;
pub mod json_scan;
pub mod jsonrpc;
pub mod limits;
pub mod metrics;
pub mod pairs;
#[cfg(target_arch = "wasm32")]
pub mod plugin;
pub mod raw_object;
pub mod reply;
pub mod shared_table;
pub mod sse;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod text;
pub mod trace;
#[cfg(target_arch = "wasm32")]
pub mod wasm_host;
