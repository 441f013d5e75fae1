//! One identity model for all three filters.
//!
//! Sources, tried in the configured order: `jwt_authn` claims in dynamic metadata, the mTLS
//! peer's URI SAN (a SPIFFE id), the API-key map (keys stored only as SHA-256 digests), and a
//! trusted header (only when configured, for deployments where an earlier hop authenticated).
//! Before all of them, when configured, the gateway credential (`gateway`): the signed
//! delegation context the A2A filter gave an agent ([`crate::gateway`]); presented, it is the
//! identity or the request is refused, never a fall back to another source.

use crate::config::ConfigError;
use crate::hash::sha256_hex;
use crate::host::{HeaderMap, Host, HostExt};
use crate::host::abi_pairs::deserialize_pairs_exact;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Jwt,
    Mtls,
    ApiKey,
    Header,
    /// The gateway credential an agent got with an A2A hop (`identity.gateway`).
    Gateway,
}

/// What a gateway credential adds to an identity: the agent acting, on whose behalf, through
/// which chain. Serialized flat into the identity (and the record envelope names them too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delegation {
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub source: Source,
    /// For API keys: the key's configured name (never the key itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// For API keys: models the key may use (`None`: any). Used by the LLM filter.
    #[serde(skip)]
    pub allowed_models: Option<Vec<crate::glob::Glob>>,
    /// For the `gateway` source: the agent, on-behalf-of principal, tier and chain.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The agent acting (gateway credential), if any.
    pub fn agent(&self) -> Option<&str> {
        self.delegation.as_ref().map(|d| d.agent.as_str())
    }

    /// The principal the agent acts for (gateway credential), if any.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.delegation.as_ref().and_then(|d| d.on_behalf_of.as_deref())
    }
}

/// The `agents` / `on_behalf_of` selectors of a policy rule or a limit (MCP rules and rate
/// limits, LLM limits): each list present needs a matching value of the caller's gateway
/// identity, so a caller without a gateway credential never matches one.
#[derive(Debug, Default, Clone)]
pub struct DelegationSelectors {
    pub agents: Option<Vec<crate::glob::Glob>>,
    pub on_behalf_of: Option<Vec<crate::glob::Glob>>,
}

impl DelegationSelectors {
    pub fn new<S: AsRef<str>>(agents: Option<&[S]>, on_behalf_of: Option<&[S]>) -> Self {
        let globs = |list: Option<&[S]>| list.map(|l| l.iter().map(|g| crate::glob::Glob::new(g.as_ref())).collect());
        DelegationSelectors { agents: globs(agents), on_behalf_of: globs(on_behalf_of) }
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_none() && self.on_behalf_of.is_none()
    }

    pub fn matches(&self, who: Option<&Identity>) -> bool {
        let holds = |globs: &Option<Vec<crate::glob::Glob>>, value: Option<&str>| match globs {
            None => true,
            Some(list) => value.is_some_and(|v| list.iter().any(|g| g.matches(v))),
        };
        holds(&self.agents, who.and_then(Identity::agent)) && holds(&self.on_behalf_of, who.and_then(Identity::on_behalf_of))
    }

    /// Load-time check of one selector list at `at.<name>`: not empty, no blank glob, and
    /// `identity.gateway` configured (without it no caller could ever match: a rule or limit
    /// that silently never applies is refused).
    pub fn check_list<S: AsRef<str>>(at: &str, name: &str, list: Option<&[S]>, gateway: bool) -> Result<(), ConfigError> {
        let Some(list) = list else { return Ok(()) };
        if list.is_empty() || list.iter().any(|g| g.as_ref().trim().is_empty()) {
            return Err(ConfigError::field(&format!("{at}.{name}"), "must be a list of non-empty globs (omit it for any caller)"));
        }
        if !gateway {
            return Err(ConfigError::field(
                &format!("{at}.{name}"),
                "needs identity.gateway (the gateway credential names the agent and whom it acts for)",
            ));
        }
        Ok(())
    }
}

/// `identity.gateway.signing_key`: the fleet's HMAC key, prepared at load.
#[derive(Clone)]
pub struct SigningKey {
    pub key: crate::gateway::HmacKey,
    len: usize,
}

