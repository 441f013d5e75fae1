//! Configuration of the LLM filter: parsed strictly (`deny_unknown_fields` everywhere),
//! validated once at load, and compiled into [`State`], the immutable per-VM state every
//! request shares. Every refusal names the offending field.
//!
//! ```json
//! {
//!   "identity": {"api_keys": {"keys": [{"sha256": "<hex>", "name": "alice-key",
//!                 "principal": "alice", "team": "payments", "models": ["gpt-4o*"]}]}},
//!   "require_identity": true,
//!   "provider_header": "x-tollgate-provider",
//!   "providers": [{"name": "provider-a", "apis": ["openai_chat"],
//!                  "credential": {"env": "PROVIDER_A_KEY", "send_as": "bearer"}}],
//!   "models": [{"model": "gpt-4o*", "provider": "provider-a"},
//!              {"model": "fast", "provider": "provider-a", "upstream_model": "gpt-4o-mini"}],
//!   "prices": [{"model": "gpt-4o-mini", "input": 0.15, "cached_input": 0.075, "output": 0.6}],
//!   "default_max_output_tokens": 4096,
//!   "limits": [{"id": "team-month", "scope": "team", "cost_micro_usd_per_window": 100000000,
//!               "window_secs": 2592000},
//!              {"id": "key-tpm", "scope": "key", "models": ["gpt-4o*"], "requests_per_window": 60,
//!               "tokens_per_window": 100000, "window_secs": 60}]
//! }
//! ```

use crate::api::{AuthScheme, ClientApi};
use crate::cost::{Price, PriceTable};
use crate::limits::{Limit, Scope};
use tollgate_core::fleet::{Counters, OnFailure, StoreConfig};
use tollgate_core::shared_data::window::Window;
use tollgate_core::observe::metrics::LabelCap;
use crate::deployments::Fallback;
use crate::routing::{DeploymentSpec, Provider, Router, Target};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use tollgate_core::observe::audit::AuditConfig;
use tollgate_core::config::{ConfigError, Validate};
use tollgate_core::glob::Glob;
use tollgate_core::identity::IdentityConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who the caller is: the core identity sources (API-key map, jwt_authn claims, ...).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Refuse requests that present no credential at all (401). Default: true when any
    /// identity source is configured, false otherwise (anonymous use).
    #[serde(default)]
    pub require_identity: Option<bool>,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Request header the filter sets to the chosen provider's name; Envoy routes match it.
    #[serde(default = "default_provider_header")]
    pub provider_header: String,
    /// Largest request body accepted (413 above). Envoy's own buffer limit
    /// (`per_connection_buffer_limit_bytes`, 1 MiB by default) must be at least this.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Add `stream_options.include_usage: true` to streaming OpenAI Chat requests that lack
    /// it, so the stream ends with a usage chunk the filter can count.
    #[serde(default = "default_true")]
    pub inject_stream_usage: bool,
    /// Ask providers for uncompressed responses (`accept-encoding: identity`), so usage can
    /// be read from them. A compressed response cannot be counted and is recorded as an
    /// estimate. Put Envoy's compressor filter before this one to compress towards clients.
    #[serde(default = "default_true")]
    pub upstream_identity_encoding: bool,
    /// Bytes per token for estimates when a provider reports no usage.
    #[serde(default = "default_bytes_per_token")]
    pub estimate_bytes_per_token: u32,
    /// Distinct `model` metric label values per VM; further models are labelled `other`.
    #[serde(default = "default_max_model_labels")]
    pub max_model_labels: usize,
    /// Distinct `team` metric label values per VM (then `other`).
    #[serde(default = "default_max_model_labels")]
    pub max_team_labels: usize,
    /// Distinct `key` metric label values (API key names) per VM (then `other`).
    #[serde(default = "default_max_model_labels")]
    pub max_key_labels: usize,
    /// Distinct `agent` metric label values (the caller's principal) per VM (then `other`).
    #[serde(default = "default_max_model_labels")]
    pub max_agent_labels: usize,
    /// Largest single SSE event (or streamed JSON element) the usage parser holds.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelRoute>,
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
    /// Output tokens reserved for a request that names no maximum (`max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens`, `generationConfig.maxOutputTokens`).
    #[serde(default = "default_max_output_tokens")]
    pub default_max_output_tokens: u64,
    /// Request, token and cost limits per window (see `limits.rs`).
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// The fleet-wide counter store (`fleet.rs`, `docs/limits-protocol.md`). With it, limits
    /// are counted there unless they say `counters: local`.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// What a cost budget does with a routed model that matches no price: `deny` (refuse
    /// the request, 403 `model_not_priced`) or `zero` (count it as costing 0). Absent: a
    /// config whose cost budgets can see an unpriced model is refused at load.
    #[serde(default)]
    pub unpriced: Option<Unpriced>,
    /// Fallback between the deployments of virtual models.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// The exact-match response cache (`cache.rs`); absent: no cache.
    #[serde(default)]
    pub cache: Option<crate::cache::CacheConfig>,
    /// Guardrails (`guardrails.rs`, `guard/`): external moderation.
    #[serde(default)]
    pub guardrails: Option<crate::guardrails::GuardrailsConfig>,
    /// Model names `GET /v1/models` lists besides the exact names and aliases of `models`
    /// (which it always lists): names a glob route serves (`gpt-4o-mini` for `gpt-4o*`).
    /// Each must be routed by `models` (see `endpoints.rs`).
    #[serde(default)]
    pub listed_models: Vec<String>,
}

/// The `unpriced` policy: what cost budgets do with a model that matches no price.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unpriced {
    /// Refused at admission (403 `model_not_priced`) when a cost budget applies to it.
    Deny,
    /// Counted as costing 0 against cost budgets (recorded with `priced: false`).
    Zero,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity: IdentityConfig::default(),
            require_identity: None,
            audit: AuditConfig::default(),
            provider_header: default_provider_header(),
            max_request_bytes: default_max_request_bytes(),
            inject_stream_usage: true,
            upstream_identity_encoding: true,
            estimate_bytes_per_token: default_bytes_per_token(),
            max_model_labels: default_max_model_labels(),
            max_team_labels: default_max_model_labels(),
            max_key_labels: default_max_model_labels(),
            max_agent_labels: default_max_model_labels(),
            max_event_bytes: default_max_event_bytes(),
            providers: Vec::new(),
            models: Vec::new(),
            prices: Vec::new(),
            default_max_output_tokens: default_max_output_tokens(),
            limits: Vec::new(),
            store: None,
            unpriced: None,
            fallback: FallbackConfig::default(),
            cache: None,
            guardrails: None,
            listed_models: Vec::new(),
        }
    }
}

