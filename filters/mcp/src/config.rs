//! Configuration of the MCP filter, validated once at load.
//!
//! Every struct refuses unknown fields; [`crate::policy::Policy::compile`] compiles the rules
//! (JSONPaths, regexes) and names the rule and field of anything that does not compile.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tollgate_core::observe::audit::AuditConfig;
use tollgate_core::config::{ConfigError, Validate};
use tollgate_core::glob::Glob;
use tollgate_core::identity::IdentityConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who the caller is: jwt_authn claims, mTLS peer, API keys, trusted header (core).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Answer 401 to requests without any identity.
    #[serde(default)]
    pub require_identity: bool,
    /// `resource_metadata` URL put in `WWW-Authenticate` on 401/403 (OAuth protected
    /// resource metadata, e.g. `https://gw.example/.well-known/oauth-protected-resource/mcp`).
    #[serde(default)]
    pub resource_metadata: Option<String>,
    /// Browser origins allowed to call (the MCP spec's DNS-rebinding rule): a request whose
    /// `Origin` is not listed is refused with 403; a request without `Origin` (a non-browser
    /// client) passes. Entries are exact origins (`https://app.example.com`) or a host with
    /// any port (`http://localhost:*`). Absent: `Origin` is not checked.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Forward the client's credential headers (`authorization` and the API-key headers)
    /// upstream. Off by default: MCP servers must not receive the client's token.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Which MCP server a request is for.
    #[serde(default)]
    pub server: ServerConfig,
    /// Largest POST body read (bytes); larger ones get 413 and are never forwarded.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest JSON response buffered to filter a list; larger ones fail closed (502).
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Largest single SSE event held while a stream is rewritten; larger fails closed.
    #[serde(default = "default_max_event")]
    pub max_sse_event_bytes: usize,
    /// Authorization rules. Absent: every well-formed message is allowed (still parsed,
    /// checked and audited).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// Per-identity call rate limits on `tools/call`, checked after the policy allowed the
    /// call; every matching limit must admit it.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// The fleet-wide counter store (`docs/limits-protocol.md`). With it, rate limits are
    /// counted there unless they say `counters: local`.
    #[serde(default)]
    pub store: Option<tollgate_core::fleet::StoreConfig>,
    /// Tool-definition pinning and "never listed" calls (`pinning.rs`). Absent: off.
    #[serde(default)]
    pub tool_pinning: Option<crate::pinning::ToolPinningConfig>,
    /// Session ids bound to the caller and the server (`sessions.rs`): on by default.
    #[serde(default)]
    pub sessions: crate::sessions::SessionsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Put the canonical arguments themselves in audit records (the SHA-256 digest is
    /// always there).
    #[serde(default)]
    pub audit_arguments: bool,
    /// The approval service asked about calls an `approve` rule matches (`approval.rs`):
    /// `{cluster, authority, path, timeout_ms, include_arguments}`. Required when a rule
    /// says `approve`.
    #[serde(default)]
    pub approval: Option<crate::approval::ApprovalConfig>,
    /// OAuth 2.1 resource-server role (RFC 9728 protected-resource metadata, served by the
    /// filter; `resource_metadata` defaults to its URL). See [`crate::oauth::OAuthConfig`].
    #[serde(default)]
    pub oauth: Option<crate::oauth::OAuthConfig>,
    /// Per-user upstream credentials by RFC 8693 token exchange, per server. See
    /// [`crate::tokenexchange::TokenExchangeConfig`].
    #[serde(default)]
    pub token_exchange: Option<crate::tokenexchange::TokenExchangeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity: IdentityConfig::default(),
            require_identity: false,
            resource_metadata: None,
            allowed_origins: None,
            forward_credentials: false,
            server: ServerConfig::default(),
            max_body_bytes: default_max_body(),
            max_response_bytes: default_max_response(),
            max_sse_event_bytes: default_max_event(),
            policy: None,
            rate_limits: Vec::new(),
            store: None,
            tool_pinning: None,
            sessions: crate::sessions::SessionsConfig::default(),
            audit: AuditConfig::default(),
            audit_arguments: false,
            approval: None,
            oauth: None,
            token_exchange: None,
        }
    }
}

