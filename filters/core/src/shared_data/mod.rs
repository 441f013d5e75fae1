//! State shared by every worker VM of one Envoy (same `vm_id`) through proxy-wasm shared data,
//! updated with compare-and-swap.

pub mod table;
pub mod window;
pub mod window_counter;