impl<'de> Deserialize<'de> for SigningKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let key = crate::gateway::HmacKey::new(raw.as_bytes()).ok_or_else(|| serde::de::Error::custom("unusable as an HMAC key"))?;
        Ok(SigningKey { key, len: raw.len() })
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The `gateway` source: accept the gateway credential (header `x-tollgate-a2a-credential`)
/// the A2A filter of the same fleet gave an agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySource {
    /// The fleet's signing key: the A2A filter's `delegation.signing_key` (at least 32 bytes).
    pub signing_key: SigningKey,
    /// When the connection has a verified peer certificate with a URI SAN, the SAN must name
    /// the credential's agent (the SAN itself or a SPIFFE id ending in `/<agent>`).
    #[serde(default = "default_true")]
    pub bind_peer_certificate: bool,
    /// Refuse a credential on a connection without a verified peer certificate with a URI SAN
    /// (default false: without mTLS the binding is the trace and the expiry). Turn it on where
    /// every agent connects with mTLS, so a credential copied off one connection is useless on
    /// another.
    #[serde(default)]
    pub require_peer_certificate: bool,
    /// The SPIFFE trust domain peer certificates must be of (e.g. `cluster.local`): with it,
    /// only a SPIFFE id `spiffe://<trust_domain>/.../<agent>` names the agent.
    #[serde(default)]
    pub trust_domain: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSource {
    /// The `payload_in_metadata` name configured on `jwt_authn`.
    pub payload_key: String,
    #[serde(default = "default_jwt_namespace")]
    pub metadata_namespace: String,
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Claim naming the team or tenant, e.g. `team` or `org.id` (dots descend).
    #[serde(default)]
    pub team_claim: Option<String>,
    /// Claim holding groups or roles: a list, or a space/comma separated string.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_jwt_namespace() -> String {
    "envoy.filters.http.jwt_authn".into()
}
fn default_principal_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Hex SHA-256 of the key (`printf %s KEY | sha256sum`). The raw key is never stored.
    pub sha256: String,
    /// A name for logs and audit records.
    pub name: String,
    pub principal: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Model globs this key may use (LLM filter); absent means any.
    #[serde(default)]
    pub models: Option<Vec<crate::glob::Glob>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySource {
    /// Headers that may carry the key; `authorization` is read as `Bearer <key>`.
    #[serde(default = "default_key_headers")]
    pub headers: Vec<String>,
    pub keys: Vec<ApiKeyEntry>,
}