fn default_provider_header() -> String {
    "x-tollgate-provider".into()
}
fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_true() -> bool {
    true
}
fn default_bytes_per_token() -> u32 {
    4
}
fn default_max_model_labels() -> usize {
    200
}
fn default_max_event_bytes() -> usize {
    1 << 20
}
fn default_max_output_tokens() -> u64 {
    4096
}

/// Longest window: a year and a day (budgets are usually monthly: 2592000).
const MAX_WINDOW_SECS: u64 = 366 * 86_400;

/// One limit: caps per fixed window (aligned to the Unix epoch) for each key, principal or
/// team. At least one cap must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in refusals, audit records (`rule_id`), metrics and counter keys:
    /// letters, digits, `-` and `_`.
    pub id: String,
    /// Whose usage is counted together: `key`, `principal`, `team` or `agent` (the agent of
    /// a gateway credential; callers without one share one counter).
    pub scope: Scope,
    /// Agent globs: the limit applies only to calls of these agents (identity source
    /// `gateway`); callers without a gateway credential are not counted by it.
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Globs of the principal a gateway credential says the agent acts for: the limit
    /// applies only to such calls.
    #[serde(default)]
    pub on_behalf_of: Option<Vec<String>>,
    /// Model globs (requested or upstream name); absent: every model. Matching models
    /// share one counter per scope value.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub requests_per_window: Option<u64>,
    /// Input + output tokens.
    #[serde(default)]
    pub tokens_per_window: Option<u64>,
    /// Cost in micro-dollars (1 USD = 1000000), from `prices`.
    #[serde(default)]
    pub cost_micro_usd_per_window: Option<u64>,
    /// A fixed window of this many seconds, aligned to the Unix epoch. Set this or `window`.
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// `<N>s`, or a calendar `day` / `month` in UTC or at an offset (`month+02:00`): the
    /// budget resets at the first second of each. Set this or `window_secs`.
    #[serde(default)]
    pub window: Option<Window>,
    /// `fleet` (the `store`; the default when there is one) or `local` (this Envoy's shared
    /// data: lost on restart, not shared by replicas).
    #[serde(default)]
    pub counters: Option<Counters>,
    /// For fleet counters, when the store cannot answer in `store.timeout_ms`:
    /// `fail_closed` (default: refuse) or `fail_open_local` (count locally, recorded).
    #[serde(default)]
    pub on_store_failure: Option<OnFailure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The value of `provider_header` for this provider; an Envoy route maps it to a cluster.
    pub name: String,
    /// Client APIs this provider speaks (requests are passed through, not translated).
    /// Absent: all of them.
    #[serde(default)]
    pub apis: Option<Vec<ClientApi>>,
    /// The provider's own credential, sent instead of the client's Tollgate key.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// Extra request headers sent to this provider (e.g. `anthropic-version`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `ip:port` of this provider's endpoint in the deployments cluster (Envoy's
    /// `override_host` policy picks hosts by address). Required for providers named in
    /// `deployments`.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Environment variable of the Wasm VM holding the key (`vm_config.environment_variables`).
    #[serde(default)]
    pub env: Option<String>,
    /// The key itself (prefer `env`: plugin configuration shows up in config dumps).
    #[serde(default)]
    pub value: Option<String>,
    /// How to send it: `bearer`, `x-api-key` or `x-goog-api-key`. Absent: the client API's
    /// own scheme (OpenAI bearer, Anthropic x-api-key, Gemini x-goog-api-key).
    #[serde(default)]
    pub send_as: Option<AuthScheme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// Model name the client asks for: exact (`gpt-4o`), glob (`gpt-4o*`), or an alias of
    /// your own (`fast`) together with `upstream_model`.
    pub model: String,
    /// Name of an entry in `providers`. Set this or `deployments`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Model name sent to the provider instead of the requested one.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// A virtual model: the deployments that serve it, with weights and priorities for
    /// load balancing and fallback (`deployments.rs`). Set this or `provider`.
    #[serde(default)]
    pub deployments: Option<Vec<DeploymentConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Names the deployment in records, metrics and cooldowns; default
    /// `<provider>/<upstream_model>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Name of an entry in `providers` (which must have an `address`).
    pub provider: String,
    /// Model name sent to the provider; default: the requested name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Share of the requests among the deployments of the same priority (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lower goes first; a higher priority is tried when the lower ones fail or cool down.
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// How virtual models fail over (`deployments.rs`). Envoy runs the attempts; these set the
/// retry headers the gateway gives it, and the cooldowns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The value of `provider_header` whose Envoy route goes to the deployments cluster.
    #[serde(default = "default_fallback_route")]
    pub route: String,
    /// Response statuses that move on to the next deployment and cool the deployment down.
    #[serde(default = "default_retry_on_status")]
    pub retry_on_status: Vec<u16>,
    /// No response headers within this time: the attempt is abandoned, the next one runs.
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Cooldown after a failure that says nothing of when to come back (no `Retry-After`).
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// Longest cooldown, whatever a provider asks for.
    #[serde(default = "default_max_cooldown_secs")]
    pub max_cooldown_secs: u64,
    /// Attempts per request at most (the first one included).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            route: default_fallback_route(),
            retry_on_status: default_retry_on_status(),
            first_byte_timeout_ms: default_first_byte_timeout_ms(),
            cooldown_secs: default_cooldown_secs(),
            max_cooldown_secs: default_max_cooldown_secs(),
            max_attempts: default_max_attempts(),
        }
    }
}

fn default_fallback_route() -> String {
    "deployments".into()
}
fn default_retry_on_status() -> Vec<u16> {
    vec![429, 500, 502, 503, 504, 529]
}
fn default_first_byte_timeout_ms() -> u64 {
    30_000
}
fn default_cooldown_secs() -> u64 {
    5
}
fn default_max_cooldown_secs() -> u64 {
    300
}
fn default_max_attempts() -> usize {
    3
}

/// Prices in US dollars per million tokens, as providers publish them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Upstream model name (exact or glob) the price applies to.
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// Cache reads; default: `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Cache writes; default: `input`.
    #[serde(default)]
    pub cache_creation: Option<f64>,
    /// Reasoning (thinking) output; default: `output`.
    #[serde(default)]
    pub reasoning: Option<f64>,
}

