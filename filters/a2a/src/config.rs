//! Configuration of the A2A filter: the raw serde types, validated once at load
//! ([`Validate`]), then compiled by [`Config::compile`] into [`State`], the immutable per-VM
//! state every exchange reads (rules with their method globs, the signing key prepared, the
//! conversation table, the credential header list). Every field has a default, so `{}` is a
//! working configuration (tagging, trace stitching, chain headers, card rewriting from the
//! Host header, no authorization rules, no trusted agents).

use crate::authz::{self, Policy};
use crate::chain::HmacKey;
use crate::classify::Method;
use serde::Deserialize;
use tollgate_core::observe::audit::AuditConfig;
use tollgate_core::config::{ConfigError, Validate};
use tollgate_core::glob::Glob;
use tollgate_core::identity::IdentityConfig;
use tollgate_core::shared_data::table::SharedTable;

pub use crate::authz::{Combining, RuleEffect};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who the caller is (JWT claims, mTLS SPIFFE id, API keys, trusted header): see core.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Forward the caller's credential headers (`authorization`, `x-api-key`,
    /// `x-goog-api-key` and the configured API-key headers) to the agent. Off by default:
    /// an agent must not receive (and could replay) the caller's gateway credential.
    #[serde(default)]
    pub forward_credentials: bool,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Put the request message's `parts` into the audit record (capped at 4 KiB). Off by
    /// default: message content never reaches logs unless asked for.
    #[serde(default)]
    pub log_message_parts: bool,
    /// Where a route names its agent and path mapping (route `metadata.filter_metadata`).
    #[serde(default)]
    pub routes: RoutesConfig,
    #[serde(default)]
    pub delegation: DelegationConfig,
    #[serde(default)]
    pub on_behalf_of: OnBehalfOfConfig,
    #[serde(default)]
    pub authz: AuthzConfig,
    #[serde(default)]
    pub cards: CardsConfig,
    #[serde(default)]
    pub conversations: ConversationsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Push-notification webhook URLs (SSRF check, `push.rs`).
    #[serde(default)]
    pub push_notifications: PushNotificationsConfig,
    /// Publish the call's ids as plain filter state (`wasm.tollgate.a2a.{method,target,hop,
    /// trace_id,message_id,context_id,task_id,task_state}`) for operators' access-log formats.
    /// On by default; `false` saves up to 8 host calls per exchange (the audit record, the
    /// upstream headers and the metrics carry the same ids either way).
    #[serde(default)]
    pub filter_state_tags: DefaultOn,
}

/// A switch that is on unless configured `false` (also in `Config::default()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DefaultOn(pub bool);

impl Default for DefaultOn {
    fn default() -> Self {
        DefaultOn(true)
    }
}

