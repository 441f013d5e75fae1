//! The root context every Tollgate filter shares: load and validate the configuration once
//! (refusing to load with the bad field named), then hand each HTTP stream a filter that
//! holds the shared, immutable config.

use crate::config::{self, ConfigError, Validate};
use crate::host::{Host, LogLevel};
use crate::metrics::Metrics;
use crate::wasm_host::WasmHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use serde::de::DeserializeOwned;
use std::rc::Rc;

/// What a filter crate provides to get a root context.
pub trait Plugin: 'static {
    /// Name used in log messages, e.g. `tollgate-llm`.
    const NAME: &'static str;
    type Config: DeserializeOwned + Validate + 'static;
    /// Compiled, validated state built once from the config (e.g. compiled rules).
    type State: 'static;
    fn build(config: Self::Config) -> Result<Self::State, ConfigError>;
    fn new_filter(state: Rc<Self::State>, metrics: Rc<Metrics>, context_id: u32) -> Box<dyn HttpContext>;
}

pub struct PluginRoot<P: Plugin> {
    state: Option<Rc<P::State>>,
    metrics: Rc<Metrics>,
}

impl<P: Plugin> Default for PluginRoot<P> {
    fn default() -> Self {
        PluginRoot { state: None, metrics: Rc::new(Metrics::new()) }
    }
}

impl<P: Plugin> Context for PluginRoot<P> {}

impl<P: Plugin> RootContext for PluginRoot<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let host = WasmHost;
        let raw = host.plugin_configuration();
        match config::load::<P::Config>(&raw).and_then(P::build) {
            Ok(state) => {
                self.state = Some(Rc::new(state));
                true
            }
            Err(e) => {
                host.log(LogLevel::Error, &format!("{}: invalid plugin configuration: {e}", P::NAME));
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(P::new_filter(state, self.metrics.clone(), context_id))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
