//! Limits and budgets: admission with an estimate reserved up front, reconciled against
//! real usage when the request ends.
//!
//! A limit (`limits[]` in the config) caps requests, tokens (input + output) and/or cost
//! (micro-USD) per fixed window, for each key, principal or team, optionally only for some
//! models. Windows are fixed and aligned to the Unix epoch (`window_secs: 60` resets at every
//! whole minute; `2592000` is a 30-day budget period counted from the epoch, not from the
//! first request). Counters live in Envoy shared data (every worker of one Envoy, same
//! `vm_id`), one per limit, scope value and dimension:
//!
//! ```text
//! tollgate.llm.limit.<id>.<scope value>.<requests|tokens|cost>
//! ```
//!
//! The scope value is the key's configured name (`key`; identities without an API key, JWT
//! or mTLS, use `~<source>:<principal>`), the principal (`principal`) or the team (`team`;
//! callers without a team share `~none`); a caller without identity is `~anonymous`. Values
//! longer than 64 bytes or with characters outside `[A-Za-z0-9._@:+-]` are replaced by
//! `#<sha256 hex>`, so `~` and `#` forms cannot collide with a real value.
//!
//! **Admission** (once identity, model and route are known, before anything is forwarded):
//! the request's estimate is
//!
//! ```text
//! tokens = ceil(request bytes / estimate_bytes_per_token) + requested max output tokens
//!                                                          (or default_max_output_tokens)
//! cost   = those input tokens at the input price + those output tokens at the higher of
//!          the output and reasoning prices (upstream model's price; no price: 0)
//! ```
//!
//! and every matching limit reserves 1 request, the tokens and the cost in its current
//! window, all or nothing ([`tollgate_core::shared_data::window_counter::reserve_all`]): if any counter would go
//! over its cap, the ones already taken are returned and the request is refused with 429.
//! In-flight requests hold their reservations, so concurrent requests cannot together
//! overshoot a cap by more than their real usage beyond their own estimates.
//!
//! **Reconciliation** (exactly once, when the request's final record is written: at the
//! response's end, or at `on_log` / `on_done` for requests that never got there): each
//! reservation is replaced by the real amount, `real - reserved` added to the window the
//! reservation was made in ([`tollgate_core::shared_data::window_counter::settle`]). Real amounts: 1 request if it
//! was forwarded (0 if it was refused after admission); the tokens and cost the audit record
//! holds (reported, or estimated when usage never arrived); 0 tokens for upstream errors. If
//! the window rolled over meanwhile, a negative adjustment is dropped (returning it would
//! give the new window capacity it never lent) and a positive one (real usage above the
//! estimate, e.g. a request without a max that wrote more than the default) is charged to
//! the current window. Real usage above the reservation is charged even over the cap (it
//! happened): the record lists the limit in `limits_overshot`, the
//! `limit_overshoots{limit,team}` metric counts it, and the next request is refused.

use crate::cost::{cost_micro_usd, Price};
use crate::usage::Tokens;
use serde::{Deserialize, Serialize};
use tollgate_core::glob::Glob;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::{Host, LogLevel};
use tollgate_core::identity::{Identity, Source};
use tollgate_core::fleet::OnFailure;
use tollgate_core::shared_data::window::{Calendar, Window};
use tollgate_core::shared_data::window_counter::{self, Claim, Settlement};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Per API key (its configured name).
    Key,
    /// Per principal (all of a caller's keys and tokens together).
    Principal,
    /// Per team.
    Team,
    /// Per agent (identity source `gateway`, see `delegation.rs`).
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Requests,
    Tokens,
    CostMicroUsd,
}

impl Dimension {
    fn suffix(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::CostMicroUsd => "cost",
        }
    }

    /// The unit in messages.
    fn unit(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::CostMicroUsd => "micro-USD",
        }
    }

    /// The OpenAI error `type` of a refusal (OpenAI uses `requests` and `tokens`).
    pub fn openai_type(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::CostMicroUsd => "cost",
        }
    }
}