fn default_key_headers() -> Vec<String> {
    vec!["authorization".into(), "x-api-key".into(), "x-goog-api-key".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    /// Header carrying the principal. Trust it only behind a hop that sets it.
    pub principal: String,
    #[serde(default)]
    pub team: Option<String>,
    /// Comma-separated groups.
    #[serde(default)]
    pub groups: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub jwt: Option<JwtSource>,
    /// Take the principal from the mTLS peer certificate's URI SAN (SPIFFE id).
    #[serde(default)]
    pub mtls: bool,
    #[serde(default)]
    pub api_keys: Option<ApiKeySource>,
    #[serde(default)]
    pub trusted_header: Option<HeaderSource>,
    /// Accept the gateway credential (see [`GatewaySource`]); tried before the others.
    #[serde(default)]
    pub gateway: Option<GatewaySource>,
}

impl IdentityConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(gateway) = &self.gateway {
            if gateway.signing_key.len < 32 {
                return Err(ConfigError::field(&format!("{prefix}.gateway.signing_key"), "must be at least 32 bytes"));
            }
            if let Some(domain) = &gateway.trust_domain {
                let valid = !domain.is_empty() && domain.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if !valid {
                    return Err(ConfigError::field(
                        &format!("{prefix}.gateway.trust_domain"),
                        "must be a SPIFFE trust domain name (letters, digits, '.', '-', '_'), without spiffe://",
                    ));
                }
            }
        }
        if let Some(keys) = &self.api_keys {
            for (i, k) in keys.keys.iter().enumerate() {
                let ok = k.sha256.len() == 64 && k.sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(ConfigError::field(
                        &format!("{prefix}.api_keys.keys[{i}].sha256"),
                        "must be 64 hex characters (SHA-256 of the key)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every request header that may carry a client credential under this configuration
    /// (`authorization`, the well-known API-key headers, the gateway credential and the
    /// configured key headers), lowercase. Filters remove them before the upstream unless told to forward them.
    pub fn credential_headers(&self) -> Vec<String> {
        let mut headers: Vec<String> = ["authorization", "x-api-key", "x-goog-api-key"].iter().map(|s| s.to_string()).collect();
        // The gateway credential is a credential whether or not this filter accepts it: never
        // passed on to a provider or server.
        headers.push(crate::gateway::HEADER.to_string());
        if let Some(keys) = &self.api_keys {
            for h in &keys.headers {
                let h = h.to_ascii_lowercase();
                if !headers.contains(&h) {
                    headers.push(h);
                }
            }
        }
        headers
    }

    pub fn is_empty(&self) -> bool {
        self.jwt.is_none() && !self.mtls && self.api_keys.is_none() && self.trusted_header.is_none() && self.gateway.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// A credential was presented but matches no configured key.
    UnknownApiKey,
    /// A gateway credential was presented and refused.
    Gateway(crate::gateway::Rejection),
}

impl IdentityError {
    /// The reason in audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::UnknownApiKey => "unknown API key",
            IdentityError::Gateway(r) => r.reason(),
        }
    }
}

/// Removes the client's credentials (see [`IdentityConfig::credential_headers`]) from the
/// upstream request.
pub fn strip_credentials(host: &dyn Host, credential_headers: &[String]) {
    for name in credential_headers {
        host.try_set_header(HeaderMap::Request, name, None);
    }
}

/// The API key presented in `headers`, if any (`Authorization: Bearer` or a key header).
pub fn presented_api_key(host: &dyn Host, source: &ApiKeySource) -> Option<String> {
    for name in &source.headers {
        if let Some(value) = host.request_header(name) {
            let value = value.trim();
            let key = if name.eq_ignore_ascii_case("authorization") {
                match value.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => continue,
                }
            } else {
                value
            };
            if !key.is_empty() {
                return Some(key.to_string());
            }
        }
    }
    None
}

/// Resolves the caller. `Ok(None)`: no credential at all (anonymous).
pub fn resolve(host: &dyn Host, config: &IdentityConfig) -> Result<Option<Identity>, IdentityError> {
    if let Some(gateway) = &config.gateway {
        if let Some(value) = host.request_header(crate::gateway::HEADER).filter(|v| !v.trim().is_empty()) {
            return from_gateway(host, gateway, &value).map(Some).map_err(IdentityError::Gateway);
        }
    }
    if let Some(jwt) = &config.jwt {
        if let Some(identity) = from_jwt(host, jwt) {
            return Ok(Some(identity));
        }
    }
    if config.mtls {
        if let Some(identity) = from_mtls(host) {
            return Ok(Some(identity));
        }
    }
    if let Some(keys) = &config.api_keys {
        if let Some(key) = presented_api_key(host, keys) {
            return from_api_key(&key, keys).map(Some).ok_or(IdentityError::UnknownApiKey);
        }
    }
    if let Some(header) = &config.trusted_header {
        if let Some(principal) = host.request_header(&header.principal).filter(|p| !p.is_empty()) {
            return Ok(Some(Identity {
                principal,
                team: header.team.as_ref().and_then(|h| host.request_header(h)),
                groups: header
                    .groups
                    .as_ref()
                    .and_then(|h| host.request_header(h))
                    .map(|g| split_list(&g))
                    .unwrap_or_default(),
                source: Source::Header,
                key_name: None,
                allowed_models: None,
                delegation: None,
            }));
        }
    }
    Ok(None)
}

/// The identity a presented gateway credential gives: signature and expiry
/// ([`crate::gateway::verify`]), the trace binding (the request's `traceparent` trace id),
/// then, with `bind_peer_certificate`, the peer certificate's agent.
pub fn from_gateway(host: &dyn Host, source: &GatewaySource, value: &str) -> Result<Identity, crate::gateway::Rejection> {
    let now_secs = host.now_nanos() / 1_000_000_000;
    let credential = crate::gateway::verify(&source.signing_key.key, value, now_secs)?;
    let trace = host.request_header("traceparent").and_then(|t| crate::wire::trace::TraceParent::parse(&t));
    crate::gateway::check_trace(&credential, trace.as_ref().map(|t| t.trace_id.as_str()))?;
    if source.bind_peer_certificate || source.require_peer_certificate {
        match peer_uri_san(host) {
            Some(san) if !crate::gateway::peer_names_agent(&san, &credential.agent, source.trust_domain.as_deref()) => {
                return Err(crate::gateway::Rejection::PeerMismatch);
            }
            None if source.require_peer_certificate => return Err(crate::gateway::Rejection::NoPeer),
            _ => {}
        }
    }
    Ok(from_credential(credential))
}

/// The identity of a verified credential: the agent is the principal.
pub fn from_credential(credential: crate::gateway::Credential) -> Identity {
    Identity {
        principal: credential.agent.clone(),
        team: credential.team,
        groups: Vec::new(),
        source: Source::Gateway,
        key_name: None,
        allowed_models: None,
        delegation: Some(Delegation {
            agent: credential.agent,
            on_behalf_of: credential.on_behalf_of,
            tier: credential.tier,
            chain: credential.chain,
        }),
    }
}

/// The URI SAN of a verified mTLS peer certificate.
fn peer_uri_san(host: &dyn Host) -> Option<String> {
    let mtls = host.property(&["connection", "mtls"]).ok().flatten();
    if mtls.as_deref() != Some(&[1u8][..]) {
        return None;
    }
    host.property_string(&["connection", "uri_san_peer_certificate"]).filter(|s| !s.is_empty())
}

/// A string claim of the verified JWT (`claim` may descend with dots, e.g. `act.sub`).
pub fn jwt_claim(host: &dyn Host, jwt: &JwtSource, claim: &str) -> Option<String> {
    let mut path: Vec<&str> = vec!["metadata", "filter_metadata", &jwt.metadata_namespace, &jwt.payload_key];
    path.extend(claim.split('.'));
    host.property_string(&path)
}

fn claim(host: &dyn Host, jwt: &JwtSource, claim: &str) -> Option<Vec<u8>> {
    let mut path: Vec<&str> = vec!["metadata", "filter_metadata", &jwt.metadata_namespace, &jwt.payload_key];
    path.extend(claim.split('.'));
    host.property(&path).ok().flatten()
}

/// A claim as strings: Envoy returns a list claim as pairs (element as key, empty value),
/// a string claim as-is.
fn claim_strings(raw: &[u8]) -> Vec<String> {
    if let Some(pairs) = deserialize_pairs_exact(raw) {
        return pairs.into_iter().map(|(k, _)| k).filter(|v| !v.is_empty()).collect();
    }
    std::str::from_utf8(raw).map(split_list).unwrap_or_default()
}

fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' ']).map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()
}

