//! proxy-wasm glue for the LLM filter: the plugin's types; the callbacks are mapped to
//! [`Exchange`] by the shared glue in `tollgate_core::plugin`.

use crate::config::{Config, State};
use crate::exchange::Exchange;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::plugin::Plugin;

pub struct LLMPlugin;

impl Plugin for LLMPlugin {
    const NAME: &'static str = "tollgate-llm";
    type Config = Config;
    type State = State;
    type Exchange = Exchange;
    fn build(config: Config) -> Result<State, ConfigError> {
        config.compile()
    }
    fn new_exchange(state: Rc<State>, metrics: Rc<Metrics>) -> Exchange {
        Exchange::new(state, metrics)
    }
    fn uses_fleet_store(state: &State) -> bool {
        state.store.is_some()
    }
}
