//! proxy-wasm glue for the LLM filter.

use crate::config::Config;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::metrics::Metrics;
use tollgate_core::plugin::Plugin;
use tollgate_core::wasm_host::WasmHost;

pub struct LLMPlugin;

impl Plugin for LLMPlugin {
    const NAME: &'static str = "tollgate-llm";
    type Config = Config;
    type State = Config;
    fn build(config: Config) -> Result<Config, ConfigError> {
        Ok(config)
    }
    fn new_filter(state: Rc<Config>, metrics: Rc<Metrics>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(LLMFilter { _state: state, metrics })
    }
}

struct LLMFilter {
    _state: Rc<Config>,
    metrics: Rc<Metrics>,
}

impl Context for LLMFilter {}

impl HttpContext for LLMFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.metrics.inc(&WasmHost, "tollgate.llm.requests", &[]);
        Action::Continue
    }
}
