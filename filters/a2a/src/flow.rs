//! The exchange's former module name, kept for callers outside the filter (the fuzz targets):
//! re-exports only. The exchange itself is `exchange.rs`, its state `config::State`.

use crate::config::{Config, State};
use tollgate_core::config::ConfigError;

pub use crate::config::State as Shared;
pub use crate::exchange::Exchange;
pub use crate::replies::{codes, ERROR_DOMAIN};

/// Compiles a loaded configuration into the per-VM state (`Config::compile`).
pub fn build(config: Config) -> Result<State, ConfigError> {
    config.compile()
}