/// Everything a request needs, built once per VM from [`Config`].
#[derive(Debug)]
pub struct State {
    pub identity: IdentityConfig,
    pub require_identity: bool,
    pub audit: AuditConfig,
    pub provider_header: String,
    pub max_request_bytes: usize,
    pub inject_stream_usage: bool,
    pub upstream_identity_encoding: bool,
    pub estimate_bytes_per_token: u32,
    pub max_event_bytes: usize,
    pub model_labels: LabelCap,
    pub team_labels: LabelCap,
    /// `upstream_model` label values (the model the provider served), capped like `model`.
    pub upstream_model_labels: LabelCap,
    pub key_labels: LabelCap,
    pub agent_labels: LabelCap,
    pub router: Router,
    pub prices: PriceTable,
    pub default_max_output_tokens: u64,
    pub limits: Vec<Limit>,
    /// The fleet-wide counter store, when limits are counted there.
    pub store: Option<StoreConfig>,
    /// `unpriced: deny`: refuse a model without a price when a cost budget applies to it.
    pub deny_unpriced: bool,
    /// Request headers that may carry a client credential: all removed before forwarding.
    pub client_credential_headers: Vec<String>,
    pub fallback: Fallback,
    pub cache: Option<crate::cache::CacheConfig>,
    pub guardrails: Option<crate::guardrails::Guardrails>,
    /// Which part this plugin plays (from its `root_id`).
    pub role: Role,
    /// The model names `GET /v1/models` may list, in order (`endpoints.rs`).
    pub listed_models: Vec<String>,
}

/// The two places the module runs in Envoy: the HTTP filter (`gateway`) and, on the
/// deployments cluster, the upstream HTTP filter that Envoy runs once per attempt
/// (`attempt`; its `root_id` ends in `.attempt`). Both read the same configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Attempt,
}

fn bad(path: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::field(path, message)
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
}

/// A model name or pattern: non-empty, no whitespace or control characters.
fn check_model_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(bad(path, "must not be empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(path, format!("`{name}` must not contain whitespace or control characters")));
    }
    Ok(())
}

fn check_upstream_model(path: &str, name: &str) -> Result<(), ConfigError> {
    check_model_name(path, name)?;
    if name.contains(['*', '?']) {
        return Err(bad(path, "must be a model name, not a pattern"));
    }
    Ok(())
}

/// `ip:port` (IPv6 in brackets), as Envoy's `override_host` policy compares them.
fn is_host_address(address: &str) -> bool {
    address.parse::<std::net::SocketAddr>().is_ok()
}

fn check_price(path: &str, value: Option<f64>) -> Result<(), ConfigError> {
    match value {
        Some(v) if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) => {
            Err(bad(path, "must be a number of dollars per million tokens between 0 and 1000000"))
        }
        _ => Ok(()),
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.identity.validate("identity")?;
        if self.require_identity == Some(true) && self.identity.is_empty() {
            return Err(bad("require_identity", "is true but no identity source is configured"));
        }
        if !is_header_name(&self.provider_header) {
            return Err(bad("provider_header", "must be a lowercase header name"));
        }
        if self.max_request_bytes == 0 {
            return Err(bad("max_request_bytes", "must be greater than 0"));
        }
        if self.estimate_bytes_per_token == 0 {
            return Err(bad("estimate_bytes_per_token", "must be greater than 0"));
        }
        if self.max_event_bytes < 1024 {
            return Err(bad("max_event_bytes", "must be at least 1024"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            let name_ok = !p.name.is_empty()
                && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !name_ok {
                return Err(bad(&format!("{at}.name"), "must be non-empty letters, digits, `-`, `_` or `.`"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(&format!("{at}.name"), format!("duplicate provider `{}`", p.name)));
            }
            if let Some(apis) = &p.apis {
                if apis.is_empty() {
                    return Err(bad(&format!("{at}.apis"), "must not be empty (omit it to allow all)"));
                }
            }
            if let Some(c) = &p.credential {
                match (&c.env, &c.value) {
                    (Some(env), None) if !env.is_empty() => {}
                    (None, Some(value)) if !value.is_empty() => {}
                    _ => return Err(bad(&format!("{at}.credential"), "set exactly one of `env` or `value`")),
                }
            }
            for (name, value) in &p.headers {
                if !is_header_name(name) || name == &self.provider_header {
                    return Err(bad(&format!("{at}.headers.{name}"), "must be a lowercase header name"));
                }
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(bad(&format!("{at}.headers.{name}"), "value must not contain CR, LF or NUL"));
                }
            }
        }
        let mut exact = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}]");
            check_model_name(&format!("{at}.model"), &m.model)?;
            if Glob::new(&m.model).is_exact() && !exact.insert(m.model.as_str()) {
                return Err(bad(&format!("{at}.model"), format!("duplicate model `{}`", m.model)));
            }
            match (&m.provider, &m.deployments) {
                (Some(provider), None) => {
                    if !names.contains(provider.as_str()) {
                        return Err(bad(&format!("{at}.provider"), format!("unknown provider `{provider}`")));
                    }
                }
                (None, Some(deployments)) => {
                    if m.upstream_model.is_some() {
                        return Err(bad(&format!("{at}.upstream_model"), "set it on each deployment"));
                    }
                    self.validate_deployments(&at, deployments)?;
                }
                _ => return Err(bad(&at, "set exactly one of `provider` or `deployments`")),
            }
            if let Some(up) = &m.upstream_model {
                check_upstream_model(&format!("{at}.upstream_model"), up)?;
            }
        }
        for (i, p) in self.prices.iter().enumerate() {
            let at = format!("prices[{i}]");
            check_model_name(&format!("{at}.model"), &p.model)?;
            check_price(&format!("{at}.input"), Some(p.input))?;
            check_price(&format!("{at}.output"), Some(p.output))?;
            check_price(&format!("{at}.cached_input"), p.cached_input)?;
            check_price(&format!("{at}.cache_creation"), p.cache_creation)?;
            check_price(&format!("{at}.reasoning"), p.reasoning)?;
        }
        if self.default_max_output_tokens == 0 {
            return Err(bad("default_max_output_tokens", "must be greater than 0"));
        }
        if let Some(store) = &self.store {
            store.validate("store")?;
        }
        let mut ids = HashSet::new();
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("limits[{i}]");
            let id_ok = !l.id.is_empty()
                && l.id.len() <= 64
                && l.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(bad(&format!("{at}.id"), "must be 1 to 64 letters, digits, `-` or `_`"));
            }
            if !ids.insert(l.id.as_str()) {
                return Err(bad(&format!("{at}.id"), format!("duplicate limit `{}`", l.id)));
            }
            crate::delegation::validate(&at, l, self.identity.gateway.is_some())?;
            if let Some(models) = &l.models {
                if models.is_empty() {
                    return Err(bad(&format!("{at}.models"), "must not be empty (omit it for every model)"));
                }
                for (j, m) in models.iter().enumerate() {
                    check_model_name(&format!("{at}.models[{j}]"), m)?;
                }
            }
            let caps = [
                ("requests_per_window", l.requests_per_window),
                ("tokens_per_window", l.tokens_per_window),
                ("cost_micro_usd_per_window", l.cost_micro_usd_per_window),
            ];
            if caps.iter().all(|(_, cap)| cap.is_none()) {
                return Err(bad(
                    &at,
                    "set at least one of `requests_per_window`, `tokens_per_window`, `cost_micro_usd_per_window`",
                ));
            }
            for (name, cap) in caps {
                if cap == Some(0) || cap.is_some_and(|c| c > i64::MAX as u64) {
                    return Err(bad(&format!("{at}.{name}"), "must be between 1 and 9223372036854775807"));
                }
            }
            if l.cost_micro_usd_per_window.is_some() && self.prices.is_empty() {
                return Err(bad(
                    &format!("{at}.cost_micro_usd_per_window"),
                    "needs `prices`: without a price every request costs 0",
                ));
            }
            match (l.window_secs, l.window) {
                (Some(_), Some(_)) => return Err(bad(&format!("{at}.window"), "set `window` or `window_secs`, not both")),
                (None, None) => return Err(bad(&at, "set `window_secs` or `window` (`<N>s`, `day`, `month`)")),
                (Some(secs), None) | (None, Some(Window::Fixed { secs })) if secs == 0 || secs > MAX_WINDOW_SECS => {
                    let field = if l.window_secs.is_some() { "window_secs" } else { "window" };
                    return Err(bad(&format!("{at}.{field}"), format!("must be between 1 and {MAX_WINDOW_SECS} seconds")));
                }
                _ => {}
            }
            let fleet = match l.counters {
                Some(Counters::Fleet) if self.store.is_none() => {
                    return Err(bad(&format!("{at}.counters"), "`fleet` needs a `store` (the fleet-wide counter store)"))
                }
                Some(counters) => counters == Counters::Fleet,
                None => self.store.is_some(),
            };
            if l.on_store_failure.is_some() && !fleet {
                return Err(bad(&format!("{at}.on_store_failure"), "only for limits counted in the fleet store (`counters: fleet`)"));
            }
        }
        self.validate_fallback()?;
        if let Some(cache) = &self.cache {
            cache.validate("cache")?;
        }
        if self.unpriced.is_none() {
            self.check_unpriced()?;
        }
        crate::endpoints::validate_listed(&self.models, &self.listed_models)?;
        Ok(())
    }
}

