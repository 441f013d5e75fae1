//! proxy-wasm glue for the MCP filter: every callback goes to [`Exchange`].

use crate::config::Config;
use crate::exchange::{Exchange, Shared, Step};
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
    type State = Shared;
    fn build(config: Config) -> Result<Shared, ConfigError> {
        Shared::build(config)
    }
    fn new_filter(state: Rc<Shared>, metrics: Rc<Metrics>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(MCPFilter { exchange: Exchange::new(state, metrics) })
    }
}

struct MCPFilter {
    exchange: Exchange,
}

fn action(step: Step) -> Action {
    match step {
        Step::Continue => Action::Continue,
        Step::Pause => Action::Pause,
    }
}

impl Context for MCPFilter {}

impl HttpContext for MCPFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_request_body(&WasmHost, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.exchange.on_request_trailers(&WasmHost))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_response_headers(&WasmHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_response_body(&WasmHost, body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.exchange.on_response_trailers(&WasmHost);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.exchange.on_log(&WasmHost);
    }
}