/// One compiled limit.
#[derive(Debug)]
pub struct Limit {
    pub id: String,
    pub scope: Scope,
    /// Model globs, matched against the requested and the upstream model; `None`: all.
    pub models: Option<Vec<Glob>>,
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub cost_micro_usd: Option<u64>,
    pub window: Window,
    /// Counted in the fleet-wide store, with what to do when it cannot answer; `None`: in
    /// this Envoy's shared data.
    pub fleet: Option<OnFailure>,
    /// `agents` / `on_behalf_of`: only for callers whose gateway identity matches.
    pub delegated: crate::delegation::Selectors,
}

impl Limit {
    /// Applies when any glob matches the requested model or the upstream model (so an
    /// alias cannot get around a limit on the model it stands for).
    pub fn applies_to(&self, model: &str, upstream_model: &str) -> bool {
        match &self.models {
            None => true,
            Some(globs) => globs.iter().any(|g| g.matches(model) || g.matches(upstream_model)),
        }
    }

    fn caps(&self) -> impl Iterator<Item = (Dimension, u64)> + '_ {
        [
            (Dimension::Requests, self.requests),
            (Dimension::Tokens, self.tokens),
            (Dimension::CostMicroUsd, self.cost_micro_usd),
        ]
        .into_iter()
        .filter_map(|(d, cap)| cap.map(|c| (d, c)))
    }

    fn cap(&self, dimension: Dimension) -> u64 {
        match dimension {
            Dimension::Requests => self.requests,
            Dimension::Tokens => self.tokens,
            Dimension::CostMicroUsd => self.cost_micro_usd,
        }
        .unwrap_or(u64::MAX)
    }
}

/// What a request is expected to take, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub tokens: u64,
    /// Absent when no price matched the model (cost budgets then count 0 for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
}

/// The estimate of one request (see the module docs).
pub fn admission_estimate(request_bytes: u64, bytes_per_token: u32, max_output_tokens: u64, price: Option<&Price>) -> Estimate {
    let input = request_bytes.div_ceil(u64::from(bytes_per_token.max(1)));
    let tokens = Tokens { input, output: max_output_tokens, ..Default::default() };
    let cost = price.map(|p| {
        let output_price = p.output.max(p.reasoning);
        cost_micro_usd(&tokens, &Price { output: output_price, reasoning: output_price, ..*p })
    });
    Estimate { tokens: tokens.total(), cost_micro_usd: cost }
}

const MAX_PLAIN_SEGMENT: usize = 64;

/// A scope value as one segment of a shared-data key (see the module docs).
fn segment(value: &str) -> String {
    let plain = !value.is_empty()
        && value.len() <= MAX_PLAIN_SEGMENT
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':' | b'+'));
    if plain {
        value.to_string()
    } else {
        format!("#{}", sha256_hex(value.as_bytes()))
    }
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Jwt => "jwt",
        Source::Mtls => "mtls",
        Source::ApiKey => "api_key",
        Source::Header => "header",
        Source::Gateway => "gateway",
    }
}

/// The caller's value for `scope`, as a key segment.
pub fn scope_segment(scope: Scope, who: Option<&Identity>) -> String {
    let Some(who) = who else { return "~anonymous".into() };
    match scope {
        Scope::Key => match &who.key_name {
            Some(name) => segment(name),
            None => format!("~{}:{}", source_name(who.source), segment(&who.principal)),
        },
        Scope::Principal => segment(&who.principal),
        Scope::Team => match &who.team {
            Some(team) => segment(team),
            None => "~none".into(),
        },
        Scope::Agent => match who.agent() {
            Some(agent) => segment(agent),
            None => "~none".into(),
        },
    }
}

/// The shared-data key of one counter.
pub fn counter_key(limit_id: &str, scope_segment: &str, dimension: Dimension) -> String {
    format!("tollgate.llm.limit.{limit_id}.{scope_segment}.{}", dimension.suffix())
}

/// One reservation a request holds until it is reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Index into the configured limits.
    pub limit: usize,
    pub dimension: Dimension,
    pub key: String,
    pub reservation: window_counter::Reservation,
    /// Reserved in the fleet-wide store (settled through it): the store's clock at
    /// reservation, Unix ms (`x-tollgate-reserved-at`); `None`: this Envoy's shared data.
    pub fleet: Option<FleetHold>,
}

/// A reservation in the fleet-wide store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHold {
    pub reserved_at_ms: u64,
    pub subject: String,
    pub cap: u64,
}

