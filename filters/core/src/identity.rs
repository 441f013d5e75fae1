//! One identity model for all three filters.
//!
//! Sources, tried in the configured order: `jwt_authn` claims in dynamic metadata, the mTLS
//! peer's URI SAN (a SPIFFE id), the API-key map (keys stored only as SHA-256 digests), and a
//! trusted header (only when configured, for deployments where an earlier hop authenticated).

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
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
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
}

impl IdentityConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
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
    /// (`authorization`, the well-known API-key headers and the configured key headers),
    /// lowercase. Filters remove them before the upstream unless told to forward them.
    pub fn credential_headers(&self) -> Vec<String> {
        let mut headers: Vec<String> = ["authorization", "x-api-key", "x-goog-api-key"].iter().map(|s| s.to_string()).collect();
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
        self.jwt.is_none() && !self.mtls && self.api_keys.is_none() && self.trusted_header.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// A credential was presented but matches no configured key.
    UnknownApiKey,
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
            }));
        }
    }
    Ok(None)
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

    #[test]
    fn bad_digest_is_refused_with_field() {
        let cfg: IdentityConfig = serde_json::from_value(serde_json::json!({
            "api_keys": {"keys": [{"sha256": "xyz", "name": "n", "principal": "p"}]}})).unwrap();
        let err = cfg.validate("identity").unwrap_err();
        assert!(err.0.starts_with("identity.api_keys.keys[0].sha256"), "{err}");
    }
}
