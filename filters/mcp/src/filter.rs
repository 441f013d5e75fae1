//! proxy-wasm glue for the MCP filter.

use crate::config::Config;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::metrics::Metrics;
use tollgate_core::plugin::Plugin;
use tollgate_core::wasm_host::WasmHost;

pub struct MCPPlugin;

impl Plugin for MCPPlugin {
    const NAME: &'static str = "tollgate-mcp";
    type Config = Config;
    type State = Config;
    fn build(config: Config) -> Result<Config, ConfigError> {
        Ok(config)
    }
    fn new_filter(state: Rc<Config>, metrics: Rc<Metrics>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(MCPFilter { _state: state, metrics })
    }
}

struct MCPFilter {
    _state: Rc<Config>,
    metrics: Rc<Metrics>,
}

impl Context for MCPFilter {}

impl HttpContext for MCPFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.metrics.inc(&WasmHost, "tollgate.mcp.requests", &[]);
        Action::Continue
    }
}