/// Why a request was refused: the first counter that did not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exceeded {
    pub id: String,
    pub scope: Scope,
    pub dimension: Dimension,
    /// The cap per window.
    pub limit: u64,
    /// Usage of the window, reservations of requests in flight included.
    pub used: u64,
    /// What this request asked to reserve.
    pub requested: u64,
    /// The window's length (a calendar month's: the current one).
    pub window_secs: u64,
    #[serde(skip)]
    pub window: Window,
    /// Seconds until the window resets (the `Retry-After`).
    pub reset_secs: u64,
    /// Counters could not be read or written: refused to fail closed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unavailable: bool,
}

impl Exceeded {
    /// Counters that cannot be checked, no limit named (never expected: a fallback).
    pub fn unavailable() -> Self {
        Exceeded {
            id: String::new(),
            scope: Scope::Key,
            dimension: Dimension::Requests,
            limit: 0,
            used: 0,
            requested: 1,
            window_secs: 1,
            window: Window::fixed(1),
            reset_secs: 1,
            unavailable: true,
        }
    }

    /// The window in words: `60 s window`, `calendar month (UTC)`, `calendar day (UTC+02:00)`.
    fn window_words(&self) -> String {
        match self.window {
            Window::Fixed { secs } => format!("{secs} s window"),
            Window::Calendar { unit, offset_secs } => {
                let unit = match unit {
                    Calendar::Day => "day",
                    Calendar::Month => "month",
                };
                // The descriptor ends with the offset (`month+02:00`) when there is one.
                let descriptor = self.window.descriptor();
                let offset = if offset_secs == 0 { "" } else { descriptor.get(descriptor.len().saturating_sub(6)..).unwrap_or_default() };
                let zone = format!("UTC{offset}");
                format!("calendar {unit} ({zone})")
            }
        }
    }

    /// The request can never fit: it alone asks more than the cap (no window, no retry
    /// helps). Answered 400, without `Retry-After` (`decide::rate_limited`).
    pub fn never_fits(&self) -> bool {
        !self.unavailable && self.requested > self.limit
    }

    pub fn message(&self) -> String {
        let unit = self.dimension.unit();
        let scope = match self.scope {
            Scope::Key => "key",
            Scope::Principal => "principal",
            Scope::Team => "team",
            Scope::Agent => "agent",
        };
        if self.unavailable {
            return format!("Rate limit `{}` cannot be checked right now (usage counters unavailable). Please try again.", self.id);
        }
        if self.never_fits() {
            return format!(
                "Rate limit `{}` (per {scope}): this request needs {} {unit}, more than the {} {unit} allowed per {}, so it can never be admitted and retrying will not help. Lower max tokens or the input.",
                self.id, self.requested, self.limit, self.window_words()
            );
        }
        format!(
            "Rate limit `{}` (per {scope}) reached on {unit} per {}: limit {}, used {} (requests in flight included), requested {}. Please try again in {}s.",
            self.id, self.window_words(), self.limit, self.used, self.requested, self.reset_secs
        )
    }

    /// The refusal's headers: `Retry-After` and the gateway's own
    /// `x-tollgate-ratelimit-*` ([`HEADER_PREFIX`]); a request that can never fit gets no
    /// `Retry-After`, and only the limit (its counters were not read).
    pub fn headers(&self) -> Vec<(String, String)> {
        let never = self.never_fits();
        let retry = if self.unavailable { 1 } else { self.reset_secs.max(1) };
        let mut out = if never { Vec::new() } else { vec![("retry-after".to_string(), retry.to_string())] };
        if matches!(self.dimension, Dimension::Requests | Dimension::Tokens) {
            let name = self.dimension.suffix();
            out.push((format!("{HEADER_PREFIX}limit-{name}"), self.limit.to_string()));
            if !never {
                out.push((format!("{HEADER_PREFIX}remaining-{name}"), self.limit.saturating_sub(self.used).to_string()));
                out.push((format!("{HEADER_PREFIX}reset-{name}"), format!("{}s", self.reset_secs)));
            }
        }
        out
    }
}

/// One counter a request asks to reserve from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Index into the configured limits.
    pub limit: usize,
    pub dimension: Dimension,
    /// The caller's scope value (see the module docs), also the store's `subject`.
    pub subject: String,
    /// The shared-data key of the per-Envoy counter.
    pub key: String,
    pub amount: u64,
    pub cap: u64,
}

