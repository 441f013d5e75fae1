//! The gateway credential the filter gives an agent with every A2A call it forwards
//! (`x-tollgate-a2a-credential`, format and checks in `tollgate_core::gateway`), so the LLM
//! and MCP filters of the same fleet know, on that agent's own calls, which agent it is, on
//! whose behalf it acts, for which team/tier and through which chain.
//!
//! Issued only with `delegation.signing_key`, signed with it, for `delegation.context_ttl_secs`,
//! bound to the trace id of the `traceparent` sent with the hop. Team and tier: the caller's
//! when the chain starts here (an end user: its identity's team, the `on_behalf_of.tier_claim`
//! JWT claim); on a later hop, those of the credential the calling agent carried back (valid
//! signature, unexpired, on this trace, issued to that agent) — an agent cannot change them.

use crate::chain::{self, Trust};
use crate::config::State;
use crate::record::ExchangeFacts;
use tollgate_core::gateway::{self, Credential};
use tollgate_core::host::Host;
use tollgate_core::wire::trace::TraceParent;

/// Team and tier the chain carries (from the caller, or from the credential it carried back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// The verified credential the caller presented (its agent is checked when issuing).
    pub presented: Option<Credential>,
    /// The end user's tier claim, when the chain starts with this call.
    pub tier: Option<String>,
}

/// Reads what the next credential may carry over: the presented credential, verified against
/// the signing key, the clock and the inbound trace (a refused one is ignored: the call is
/// then judged as before, by the `x-tollgate-a2a-sig` context and the caller's identity).
pub fn carried(host: &dyn Host, state: &State, presented: Option<&str>, traceparent_in: Option<&str>, tier: Option<String>) -> Carried {
    let presented = match (&state.delegation.signing_key, presented) {
        (Some(key), Some(value)) => {
            let now = host.now_nanos() / 1_000_000_000;
            let trace = traceparent_in.and_then(TraceParent::parse);
            gateway::verify(key, value, now)
                .ok()
                .filter(|c| gateway::check_trace(c, trace.as_ref().map(|t| t.trace_id.as_str())).is_ok())
        }
        _ => None,
    };
    Carried { presented, tier }
}

/// The credential for the agent this call goes to (`None`: no signing key, no trace, or the
/// chain is empty). Pure but for the inputs.
pub fn issue(facts: &ExchangeFacts, carried: &Carried, expiry: u64) -> Option<Credential> {
    let trace = facts.trace.as_ref()?;
    let agent = facts.chain.last()?.clone();
    // The claims of the credential the caller carried back, if it was issued to the caller.
    let from_caller = carried
        .presented
        .as_ref()
        .filter(|c| facts.trust != Trust::None && c.agent == facts.caller);
    let (team, tier) = match from_caller {
        Some(c) => (c.team.clone(), c.tier.clone()),
        None if facts.trust == Trust::None => (facts.identity.as_ref().and_then(|i| i.team.clone()), carried.tier.clone()),
        // An agent trusted by identity without a credential: its own team.
        None => (facts.identity.as_ref().and_then(|i| i.team.clone()), None),
    };
    Some(Credential {
        expiry,
        trace_id: trace.trace_id.clone(),
        agent,
        on_behalf_of: facts.on_behalf_of.clone(),
        team,
        tier,
        chain: facts.chain.clone(),
    })
}

/// The signed header value for this call, when a signing key is configured.
pub fn header_value(host: &dyn Host, state: &State, facts: &ExchangeFacts, carried: &Carried) -> Option<String> {
    let key = state.delegation.signing_key.as_ref()?;
    let expiry = chain::context_expiry(host.now_nanos(), state.delegation.context_ttl_secs);
    issue(facts, carried, expiry).map(|c| gateway::sign(key, &c))
}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;