fn default_max_body() -> usize {
    1 << 20
}
fn default_max_response() -> usize {
    4 << 20
}
fn default_max_event() -> usize {
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Route metadata read first: `filter_metadata.<metadata_namespace>.<route_metadata_key>`.
    #[serde(default = "default_route_key")]
    pub route_metadata_key: String,
    #[serde(default = "default_namespace")]
    pub metadata_namespace: String,
    /// Upstream cluster name -> server name, used when the route has no metadata.
    #[serde(default)]
    pub clusters: BTreeMap<String, String>,
    /// Server name (as resolved above) -> the backends Envoy's `mcp_router` serves on that
    /// route: names prefixed with a backend (`alpha__echo`, `alpha+file:///x`) are judged,
    /// filtered, audited and counted on that backend (`crate::router`).
    #[serde(default)]
    pub routers: BTreeMap<String, crate::router::RouterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            route_metadata_key: default_route_key(),
            metadata_namespace: default_namespace(),
            clusters: BTreeMap::new(),
            routers: BTreeMap::new(),
        }
    }
}

fn default_route_key() -> String {
    "mcp_server".into()
}
fn default_namespace() -> String {
    "tollgate".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyStyle {
    /// JSON-RPC error as if the thing did not exist: -32602 `Unknown tool: X`; for a target
    /// the caller's lists show, 403 -31403 `Not allowed: ...` without the rule (`denials.rs`).
    #[default]
    Hide,
    /// HTTP 403, `WWW-Authenticate: Bearer error="insufficient_scope"`, and a JSON-RPC error
    /// carrying the rule id.
    Explain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub deny_style: DenyStyle,
    /// Evaluate and record every decision, block nothing (records say `enforced: false`).
    #[serde(default)]
    pub dry_run: bool,
    /// How rules combine: `deny_overrides`, the only (and default) value: any matching deny
    /// wins; otherwise the first matching allow; otherwise the request is denied. Any other
    /// value is refused at load.
    #[serde(default)]
    pub combining: Option<Combining>,
    /// Ordered rules, combined as `combining` says.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

pub use tollgate_core::decision::{Combining, Effect};

/// What a rule says: core's `allow` and `deny`, and `approve`: the requests it matches are
/// allowed only when the approval service says yes (`approval.rs`). For combining and lists
/// an `approve` rule is an allow rule; a request that an `approve` rule matches needs the
/// approval even when an `allow` rule matches it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleEffect {
    Allow,
    Deny,
    Approve,
}

impl RuleEffect {
    /// The core effect the rule combines with: `approve` allows (subject to the approval).
    pub fn effect(self) -> Effect {
        match self {
            RuleEffect::Deny => Effect::Deny,
            RuleEffect::Allow | RuleEffect::Approve => Effect::Allow,
        }
    }
}

/// One rule. Every condition present must hold (lists: any element); absent means any.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: String,
    /// `allow`, `deny` or `approve` (needs `approval` configured).
    pub effect: RuleEffect,
    /// Principal globs. Anonymous callers match no identity condition.
    #[serde(default)]
    pub principals: Option<Vec<Glob>>,
    /// Group (or role) globs; the caller needs one group matching one of them.
    #[serde(default)]
    pub groups: Option<Vec<Glob>>,
    #[serde(default)]
    pub teams: Option<Vec<Glob>>,
    /// Agent globs: the agent a gateway credential names (identity source `gateway`);
    /// callers without one never match.
    #[serde(default)]
    pub agents: Option<Vec<Glob>>,
    /// Globs of the principal a gateway credential says the agent acts for; callers without
    /// one never match.
    #[serde(default)]
    pub on_behalf_of: Option<Vec<Glob>>,
    /// MCP server name globs.
    #[serde(default)]
    pub servers: Option<Vec<Glob>>,
    /// JSON-RPC method globs (`tools/call`, `notifications/*`, ...).
    #[serde(default)]
    pub methods: Option<Vec<Glob>>,
    /// Target globs. When any of these three is given the message must target one of them.
    #[serde(default)]
    pub tools: Option<Vec<Glob>>,
    #[serde(default)]
    pub prompts: Option<Vec<Glob>>,
    /// Resource URI globs.
    #[serde(default)]
    pub resources: Option<Vec<Glob>>,
    /// Conditions on `params.arguments`, all of which must hold.
    #[serde(default)]
    pub arguments: Vec<ArgumentConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantifier {
    /// Every value the path selects passes (and it selects at least one).
    All,
    /// At least one selected value passes.
    Any,
}

/// A JSONPath into `params.arguments` (`$` is the arguments object) and one test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentConfig {
    pub path: String,
    /// Expected values as written (numbers compare exactly: their text is kept).
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<Box<RawValue>>,
    #[serde(default)]
    pub one_of: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub gt: Option<Bound>,
    #[serde(default)]
    pub gte: Option<Bound>,
    #[serde(default)]
    pub lt: Option<Bound>,
    #[serde(default)]
    pub lte: Option<Bound>,
    #[serde(default)]
    pub exists: Option<bool>,
    /// How a path selecting several values is judged. Default: `all` in allow rules, `any`
    /// in deny rules (the side that fails closed).
    #[serde(default, rename = "match")]
    pub quantifier: Option<Quantifier>,
}