fn from_jwt(host: &dyn Host, jwt: &JwtSource) -> Option<Identity> {
    let principal = claim(host, jwt, &jwt.principal_claim).and_then(|v| String::from_utf8(v).ok())?;
    if principal.is_empty() {
        return None;
    }
    let team = jwt
        .team_claim
        .as_ref()
        .and_then(|c| claim(host, jwt, c))
        .and_then(|v| String::from_utf8(v).ok());
    let groups = claim(host, jwt, &jwt.groups_claim).map(|v| claim_strings(&v)).unwrap_or_default();
    Some(Identity {
        principal,
        team,
        groups,
        source: Source::Jwt,
        key_name: None,
        allowed_models: None,
        delegation: None,
    })
}

fn from_mtls(host: &dyn Host) -> Option<Identity> {
    let mtls = host.property(&["connection", "mtls"]).ok().flatten();
    if mtls.as_deref() != Some(&[1u8][..]) {
        return None;
    }
    let san = host.property_string(&["connection", "uri_san_peer_certificate"])?;
    // spiffe://<trust-domain>/ns/<namespace>/sa/<account>: the namespace is the team.
    let team = san
        .strip_prefix("spiffe://")
        .and_then(|rest| {
            let parts: Vec<&str> = rest.split('/').collect();
            parts.iter().position(|p| *p == "ns").and_then(|i| parts.get(i + 1)).map(|s| s.to_string())
        });
    Some(Identity {
        principal: san,
        team,
        groups: Vec::new(),
        source: Source::Mtls,
        key_name: None,
        allowed_models: None,
        delegation: None,
    })
}

