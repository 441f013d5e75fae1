//! A2A filter configuration: `tollgate_core::config::load::<Config>` then `flow::build`
//! (rules, agents, delegation key, conversation table), as `on_configure` does. Asserts the
//! shared configuration properties (tollgate-fuzz `check_config`), then runs one
//! `message/send` through a loaded configuration (no panic; a local reply or a forward,
//! never both).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;
use tollgate_core::host::MemoryHost;
use tollgate_core::observe::metrics::Metrics;
use tollgate_a2a::config::Config;
use tollgate_a2a::flow::{build, Exchange, Shared};

fn load(bytes: &[u8]) -> Result<Shared, String> {
    let config: Config = tollgate_core::config::load(bytes).map_err(|e| e.0)?;
    build(config).map_err(|e| e.0)
}

fuzz_target!(|data: &[u8]| {
    if !tollgate_fuzz::check_config(data, |b| load(b).map(|_| ())) {
        return;
    }
    let shared = Rc::new(load(data).unwrap());
    let host = MemoryHost::with_request_headers(&[
        (":method", "POST"),
        (":path", "/agents/echo/"),
        ("content-type", "application/json"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ]);
    host.set_prop(&["xds", "cluster_name"], b"agent-echo");
    host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], b"echo");
    let body = br#"{"jsonrpc":"2.0","id":"r1","method":"message/send","params":{"message":{"role":"user","messageId":"m1","contextId":"c1","parts":[{"kind":"text","text":"hi"}]}}}"#;
    let result: &[u8] = br#"{"jsonrpc":"2.0","id":"r1","result":{"kind":"task","id":"t1","contextId":"c1","status":{"state":"completed"}}}"#;
    let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
    let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[result]);
    if host.local_reply.borrow().is_some() {
        assert!(driven.response_headers.is_none(), "replied locally and forwarded");
    }
});
