//! Tollgate A2A filter. Pure decision modules (`classify`, `session`, `chain`, `card`,
//! `authz`, `listing`) never touch the host; `flow` runs one exchange against the `Host` trait (unit
//! tested against `MemoryHost`); `filter` is the thin proxy-wasm glue, compiled only for wasm.

pub mod authz;
pub mod card;
pub mod chain;
pub mod classify;
pub mod config;
pub mod flow;
pub mod listing;
pub mod session;
#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(tollgate_core::plugin::PluginRoot::<filter::A2APlugin>::default())
    });
}}