/// Finds a key by digest. Compared in constant time per entry so timing does not reveal
/// how much of a digest matched.
pub fn from_api_key(key: &str, source: &ApiKeySource) -> Option<Identity> {
    let digest = sha256_hex(key.as_bytes());
    let entry = source.keys.iter().find(|k| constant_time_eq_hex(k.sha256.as_bytes(), digest.as_bytes()))?;
    Some(Identity {
        principal: entry.principal.clone(),
        team: entry.team.clone(),
        groups: entry.groups.clone(),
        source: Source::ApiKey,
        key_name: Some(entry.name.clone()),
        allowed_models: entry.models.clone(),
        delegation: None,
    })
}

/// Compares a configured hex digest (either case) with a lowercase one, in constant time.
fn constant_time_eq_hex(configured: &[u8], digest: &[u8]) -> bool {
    if configured.len() != digest.len() {
        return false;
    }
    configured.iter().zip(digest).fold(0u8, |acc, (x, y)| acc | (x.to_ascii_lowercase() ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    fn keys() -> ApiKeySource {
        serde_json::from_value(serde_json::json!({
            "keys": [{"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice",
                      "team": "payments", "groups": ["eng"], "models": ["gpt-4*"]}]
        }))
        .unwrap()
    }

    #[test]
    fn api_key_from_bearer_and_x_api_key() {
        let cfg = IdentityConfig { api_keys: Some(keys()), ..Default::default() };
        let host = MemoryHost::with_request_headers(&[("authorization", "Bearer tg-alice")]);
        let id = resolve(&host, &cfg).unwrap().unwrap();
        assert_eq!(id.principal, "alice");
        assert_eq!(id.team.as_deref(), Some("payments"));
        assert_eq!(id.source, Source::ApiKey);
        assert_eq!(id.key_name.as_deref(), Some("alice-key"));
        let host = MemoryHost::with_request_headers(&[("x-api-key", "tg-alice")]);
        assert!(resolve(&host, &cfg).unwrap().is_some());
        let host = MemoryHost::with_request_headers(&[("x-api-key", "wrong")]);
        assert_eq!(resolve(&host, &cfg), Err(IdentityError::UnknownApiKey));
        let host = MemoryHost::new();
        assert_eq!(resolve(&host, &cfg), Ok(None));
    }

    #[test]
    fn configured_digests_match_in_either_case() {
        let upper: ApiKeySource = serde_json::from_value(serde_json::json!({
            "keys": [{"sha256": sha256_hex(b"tg-alice").to_ascii_uppercase(), "name": "k", "principal": "alice"}]
        }))
        .unwrap();
        assert_eq!(from_api_key("tg-alice", &upper).map(|i| i.principal).as_deref(), Some("alice"));
        assert!(from_api_key("tg-alicf", &upper).is_none());
    }

    #[test]
    fn jwt_claims_from_metadata() {
        let cfg = IdentityConfig {
            jwt: Some(serde_json::from_value(serde_json::json!({"payload_key": "payload", "team_claim": "team"})).unwrap()),
            ..Default::default()
        };
        let host = MemoryHost::new();
        let base = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"];
        host.set_prop(&[&base[..], &["sub"]].concat(), b"alice");
        host.set_prop(&[&base[..], &["team"]].concat(), b"payments");
        host.set_prop(
            &[&base[..], &["groups"]].concat(),
            &crate::host::abi_pairs::serialize_pairs(&[("eng", ""), ("admins", "")]),
        );
        let id = resolve(&host, &cfg).unwrap().unwrap();
        assert_eq!(id.principal, "alice");
        assert_eq!(id.groups, vec!["eng", "admins"]);
        assert!(id.in_group("admins"));
        assert_eq!(id.source, Source::Jwt);
    }

    #[test]
    fn credentials_are_stripped() {
        let cfg = IdentityConfig {
            api_keys: Some(ApiKeySource { headers: vec!["X-Tollgate-Key".into()], keys: vec![] }),
            ..Default::default()
        };
        let headers = cfg.credential_headers();
        assert!(headers.contains(&"x-tollgate-key".to_string()) && headers.contains(&"authorization".to_string()));
        let host = MemoryHost::with_request_headers(&[("authorization", "Bearer k"), ("x-tollgate-key", "k"), ("accept", "*/*")]);
        strip_credentials(&host, &headers);
        assert_eq!(host.headers(HeaderMap::Request).unwrap(), vec![("accept".to_string(), "*/*".to_string())]);
    }

    #[test]
    fn mtls_spiffe_identity() {
        let cfg = IdentityConfig { mtls: true, ..Default::default() };
        let host = MemoryHost::new();
        host.set_prop(&["connection", "mtls"], &[1]);
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/planner");
        let id = resolve(&host, &cfg).unwrap().unwrap();
        assert_eq!(id.team.as_deref(), Some("agents"));
        assert_eq!(id.source, Source::Mtls);
    }

    #[test]
    fn trusted_header_only_when_configured() {
        let host = MemoryHost::with_request_headers(&[("x-user", "bob"), ("x-groups", "a, b")]);
        assert_eq!(resolve(&host, &IdentityConfig::default()), Ok(None));
        let cfg = IdentityConfig {
            trusted_header: Some(HeaderSource { principal: "x-user".into(), team: None, groups: Some("x-groups".into()) }),
            ..Default::default()
        };
        let id = resolve(&host, &cfg).unwrap().unwrap();
        assert_eq!(id.groups, vec!["a", "b"]);
    }

    const GW_KEY: &str = "0123456789abcdef0123456789abcdef";
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn gateway_cfg() -> IdentityConfig {
        serde_json::from_value(serde_json::json!({
            "gateway": {"signing_key": GW_KEY},
            "api_keys": {"keys": [{"sha256": sha256_hex(b"tg-alice"), "name": "k", "principal": "alice"}]}
        }))
        .unwrap()
    }

    fn credential(expiry: u64, trace: &str) -> String {
        let key = crate::gateway::HmacKey::new(GW_KEY.as_bytes()).unwrap();
        crate::gateway::sign(&key, &crate::gateway::Credential {
            expiry,
            trace_id: trace.into(),
            agent: "researcher".into(),
            on_behalf_of: Some("alice".into()),
            team: Some("analytics".into()),
            tier: None,
            chain: vec!["planner".into(), "researcher".into()],
        })
    }

    fn gateway_host(value: &str, traceparent: Option<&str>) -> MemoryHost {
        let tp = traceparent.map(|t| format!("00-{t}-00f067aa0ba902b7-01"));
        let mut headers = vec![(crate::gateway::HEADER, value), ("authorization", "Bearer tg-alice")];
        if let Some(tp) = &tp {
            headers.push(("traceparent", tp));
        }
        let host = MemoryHost::with_request_headers(&headers);
        *host.clock_nanos.borrow_mut() = 100 * 1_000_000_000;
        host
    }

    #[test]
    fn gateway_credential_is_the_agent_acting_for_the_user() {
        let cfg = gateway_cfg();
        let id = resolve(&gateway_host(&credential(200, TRACE), Some(TRACE)), &cfg).unwrap().unwrap();
        assert_eq!(id.principal, "researcher");
        assert_eq!(id.source, Source::Gateway);
        assert_eq!(id.team.as_deref(), Some("analytics"));
        assert_eq!(id.agent(), Some("researcher"));
        assert_eq!(id.on_behalf_of(), Some("alice"));
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::json!({"principal": "researcher", "team": "analytics", "source": "gateway",
            "agent": "researcher", "on_behalf_of": "alice", "chain": ["planner", "researcher"]}));
        assert!(cfg.credential_headers().contains(&crate::gateway::HEADER.to_string()));
    }

    #[test]
    fn refused_gateway_credential_never_falls_back_to_another_source() {
        use crate::gateway::Rejection;
        let cfg = gateway_cfg();
        let other = "0af7651916cd43dd8448eb211c80319c";
        let cases = [
            (credential(100, TRACE), Some(TRACE), Rejection::Expired),
            (credential(200, TRACE), Some(other), Rejection::OtherTrace),
            (credential(200, TRACE), None, Rejection::NoTrace),
            (credential(200, TRACE).replace("obo=alice", "obo=bob"), Some(TRACE), Rejection::BadSignature),
            ("v1;agent=researcher".to_string(), Some(TRACE), Rejection::Malformed),
        ];
        for (value, trace, why) in cases {
            assert_eq!(resolve(&gateway_host(&value, trace), &cfg), Err(IdentityError::Gateway(why)), "{value}");
        }
        // Without the header: the other sources as before.
        let host = MemoryHost::with_request_headers(&[("authorization", "Bearer tg-alice")]);
        assert_eq!(resolve(&host, &cfg).unwrap().unwrap().principal, "alice");
        // Not configured: the header means nothing.
        let cfg = IdentityConfig { gateway: None, ..gateway_cfg() };
        assert_eq!(resolve(&gateway_host(&credential(200, TRACE), Some(TRACE)), &cfg).unwrap().unwrap().principal, "alice");
    }

    #[test]
    fn gateway_credential_bound_to_the_peer_certificate() {
        let cfg = gateway_cfg();
        let host = gateway_host(&credential(200, TRACE), Some(TRACE));
        host.set_prop(&["connection", "mtls"], &[1]);
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/planner");
        assert_eq!(resolve(&host, &cfg), Err(IdentityError::Gateway(crate::gateway::Rejection::PeerMismatch)));
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/researcher");
        assert_eq!(resolve(&host, &cfg).unwrap().unwrap().principal, "researcher");
        let unbound: IdentityConfig = serde_json::from_value(serde_json::json!({
            "gateway": {"signing_key": GW_KEY, "bind_peer_certificate": false}})).unwrap();
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/planner");
        assert!(resolve(&host, &unbound).is_ok());
        // A trust domain: the same agent name from another domain's CA is not the agent.
        let domain: IdentityConfig = serde_json::from_value(serde_json::json!({
            "gateway": {"signing_key": GW_KEY, "trust_domain": "cluster.local"}})).unwrap();
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://other.example/ns/agents/sa/researcher");
        assert_eq!(resolve(&host, &domain), Err(IdentityError::Gateway(crate::gateway::Rejection::PeerMismatch)));
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/researcher");
        assert_eq!(resolve(&host, &domain).unwrap().unwrap().principal, "researcher");
    }

    #[test]
    fn gateway_credential_requires_a_peer_certificate_when_told_to() {
        let host = gateway_host(&credential(200, TRACE), Some(TRACE));
        // Default: without mTLS the binding is the trace and the expiry.
        assert_eq!(resolve(&host, &gateway_cfg()).unwrap().unwrap().principal, "researcher");
        let strict: IdentityConfig = serde_json::from_value(serde_json::json!({
            "gateway": {"signing_key": GW_KEY, "require_peer_certificate": true}})).unwrap();
        assert_eq!(resolve(&host, &strict), Err(IdentityError::Gateway(crate::gateway::Rejection::NoPeer)));
        host.set_prop(&["connection", "mtls"], &[1]);
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/researcher");
        assert_eq!(resolve(&host, &strict).unwrap().unwrap().principal, "researcher");
        // Strict even with the binding itself turned off: the certificate must still name the agent.
        let both: IdentityConfig = serde_json::from_value(serde_json::json!({
            "gateway": {"signing_key": GW_KEY, "require_peer_certificate": true, "bind_peer_certificate": false}})).unwrap();
        host.set_prop(&["connection", "uri_san_peer_certificate"], b"spiffe://cluster.local/ns/agents/sa/planner");
        assert_eq!(resolve(&host, &both), Err(IdentityError::Gateway(crate::gateway::Rejection::PeerMismatch)));
    }

    #[test]
    fn short_gateway_key_is_refused_with_field() {
        let cfg: IdentityConfig = serde_json::from_value(serde_json::json!({"gateway": {"signing_key": "short"}})).unwrap();
        let err = cfg.validate("identity").unwrap_err();
        assert!(err.0.starts_with("identity.gateway.signing_key"), "{err}");
        assert!(serde_json::from_value::<IdentityConfig>(serde_json::json!({"gateway": {"signing_key": GW_KEY, "x": 1}})).is_err());
        let cfg: IdentityConfig = serde_json::from_value(serde_json::json!({"gateway": {"signing_key": GW_KEY, "trust_domain": "spiffe://cluster.local"}})).unwrap();
        let err = cfg.validate("identity").unwrap_err();
        assert!(err.0.starts_with("identity.gateway.trust_domain"), "{err}");
    }

    #[test]
    fn bad_digest_is_refused_with_field() {
        let cfg: IdentityConfig = serde_json::from_value(serde_json::json!({
            "api_keys": {"keys": [{"sha256": "xyz", "name": "n", "principal": "p"}]}})).unwrap();
        let err = cfg.validate("identity").unwrap_err();
        assert!(err.0.starts_with("identity.api_keys.keys[0].sha256"), "{err}");
    }
}
