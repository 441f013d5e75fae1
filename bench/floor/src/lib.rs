//! Benchmark reference: the least a body-inspecting proxy-wasm filter can do. It holds the
//! request headers until the whole body has arrived, reads the body once, and continues.
//! Everything Tollgate's filters cost above this row is their own work; everything this row
//! costs above bare Envoy is the V8 runtime's per-request overhead (context creation and the
//! calls across the wasm boundary).
//!
//! With a plugin configuration `<call>=<n>` (used by `bench/hostcalls.py`), it also makes
//! `n` host calls of one kind per request after reading the body, so the cost of one call
//! can be measured against the empty filter. Without one it does nothing else.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot::default()) });
}}

/// The host calls a configuration can ask for, `n` times per request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    None,
    GetHeader,
    GetHeaders,
    SetHeader,
    RemoveAbsentHeader,
    SetHeaders,
    GetProperty,
    SetProperty,
    GetSharedData,
    SetSharedData,
    IncrementMetric,
    Clock,
}

impl Call {
    fn parse(name: &str) -> Call {
        match name {
            "get_header" => Call::GetHeader,
            "get_headers" => Call::GetHeaders,
            "set_header" => Call::SetHeader,
            "remove_absent_header" => Call::RemoveAbsentHeader,
            "set_headers" => Call::SetHeaders,
            "get_property" => Call::GetProperty,
            "set_property" => Call::SetProperty,
            "get_shared_data" => Call::GetSharedData,
            "set_shared_data" => Call::SetSharedData,
            "increment_metric" => Call::IncrementMetric,
            "clock" => Call::Clock,
            _ => Call::None,
        }
    }
}

#[derive(Clone, Copy)]
struct Plan {
    call: Call,
    times: usize,
    metric: u32,
}

struct FloorRoot {
    plan: Rc<Plan>,
}

impl Default for FloorRoot {
    fn default() -> Self {
        FloorRoot { plan: Rc::new(Plan { call: Call::None, times: 0, metric: 0 }) }
    }
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let (name, times) = config.trim().split_once('=').unwrap_or(("", "0"));
        let call = Call::parse(name);
        let metric = if call == Call::IncrementMetric {
            hostcalls::define_metric(MetricType::Counter, "bench_floor.calls").unwrap_or(0)
        } else {
            0
        };
        if call == Call::GetSharedData {
            let _ = hostcalls::set_shared_data("bench.floor.key", Some(b"a value of some thirty bytes.."), None);
        }
        self.plan = Rc::new(Plan { call, times: times.parse().unwrap_or(0), metric });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorFilter { plan: self.plan.clone() }))
    }
}

struct FloorFilter {
    plan: Rc<Plan>,
}

impl FloorFilter {
    fn make_calls(&self) {
        let Plan { call, times, metric } = *self.plan;
        let headers = if call == Call::SetHeaders { self.get_http_request_headers() } else { Vec::new() };
        for i in 0..times {
            match call {
                Call::None => {}
                Call::GetHeader => drop(self.get_http_request_header("content-type")),
                Call::GetHeaders => drop(self.get_http_request_headers()),
                Call::SetHeader => self.set_http_request_header(&format!("x-bench-{i}"), Some("value")),
                Call::RemoveAbsentHeader => self.set_http_request_header(&format!("x-bench-{i}"), None),
                Call::SetHeaders => {
                    let mut pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    pairs.push(("x-bench", "value"));
                    self.set_http_request_headers(pairs);
                }
                Call::GetProperty => drop(self.get_property(vec!["request", "id"])),
                Call::SetProperty => {
                    let _ = hostcalls::set_property(vec![format!("bench.floor.k{i}").as_str()], Some(b"a value of some length"));
                }
                Call::GetSharedData => drop(self.get_shared_data("bench.floor.key")),
                Call::SetSharedData => {
                    let _ = self.set_shared_data("bench.floor.key", Some(b"a value of some thirty bytes.."), None);
                }
                Call::IncrementMetric => {
                    let _ = hostcalls::increment_metric(metric, 1);
                }
                Call::Clock => drop(self.get_current_time()),
            }
        }
    }
}

impl Context for FloorFilter {}

impl HttpContext for FloorFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        // Read the body as a filter that decides on it would (the bytes are not used).
        let _body = self.get_http_request_body(0, body_size);
        self.make_calls();
        Action::Continue
    }
}