/// Every counter the request must reserve from: `estimate` (and 1 request) on each limit
/// that applies to the model. Pure.
pub fn wanted(rules: &[Limit], who: Option<&Identity>, model: &str, upstream_model: &str, estimate: &Estimate) -> Vec<Wanted> {
    let mut out = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if !rule.applies_to(model, upstream_model) || !rule.delegated.matches(who) {
            continue;
        }
        let subject = scope_segment(rule.scope, who);
        for (dimension, cap) in rule.caps() {
            let amount = match dimension {
                Dimension::Requests => 1,
                Dimension::Tokens => estimate.tokens,
                Dimension::CostMicroUsd => estimate.cost_micro_usd.unwrap_or(0),
            };
            let key = counter_key(&rule.id, &subject, dimension);
            out.push(Wanted { limit: index, dimension, subject: subject.clone(), key, amount, cap });
        }
    }
    out
}

/// The gateway's rate-limit headers: `x-tollgate-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
/// named apart from the provider's `x-ratelimit-*` (which pass through untouched), so a client
/// never reads one scope's limit next to the other's remaining.
pub const HEADER_PREFIX: &str = "x-tollgate-ratelimit-";

/// The first counter this request alone asks more of than its cap: it can never be admitted,
/// whatever the window holds, so it is refused before any counter is read or taken (and
/// before the fleet store is asked). `used` is not read: 0. Pure.
pub fn never_fitting(rules: &[Limit], wanted: &[Wanted], now_secs: u64) -> Option<Exceeded> {
    let w = wanted.iter().find(|w| w.amount > w.cap)?;
    let rule = rules.get(w.limit)?;
    Some(rule.exceeded(w, 0, rule.window.reset_secs(now_secs), false, now_secs))
}

impl Limit {
    /// The refusal of `wanted` on this limit.
    pub fn exceeded(&self, wanted: &Wanted, used: u64, reset_secs: u64, unavailable: bool, now_secs: u64) -> Exceeded {
        Exceeded {
            id: self.id.clone(),
            scope: self.scope,
            dimension: wanted.dimension,
            limit: wanted.cap,
            used,
            requested: wanted.amount,
            window_secs: self.window.length_secs(now_secs),
            window: self.window,
            reset_secs,
            unavailable,
        }
    }
}

/// Reserves `estimate` (and 1 request) on every limit that applies, all or nothing, in this
/// Envoy's shared data. `Ok` holds the reservations (empty when no limit applies).
pub fn admit(
    host: &dyn Host,
    rules: &[Limit],
    who: Option<&Identity>,
    model: &str,
    upstream_model: &str,
    estimate: &Estimate,
) -> Result<Vec<Held>, Exceeded> {
    let wanted = wanted(rules, who, model, upstream_model, estimate);
    reserve_local(host, rules, &wanted.iter().collect::<Vec<_>>())
}

/// Reserves every `wanted` counter in this Envoy's shared data, all or nothing.
pub fn reserve_local(host: &dyn Host, rules: &[Limit], wanted: &[&Wanted]) -> Result<Vec<Held>, Exceeded> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let claims: Vec<Claim<'_>> = wanted
        .iter()
        .map(|w| Claim {
            key: w.key.as_str(),
            amount: w.amount,
            limit: w.cap,
            window: rules.get(w.limit).map(|r| r.window).unwrap_or(Window::fixed(1)),
        })
        .collect();
    match window_counter::reserve_all(host, &claims) {
        Ok(reservations) => Ok(wanted
            .iter()
            .zip(reservations)
            .map(|(w, reservation)| Held { limit: w.limit, dimension: w.dimension, key: w.key.clone(), reservation, fleet: None })
            .collect()),
        Err(refusal) => {
            let now = host.now_nanos() / 1_000_000_000;
            // `reserve_all` only returns indexes of `claims`: both lookups succeed.
            match wanted.get(refusal.index).and_then(|w| rules.get(w.limit).map(|rule| (w, rule))) {
                Some((w, rule)) => Err(rule.exceeded(w, refusal.used, refusal.reset_secs, refusal.unavailable, now)),
                None => Err(Exceeded::unavailable()),
            }
        }
    }
}