/// Whose calls one counter of a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One counter per principal.
    Principal,
    /// One counter per team.
    Team,
    /// One counter per MCP server (all callers together).
    Server,
}

/// A fixed-window limit on `tools/call`: at most `max_calls` per `window_secs` per
/// principal, team or server. Conditions as in policy rules (lists: any element; absent:
/// anything; identity conditions never match anonymous callers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique; ASCII letters, digits, `-`, `_` (it is part of the shared-data key).
    pub id: String,
    #[serde(default)]
    pub principals: Option<Vec<Glob>>,
    #[serde(default)]
    pub groups: Option<Vec<Glob>>,
    #[serde(default)]
    pub teams: Option<Vec<Glob>>,
    /// Agent and on-behalf-of globs, as in rules (identity source `gateway`).
    #[serde(default)]
    pub agents: Option<Vec<Glob>>,
    #[serde(default)]
    pub on_behalf_of: Option<Vec<Glob>>,
    #[serde(default)]
    pub servers: Option<Vec<Glob>>,
    /// Tool name globs.
    #[serde(default)]
    pub tools: Option<Vec<Glob>>,
    pub max_calls: u64,
    pub window_secs: u64,
    pub per: Per,
    /// `fleet` (the `store`; the default when there is one) or `local` (this Envoy's shared
    /// data only).
    #[serde(default)]
    pub counters: Option<tollgate_core::fleet::Counters>,
    /// For fleet counters, when the store cannot answer in `store.timeout_ms`:
    /// `fail_closed` (default: refuse the call) or `fail_open_local` (count locally, recorded).
    #[serde(default)]
    pub on_store_failure: Option<tollgate_core::fleet::OnFailure>,
}

