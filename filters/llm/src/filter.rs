//! proxy-wasm glue for the LLM filter: maps callbacks to [`Exchange`] with the real host.

use crate::config::{Config, State};
use crate::exchange::{Exchange, Flow};
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
    type State = State;
    fn build(config: Config) -> Result<State, ConfigError> {
        config.compile()
    }
    fn new_filter(state: Rc<State>, metrics: Rc<Metrics>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(LLMFilter { exchange: Exchange::new(state, metrics) })
    }
}

struct LLMFilter {
    exchange: Exchange,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for LLMFilter {
    fn on_done(&mut self) -> bool {
        // Normally on_log already ran; if Envoy skipped it, record here (runs once).
        self.exchange.on_log(&WasmHost);
        true
    }
}

impl HttpContext for LLMFilter {
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

    fn on_log(&mut self) {
        self.exchange.on_log(&WasmHost);
    }
}
