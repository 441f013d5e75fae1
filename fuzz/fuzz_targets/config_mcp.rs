//! MCP filter configuration: `tollgate_core::config::load::<Config>` then `Shared::build`
//! (policy, JSONPath, regex and rate-limit compilation), as `on_configure` does. Asserts the
//! shared configuration properties (tollgate-fuzz `check_config`: no panic, deterministic,
//! errors name a field, formatting-independent), then runs one judged `tools/call` through
//! a loaded configuration (no panic, and a local reply or a forward, never both).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;
use tollgate_core::stream::Step;
use tollgate_core::host::MemoryHost;
use tollgate_core::observe::metrics::Metrics;
use tollgate_mcp::config::Config;
use tollgate_mcp::exchange::{Exchange, Shared};

fn load(bytes: &[u8]) -> Result<Shared, String> {
    let config: Config = tollgate_core::config::load(bytes).map_err(|e| e.0)?;
    Shared::build(config).map_err(|e| e.0)
}

fuzz_target!(|data: &[u8]| {
    if !tollgate_fuzz::check_config(data, |b| load(b).map(|_| ())) {
        return;
    }
    let shared = Rc::new(load(data).unwrap());
    let host = MemoryHost::with_request_headers(&[
        (":method", "POST"),
        (":path", "/mcp"),
        ("content-type", "application/json"),
        ("x-api-key", "tg-demo-alice"),
        ("mcp-protocol-version", "2025-06-18"),
    ]);
    host.set_prop(&["xds", "cluster_name"], b"mcp_demo");
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"orders","n":[1,2.5,"x"]}}}"#;
    let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
    let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#]);
    let replied = host.local_reply.borrow().is_some();
    if replied {
        assert!(driven.response_headers.is_none(), "replied locally and forwarded");
    } else {
        assert!(matches!(driven.request_body, Some(Step::Continue) | None));
    }
});
