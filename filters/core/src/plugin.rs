//! The root context every Tollgate filter shares: load and validate the configuration once
//! (refusing to load with the bad field named), then hand each HTTP stream a filter that
//! holds the shared, immutable config.

use crate::host::batched::CallbackHost;
use crate::config::{self, ConfigError, Validate};
use crate::fleet::outbox;
use crate::stream::{GrpcFailure, HttpExchange, Step, Stream};
use crate::host::{Host, HostExt, LogLevel};
use crate::observe::metrics::Metrics;
use crate::observe::otlp::{self, OtlpConfig};
use crate::host::wasm::WasmHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};
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
    /// Builds the state of the plugin instance whose `root_id` is `root_id` (a module can play
    /// several parts in Envoy, told apart by root id). Default: [`Plugin::build`].
    fn build_for_root(config: Self::Config, _root_id: &str) -> Result<Self::State, ConfigError> {
        Self::build(config)
    }
    type Exchange: HttpExchange + 'static;
    fn new_exchange(state: Rc<Self::State>, metrics: Rc<Metrics>) -> Self::Exchange;
    /// Whether the state sends settlements to a fleet-wide store (then the root flushes
    /// [`outbox`] on a timer).
    fn uses_fleet_store(_state: &Self::State) -> bool {
        false
    }
    /// Where the state exports its spans (`audit.otlp`), if it does: then the root sends
    /// the queued spans ([`crate::observe::otlp`]) on its timer.
    fn otlp(_state: &Self::State) -> Option<&OtlpConfig> {
        None
    }
}

/// How often the root sends queued settlements.
const OUTBOX_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

pub struct PluginRoot<P: Plugin> {
    state: Option<Rc<P::State>>,
    metrics: Rc<Metrics>,
    /// Span exports in flight (their tokens) and when the last one left, in ms.
    otlp_in_flight: Vec<u32>,
    otlp_last_ms: u64,
}

impl<P: Plugin> Default for PluginRoot<P> {
    fn default() -> Self {
        PluginRoot { state: None, metrics: Rc::new(Metrics::new()), otlp_in_flight: Vec::new(), otlp_last_ms: 0 }
    }
}

/// Metrics of the span exporter (all filters of an Envoy add to the same counters).
const OTLP_DROPPED: &str = "tollgate.otlp.dropped";
const OTLP_SENT: &str = "tollgate.otlp.sent";
const OTLP_FAILED: &str = "tollgate.otlp.failed";

/// A metric of the plugin: `tollgate.llm.<name>` for `tollgate-llm`.
fn metric<P: Plugin>(name: &str) -> String {
    format!("{}.{name}", P::NAME.replace('-', "."))
}

impl<P: Plugin> PluginRoot<P> {
    /// Sends every queued settlement (see [`outbox`]); failures are logged and counted,
    /// never retried: a settlement applied twice would count twice.
    fn flush_outbox(&self) {
        let host = WasmHost;
        let (pending, dropped) = outbox::take();
        if dropped > 0 {
            host.log(LogLevel::Warn, &format!("{}: {dropped} settlements dropped (queue full)", P::NAME));
            self.metrics.add(&host, &metric::<P>("fleet_settlements_dropped"), &[], dropped);
        }
        for p in pending {
            let call = crate::host::GrpcCall {
                cluster: &p.cluster,
                service: p.service,
                method: p.method,
                message: &p.message,
                timeout_ms: p.timeout_ms,
            };
            if let Err(e) = host.dispatch_grpc(&call) {
                host.log(LogLevel::Warn, &format!("{}: cannot send a settlement to `{}`: {e}", P::NAME, p.cluster));
                self.metrics.add(&host, &metric::<P>("fleet_settlements_failed"), &[], 1);
            }
        }
    }
}

impl<P: Plugin> PluginRoot<P> {
    /// Sends queued spans (see [`otlp::to_send`]); never retries: a failed or refused batch
    /// is counted (`tollgate.otlp.failed`, its spans in `tollgate.otlp.dropped`).
    fn flush_spans(&mut self) {
        let Some(state) = self.state.clone() else { return };
        let Some(config) = P::otlp(&state) else { return };
        let host = WasmHost;
        let dropped = otlp::take_dropped();
        if dropped > 0 {
            self.metrics.add(&host, OTLP_DROPPED, &[], dropped);
        }
        let now = host.now_millis();
        loop {
            let in_flight = u32::try_from(self.otlp_in_flight.len()).unwrap_or(u32::MAX);
            let n = otlp::to_send(config, otlp::queued(), in_flight, now.saturating_sub(self.otlp_last_ms));
            if n == 0 {
                return;
            }
            let spans = otlp::take(n);
            self.otlp_last_ms = now;
            match otlp::dispatch(&host, config, P::NAME, &spans) {
                Ok(token) => {
                    self.otlp_in_flight.push(token);
                    self.metrics.add(&host, OTLP_SENT, &[], spans.len() as u64);
                }
                Err(_) => {
                    host.log(LogLevel::Warn, "tollgate: cannot export spans (no such cluster?)");
                    self.metrics.add(&host, OTLP_FAILED, &[], 1);
                    self.metrics.add(&host, OTLP_DROPPED, &[], spans.len() as u64);
                    return;
                }
            }
        }
    }
}

