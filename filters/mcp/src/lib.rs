//! Tollgate MCP filter. Pure modules (`message`, `args`, `policy`, `listfilter`, `replies`;
//! `body`: a POST body read into messages, `judge`: the ruling on them, `response`: the
//! response side given bytes, `record`: the audit records) and the host-generic glue that
//! applies them (`exchange`) are native-testable; `filter` is the thin proxy-wasm glue,
//! compiled only for wasm.

pub mod approval;
pub mod args;
pub mod body;
pub mod config;
pub mod delegation;
pub mod denials;
pub mod exchange;
#[cfg(target_arch = "wasm32")]
mod filter;
pub mod jsonpath;
pub mod judge;
pub mod listfilter;
pub mod matcher;
pub mod message;
pub mod number;
pub mod oauth;
pub mod pinning;
pub mod policy;
pub mod ratelimit;
pub mod record;
pub mod replies;
pub mod response;
pub mod router;
pub mod sessions;
#[cfg(test)]
mod schema_tests;
pub mod tokenexchange;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(tollgate_core::plugin::PluginRoot::<filter::MCPPlugin>::default())
    });
}}