impl Config {
    fn validate_deployments(&self, at: &str, deployments: &[DeploymentConfig]) -> Result<(), ConfigError> {
        if deployments.is_empty() {
            return Err(bad(&format!("{at}.deployments"), "must not be empty"));
        }
        let mut seen = HashSet::new();
        for (j, d) in deployments.iter().enumerate() {
            let at = format!("{at}.deployments[{j}]");
            let Some(provider) = self.providers.iter().find(|p| p.name == d.provider) else {
                return Err(bad(&format!("{at}.provider"), format!("unknown provider `{}`", d.provider)));
            };
            match &provider.address {
                Some(address) if is_host_address(address) => {}
                Some(_) => {
                    return Err(bad(&format!("{at}.provider"), format!("provider `{}`: `address` must be `ip:port`", d.provider)))
                }
                None => {
                    return Err(bad(
                        &format!("{at}.provider"),
                        format!("provider `{}` needs an `address` (its `ip:port` in the deployments cluster)", d.provider),
                    ))
                }
            }
            if let Some(up) = &d.upstream_model {
                check_upstream_model(&format!("{at}.upstream_model"), up)?;
            }
            if let Some(name) = &d.name {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
                if !ok {
                    return Err(bad(&format!("{at}.name"), "must be 1 to 64 letters, digits, `-`, `_`, `.` or `/`"));
                }
            }
            if d.weight == 0 || d.weight > 10_000 {
                return Err(bad(&format!("{at}.weight"), "must be between 1 and 10000"));
            }
            let name = d.name.clone().unwrap_or_else(|| format!("{}/{}", d.provider, d.upstream_model.as_deref().unwrap_or("*")));
            if !seen.insert(name.clone()) {
                return Err(bad(&at, format!("duplicate deployment `{name}` (give it a `name`)")));
            }
        }
        Ok(())
    }

