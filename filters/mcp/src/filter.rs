//! proxy-wasm glue for the MCP filter: the plugin's types; the callbacks are mapped to
//! [`Exchange`] by the shared glue in `tollgate_core::plugin`.

use crate::config::Config;
use crate::exchange::{Exchange, Shared};
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::plugin::Plugin;

pub struct MCPPlugin;

impl Plugin for MCPPlugin {
    const NAME: &'static str = "tollgate-mcp";
    fn otlp(state: &Self::State) -> Option<&tollgate_core::observe::otlp::OtlpConfig> {
        state.config.audit.otlp.as_ref()
    }
    type Config = Config;
    type State = Shared;
    type Exchange = Exchange;
    fn build(config: Config) -> Result<Shared, ConfigError> {
        Shared::build(config)
    }
    fn new_exchange(state: Rc<Shared>, metrics: Rc<Metrics>) -> Exchange {
        Exchange::new(state, metrics)
    }
    fn uses_fleet_store(state: &Shared) -> bool {
        state.config.store.is_some() && state.rate_limits.uses_fleet()
    }
}
