//! One HTTP stream through a filter, host-agnostic: each filter implements [`HttpExchange`]
//! over `&dyn Host`, so its whole flow runs natively against `MemoryHost` in unit tests, and
//! the proxy-wasm glue ([`crate::plugin`]) is written once for all filters.

use crate::host::Host;

/// What a callback tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Hold the stream (buffer a body, or stop after a local reply).
    Pause,
}

/// The stream callbacks a filter handles; each defaults to passing through.
pub trait HttpExchange {
    fn on_request_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_request_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_request_trailers(&mut self, _host: &dyn Host) -> Step {
        Step::Continue
    }
    fn on_response_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_response_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Step {
        Step::Continue
    }
    fn on_response_trailers(&mut self, _host: &dyn Host) -> Step {
        Step::Continue
    }
    /// After the stream ended (also for streams the client abandoned). Runs after the access
    /// log, so filter state set here is not logged.
    fn on_log(&mut self, _host: &dyn Host) {}
    /// When the stream's context is destroyed (after `on_log`, if Envoy ran it).
    fn on_done(&mut self, _host: &dyn Host) {}
}
