//! Tollgate LLM filter: an AI gateway for OpenAI Chat, OpenAI Responses, Anthropic Messages
//! and Gemini clients. Pure modules (`api`, `routing`, `usage`, `translate`, `cost`, `decide`, and the
//! record builders in `record`) never touch the host; `limits` (shared-data counters) and
//! `record`'s metrics work through `&dyn Host`, as does `exchange`, which runs one request:
//! it reads facts from the host, lets `decide` choose, and applies the choice (all natively
//! testable with `MemoryHost`); `filter` is the thin proxy-wasm glue, compiled only for wasm.

pub mod api;
pub mod attempt;
pub mod cache;
pub mod config;
pub mod cost;
pub mod decide;
pub mod delegation;
pub mod deployments;
pub mod endpoints;
pub mod exchange;
pub mod fleet;
pub mod guard;
pub mod guardrails;
pub mod limits;
pub mod record;
pub mod routing;
pub mod translate;
pub mod usage;
#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(test)]
mod schema_tests;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(tollgate_core::plugin::PluginRoot::<filter::LLMPlugin>::default())
    });
}}