/// Which webhook URLs a caller may give an agent (`CreateTaskPushNotificationConfig`, 0.3
/// `tasks/pushNotificationConfig/set`, the push config in `SendMessage`'s `configuration`).
/// Always checked: http/https only; loopback, link-local, metadata, private, unspecified,
/// multicast and reserved addresses (in any spelling) and loopback/metadata names refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushNotificationsConfig {
    /// Hosts admitted whatever they are: globs over the normalized host (lowercase name,
    /// dotted IPv4, IPv6 without brackets), e.g. `hooks.example.com`, `*.hooks.internal`,
    /// `10.0.0.7`.
    pub allowed_hosts: Vec<Glob>,
    /// Names refused beside the built-in ones (`localhost`, `*.localhost`,
    /// `metadata.google.internal`...), e.g. `*.corp.example.com`.
    pub refused_hosts: Vec<Glob>,
    /// Admit private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7). Never
    /// loopback, link-local or metadata addresses: list those in `allowed_hosts`.
    pub allow_private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Route metadata namespace read through `xds.route_metadata.filter_metadata.<ns>.<key>`.
    pub metadata_namespace: String,
    /// Key naming the target agent's identity (e.g. `agent: agent-b`).
    pub agent_key: String,
    /// Without that key, the upstream cluster name is the agent's identity.
    pub cluster_fallback: bool,
    /// Key with the public path prefix of the agent (e.g. `/agents/echo/`); optional, only
    /// needed where it cannot be derived from the card path (JSON-RPC extended cards, REST tenants).
    pub public_prefix_key: String,
    /// Key with the path prefix the route rewrites to (the route's `prefix_rewrite`); default `/`.
    pub upstream_prefix_key: String,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        RoutesConfig {
            metadata_namespace: "tollgate".into(),
            agent_key: "agent".into(),
            cluster_fallback: true,
            public_prefix_key: "public_prefix".into(),
            upstream_prefix_key: "upstream_prefix".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedAgent {
    /// The caller principal (from `identity`: API key principal, SPIFFE id, JWT subject...).
    pub principal: String,
    /// The agent identity this principal acts as in chains (default: the principal).
    #[serde(default)]
    pub agent: Option<String>,
}

/// Longest lifetime of a signed delegation context: one day. A signed context is a bearer
/// token (whoever holds the headers can replay them until expiry), so its life should be that
/// of one delegated task, not of a deployment; a day covers long-running tasks, and callers
/// that need more should be trusted by identity (mTLS, API key) instead.
pub const MAX_CONTEXT_TTL_SECS: u64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelegationConfig {
    /// Most hops a delegation chain may reach; the call that would exceed it is refused
    /// (A2A_MAX_DEPTH).
    pub max_hops: u32,
    /// Callers allowed to assert `x-tollgate-a2a-*` context (hop, chain, on-behalf-of).
    pub trusted_agents: Vec<TrustedAgent>,
    /// HMAC-SHA256 key (at least 32 bytes). When set, the gateway signs the context it sends
    /// to an agent (`x-tollgate-a2a-sig`), and a request that carries back a valid, unexpired
    /// signature is trusted as coming from the last agent of its chain, with no credential of
    /// its own. Treat it as a secret.
    pub signing_key: Option<String>,
    /// Lifetime of a signed context (1 s to [`MAX_CONTEXT_TTL_SECS`]).
    pub context_ttl_secs: u64,
}

impl Default for DelegationConfig {
    fn default() -> Self {
        DelegationConfig { max_hops: 8, trusted_agents: Vec::new(), signing_key: None, context_ttl_secs: 600 }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnBehalfOfConfig {
    /// JWT claim naming the end user (dots descend, e.g. `act.sub`); needs `identity.jwt`.
    pub jwt_claim: Option<String>,
    /// JWT claim naming the end user's tier (e.g. `tier`); signed into the gateway credential
    /// agents get (`tier`), when the chain starts with that user. Needs `identity.jwt`.
    pub tier_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub id: Option<String>,
    /// Caller globs: agent identity or principal, `anonymous` when unauthenticated.
    #[serde(default = "any")]
    pub callers: Vec<Glob>,
    /// On-behalf-of user globs; empty: any (including none).
    #[serde(default)]
    pub on_behalf_of: Vec<Glob>,
    #[serde(default = "any")]
    pub targets: Vec<Glob>,
    /// A2A 1.0 method names (0.3 names are accepted and mapped), globs, or `AgentCard`.
    #[serde(default = "any_string")]
    pub methods: Vec<String>,
    pub effect: RuleEffect,
}

fn any() -> Vec<Glob> {
    vec![Glob::new("*")]
}
fn any_string() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzConfig {
    /// Effect when no rule matches.
    pub default: RuleEffect,
    /// How rules combine: `first_match`, the only (and default) value: the first matching
    /// rule wins, whatever its effect. Any other value is refused at load.
    pub combining: Option<Combining>,
    /// Ordered rules, combined as `combining` says.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignedCards {
    /// Serve a signed card untouched (not rewritten); the audit record says so.
    #[default]
    Keep,
    /// Remove `signatures` and rewrite; the audit record says so.
    Strip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardsConfig {
    pub rewrite: bool,
    /// The gateway's public base, e.g. `https://agents.example.com` (a path is allowed).
    /// Without it: `X-Forwarded-Proto` (or the request scheme) + the `Host` header.
    pub public_base_url: Option<String>,
    pub trust_forwarded_proto: bool,
    pub signed: SignedCards,
    /// Largest card buffered for rewriting; a bigger one passes untouched.
    pub max_bytes: usize,
}

impl Default for CardsConfig {
    fn default() -> Self {
        CardsConfig {
            rewrite: true,
            public_base_url: None,
            trust_forwarded_proto: true,
            signed: SignedCards::Keep,
            max_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsConfig {
    /// Entries (contextId or taskId → trace) kept in shared data, per Envoy.
    pub capacity: u32,
    pub ttl_secs: u64,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        ConversationsConfig { capacity: 4096, ttl_secs: 3600 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest JSON-RPC / REST request body buffered for a decision; bigger: 413.
    /// (Envoy's own per-connection buffer limit, 1 MiB by default, applies first.)
    pub max_request_body_bytes: usize,
    /// Largest single SSE event parsed for ids; a bigger one stops tagging (never the stream).
    pub max_sse_event_bytes: usize,
    /// Largest `ListTasks` answer held to be filtered to the caller's tasks (rule effect
    /// `allow_originator`); a bigger one is replaced by an error (A2A_RESPONSE_UNFILTERABLE),
    /// never passed unfiltered. Keep it ≤ the listener's `per_connection_buffer_limit_bytes`.
    pub max_list_response_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_body_bytes: 1024 * 1024,
            max_sse_event_bytes: 1024 * 1024,
            max_list_response_bytes: 1024 * 1024,
        }
    }
}

fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err("must name a host".into());
    }
    if !crate::card::is_host_port(host) {
        return Err("must name a host[:port] without userinfo or other characters".into());
    }
    if url.contains(['?', '#']) {
        return Err("must not have a query or fragment".into());
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return Err("its path must be printable ASCII without spaces or backslashes".into());
    }
    Ok(())
}

/// A rule's method as a glob over 1.0 names: a glob or `AgentCard` as written, a 0.3 or 1.0
/// method name as its 1.0 name; `None`: not an A2A method.
fn method_glob(m: &str) -> Option<Glob> {
    if m.contains(['*', '?']) || m == "AgentCard" {
        Some(Glob::new(m))
    } else {
        Method::from_name(m).map(|method| Glob::new(method.name()))
    }
}

fn unknown_method(i: usize, j: usize, m: &str) -> ConfigError {
    ConfigError::field(&format!("authz.rules[{i}].methods[{j}]"), format!("unknown A2A method `{m}`"))
}

/// The delegation settings as an exchange uses them.
#[derive(Debug)]
pub struct Delegation {
    pub max_hops: u32,
    pub trusted_agents: Vec<TrustedAgent>,
    /// `delegation.signing_key`, prepared once for signing and verifying.
    pub signing_key: Option<HmacKey>,
    pub context_ttl_secs: u64,
}

/// Everything an exchange needs, built once per VM from [`Config`]; never changed after
/// (but for the signing memo, which never changes what is signed).
#[derive(Debug)]
pub struct State {
    pub identity: IdentityConfig,
    pub forward_credentials: bool,
    pub audit: AuditConfig,
    pub log_message_parts: bool,
    pub routes: RoutesConfig,
    pub delegation: Delegation,
    /// `on_behalf_of.jwt_claim`.
    pub on_behalf_of_claim: Option<String>,
    /// `on_behalf_of.tier_claim`.
    pub tier_claim: Option<String>,
    /// The authorization rules, compiled: the only form `authz::evaluate` takes.
    pub authz: Policy,
    pub cards: CardsConfig,
    pub limits: LimitsConfig,
    /// The conversation table (shared data, per Envoy).
    pub table: SharedTable,
    /// Request headers that may carry the caller's credential, removed before the agent
    /// unless `forward_credentials`.
    pub credential_headers: Vec<String>,
    /// `push_notifications`, compiled.
    pub push: crate::push::PushPolicy,
    /// `filter_state_tags`.
    pub filter_state_tags: bool,
    /// The one part that changes after compiling: the last delegation context signed, so
    /// the same context within a second is not signed again (`chain::SignMemo`).
    pub sign_memo: crate::chain::SignMemo,
}

impl Config {
    /// Compiles the validated configuration: rule method names to globs over 1.0 names, rule
    /// ids, the signing key, the conversation table.
    pub fn compile(self) -> Result<State, ConfigError> {
        let mut rules = Vec::with_capacity(self.authz.rules.len());
        for (i, rule) in self.authz.rules.into_iter().enumerate() {
            let mut methods = Vec::with_capacity(rule.methods.len());
            for (j, m) in rule.methods.iter().enumerate() {
                methods.push(method_glob(m).ok_or_else(|| unknown_method(i, j, m))?);
            }
            rules.push(authz::Rule {
                id: rule.id.unwrap_or_else(|| format!("rules[{i}]")),
                callers: rule.callers,
                on_behalf_of: rule.on_behalf_of,
                targets: rule.targets,
                methods,
                effect: rule.effect,
            });
        }
        let signing_key = match self.delegation.signing_key.as_deref() {
            Some(k) => Some(
                HmacKey::new(k.as_bytes())
                    .ok_or_else(|| ConfigError::field("delegation.signing_key", "unusable as an HMAC key"))?,
            ),
            None => None,
        };
        let table = SharedTable::new("tollgate.a2a.conv", self.conversations.capacity, self.conversations.ttl_secs);
        let credential_headers = self.identity.credential_headers();
        Ok(State {
            identity: self.identity,
            forward_credentials: self.forward_credentials,
            audit: self.audit,
            log_message_parts: self.log_message_parts,
            routes: self.routes,
            delegation: Delegation {
                max_hops: self.delegation.max_hops,
                trusted_agents: self.delegation.trusted_agents,
                signing_key,
                context_ttl_secs: self.delegation.context_ttl_secs,
            },
            on_behalf_of_claim: self.on_behalf_of.jwt_claim,
            tier_claim: self.on_behalf_of.tier_claim,
            authz: Policy::new(self.authz.default, rules),
            cards: self.cards,
            limits: self.limits,
            table,
            credential_headers,
            push: crate::push::PushPolicy {
                allowed_hosts: self.push_notifications.allowed_hosts,
                refused_hosts: self.push_notifications.refused_hosts,
                allow_private: self.push_notifications.allow_private,
            },
            filter_state_tags: self.filter_state_tags.0,
            sign_memo: crate::chain::SignMemo::default(),
        })
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.identity.validate("identity")?;
        if self.delegation.max_hops == 0 || self.delegation.max_hops > 64 {
            return Err(ConfigError::field("delegation.max_hops", "must be between 1 and 64"));
        }
        if let Some(key) = &self.delegation.signing_key {
            if key.len() < 32 {
                return Err(ConfigError::field("delegation.signing_key", "must be at least 32 bytes"));
            }
        }
        if self.delegation.context_ttl_secs == 0 || self.delegation.context_ttl_secs > MAX_CONTEXT_TTL_SECS {
            return Err(ConfigError::field("delegation.context_ttl_secs", "must be between 1 and 86400 (one day)"));
        }
        for (i, a) in self.delegation.trusted_agents.iter().enumerate() {
            if a.principal.is_empty() {
                return Err(ConfigError::field(&format!("delegation.trusted_agents[{i}].principal"), "must not be empty"));
            }
            if a.agent.as_deref().is_some_and(|s| s.is_empty() || s.contains(',')) {
                return Err(ConfigError::field(
                    &format!("delegation.trusted_agents[{i}].agent"),
                    "must be non-empty and contain no comma",
                ));
            }
        }
        if self.identity.gateway.is_some() {
            return Err(ConfigError::field(
                "identity.gateway",
                "not for the A2A filter: it trusts its own signed context (delegation.signing_key)",
            ));
        }
        if self.on_behalf_of.tier_claim.is_some() && self.identity.jwt.is_none() {
            return Err(ConfigError::field("on_behalf_of.tier_claim", "needs identity.jwt"));
        }
        if self.on_behalf_of.jwt_claim.is_some() && self.identity.jwt.is_none() {
            return Err(ConfigError::field("on_behalf_of.jwt_claim", "needs identity.jwt"));
        }
        Combining::require(self.authz.combining, Combining::FirstMatch)
            .map_err(|e| ConfigError::field("authz.combining", e))?;
        for (i, rule) in self.authz.rules.iter().enumerate() {
            if rule.methods.is_empty() || rule.callers.is_empty() || rule.targets.is_empty() {
                return Err(ConfigError::field(
                    &format!("authz.rules[{i}]"),
                    "callers, targets and methods must not be empty (omit them to match any)",
                ));
            }
        }
        if let Some(url) = &self.cards.public_base_url {
            check_base_url(url).map_err(|e| ConfigError::field("cards.public_base_url", e))?;
        }
        if self.cards.max_bytes == 0 || self.cards.max_bytes > 4 * 1024 * 1024 {
            return Err(ConfigError::field("cards.max_bytes", "must be between 1 and 4194304"));
        }
        if self.conversations.capacity == 0 || self.conversations.capacity > 1 << 20 {
            return Err(ConfigError::field("conversations.capacity", "must be between 1 and 1048576"));
        }
        if self.conversations.ttl_secs == 0 {
            return Err(ConfigError::field("conversations.ttl_secs", "must be positive"));
        }
        if self.limits.max_request_body_bytes == 0 {
            return Err(ConfigError::field("limits.max_request_body_bytes", "must be positive"));
        }
        if self.limits.max_sse_event_bytes == 0 {
            return Err(ConfigError::field("limits.max_sse_event_bytes", "must be positive"));
        }
        if self.limits.max_list_response_bytes == 0 || self.limits.max_list_response_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::field("limits.max_list_response_bytes", "must be between 1 and 16777216"));
        }
        for (name, value) in [
            ("routes.metadata_namespace", &self.routes.metadata_namespace),
            ("routes.agent_key", &self.routes.agent_key),
        ] {
            if value.is_empty() {
                return Err(ConfigError::field(name, "must not be empty"));
            }
        }
        for (name, hosts) in [
            ("push_notifications.allowed_hosts", &self.push_notifications.allowed_hosts),
            ("push_notifications.refused_hosts", &self.push_notifications.refused_hosts),
        ] {
            for (i, g) in hosts.iter().enumerate() {
                let p = g.pattern();
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:*?".contains(&b)) || p.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(ConfigError::field(&format!("{name}[{i}]"), "must be a lowercase host name, IPv4 or IPv6 address (no brackets, port or scheme), or a glob of one"));
                }
            }
        }
        // Method names are also checked here, so `load` names an unknown one (as every other
        // bad field) before anything is compiled.
        for (i, rule) in self.authz.rules.iter().enumerate() {
            for (j, m) in rule.methods.iter().enumerate() {
                if method_glob(m).is_none() {
                    return Err(unknown_method(i, j, m));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
