//! proxy-wasm glue for the LLM filter: the plugin's types; the callbacks are mapped to
//! [`Exchange`] by the shared glue in `tollgate_core::plugin`.

#[cfg(feature = "attempt")]
use crate::attempt::AttemptExchange;
use crate::config::{Config, Role, State};
#[cfg(feature = "gateway")]
use crate::exchange::Exchange;
use tollgate_core::host::Host;
use tollgate_core::stream::{GrpcAnswer, HttpAnswer, HttpExchange, Step};
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::plugin::Plugin;

pub struct LLMPlugin;

impl Plugin for LLMPlugin {
    const NAME: &'static str = "tollgate-llm";
    fn otlp(state: &Self::State) -> Option<&tollgate_core::observe::otlp::OtlpConfig> {
        state.audit.otlp.as_ref()
    }
    type Config = Config;
    type State = State;
    type Exchange = LlmExchange;
    fn build(config: Config) -> Result<State, ConfigError> {
        config.compile()
    }
    /// A `root_id` ending in `.attempt` plays the attempt role (the upstream HTTP filter of
    /// the deployments cluster); any other, the gateway.
    fn build_for_root(config: Config, root_id: &str) -> Result<State, ConfigError> {
        let mut state = config.compile()?;
        if root_id.ends_with(".attempt") {
            state.role = Role::Attempt;
        }
        if !cfg!(feature = "attempt") && state.role == Role::Attempt {
            return Err(ConfigError(format!(
                "root_id `{root_id}` is the attempt role, which this module does not have: load dist/tollgate_llm_attempt.wasm there"
            )));
        }
        if !cfg!(feature = "gateway") && state.role == Role::Gateway {
            return Err(ConfigError(format!(
                "root_id `{root_id}` is the gateway, which this module (the attempt role) does not have: load dist/tollgate_llm.wasm, or end the root_id in `.attempt`"
            )));
        }
        Ok(state)
    }
    fn new_exchange(state: Rc<State>, metrics: Rc<Metrics>) -> LlmExchange {
        match state.role {
            #[cfg(feature = "gateway")]
            Role::Gateway => LlmExchange::Gateway(Exchange::new(state, metrics)),
            #[cfg(feature = "attempt")]
            Role::Attempt => LlmExchange::Attempt(AttemptExchange::new(state, metrics)),
            // Refused at load (`build_for_root`): never reached.
            #[allow(unreachable_patterns)]
            _ => LlmExchange::Missing(tollgate_core::plugin::Unconfigured),
        }
    }
    fn uses_fleet_store(state: &State) -> bool {
        state.store.is_some()
    }
}

/// One stream in either role. (Both are about as common as requests: boxing either would
/// only add an allocation per stream.)
#[allow(clippy::large_enum_variant)]
pub enum LlmExchange {
    #[cfg(feature = "gateway")]
    Gateway(Exchange),
    #[cfg(feature = "attempt")]
    Attempt(AttemptExchange),
    /// A role this build lacks (refused at load, so never created): fails closed.
    Missing(tollgate_core::plugin::Unconfigured),
}

impl LlmExchange {
    fn inner(&mut self) -> &mut dyn HttpExchange {
        match self {
            #[cfg(feature = "gateway")]
            LlmExchange::Gateway(e) => e,
            #[cfg(feature = "attempt")]
            LlmExchange::Attempt(e) => e,
            LlmExchange::Missing(e) => e,
        }
    }
}

impl HttpExchange for LlmExchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.inner().on_request_headers(host, end_of_stream)
    }
    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        self.inner().on_request_body(host, body_size, end_of_stream)
    }
    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.inner().on_response_headers(host, end_of_stream)
    }
    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        self.inner().on_response_body(host, body_size, end_of_stream)
    }
    fn on_log(&mut self, host: &dyn Host) {
        self.inner().on_log(host)
    }
    fn on_done(&mut self, host: &dyn Host) {
        self.inner().on_done(host)
    }
    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, answer: GrpcAnswer<'_>) {
        self.inner().on_grpc_response(host, token, answer)
    }
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, answer: HttpAnswer<'_>) {
        self.inner().on_http_call_response(host, token, answer)
    }
}