/// What a request really took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actual {
    pub requests: u64,
    pub tokens: u64,
    pub cost_micro_usd: u64,
}

/// Replaces each reservation by the real amount. Returns the indexes of the limits this
/// request pushed over their cap (real usage above its reservation, counter now above the
/// cap), without duplicates.
pub fn reconcile(host: &dyn Host, rules: &[Limit], held: &[Held], actual: Actual) -> Vec<usize> {
    let mut overshot: Vec<usize> = Vec::new();
    for h in held.iter().filter(|h| h.fleet.is_none()) {
        let real = match h.dimension {
            Dimension::Requests => actual.requests,
            Dimension::Tokens => actual.tokens,
            Dimension::CostMicroUsd => actual.cost_micro_usd,
        };
        let delta = i128::from(real) - i128::from(h.reservation.amount);
        if delta == 0 {
            continue;
        }
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN + 1 } else { i64::MAX });
        let r = &h.reservation;
        match window_counter::settle(host, &h.key, r.window_start_secs, r.window, delta) {
            Settlement::Applied { used } | Settlement::CarriedOver { used } => {
                let cap = rules.get(h.limit).map(|l| l.cap(h.dimension)).unwrap_or(u64::MAX);
                if delta > 0 && used > cap && !overshot.contains(&h.limit) {
                    overshot.push(h.limit);
                }
            }
            Settlement::Dropped => {}
            Settlement::Failed => host.log(
                LogLevel::Warn,
                &format!("tollgate-llm: cannot reconcile {} by {delta}: shared data unavailable", h.key),
            ),
        }
    }
    overshot
}

