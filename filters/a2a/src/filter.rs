//! proxy-wasm glue for the A2A filter: maps each callback onto `flow::Exchange`.

use crate::config::Config;
use crate::flow::{self, Exchange, Shared, Step};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::metrics::Metrics;
use tollgate_core::plugin::Plugin;
use tollgate_core::wasm_host::WasmHost;

pub struct A2APlugin;

impl Plugin for A2APlugin {
    const NAME: &'static str = "tollgate-a2a";
    type Config = Config;
    type State = Shared;
    fn build(config: Config) -> Result<Shared, ConfigError> {
        flow::build(config)
    }
    fn new_filter(state: Rc<Shared>, metrics: Rc<Metrics>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(A2AFilter { exchange: Exchange::new(state, metrics) })
    }
}

struct A2AFilter {
    exchange: Exchange,
}

fn action(step: Step) -> Action {
    match step {
        Step::Continue => Action::Continue,
        Step::Pause => Action::Pause,
    }
}

impl Context for A2AFilter {}

impl HttpContext for A2AFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_request_body(&WasmHost, body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_response_headers(&WasmHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.exchange.on_response_body(&WasmHost, body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.exchange.on_log(&WasmHost);
    }
}