/// `"equals": null` means "equals JSON null", not "absent".
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// A range bound: a JSON number, kept as written (compared exactly).
#[derive(Debug, Clone)]
pub struct Bound(pub String);

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get().trim();
        if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(serde::de::Error::custom(format!("expected a number, found `{}`", tollgate_core::text::truncate(text, 64))));
        }
        Ok(Bound(text.to_string()))
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.identity.validate("identity")?;
        crate::delegation::validate(self)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::field("max_body_bytes", "must be greater than 0"));
        }
        if self.max_sse_event_bytes == 0 {
            return Err(ConfigError::field("max_sse_event_bytes", "must be greater than 0"));
        }
        if let Some(store) = &self.store {
            store.validate("store")?;
        }
        crate::approval::validate(self)?;
        for (i, origin) in self.allowed_origins.iter().flatten().enumerate() {
            let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
            let clean = !origin.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
            let path_free = origin.splitn(4, '/').nth(3).is_none();
            if !scheme_ok || !clean || !path_free {
                return Err(ConfigError::field(
                    &format!("allowed_origins[{i}]"),
                    format!("`{origin}` must be an origin: `http(s)://host[:port]`, or `http(s)://host:*` for any port"),
                ));
            }
        }
        // Rules and rate limits are checked where they are compiled, once, in `Shared::build`
        // (JSONPaths, regexes and numbers refused with the field named).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::config::load;

    #[test]
    fn empty_config_has_defaults() {
        let c: Config = load(b"").unwrap();
        assert!(c.policy.is_none());
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.server.route_metadata_key, "mcp_server");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = load::<Config>(br#"{"policy":{"rules":[{"id":"a","effect":"allow","tool":["x"]}]}}"#).unwrap_err();
        assert!(err.0.starts_with("policy.rules[0]"), "{err}");
        assert!(err.0.contains("tool"), "{err}");
        let err = load::<Config>(br#"{"policy":{"deny_style":"loud"}}"#).unwrap_err();
        assert!(err.0.starts_with("policy.deny_style"), "{err}");
    }

    #[test]
    fn an_allowed_origin_that_is_not_an_origin_is_refused_naming_it() {
        assert!(load::<Config>(br#"{"allowed_origins":["https://app.example.com","http://localhost:*"]}"#).is_ok());
        for bad in ["app.example.com", "https://app.example.com/", "https://a.example/path", "https://a b", ""] {
            let text = format!(r#"{{"allowed_origins":["https://ok.example",{}]}}"#, serde_json::json!(bad));
            let err = load::<Config>(text.as_bytes()).unwrap_err();
            assert!(err.0.starts_with("allowed_origins[1]:"), "{bad}: {err}");
        }
    }

    #[test]
    fn equals_null_is_present() {
        let a: ArgumentConfig = serde_json::from_str(r#"{"path":"$.x","equals":null}"#).unwrap();
        assert_eq!(a.equals.map(|r| r.get().to_string()).as_deref(), Some("null"));
        let a: ArgumentConfig = serde_json::from_str(r#"{"path":"$.x","exists":true}"#).unwrap();
        assert!(a.equals.is_none());
    }

    #[test]
    fn numbers_are_kept_as_written_through_the_loader() {
        let c: Config = load(br#"{"policy":{"rules":[{"id":"a","effect":"allow","arguments":[
            {"path":"$.x","one_of":[9007199254740993, 1e3]},{"path":"$.y","lte":1000.0000000000001}]}]}}"#).unwrap();
        let rules = &c.policy.unwrap().rules;
        let one_of: Vec<&str> = rules[0].arguments[0].one_of.as_ref().unwrap().iter().map(|r| r.get()).collect();
        assert_eq!(one_of, ["9007199254740993", "1e3"]);
        assert_eq!(rules[0].arguments[1].lte.as_ref().unwrap().0, "1000.0000000000001");
        let err = load::<Config>(br#"{"policy":{"rules":[{"id":"a","effect":"allow","arguments":[{"path":"$.y","gt":"5"}]}]}}"#).unwrap_err();
        assert!(err.0.starts_with("policy.rules[0].arguments[0].gt: expected a number"), "{err}");
    }


    #[test]
    fn field_paths_match_serde_path_to_error() {
        // The demo configuration (envoy/), each value made wrong in turn: the same field path as
        // serde_path_to_error names.
        let valid = serde_json::json!({
            "identity": {"api_keys": {"headers": ["x-api-key", "authorization"], "keys": [{"sha256": "3a11a98be70b2283c5c53b03427e4ab85f18efeaf52932b2a6f4712db37313de", "name": "alice-demo", "principal": "alice", "groups": ["eng"]}]}},
            "require_identity": false, "server": {"clusters": {"mcp_demo": "demo"}}, "max_body_bytes": 1048576,
            "policy": {"deny_style": "hide", "dry_run": false, "rules": [
                {"id": "protocol", "effect": "allow", "methods": ["initialize", "tools/list"]},
                {"id": "db-read-some-tables", "effect": "allow", "principals": ["*"], "tools": ["query_db"], "arguments": [{"path": "$.table", "one_of": ["orders", "products"]}, {"path": "$.x", "equals": null}]},
                {"id": "finance-small-transfers", "effect": "allow", "groups": ["finance"], "tools": ["transfer"], "arguments": [{"path": "$.amount", "lte": 1000, "gt": 0}]},
                {"id": "no-secrets", "effect": "deny", "resources": ["file:///secret/*"]}]},
            "rate_limits": [{"id": "tools-per-principal", "principals": ["*"], "max_calls": 120, "window_secs": 60, "per": "principal"}],
            "audit": {"log": false}, "audit_arguments": false
        });
        let refused = tollgate_core::config::paths_agree::<Config>(&valid, tollgate_core::config::reference_error::<Config>);
        assert!(refused > 300, "{refused}");
    }
}