/// The gateway's rate-limit headers for a successful response: for requests and tokens, the matching
/// limit with the least room left, as of admission (this request's reservation counted).
pub fn client_headers(rules: &[Limit], held: &[Held]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dimension in [Dimension::Requests, Dimension::Tokens] {
        let tightest = held
            .iter()
            .filter(|h| h.dimension == dimension)
            .filter_map(|h| rules.get(h.limit).map(|rule| (rule.cap(dimension), h.reservation)))
            .min_by_key(|(cap, r)| cap.saturating_sub(r.used));
        if let Some((cap, r)) = tightest {
            let name = dimension.suffix();
            out.push((format!("{HEADER_PREFIX}limit-{name}"), cap.to_string()));
            out.push((format!("{HEADER_PREFIX}remaining-{name}"), cap.saturating_sub(r.used).to_string()));
            out.push((format!("{HEADER_PREFIX}reset-{name}"), format!("{}s", r.reset_secs)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::host::MemoryHost;
    use tollgate_core::shared_data::window_counter::usage;

    fn limit(id: &str, scope: Scope, requests: Option<u64>, tokens: Option<u64>, cost: Option<u64>) -> Limit {
        Limit { id: id.into(), scope, models: None, requests, tokens, cost_micro_usd: cost, window: Window::fixed(60), fleet: None, delegated: Default::default() }
    }

    fn who(principal: &str, team: Option<&str>, key: Option<&str>) -> Identity {
        Identity {
            principal: principal.into(),
            team: team.map(str::to_string),
            groups: vec![],
            source: if key.is_some() { Source::ApiKey } else { Source::Jwt },
            key_name: key.map(str::to_string),
            allowed_models: None,
            delegation: None,
        }
    }

    fn at(host: &MemoryHost, secs: u64) {
        *host.clock_nanos.borrow_mut() = secs * 1_000_000_000;
    }

    #[test]
    fn estimate_is_input_bytes_plus_max_output_priced_conservatively() {
        let p = Price { input: 2_000_000, cached_input: 0, cache_creation: 0, output: 8_000_000, reasoning: 10_000_000 };
        // 401 bytes / 4 -> 101 input tokens; 50 output at the reasoning price (the higher).
        assert_eq!(admission_estimate(401, 4, 50, Some(&p)), Estimate { tokens: 151, cost_micro_usd: Some(101 * 2 + 50 * 10) });
        assert_eq!(admission_estimate(0, 4, 7, None), Estimate { tokens: 7, cost_micro_usd: None });
    }

    #[test]
    fn scope_values_and_keys() {
        let alice = who("alice", Some("payments"), Some("alice-key"));
        assert_eq!(scope_segment(Scope::Key, Some(&alice)), "alice-key");
        assert_eq!(scope_segment(Scope::Principal, Some(&alice)), "alice");
        assert_eq!(scope_segment(Scope::Team, Some(&alice)), "payments");
        let carol = who("carol@example.com", None, None);
        assert_eq!(scope_segment(Scope::Key, Some(&carol)), "~jwt:carol@example.com");
        assert_eq!(scope_segment(Scope::Team, Some(&carol)), "~none");
        assert_eq!(scope_segment(Scope::Principal, None), "~anonymous");
        // Long or unusual values are hashed.
        let long = "x".repeat(65);
        assert_eq!(segment(&long), format!("#{}", sha256_hex(long.as_bytes())));
        assert_eq!(segment("spiffe://a/b"), format!("#{}", sha256_hex(b"spiffe://a/b")));
        assert_eq!(counter_key("t1", "payments", Dimension::CostMicroUsd), "tollgate.llm.limit.t1.payments.cost");
    }

    #[test]
    fn models_match_requested_or_upstream() {
        let mut l = limit("m", Scope::Key, Some(1), None, None);
        l.models = Some(vec![Glob::new("gpt-4o*")]);
        assert!(l.applies_to("gpt-4o", "gpt-4o"));
        assert!(l.applies_to("fast", "gpt-4o-mini"));
        assert!(!l.applies_to("claude-3", "claude-3"));
    }

    #[test]
    fn admit_reserves_everywhere_and_refuses_without_leaking_reservations() {
        let host = MemoryHost::new();
        at(&host, 600);
        let rules = [
            limit("per-key", Scope::Key, Some(10), Some(1000), None),
            limit("team-budget", Scope::Team, None, None, Some(5000)),
        ];
        let alice = who("alice", Some("payments"), Some("alice-key"));
        let est = Estimate { tokens: 400, cost_micro_usd: Some(2000) };
        let held = admit(&host, &rules, Some(&alice), "m", "m", &est).unwrap();
        assert_eq!(held.len(), 3);
        assert_eq!(held[1].key, "tollgate.llm.limit.per-key.alice-key.tokens");
        assert_eq!(usage(&host, "tollgate.llm.limit.team-budget.payments.cost", Window::fixed(60)), 2000);
        let headers = client_headers(&rules, &held);
        assert!(headers.contains(&("x-tollgate-ratelimit-remaining-tokens".into(), "600".into())));
        assert!(headers.contains(&("x-tollgate-ratelimit-remaining-requests".into(), "9".into())));
        assert!(headers.contains(&("x-tollgate-ratelimit-reset-tokens".into(), "60s".into())));
        assert!(!headers.iter().any(|(name, _)| name.starts_with("x-ratelimit-")), "the provider's headers are its own");

        // Second request fits tokens (800) but not the team budget (2000 + 3500 > 5000).
        let big = Estimate { tokens: 400, cost_micro_usd: Some(3500) };
        let denial = admit(&host, &rules, Some(&alice), "m", "m", &big).unwrap_err();
        assert_eq!((denial.id.as_str(), denial.dimension, denial.limit, denial.used, denial.requested),
                   ("team-budget", Dimension::CostMicroUsd, 5000, 2000, 3500));
        assert!(!denial.never_fits());
        assert!(denial.message().contains("try again in 60s"), "{}", denial.message());
        assert_eq!(denial.headers(), vec![("retry-after".to_string(), "60".to_string())]);
        // The per-key reservations of the refused request were rolled back.
        assert_eq!(usage(&host, "tollgate.llm.limit.per-key.alice-key.tokens", Window::fixed(60)), 400);
        assert_eq!(usage(&host, "tollgate.llm.limit.per-key.alice-key.requests", Window::fixed(60)), 1);

        // A teammate shares the team budget; a different team does not.
        let dave = who("dave", Some("payments"), Some("dave-key"));
        assert_eq!(admit(&host, &rules, Some(&dave), "m", "m", &big).unwrap_err().id, "team-budget");
        let bob = who("bob", Some("research"), Some("bob-key"));
        assert!(admit(&host, &rules, Some(&bob), "m", "m", &big).is_ok());

        // Over the cap by itself: never fits.
        let huge = Estimate { tokens: 1001, cost_micro_usd: None };
        let denial = admit(&host, &rules, Some(&bob), "m", "m", &huge).unwrap_err();
        assert!(denial.never_fits() && denial.message().contains("needs 1001 tokens"), "{}", denial.message());
        assert!(denial.message().contains("retrying will not help"), "{}", denial.message());
        assert_eq!(denial.headers(), vec![("x-tollgate-ratelimit-limit-tokens".to_string(), "1000".to_string())], "no Retry-After");
        // Found before any counter is read or taken, on the first limit it overflows.
        let asked = wanted(&rules, Some(&bob), "m", "m", &huge);
        let first = never_fitting(&rules, &asked, 0).unwrap();
        assert_eq!((first.id.as_str(), first.requested, first.used, first.never_fits()), (denial.id.as_str(), 1001, 0, true));
        assert_eq!(never_fitting(&rules, &wanted(&rules, Some(&bob), "m", "m", &big), 0), None);
        // Counters that cannot be read are not a request that can never fit.
        assert!(!Exceeded::unavailable().never_fits());

        // No limit applies: nothing reserved.
        let mut only_gpt = limit("g", Scope::Key, Some(1), None, None);
        only_gpt.models = Some(vec![Glob::new("gpt-*")]);
        assert!(admit(&host, &[only_gpt], Some(&alice), "claude", "claude", &est).unwrap().is_empty());
    }

    #[test]
    fn reconcile_returns_unused_reservation_and_charges_overshoot() {
        let host = MemoryHost::new();
        at(&host, 600);
        let rules = [limit("t", Scope::Principal, Some(5), Some(1000), Some(100))];
        let alice = who("alice", None, Some("k"));
        let held = admit(&host, &rules, Some(&alice), "m", "m", &Estimate { tokens: 900, cost_micro_usd: Some(90) }).unwrap();
        // A second 900-token request does not fit while the first is in flight...
        let second = Estimate { tokens: 900, cost_micro_usd: Some(0) };
        assert_eq!(admit(&host, &rules, Some(&alice), "m", "m", &second).unwrap_err().used, 900);
        // ...but does once the first is reconciled to its real 30 tokens.
        at(&host, 610);
        let over = reconcile(&host, &rules, &held, Actual { requests: 1, tokens: 30, cost_micro_usd: 3 });
        assert!(over.is_empty());
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.tokens", Window::fixed(60)), 30);
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.cost", Window::fixed(60)), 3);
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.requests", Window::fixed(60)), 1);
        let held2 = admit(&host, &rules, Some(&alice), "m", "m", &second).unwrap();
        assert_eq!(held2[1].reservation.used, 930);
        // Real usage above the estimate: charged over the cap, reported as an overshoot.
        let over = reconcile(&host, &rules, &held2, Actual { requests: 1, tokens: 1100, cost_micro_usd: 0 });
        assert_eq!(over, vec![0]);
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.tokens", Window::fixed(60)), 1130);
        assert!(admit(&host, &rules, Some(&alice), "m", "m", &Estimate { tokens: 1, cost_micro_usd: None }).is_err());
    }

    #[test]
    fn reconcile_after_rollover_does_not_credit_the_new_window() {
        let host = MemoryHost::new();
        at(&host, 50);
        let rules = [limit("t", Scope::Principal, None, Some(1000), None)];
        let alice = who("alice", None, None);
        let held = admit(&host, &rules, Some(&alice), "m", "m", &Estimate { tokens: 800, cost_micro_usd: None }).unwrap();
        // The stream ends in the next window, where another request holds 700.
        at(&host, 70);
        let other = admit(&host, &rules, Some(&alice), "m", "m", &Estimate { tokens: 700, cost_micro_usd: None }).unwrap();
        assert_eq!(other[0].reservation.used, 700);
        assert!(reconcile(&host, &rules, &held, Actual { requests: 1, tokens: 100, cost_micro_usd: 0 }).is_empty());
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.tokens", Window::fixed(60)), 700, "the old window's refund is dropped");
        // Usage beyond the old reservation is charged to the current window.
        reconcile(&host, &rules, &held, Actual { requests: 1, tokens: 850, cost_micro_usd: 0 });
        assert_eq!(usage(&host, "tollgate.llm.limit.t.alice.tokens", Window::fixed(60)), 750);
    }
}
