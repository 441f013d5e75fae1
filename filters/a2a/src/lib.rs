//! Tollgate A2A filter.
//!
//! - Pure modules, no host access: `classify` (what a request is), `session` (ids in bodies
//!   and streams), `chain` (delegation context, signatures, loop/depth), `authz` (rules),
//!   `card` (card URL rewriting), `listing` (task lists cut to the caller's own), `decide` (the
//!   decision on a call, from facts), `replies` (refusals to bodies and statuses), `record`
//!   (audit record and metrics from the exchange's facts).
//! - `config`: raw serde types, validated, compiled once into the immutable `State`.
//! - Host reads and writes: `head` (request head, route, the facts only the host knows),
//!   `conversations` (the conversation table), `upstream` (the headers sent to the agent),
//!   `response` (held cards and task lists), and
//!   `exchange`, the glue of one request, written against the `Host` trait (unit tested against
//!   `MemoryHost`). `flow` re-exports it under its former name.
//! - `filter` is the thin proxy-wasm glue, compiled only for wasm.

pub mod affinity;
pub mod authz;
pub mod card;
pub mod chain;
pub mod classify;
pub mod config;
pub mod conversations;
pub mod credential;
pub mod decide;
pub mod exchange;
pub mod grpc;
pub mod flow;
pub mod head;
pub mod listing;
pub mod push;
pub mod record;
pub mod replies;
pub mod response;
#[cfg(test)]
mod schema_tests;
pub mod session;
pub mod upstream;
#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(tollgate_core::plugin::PluginRoot::<filter::A2APlugin>::default())
    });
}}
