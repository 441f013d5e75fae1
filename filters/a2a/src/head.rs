//! What the exchange reads from the host before deciding: the request headers (one listing
//! of the map, [`RequestHead`]), the route's agent and path metadata, and the facts the pure
//! decision needs that only the host knows — the clock for a presented signature, the
//! on-behalf-of JWT claim.

use crate::chain::{self, Presented};
use crate::config::State;
use crate::decide;
use tollgate_core::host::{HeaderMap, Host, HostExt};
use tollgate_core::identity::Identity;
use tollgate_core::observe::audit;

/// The request headers the filter reads, from one listing of the map (the values moved out)
/// instead of a lookup per name. As with single lookups, the first of repeated headers wins.
#[derive(Default)]
pub struct RequestHead {
    pub request_id: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub content_type: Option<String>,
    pub a2a_version: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub presented: Presented,
    /// The gateway credential the caller carried back (`x-tollgate-a2a-credential`).
    pub credential: Option<String>,
    /// Every `x-tollgate-a2a-*` header name present (gateway-owned: removed).
    pub gateway_owned: Vec<String>,
}

impl RequestHead {
    pub fn read(host: &dyn Host) -> RequestHead {
        let mut head = RequestHead::default();
        // Borrowed from the callback's snapshot: only the values kept are copied.
        let listed = host.for_each_header(HeaderMap::Request, &mut |name, value| {
            let lower;
            let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            let slot = match key {
                audit::REQUEST_ID_HEADER => Some(&mut head.request_id),
                ":method" => Some(&mut head.method),
                ":path" => Some(&mut head.path),
                "content-type" => Some(&mut head.content_type),
                "a2a-version" => Some(&mut head.a2a_version),
                "traceparent" => Some(&mut head.traceparent),
                "tracestate" => Some(&mut head.tracestate),
                chain::HOP => Some(&mut head.presented.hop),
                chain::CHAIN => Some(&mut head.presented.chain),
                chain::ON_BEHALF_OF => Some(&mut head.presented.on_behalf_of),
                chain::SIG => Some(&mut head.presented.sig),
                tollgate_core::gateway::HEADER => Some(&mut head.credential),
                _ => None,
            };
            if let Some(slot) = slot.filter(|slot| slot.is_none()) {
                *slot = Some(value.to_owned());
            }
            if key.starts_with(chain::PREFIX) {
                head.gateway_owned.push(name.to_owned());
            }
        });
        if listed.is_err() {
            return RequestHead::default();
        }
        // An empty value counts as absent (a repeated header's later value never stands in).
        for value in [
            &mut head.traceparent,
            &mut head.tracestate,
            &mut head.presented.hop,
            &mut head.presented.chain,
            &mut head.presented.on_behalf_of,
            &mut head.presented.sig,
        ] {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        head
    }
}

/// The agent this route leads to: route metadata, else (if allowed) the cluster name.
/// `None`: not an agent route (the filter then only removes the gateway-owned headers).
pub fn route_target(host: &dyn Host, state: &State) -> Option<String> {
    let r = &state.routes;
    let from_metadata = host.property_string(&["xds", "route_metadata", "filter_metadata", &r.metadata_namespace, &r.agent_key]);
    from_metadata.or_else(|| if r.cluster_fallback { host.property_string(&["xds", "cluster_name"]) } else { None })
}

/// A value from the route's metadata (`None` for an empty key).
pub fn route_metadata(host: &dyn Host, state: &State, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    host.property_string(&["xds", "route_metadata", "filter_metadata", &state.routes.metadata_namespace, key])
}

/// Whether the presented delegation context carries the gateway's valid, unexpired signature.
/// Checked (and the clock read) only when it can matter: a context was presented, a signing
/// key is configured and the caller is not trusted by identity anyway.
pub fn signature_valid(host: &dyn Host, state: &State, identity: Option<&Identity>, presented: &Presented) -> bool {
    if presented.is_empty() || decide::trusted_agent(&state.delegation, identity).is_some() {
        return false;
    }
    state.delegation.signing_key.as_ref().is_some_and(|key| chain::verify(key, presented, host.now_nanos() / 1_000_000_000))
}

/// The end user's tier, from the configured JWT claim (`on_behalf_of.tier_claim`).
pub fn jwt_tier(host: &dyn Host, state: &State) -> Option<String> {
    let claim = state.tier_claim.as_deref()?;
    tollgate_core::identity::jwt_claim(host, state.identity.jwt.as_ref()?, claim).filter(|t| !t.is_empty())
}

/// The end user named by the configured JWT claim (`on_behalf_of.jwt_claim`).
pub fn jwt_on_behalf_of(host: &dyn Host, state: &State) -> Option<String> {
    let claim = state.on_behalf_of_claim.as_deref()?;
    tollgate_core::identity::jwt_claim(host, state.identity.jwt.as_ref()?, claim)
}
