//! What the gateway sends the agent with a forwarded call: the trace headers, and on A2A
//! calls its own delegation context (hop, chain, caller, on-behalf-of, signed when a key is
//! configured) and the ids it read. Every `x-tollgate-a2a-*` header a caller sent was removed
//! with the request head; these are the only ones an agent receives.

use crate::chain;
use crate::config::State;
use crate::record::ExchangeFacts;
use tollgate_core::host::{HeaderMap, Host, HostExt};

/// A value that may go into a header as is (ids come from request and response bodies).
pub fn header_safe(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.chars().any(char::is_control))
}

/// Sets the upstream request headers; `a2a_call`: also the delegation context and ids (not
/// for card fetches).
pub fn set_headers(host: &dyn Host, state: &State, facts: &ExchangeFacts, a2a_call: bool) {
    if let Some(step) = &facts.trace {
        host.try_set_header(HeaderMap::Request, "traceparent", Some(&step.traceparent));
        host.try_set_header(HeaderMap::Request, "tracestate", step.tracestate.as_deref());
    }
    if !a2a_call {
        return;
    }
    let hop = facts.hop.unwrap_or(1);
    let chain_value = chain::encode_chain(&facts.chain);
    host.try_set_header(HeaderMap::Request, chain::HOP, Some(&hop.to_string()));
    host.try_set_header(HeaderMap::Request, chain::CHAIN, Some(&chain_value));
    host.try_set_header(HeaderMap::Request, chain::CALLER, header_safe(Some(&facts.caller)));
    host.try_set_header(HeaderMap::Request, chain::ON_BEHALF_OF, header_safe(facts.on_behalf_of.as_deref()));
    let delegation = &state.delegation;
    if let Some(key) = &delegation.signing_key {
        let expiry = chain::context_expiry(host.now_nanos(), delegation.context_ttl_secs);
        let sig = state.sign_memo.sign(key, hop, &chain_value, facts.on_behalf_of.as_deref(), expiry);
        host.try_set_header(HeaderMap::Request, chain::SIG, Some(&sig));
    }
    let credential = crate::credential::header_value(host, state, facts, &facts.carried);
    host.try_set_header(HeaderMap::Request, tollgate_core::gateway::HEADER, credential.as_deref());
    host.try_set_header(HeaderMap::Request, chain::CONTEXT_ID, header_safe(facts.ids.context_id.as_deref()));
    host.try_set_header(HeaderMap::Request, chain::TASK_ID, header_safe(facts.ids.task_id.as_deref()));
    host.try_set_header(HeaderMap::Request, chain::MESSAGE_ID, header_safe(facts.ids.message_id.as_deref()));
}