impl<P: Plugin> Context for PluginRoot<P> {
    /// Answers to span exports sent from [`PluginRoot::flush_spans`].
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, _body_size: usize, _num_trailers: usize) {
        self.otlp_in_flight.retain(|t| *t != token_id);
        let status = proxy_wasm::hostcalls::get_map_value(proxy_wasm::types::MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse::<u16>().ok());
        if num_headers == 0 || !status.is_some_and(|s| (200..300).contains(&s)) {
            let host = WasmHost;
            host.log(LogLevel::Debug, &format!("{}: a span export failed (status {status:?})", P::NAME));
            self.metrics.add(&host, OTLP_FAILED, &[], 1);
        }
    }

    /// Answers to settlements sent from [`PluginRoot::flush_outbox`].
    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, _response_size: usize) {
        if status_code != 0 {
            let host = WasmHost;
            let message = proxy_wasm::hostcalls::get_grpc_status().ok().and_then(|(_, m)| m).unwrap_or_default();
            host.log(LogLevel::Warn, &format!("{}: a settlement failed: gRPC status {status_code} {message}", P::NAME));
            self.metrics.add(&host, &metric::<P>("fleet_settlements_failed"), &[], 1);
        }
    }
}

impl<P: Plugin> RootContext for PluginRoot<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let host = WasmHost;
        let raw = host.plugin_configuration();
        let root_id = host.property_string(&["plugin_root_id"]).unwrap_or_default();
        match config::load::<P::Config>(&raw).and_then(|c| P::build_for_root(c, &root_id)) {
            Ok(state) => {
                if P::uses_fleet_store(&state) || P::otlp(&state).is_some() {
                    if let Err(e) = proxy_wasm::hostcalls::set_tick_period(OUTBOX_FLUSH) {
                        host.log(LogLevel::Error, &format!("{}: cannot start the settlement timer: {e:?}", P::NAME));
                        return false;
                    }
                }
                self.state = Some(Rc::new(state));
                true
            }
            Err(e) => {
                host.log(LogLevel::Error, &format!("{}: invalid plugin configuration: {e}", P::NAME));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; without a configuration (Envoy should never
        // ask, as the plugin failed to load) every request is refused instead.
        match self.state.clone() {
            Some(state) => Some(Box::new(HttpFilter(Stream::new(P::new_exchange(state, self.metrics.clone()))))),
            None => Some(Box::new(HttpFilter(Stream::new(Unconfigured)))),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        self.flush_outbox();
        self.flush_spans();
    }
}

/// Fails closed when there is no valid configuration.
pub struct Unconfigured;

impl HttpExchange for Unconfigured {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Step {
        let _ = crate::reply::send_json(host, 503, &[], br#"{"error":"tollgate: plugin not configured"}"#);
        Step::Pause
    }
}

/// The proxy-wasm glue, once for every filter: each callback goes to the exchange's
/// [`Stream`] (which turns trailers into the body's end) with the real host behind a
/// [`CallbackHost`] (fewer calls across the wasm boundary).
struct HttpFilter<E: HttpExchange>(Stream<E>);

/// Runs one callback against a fresh [`CallbackHost`] and writes its pending header changes.
fn with_host<T>(callback: impl FnOnce(&CallbackHost<'_>) -> T) -> T {
    let host = CallbackHost::new(&WasmHost);
    let out = callback(&host);
    host.finish();
    out
}

fn action(step: Step) -> Action {
    match step {
        Step::Continue => Action::Continue,
        Step::Pause => Action::Pause,
    }
}

impl<E: HttpExchange> Context for HttpFilter<E> {
    fn on_done(&mut self) -> bool {
        with_host(|h| self.0.done(h));
        true
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let message = if status_code == 0 {
            proxy_wasm::hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size).ok().flatten()
        } else {
            None
        };
        let answer = match (status_code, &message) {
            (0, Some(bytes)) => Ok(bytes.as_slice()),
            // An empty message is a valid answer (all fields at their defaults).
            (0, None) => Ok(&[][..]),
            (status, _) => Err(GrpcFailure {
                status,
                message: proxy_wasm::hostcalls::get_grpc_status().ok().and_then(|(_, m)| m).unwrap_or_default(),
            }),
        };
        with_host(|host| self.0.grpc_response(host, token_id, answer));
    }

    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        // No headers at all: the call failed (timeout, reset, no such cluster).
        let status = proxy_wasm::hostcalls::get_map_value(proxy_wasm::types::MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse::<u16>().ok());
        let body = proxy_wasm::hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let answer = match status {
            Some(status) if num_headers > 0 => Ok((status, body.as_slice())),
            _ => Err(()),
        };
        with_host(|host| self.0.http_call_response(host, token_id, answer));
    }
}

impl<E: HttpExchange> HttpContext for HttpFilter<E> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(with_host(|host| self.0.request_headers(host, end_of_stream)))
    }
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(with_host(|host| self.0.request_body(host, body_size, end_of_stream)))
    }
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(with_host(|host| self.0.request_trailers(host)))
    }
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(with_host(|host| self.0.response_headers(host, end_of_stream)))
    }
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(with_host(|host| self.0.response_body(host, body_size, end_of_stream)))
    }
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        action(with_host(|host| self.0.response_trailers(host)))
    }
    fn on_log(&mut self) {
        with_host(|h| self.0.log(h));
    }
}