    fn validate_fallback(&self) -> Result<(), ConfigError> {
        let f = &self.fallback;
        if !f.route.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) || f.route.is_empty() {
            return Err(bad("fallback.route", "must be non-empty letters, digits, `-`, `_` or `.`"));
        }
        if self.providers.iter().any(|p| p.name == f.route) {
            return Err(bad("fallback.route", format!("`{}` is also a provider name", f.route)));
        }
        if let Some(code) = f.retry_on_status.iter().find(|c| !(400..=599).contains(*c)) {
            return Err(bad("fallback.retry_on_status", format!("{code} is not an HTTP error status (400-599)")));
        }
        if f.first_byte_timeout_ms == 0 || f.first_byte_timeout_ms > 3_600_000 {
            return Err(bad("fallback.first_byte_timeout_ms", "must be between 1 and 3600000"));
        }
        if f.max_cooldown_secs > 86_400 {
            return Err(bad("fallback.max_cooldown_secs", "must be at most 86400"));
        }
        if f.cooldown_secs > f.max_cooldown_secs {
            return Err(bad("fallback.cooldown_secs", "must not exceed `max_cooldown_secs`"));
        }
        if f.max_attempts == 0 || f.max_attempts > 10 {
            return Err(bad("fallback.max_attempts", "must be between 1 and 10"));
        }
        Ok(())
    }

    /// Without an `unpriced` policy, no cost budget may see a routed model that matches no
    /// price (it would silently cost 0). Glob routes are judged conservatively: a glob route
    /// is priced when one price pattern covers every name it can match; a limit with `models`
    /// sees a glob route when one of its globs can match a name the route matches, and sees
    /// only priced names when that glob is itself covered by a price.
    fn check_unpriced(&self) -> Result<(), ConfigError> {
        let priced = |name: &str| self.prices.iter().any(|p| Glob::new(&p.model).matches(name));
        let covered = |pattern: &str| self.prices.iter().any(|p| glob_covers(&p.model, pattern));
        for (i, l) in self.limits.iter().enumerate() {
            if l.cost_micro_usd_per_window.is_none() {
                continue;
            }
            // A deployment counts as an alias of the virtual model to its upstream model.
            let routes = self.models.iter().enumerate().flat_map(|(k, m)| {
                let direct = m.deployments.is_none().then_some((k, m.model.as_str(), m.upstream_model.as_deref()));
                let deployed = m.deployments.iter().flatten().map(move |d| (k, m.model.as_str(), d.upstream_model.as_deref()));
                direct.into_iter().chain(deployed)
            });
            for (k, model, upstream_model) in routes {
                let m = RouteView { model, upstream_model };
                let unpriced: Option<String> = match &m.upstream_model {
                    Some(up) => {
                        let sees = match &l.models {
                            None => true,
                            Some(globs) => globs.iter().any(|g| Glob::new(g).matches(up) || glob_intersects(g, m.model)),
                        };
                        (sees && !priced(up)).then(|| format!("`{}` (sent upstream as `{up}`)", m.model))
                    }
                    None if Glob::new(m.model).is_exact() => {
                        let sees = l.models.as_ref().is_none_or(|globs| globs.iter().any(|g| Glob::new(g).matches(m.model)));
                        (sees && !priced(m.model)).then(|| format!("`{}`", m.model))
                    }
                    None if covered(m.model) => None,
                    None => match &l.models {
                        None => Some(format!("`{}`", m.model)),
                        Some(globs) => globs
                            .iter()
                            .find(|g| {
                                glob_intersects(g, m.model)
                                    && if Glob::new(g).is_exact() { !priced(g) } else { !covered(g) }
                            })
                            .map(|g| format!("`{}` (the limit's `{g}`)", m.model)),
                    },
                };
                if let Some(what) = unpriced {
                    return Err(bad(
                        &format!("models[{k}].model"),
                        format!(
                            "routes {what} to models with no price, and limits[{i}] (`{}`) budgets their cost: \
                             add a price for them, or set `\"unpriced\": \"deny\"` (refuse such requests) or \
                             `\"unpriced\": \"zero\"` (count them as free)",
                            l.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The parts of a model route the price check reads (a deployment reads as an alias).
struct RouteView<'a> {
    model: &'a str,
    upstream_model: Option<&'a str>,
}

/// Whether glob `outer` matches every name glob `inner` can match (sound, not complete:
/// `outer`'s `*` may stand for any part of `inner`, its `?` for one literal or `?` of `inner`).
fn glob_covers(outer: &str, inner: &str) -> bool {
    let (q, p) = (outer.as_bytes(), inner.as_bytes());
    let width = p.len() + 1;
    // covers[i * width + j]: q[i..] covers p[j..]; filled from the ends.
    let mut covers = vec![false; (q.len() + 1) * width];
    let at = |table: &[bool], i: usize, j: usize| table.get(i * width + j).copied().unwrap_or(false);
    for i in (0..=q.len()).rev() {
        for j in (0..=p.len()).rev() {
            let value = match q.get(i) {
                None => j == p.len(),
                Some(b'*') => at(&covers, i + 1, j) || (j < p.len() && at(&covers, i, j + 1)),
                Some(b'?') => p.get(j).is_some_and(|&c| c != b'*') && at(&covers, i + 1, j + 1),
                Some(&c) => p.get(j) == Some(&c) && at(&covers, i + 1, j + 1),
            };
            if let Some(cell) = covers.get_mut(i * width + j) {
                *cell = value;
            }
        }
    }
    at(&covers, 0, 0)
}

/// Whether some name matches both globs.
fn glob_intersects(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let width = b.len() + 1;
    let mut meet = vec![false; (a.len() + 1) * width];
    let at = |table: &[bool], i: usize, j: usize| table.get(i * width + j).copied().unwrap_or(false);
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            let value = match (a.get(i), b.get(j)) {
                (None, None) => true,
                (Some(b'*'), _) => at(&meet, i + 1, j) || (j < b.len() && at(&meet, i, j + 1)),
                (_, Some(b'*')) => at(&meet, i, j + 1) || (i < a.len() && at(&meet, i + 1, j)),
                (Some(&x), Some(&y)) => (x == y || x == b'?' || y == b'?') && at(&meet, i + 1, j + 1),
                _ => false,
            };
            if let Some(cell) = meet.get_mut(i * width + j) {
                *cell = value;
            }
        }
    }
    at(&meet, 0, 0)
}

/// Dollars per million tokens -> integer micro-dollars per million tokens (rounded once).
fn micros(dollars: f64) -> u64 {
    (dollars * 1_000_000.0).round() as u64
}

impl Config {
    /// Compiles the validated config, reading credentials from the VM's environment.
    pub fn compile(self) -> Result<State, ConfigError> {
        self.compile_with(&|name| std::env::var(name).ok())
    }

    /// As [`Config::compile`], with the environment lookup injected (for tests).
    pub fn compile_with(self, env: &dyn Fn(&str) -> Option<String>) -> Result<State, ConfigError> {
        let mut providers = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.into_iter().enumerate() {
            let credential = match p.credential {
                None => None,
                Some(c) => {
                    let key = match (c.env, c.value) {
                        (Some(var), _) => match env(&var).filter(|v| !v.is_empty()) {
                            Some(v) => v,
                            None => {
                                return Err(bad(
                                    &format!("providers[{i}].credential.env"),
                                    format!("environment variable `{var}` is not set in the Wasm VM (vm_config.environment_variables)"),
                                ))
                            }
                        },
                        (None, Some(v)) => v,
                        (None, None) => return Err(bad(&format!("providers[{i}].credential"), "set `env` or `value`")),
                    };
                    if key.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(bad(&format!("providers[{i}].credential"), "key must not contain CR, LF or NUL"));
                    }
                    Some((key, c.send_as))
                }
            };
            providers.push(Provider {
                name: p.name,
                apis: p.apis,
                credential,
                headers: p.headers.into_iter().collect(),
                address: p.address,
            });
        }
        let listed_models = crate::endpoints::listed_names(&self.models, self.listed_models);
        let routes = self.models.into_iter().map(|m| {
            let target = match m.deployments {
                Some(deployments) => Target::Deployments(
                    deployments
                        .into_iter()
                        .map(|d| DeploymentSpec {
                            name: d.name,
                            provider: d.provider,
                            upstream_model: d.upstream_model,
                            weight: d.weight,
                            priority: d.priority,
                        })
                        .collect(),
                ),
                None => Target::Provider { provider: m.provider.unwrap_or_default(), upstream_model: m.upstream_model },
            };
            (m.model, target)
        });
        let guardrails = match self.guardrails {
            Some(g) => Some(g.compile(env)?),
            None => None,
        };
        let router = Router::with_targets(providers, routes);
        let fallback = Fallback {
            route: self.fallback.route,
            retry_on_status: self.fallback.retry_on_status,
            first_byte_timeout_ms: self.fallback.first_byte_timeout_ms,
            cooldown_secs: self.fallback.cooldown_secs,
            max_cooldown_secs: self.fallback.max_cooldown_secs,
            max_attempts: self.fallback.max_attempts,
        };
        let prices = PriceTable::new(self.prices.into_iter().map(|p| {
            let price = Price {
                input: micros(p.input),
                cached_input: micros(p.cached_input.unwrap_or(p.input)),
                cache_creation: micros(p.cache_creation.unwrap_or(p.input)),
                output: micros(p.output),
                reasoning: micros(p.reasoning.unwrap_or(p.output)),
            };
            (p.model, price)
        }));
        let store = self.store;
        let limits = self
            .limits
            .into_iter()
            .map(|l| Limit {
                delegated: crate::delegation::Selectors::new(l.agents.as_deref(), l.on_behalf_of.as_deref()),
                id: l.id,
                scope: l.scope,
                models: l.models.map(|m| m.iter().map(|g| Glob::new(g)).collect()),
                requests: l.requests_per_window,
                tokens: l.tokens_per_window,
                cost_micro_usd: l.cost_micro_usd_per_window,
                window: l.window.or(l.window_secs.map(Window::fixed)).unwrap_or(Window::fixed(1)),
                fleet: match l.counters {
                    Some(Counters::Local) => None,
                    Some(Counters::Fleet) => Some(l.on_store_failure.unwrap_or_default()),
                    None => store.as_ref().map(|_| l.on_store_failure.unwrap_or_default()),
                },
            })
            .collect();
        let client_credential_headers = self.identity.credential_headers();
        Ok(State {
            require_identity: self.require_identity.unwrap_or(!self.identity.is_empty()),
            identity: self.identity,
            audit: self.audit,
            provider_header: self.provider_header,
            max_request_bytes: self.max_request_bytes,
            inject_stream_usage: self.inject_stream_usage,
            upstream_identity_encoding: self.upstream_identity_encoding,
            estimate_bytes_per_token: self.estimate_bytes_per_token,
            max_event_bytes: self.max_event_bytes,
            model_labels: LabelCap::new(self.max_model_labels),
            team_labels: LabelCap::new(self.max_team_labels),
            upstream_model_labels: LabelCap::new(self.max_model_labels),
            key_labels: LabelCap::new(self.max_key_labels),
            agent_labels: LabelCap::new(self.max_agent_labels),
            router,
            prices,
            default_max_output_tokens: self.default_max_output_tokens,
            limits,
            store,
            deny_unpriced: self.unpriced == Some(Unpriced::Deny),
            client_credential_headers,
            fallback,
            cache: self.cache,
            guardrails,
            role: Role::Gateway,
            listed_models,
        })
    }
}

/// Parses, validates and compiles a configuration (what `on_configure` does).
pub fn load_with(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<State, ConfigError> {
    tollgate_core::config::load::<Config>(bytes)?.compile_with(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: serde_json::Value) -> Result<State, ConfigError> {
        load_with(v.to_string().as_bytes(), &|name| (name == "KEY_A").then(|| "sk-a".to_string()))
    }

    fn base() -> serde_json::Value {
        json!({
            "providers": [{"name": "a", "credential": {"env": "KEY_A"}},
                          {"name": "b", "apis": ["anthropic_messages"], "credential": {"value": "sk-b", "send_as": "x-api-key"}}],
            "models": [{"model": "gpt-*", "provider": "a"}, {"model": "fast", "provider": "a", "upstream_model": "gpt-4o-mini"}],
            "prices": [{"model": "gpt-4o-mini", "input": 0.15, "output": 0.6}]
        })
    }

    #[test]
    fn empty_config_loads_with_defaults() {
        let state = load_with(b"", &|_| None).unwrap();
        assert!(!state.require_identity);
        assert_eq!(state.provider_header, "x-tollgate-provider");
        assert!(state.inject_stream_usage);
        assert_eq!(state.max_request_bytes, 1 << 20);
    }

    #[test]
    fn full_config_compiles_credentials_and_prices() {
        let state = load(base()).unwrap();
        let a = state.router.provider("a").unwrap();
        assert_eq!(a.credential.as_ref().unwrap().0, "sk-a");
        let p = state.prices.lookup("gpt-4o-mini").unwrap();
        assert_eq!((p.input, p.cached_input, p.output, p.reasoning), (150_000, 150_000, 600_000, 600_000));
    }

    fn err(v: serde_json::Value) -> String {
        load(v).unwrap_err().0
    }

    #[test]
    fn bad_references_and_values_name_the_field() {
        let mut v = base();
        v["models"][1]["provider"] = json!("nope");
        assert!(err(v).starts_with("models[1].provider: unknown provider `nope`"));

        let mut v = base();
        v["models"][0]["model"] = json!("");
        assert!(err(v).starts_with("models[0].model:"));

        let mut v = base();
        v["models"][0]["model"] = json!("gpt 4");
        assert!(err(v).starts_with("models[0].model:"));

        let mut v = base();
        v["models"][1]["upstream_model"] = json!("gpt-*");
        assert!(err(v).starts_with("models[1].upstream_model:"));

        let mut v = base();
        v["providers"][0]["credential"] = json!({"env": "MISSING"});
        assert!(err(v).starts_with("providers[0].credential.env: environment variable `MISSING`"));

        let mut v = base();
        v["providers"][0]["credential"] = json!({"env": "KEY_A", "value": "x"});
        assert!(err(v).starts_with("providers[0].credential:"));

        let mut v = base();
        v["providers"][1]["apis"] = json!(["openai_chatt"]);
        let e = err(v);
        assert!(e.starts_with("providers[1].apis[0]: unknown variant"), "{e}");

        let mut v = base();
        v["providers"][1]["name"] = json!("a");
        assert!(err(v).starts_with("providers[1].name: duplicate provider"));

        let mut v = base();
        v["prices"][0]["output"] = json!(-1);
        assert!(err(v).starts_with("prices[0].output:"));

        let mut v = base();
        v["prices"][0]["inptu"] = json!(1);
        let e = err(v);
        assert!(e.starts_with("prices[0].inptu: unknown field `inptu`"), "{e}");

        let mut v = base();
        v["models"].as_array_mut().unwrap().push(json!({"model": "fast", "provider": "a"}));
        assert!(err(v).starts_with("models[2].model: duplicate model `fast`"));

        let mut v = base();
        v["require_identity"] = json!(true);
        assert!(err(v).starts_with("require_identity:"));

        let mut v = base();
        v["provider_header"] = json!("X-Bad Header");
        assert!(err(v).starts_with("provider_header:"));
    }

    #[test]
    fn limits_compile_and_bad_limits_name_the_field() {
        let mut v = base();
        v["limits"] = json!([
            {"id": "key-tpm", "scope": "key", "models": ["gpt-*"], "tokens_per_window": 1000, "requests_per_window": 5, "window_secs": 60},
            {"id": "team_month", "scope": "team", "cost_micro_usd_per_window": 5000000, "window_secs": 2592000}
        ]);
        v["default_max_output_tokens"] = json!(512);
        // `gpt-*` routes names only `gpt-4o-mini` prices: the cost budget needs a policy.
        v["unpriced"] = json!("zero");
        let state = load(v.clone()).unwrap();
        assert_eq!(state.default_max_output_tokens, 512);
        assert_eq!(state.limits.len(), 2);
        assert!(state.limits[0].applies_to("gpt-4o", "gpt-4o") && !state.limits[0].applies_to("claude", "claude"));
        assert_eq!((state.limits[1].cost_micro_usd, state.limits[1].window), (Some(5_000_000), Window::fixed(2_592_000)));
        assert_eq!(load(base()).unwrap().default_max_output_tokens, 4096);

        let check = |path: &str, value: serde_json::Value, expected: &str| {
            let mut bad = v.clone();
            let (index, field) = path.split_once('.').unwrap_or((path, ""));
            let index: usize = index.parse().unwrap();
            if field.is_empty() {
                bad["limits"][index] = value;
            } else {
                bad["limits"][index][field] = value;
            }
            let e = err(bad);
            assert!(e.starts_with(expected), "{e}");
        };
        check("0.scope", json!("tenant"), "limits[0].scope: unknown variant `tenant`");
        check("0.tokens_per_minute", json!(1), "limits[0].tokens_per_minute: unknown field");
        check("0.id", json!("a.b"), "limits[0].id: must be");
        check("1.id", json!("key-tpm"), "limits[1].id: duplicate limit `key-tpm`");
        check("0.models", json!([]), "limits[0].models: must not be empty");
        check("0.models", json!(["gpt 4"]), "limits[0].models[0]:");
        check("0.tokens_per_window", json!(0), "limits[0].tokens_per_window: must be between 1");
        check("0.tokens_per_window", json!(-1), "limits[0].tokens_per_window: invalid value");
        check("0.window_secs", json!(0), "limits[0].window_secs: must be between 1 and 31622400");
        check("1", json!({"id": "x", "scope": "team", "window_secs": 60}), "limits[1]: set at least one of");
        check("1", json!({"id": "x", "scope": "team", "requests_per_window": 1}), "limits[1]: set `window_secs` or `window`");
        check("1.window", json!("week"), "limits[1].window: `week` is not a window");
        check("1.window", json!("month"), "limits[1].window: set `window` or `window_secs`, not both");
        check("0.counters", json!("fleet"), "limits[0].counters: `fleet` needs a `store`");
        check("0.on_store_failure", json!("fail_open_local"), "limits[0].on_store_failure: only for limits counted in the fleet store");

        // Calendar windows; with a store, limits count in the fleet unless they say `local`.
        let mut fleet = v.clone();
        fleet["limits"][1].as_object_mut().unwrap().remove("window_secs");
        fleet["limits"][1]["window"] = json!("month+02:00");
        fleet["limits"][1]["on_store_failure"] = json!("fail_open_local");
        fleet["limits"][0]["counters"] = json!("local");
        fleet["store"] = json!({"cluster": "tollgate_limits"});
        let state = load(fleet.clone()).unwrap();
        assert_eq!(state.limits[1].window, Window::parse("month+02:00").unwrap());
        assert_eq!((state.limits[0].fleet, state.limits[1].fleet), (None, Some(OnFailure::FailOpenLocal)));
        let store = state.store.as_ref().unwrap();
        assert_eq!((store.timeout_ms, store.domain.as_str()), (200, "tollgate"));
        let mut bad = fleet.clone();
        bad["store"]["timeout_ms"] = json!(0);
        assert!(err(bad).starts_with("store.timeout_ms: must be between 1 and 60000"));
        let mut bad = fleet.clone();
        bad["store"]["clustr"] = json!("x");
        assert!(err(bad).starts_with("store.clustr: unknown field"));
        let mut bad = fleet;
        bad["store"]["protocol"] = json!("redis");
        assert!(err(bad).starts_with("store.protocol: unknown variant `redis`"));

        let mut no_prices = v.clone();
        no_prices["prices"] = json!([]);
        assert!(err(no_prices).starts_with("limits[1].cost_micro_usd_per_window: needs `prices`"));
        let mut bad = v.clone();
        bad["default_max_output_tokens"] = json!(0);
        assert!(err(bad).starts_with("default_max_output_tokens:"));
    }

    #[test]
    fn glob_relations() {
        assert!(glob_covers("*", "claude-*") && glob_covers("gpt-*", "gpt-4o*") && glob_covers("gpt-4o*", "gpt-4o?"));
        assert!(glob_covers("a*b", "a*b") && glob_covers("a*", "a?c*") && glob_covers("a?c", "abc"));
        assert!(!glob_covers("gpt-4o*", "gpt-*") && !glob_covers("a?", "a*") && !glob_covers("a*c", "a*"));
        assert!(!glob_covers("abc", "ab?") && !glob_covers("claude-sonnet-4*", "claude-*"));
        assert!(glob_intersects("claude-*", "claude-sonnet-4*") && glob_intersects("*x", "a*") && glob_intersects("a?c", "*c"));
        assert!(glob_intersects("fast", "fast") && glob_intersects("*", ""));
        assert!(!glob_intersects("gpt-*", "claude-*") && !glob_intersects("*x", "*y") && !glob_intersects("a?", "abc"));
    }

    #[test]
    fn cost_budgets_refuse_unpriced_models_unless_the_config_says() {
        let mut v = base();
        v["models"] = json!([
            {"model": "gpt-4o*", "provider": "a"},
            {"model": "fast", "provider": "a", "upstream_model": "gpt-4o-mini"},
            {"model": "claude-*", "provider": "b"},
            {"model": "smart", "provider": "b", "upstream_model": "claude-sonnet-4-6"},
            {"model": "o4-mini", "provider": "a"}
        ]);
        v["prices"] = json!([{"model": "gpt-4o*", "input": 1, "output": 2}, {"model": "claude-sonnet-4*", "input": 3, "output": 15}]);
        v["limits"] = json!([{"id": "team-month", "scope": "team", "cost_micro_usd_per_window": 1000, "window": "month"}]);
        // The glob route `claude-*` can see claude models no price covers.
        let e = err(v.clone());
        assert!(e.starts_with("models[2].model: routes `claude-*` to models with no price, and limits[0] (`team-month`)"), "{e}");
        assert!(e.contains("\"unpriced\": \"deny\"") && e.contains("\"unpriced\": \"zero\""), "{e}");
        for policy in ["deny", "zero"] {
            let mut ok = v.clone();
            ok["unpriced"] = json!(policy);
            assert_eq!(load(ok).unwrap().deny_unpriced, policy == "deny");
        }
        let mut bad = v.clone();
        bad["unpriced"] = json!("free");
        assert!(err(bad).starts_with("unpriced: unknown variant `free`"));

        // Priced by a covering glob: fine; then the exact route `o4-mini` has no price.
        let mut v2 = v.clone();
        v2["prices"].as_array_mut().unwrap().push(json!({"model": "claude-*", "input": 1, "output": 5}));
        let e = err(v2.clone());
        assert!(e.starts_with("models[4].model: routes `o4-mini` to models"), "{e}");
        v2["prices"].as_array_mut().unwrap().push(json!({"model": "o4-mini", "input": 1, "output": 4}));
        load(v2.clone()).unwrap();
        // An alias is priced by its upstream model.
        v2["models"][3]["upstream_model"] = json!("claude-opus-9");
        load(v2.clone()).unwrap();
        v2["models"][3]["upstream_model"] = json!("gemini-9");
        assert!(err(v2).starts_with("models[3].model: routes `smart` (sent upstream as `gemini-9`)"));

        // A limit with `models` sees only what its globs match.
        let mut scoped = v.clone();
        scoped["models"].as_array_mut().unwrap().truncate(2);
        scoped["models"].as_array_mut().unwrap().push(json!({"model": "claude-*", "provider": "b"}));
        scoped["limits"][0]["models"] = json!(["gpt-*"]);
        load(scoped.clone()).unwrap();
        scoped["limits"][0]["models"] = json!(["claude-sonnet-4*"]);
        load(scoped.clone()).unwrap();
        scoped["limits"][0]["models"] = json!(["claude-haiku*"]);
        assert!(err(scoped.clone()).starts_with("models[2].model: routes `claude-*` (the limit's `claude-haiku*`)"));
        scoped["limits"][0]["models"] = json!(["claude-sonnet-4-6", "gpt-4o"]);
        load(scoped.clone()).unwrap();

        // Limits without a cost cap do not care.
        let mut tokens = v.clone();
        tokens["limits"] = json!([{"id": "t", "scope": "key", "tokens_per_window": 10, "window_secs": 60}]);
        load(tokens).unwrap();
        // A route of every model with prices for some: refused.
        let mut any = v;
        any["models"] = json!([{"model": "*", "provider": "a"}]);
        assert!(err(any).starts_with("models[0].model: routes `*`"));
    }

    #[test]
    fn identity_requirement_defaults_to_configured_sources() {
        let mut v = base();
        v["identity"] = json!({"api_keys": {"keys": [{"sha256": "a".repeat(64), "name": "k", "principal": "p"}]}});
        let state = load(v.clone()).unwrap();
        assert!(state.require_identity);
        v["require_identity"] = json!(false);
        assert!(!load(v).unwrap().require_identity);
    }


    #[test]
    fn field_paths_match_serde_path_to_error() {
        // The demo configuration (envoy/), each value made wrong in turn: the same field path as
        // serde_path_to_error names.
        let valid = serde_json::json!({
            "identity": {"api_keys": {"keys": [{"name": "bob-key", "principal": "bob", "team": "research", "sha256": "ec75756cc7c55d81d65e530e0fa1c235e5a5dcaafe6289604ae641fdf8b8f66b", "models": ["gpt-4o-mini", "claude-haiku-*"]}]}},
            "require_identity": true, "provider_header": "x-tollgate-provider", "max_request_bytes": 1048576, "inject_stream_usage": true,
            "providers": [{"name": "provider-a", "apis": ["openai_chat", "openai_responses"], "credential": {"env": "PROVIDER_A_KEY", "send_as": "bearer"}},
                          {"name": "provider-b", "apis": ["anthropic_messages"], "credential": {"env": "PROVIDER_B_KEY"}, "headers": {"x-tollgate-gateway": "tollgate"}}],
            "models": [{"model": "gpt-4o*", "provider": "provider-a"}, {"model": "smart", "provider": "provider-b", "upstream_model": "claude-sonnet-4-6"}],
            "listed_models": ["gpt-4o", "claude-sonnet-4-6"],
            "prices": [{"model": "gpt-4o*", "input": 2.5, "cached_input": 1.25, "output": 10.0}, {"model": "claude-sonnet-4*", "input": 3.0, "cache_creation": 3.75, "output": 15.0, "reasoning": 15}],
            "unpriced": "deny", "default_max_output_tokens": 4096,
            "limits": [{"id": "team-monthly-budget", "scope": "team", "cost_micro_usd_per_window": 100000000, "window": "month+02:00", "counters": "local"},
                       {"id": "key-tpm", "scope": "key", "models": ["gpt-*"], "tokens_per_window": 1000, "requests_per_window": 5, "window_secs": 60}],
            "store": {"cluster": "tollgate_limits", "timeout_ms": 200},
            "audit": {"log": false}
        });
        let refused = tollgate_core::config::paths_agree::<Config>(&valid, tollgate_core::config::reference_error::<Config>);
        assert!(refused > 300, "{refused}");
    }
}
