//! proxy-wasm glue for the A2A filter: the plugin's types; the callbacks are mapped to
//! [`Exchange`] by the shared glue in `tollgate_core::plugin`.

use crate::config::{Config};
use crate::flow::{self, Exchange, Shared};
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::metrics::Metrics;
use tollgate_core::plugin::Plugin;

pub struct A2APlugin;

impl Plugin for A2APlugin {
    const NAME: &'static str = "tollgate-a2a";
    type Config = Config;
    type State = Shared;
    type Exchange = Exchange;
    fn build(config: Config) -> Result<Shared, ConfigError> {
        flow::build(config)
    }
    fn new_exchange(state: Rc<Shared>, metrics: Rc<Metrics>) -> Exchange {
        Exchange::new(state, metrics)
    }
}
