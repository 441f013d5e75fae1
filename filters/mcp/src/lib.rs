//! Tollgate MCP filter. Pure decision modules are native-testable; `filter` is the thin
//! proxy-wasm glue, compiled only for wasm.

pub mod config;
#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(tollgate_core::plugin::PluginRoot::<filter::MCPPlugin>::default())
    });
}}
