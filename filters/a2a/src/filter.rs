//! proxy-wasm glue for the A2A filter: the plugin's types; the callbacks are mapped to
//! [`Exchange`] by the shared glue in `tollgate_core::plugin`.

use crate::config::{Config, State};
use crate::exchange::Exchange;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::plugin::Plugin;

pub struct A2APlugin;

impl Plugin for A2APlugin {
    const NAME: &'static str = "tollgate-a2a";
    fn otlp(state: &Self::State) -> Option<&tollgate_core::observe::otlp::OtlpConfig> {
        state.audit.otlp.as_ref()
    }
    type Config = Config;
    type State = State;
    type Exchange = Exchange;
    fn build(config: Config) -> Result<State, ConfigError> {
        config.compile()
    }
    fn new_exchange(state: Rc<State>, metrics: Rc<Metrics>) -> Exchange {
        Exchange::new(state, metrics)
    }
}
