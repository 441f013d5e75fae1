//! Per-identity call rate limits ("runaway agents stopped"): fixed windows counted in Envoy
//! shared data with the core `window_counter::consume` (compare-and-swap, one counter per key for
//! every worker VM of one Envoy, fail closed). Only `tools/call` requests the policy allowed
//! are counted; every matching limit must admit a call, and a request is admitted whole or
//! not at all (what a refused request consumed is given back).

use crate::config::{Per, RateLimitConfig};
use crate::matcher::{glob_any, IdentityMatch, Subject};
use tollgate_core::config::ConfigError;
use tollgate_core::glob::Glob;
use tollgate_core::hash::sha256_hex;
use tollgate_core::fleet::rls::{self, Descriptor};
use tollgate_core::fleet::{Counters, OnFailure, StoreConfig};
use tollgate_core::host::Host;
use tollgate_core::shared_data::window_counter;

/// Shared-data key prefix of every counter: `tollgate.mcp.rl.<limit id>[.<per value>]`.
pub const KEY_PREFIX: &str = "tollgate.mcp.rl.";
/// Longest limit id (ids are part of keys, audit records and replies).
pub const MAX_ID_LEN: usize = 64;
/// Longest per value put in a key verbatim; longer ones are hashed.
pub const MAX_KEY_VALUE_LEN: usize = 64;
/// Longest window: one day.
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// The compiled limits, in configuration order.
#[derive(Debug, Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
}

#[derive(Debug)]
struct Limit {
    id: String,
    who: IdentityMatch,
    servers: Option<Vec<Glob>>,
    tools: Option<Vec<Glob>>,
    max_calls: u64,
    window_secs: u64,
    per: Per,
    /// Counted in the fleet-wide store, with its failure policy; `None`: locally.
    fleet: Option<OnFailure>,
}

/// One call to count on a fleet limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCall {
    /// Which of the checked calls.
    pub index: usize,
    /// Index of the limit.
    limit: usize,
    /// The shared-data key (used when the store fails and the limit counts locally) and,
    /// after its prefix, the store's subject.
    key: String,
}

/// Why a request's calls were not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded<'a> {
    /// Which of the checked calls (index into the `tools` given to [`RateLimits::admit`]).
    pub index: usize,
    pub limit_id: &'a str,
    /// Seconds until the refusing limit's window resets (at least 1).
    pub retry_after_secs: u64,
    /// The fleet-wide store could not answer (a `fail_closed` limit).
    pub unavailable: bool,
}

impl RateLimits {
    /// Checks and compiles the limits, naming the first bad field (`rate_limits[2].window_secs`).
    pub fn compile(configs: &[RateLimitConfig], prefix: &str, store: Option<&StoreConfig>) -> Result<RateLimits, ConfigError> {
        let mut limits = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let at = format!("{prefix}[{i}]");
            let field = |name: &str, msg: String| ConfigError::field(&format!("{at}.{name}"), msg);
            if c.id.is_empty() || c.id.len() > MAX_ID_LEN || !c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(field(
                    "id",
                    format!("`{}` must be 1 to {MAX_ID_LEN} ASCII letters, digits, `-` or `_`", c.id.escape_debug()),
                ));
            }
            if configs.iter().take(i).any(|o| o.id == c.id) {
                return Err(field("id", format!("duplicate rate limit id `{}`", c.id)));
            }
            if c.max_calls == 0 {
                return Err(field("max_calls", format!("must be greater than 0 (limit `{}`)", c.id)));
            }
            if c.window_secs == 0 || c.window_secs > MAX_WINDOW_SECS {
                return Err(field("window_secs", format!("must be between 1 and {MAX_WINDOW_SECS} (limit `{}`)", c.id)));
            }
            let fleet = match (c.counters, store) {
                (Some(Counters::Fleet), None) => return Err(field("counters", "`fleet` needs a `store` (the fleet-wide counter store)".into())),
                (Some(Counters::Local), _) | (None, None) => None,
                (Some(Counters::Fleet), Some(_)) | (None, Some(_)) => Some(c.on_store_failure.unwrap_or_default()),
            };
            if c.on_store_failure.is_some() && fleet.is_none() {
                return Err(field("on_store_failure", "only for limits counted in the fleet store (`counters: fleet`)".into()));
            }
            limits.push(Limit {
                id: c.id.clone(),
                who: IdentityMatch::new(&c.principals, &c.groups, &c.teams).delegated(&c.agents, &c.on_behalf_of),
                servers: c.servers.clone(),
                tools: c.tools.clone(),
                max_calls: c.max_calls,
                window_secs: c.window_secs,
                per: c.per,
                fleet,
            });
        }
        Ok(RateLimits { limits })
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Whether any limit counts in the fleet-wide store.
    pub fn uses_fleet(&self) -> bool {
        self.limits.iter().any(|l| l.fleet.is_some())
    }

    /// The calls of `tools` to count on fleet limits (each call once per matching limit).
    pub fn fleet_calls(&self, subject: Subject<'_>, tools: &[&str]) -> Vec<FleetCall> {
        let mut out = Vec::new();
        for (index, tool) in tools.iter().enumerate() {
            for (limit, l) in self.limits.iter().enumerate().filter(|(_, l)| l.fleet.is_some() && l.matches(subject, tool)) {
                out.push(FleetCall { index, limit, key: l.key(subject) });
            }
        }
        out
    }

    /// The `ShouldRateLimit` request counting `calls` (a descriptor per call: a batch calling
    /// one tool twice counts 2 on its counter; the store sums descriptors of one counter).
    pub fn fleet_request(&self, store: &StoreConfig, calls: &[FleetCall]) -> Vec<u8> {
        let names: Vec<String> = calls.iter().map(|c| format!("mcp.{}", self.limit(c).map_or("", |l| l.id.as_str()))).collect();
        let descriptors: Vec<Descriptor<'_>> = calls
            .iter()
            .zip(&names)
            .filter_map(|(c, name)| {
                let l = self.limit(c)?;
                Some(Descriptor {
                    limit: name,
                    subject: c.key.strip_prefix(KEY_PREFIX).unwrap_or(&c.key),
                    window: window_counter::Window::fixed(l.window_secs),
                    cap: l.max_calls,
                    amount: 1,
                })
            })
            .collect();
        rls::should_rate_limit(&store.domain, &descriptors)
    }

    /// The first of `tools` that limit `limit_id` counts (where a store's refusal lands).
    pub fn first_call_of(&self, subject: Subject<'_>, tools: &[&str], limit_id: &str) -> usize {
        let limit = self.limits.iter().find(|l| l.id == limit_id);
        tools.iter().position(|t| limit.is_some_and(|l| l.matches(subject, t))).unwrap_or(0)
    }

    fn limit(&self, call: &FleetCall) -> Option<&Limit> {
        self.limits.get(call.limit)
    }

    /// The store's answer for `calls`.
    pub fn fleet_answered(&self, calls: &[FleetCall], answer: &rls::Answer) -> Result<(), Exceeded<'_>> {
        if !answer.over_limit {
            return Ok(());
        }
        let at = answer.statuses.iter().position(|s| s.over_limit).unwrap_or(0);
        let call = calls.get(at).or(calls.first());
        let limit = call.and_then(|c| self.limit(c));
        let reset = answer.statuses.get(at).and_then(|s| s.reset_secs);
        Err(Exceeded {
            index: call.map_or(0, |c| c.index),
            limit_id: limit.map_or("", |l| l.id.as_str()),
            retry_after_secs: reset.or(limit.map(|l| l.window_secs)).unwrap_or(1).max(1),
            unavailable: false,
        })
    }

    /// Whether a store failure refuses `calls` outright (one of their limits is
    /// `fail_closed`); otherwise they are counted on this Envoy's shared data (degraded),
    /// whatever that count then decides.
    pub fn fails_closed(&self, calls: &[FleetCall]) -> bool {
        self.fail_closed_call(calls).is_some()
    }

    fn fail_closed_call<'c>(&self, calls: &'c [FleetCall]) -> Option<&'c FleetCall> {
        calls.iter().find(|c| self.limit(c).is_some_and(|l| l.fleet != Some(OnFailure::FailOpenLocal)))
    }

    /// The store could not answer: a `fail_closed` limit refuses; when every limit may,
    /// the calls are counted in this Envoy's shared data instead (`Ok(true)`: degraded; a
    /// refusal then comes from those local counters, see [`RateLimits::fails_closed`]).
    pub fn fleet_failed(&self, host: &dyn Host, calls: &[FleetCall]) -> Result<bool, Exceeded<'_>> {
        if let Some(c) = self.fail_closed_call(calls) {
            let id = self.limit(c).map_or("", |l| l.id.as_str());
            return Err(Exceeded { index: c.index, limit_id: id, retry_after_secs: 1, unavailable: true });
        }
        let claims: Vec<window_counter::Claim<'_>> = calls
            .iter()
            .filter_map(|c| {
                let l = self.limit(c)?;
                Some(window_counter::Claim { key: &c.key, amount: 1, limit: l.max_calls, window: window_counter::Window::fixed(l.window_secs) })
            })
            .collect();
        match window_counter::reserve_all(host, &claims) {
            Ok(_) => Ok(true),
            Err(refusal) => {
                let call = calls.get(refusal.index);
                Err(Exceeded {
                    index: call.map_or(0, |c| c.index),
                    limit_id: call.and_then(|c| self.limit(c)).map_or("", |l| l.id.as_str()),
                    retry_after_secs: refusal.reset_secs.max(1),
                    unavailable: refusal.unavailable,
                })
            }
        }
    }

    /// Returns calls the store counted for a request that was then refused here (a local
    /// limit, or the policy): one `Settle` giving each back.
    pub fn fleet_refund(&self, store: &StoreConfig, calls: &[FleetCall], reserved_at_ms: u64) -> Vec<u8> {
        let names: Vec<String> = calls.iter().map(|c| format!("mcp.{}", self.limit(c).map_or("", |l| l.id.as_str()))).collect();
        let items: Vec<rls::Settlement<'_>> = calls
            .iter()
            .zip(&names)
            .filter_map(|(c, name)| {
                let l = self.limit(c)?;
                let descriptor = Descriptor {
                    limit: name,
                    subject: c.key.strip_prefix(KEY_PREFIX).unwrap_or(&c.key),
                    window: window_counter::Window::fixed(l.window_secs),
                    cap: l.max_calls,
                    amount: 1,
                };
                Some(rls::Settlement { descriptor, reserved: 1, actual: 0 })
            })
            .collect();
        rls::settle(&store.domain, &items, reserved_at_ms)
    }

    /// Counts one call on every matching local limit (fleet limits are the store's) for each
    /// tool called by one request (a batch calls several), in order. All or nothing (core
    /// `window_counter::reserve_all`, one clock reading): at the first refusal, whatever this
    /// request already counted is given back to the window it was counted in (never to a
    /// window that started since).
    pub fn admit(&self, host: &dyn Host, subject: Subject<'_>, tools: &[&str]) -> Result<(), Exceeded<'_>> {
        let mut keys: Vec<(usize, &Limit, String)> = Vec::new();
        for (index, tool) in tools.iter().enumerate() {
            for limit in self.limits.iter().filter(|l| l.fleet.is_none() && l.matches(subject, tool)) {
                keys.push((index, limit, limit.key(subject)));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let claims: Vec<window_counter::Claim<'_>> = keys
            .iter()
            .map(|(_, limit, key)| window_counter::Claim { key, amount: 1, limit: limit.max_calls, window: window_counter::Window::fixed(limit.window_secs) })
            .collect();
        match window_counter::reserve_all(host, &claims) {
            Ok(_) => Ok(()),
            Err(refusal) => {
                let (index, limit_id) = match keys.get(refusal.index) {
                    Some((index, limit, _)) => (*index, limit.id.as_str()),
                    None => (0, keys.first().map_or("", |(_, l, _)| l.id.as_str())),
                };
                Err(Exceeded { index, limit_id, retry_after_secs: refusal.reset_secs.max(1), unavailable: refusal.unavailable })
            }
        }
    }
}

impl Limit {
    fn matches(&self, subject: Subject<'_>, tool: &str) -> bool {
        self.who.matches(subject.identity)
            && glob_any(&self.servers, subject.server)
            && glob_any(&self.tools, tool)
    }

    fn key(&self, subject: Subject<'_>) -> String {
        let value = match self.per {
            Per::Principal => subject.identity.map(|i| i.principal.as_str()),
            Per::Team => subject.identity.and_then(|i| i.team.as_deref()),
            Per::Server => Some(subject.server),
        };
        key(&self.id, value)
    }
}

/// The shared-data key of one counter: `tollgate.mcp.rl.<id>.<value>`. A value longer than
/// [`MAX_KEY_VALUE_LEN`] bytes, or starting with `#`, becomes `#<sha256 hex>` (keys stay
/// short and never collide with a verbatim value). Callers without the value (anonymous for
/// `principal`, no team for `team`) share the key `tollgate.mcp.rl.<id>`: ids hold no dots,
/// so it is no other counter's key.
pub fn key(id: &str, value: Option<&str>) -> String {
    match value {
        None => format!("{KEY_PREFIX}{id}"),
        Some(v) if v.len() > MAX_KEY_VALUE_LEN || v.starts_with('#') => {
            format!("{KEY_PREFIX}{id}.#{}", sha256_hex(v.as_bytes()))
        }
        Some(v) => format!("{KEY_PREFIX}{id}.{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tollgate_core::host::{BodyBuffer, HeaderMap, LogLevel, MemoryHost, MetricKind};
    use tollgate_core::identity::{Identity, Source};

    const SEC: u64 = 1_000_000_000;

    fn compile(limits: Value) -> Result<RateLimits, ConfigError> {
        let configs: Vec<RateLimitConfig> = serde_json::from_value(limits).unwrap();
        RateLimits::compile(&configs, "rate_limits", None)
    }

    fn who(principal: &str, team: Option<&str>, groups: &[&str]) -> Identity {
        Identity {
            principal: principal.into(),
            team: team.map(String::from),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            source: Source::ApiKey,
            key_name: None,
            allowed_models: None,
            delegation: None,
        }
    }

    fn host_at(secs: u64) -> MemoryHost {
        let host = MemoryHost::new();
        *host.clock_nanos.borrow_mut() = secs * SEC;
        host
    }

    #[test]
    fn per_principal_window_refuses_then_resets() {
        let rl = compile(json!([{"id": "burst", "max_calls": 3, "window_secs": 60, "per": "principal"}])).unwrap();
        let host = host_at(1_000_000); // 40 s into a 60 s window: 20 s left.
        let alice = who("alice", None, &[]);
        let bob = who("bob", None, &[]);
        let a = Subject { identity: Some(&alice), server: "demo" };
        let b = Subject { identity: Some(&bob), server: "demo" };
        for _ in 0..3 {
            assert_eq!(rl.admit(&host, a, &["add"]), Ok(()));
        }
        let refused = rl.admit(&host, a, &["echo"]).unwrap_err();
        let window_end = 1_000_020;
        assert_eq!(refused, Exceeded { index: 0, limit_id: "burst", retry_after_secs: 20, unavailable: false });
        // Another principal has its own counter.
        assert_eq!(rl.admit(&host, b, &["add"]), Ok(()));
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.burst.alice", tollgate_core::shared_data::window::Window::fixed(60)), 3);
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.burst.bob", tollgate_core::shared_data::window::Window::fixed(60)), 1);
        // Refused calls consume nothing; the next window starts from zero.
        *host.clock_nanos.borrow_mut() = window_end * SEC;
        for _ in 0..3 {
            assert_eq!(rl.admit(&host, a, &["add"]), Ok(()));
        }
        assert!(rl.admit(&host, a, &["add"]).is_err());
        *host.clock_nanos.borrow_mut() = (window_end + 59) * SEC;
        assert_eq!(rl.admit(&host, a, &["add"]).unwrap_err().retry_after_secs, 1);
    }

    #[test]
    fn team_and_server_counters_and_anonymous_callers() {
        let rl = compile(json!([
            {"id": "team", "max_calls": 2, "window_secs": 10, "per": "team"},
            {"id": "server", "servers": ["billing"], "max_calls": 3, "window_secs": 10, "per": "server"},
        ]))
        .unwrap();
        let host = host_at(100);
        let (p1, p2, lone) = (who("p1", Some("pay"), &[]), who("p2", Some("pay"), &[]), who("x", None, &[]));
        let on = |identity: Option<&Identity>, tool: &str, server: &str| {
            rl.admit(&host, Subject { identity, server }, &[tool]).map_err(|r| r.limit_id.to_string())
        };
        assert!(on(Some(&p1), "add", "demo").is_ok());
        assert!(on(Some(&p2), "add", "demo").is_ok());
        assert_eq!(on(Some(&p1), "add", "demo"), Err("team".into()));
        // No team, and anonymous: one shared counter for the limit.
        assert!(on(Some(&lone), "add", "demo").is_ok());
        assert!(on(None, "add", "demo").is_ok());
        assert_eq!(on(None, "add", "demo"), Err("team".into()));
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.team", tollgate_core::shared_data::window::Window::fixed(10)), 2);
        // Per server: every caller of `billing` together; `demo` is not limited by it.
        *host.clock_nanos.borrow_mut() = 110 * SEC;
        let (a, b) = (who("a", Some("t1"), &[]), who("b", Some("t2"), &[]));
        assert!(on(Some(&a), "add", "billing").is_ok());
        assert!(on(Some(&b), "add", "billing").is_ok());
        assert!(on(Some(&a), "echo", "billing").is_ok());
        assert_eq!(on(Some(&b), "add", "billing"), Err("server".into()));
        assert!(on(Some(&b), "add", "demo").is_ok());
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.server.billing", tollgate_core::shared_data::window::Window::fixed(10)), 3);
    }

    #[test]
    fn conditions_select_the_limits_and_every_match_must_admit() {
        let rl = compile(json!([
            {"id": "all", "max_calls": 5, "window_secs": 60, "per": "principal"},
            {"id": "money", "groups": ["finance"], "tools": ["transfer", "refund_*"], "max_calls": 1, "window_secs": 60, "per": "principal"},
            {"id": "nobody", "principals": ["mallory"], "max_calls": 1, "window_secs": 60, "per": "principal"},
        ]))
        .unwrap();
        let host = host_at(0);
        let bob = who("bob", None, &["finance"]);
        let s = Subject { identity: Some(&bob), server: "demo" };
        assert!(rl.admit(&host, s, &["transfer"]).is_ok());
        assert_eq!(rl.admit(&host, s, &["refund_all"]).unwrap_err().limit_id, "money");
        // The refused call gave back what `all` had counted for it.
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.all.bob", tollgate_core::shared_data::window::Window::fixed(60)), 1);
        for _ in 0..4 {
            assert!(rl.admit(&host, s, &["add"]).is_ok());
        }
        assert_eq!(rl.admit(&host, s, &["add"]).unwrap_err().limit_id, "all");
        // Identity conditions never match anonymous callers.
        let anon = Subject { identity: None, server: "demo" };
        assert!(rl.admit(&host, anon, &["transfer"]).is_ok());
        assert!(rl.admit(&host, anon, &["transfer"]).is_ok());
    }

    #[test]
    fn a_request_is_admitted_whole_or_not_at_all() {
        let rl = compile(json!([{"id": "burst", "max_calls": 3, "window_secs": 60, "per": "principal"}])).unwrap();
        let host = host_at(0);
        let alice = who("alice", None, &[]);
        let s = Subject { identity: Some(&alice), server: "demo" };
        assert!(rl.admit(&host, s, &["add", "echo"]).is_ok());
        let refused = rl.admit(&host, s, &["add", "echo"]).unwrap_err();
        assert_eq!(refused.index, 1);
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.burst.alice", tollgate_core::shared_data::window::Window::fixed(60)), 2);
        assert!(rl.admit(&host, s, &["add"]).is_ok());
        assert!(rl.admit(&host, s, &["add"]).is_err());
        assert!(rl.admit(&host, s, &[]).is_ok());
    }

    #[test]
    fn keys_are_bounded_and_unambiguous() {
        assert_eq!(key("burst", Some("alice")), "tollgate.mcp.rl.burst.alice");
        assert_eq!(key("burst", None), "tollgate.mcp.rl.burst");
        let long = "spiffe://example.org/ns/payments/sa/".to_string() + &"x".repeat(100);
        let hashed = key("burst", Some(&long));
        assert_eq!(hashed, format!("tollgate.mcp.rl.burst.#{}", sha256_hex(long.as_bytes())));
        assert_eq!(hashed.len(), "tollgate.mcp.rl.burst.#".len() + 64);
        let exactly = "y".repeat(MAX_KEY_VALUE_LEN);
        assert_eq!(key("b", Some(&exactly)), format!("tollgate.mcp.rl.b.{exactly}"));
        // A principal that looks like a digest is hashed too, so it never takes another's key.
        let fake = format!("#{}", sha256_hex(long.as_bytes()));
        assert_ne!(key("burst", Some(&fake)), hashed);
    }

    #[test]
    fn bad_limits_are_refused_with_the_field_named() {
        let base = || json!({"id": "x", "max_calls": 1, "window_secs": 60, "per": "principal"});
        let err = |change: Value| {
            let mut l = base();
            for (k, v) in change.as_object().unwrap() {
                l[k] = v.clone();
            }
            compile(json!([base_other(), l])).unwrap_err().0
        };
        fn base_other() -> Value {
            json!({"id": "other", "max_calls": 1, "window_secs": 1, "per": "server"})
        }
        assert!(err(json!({"max_calls": 0})).starts_with("rate_limits[1].max_calls: must be greater than 0"));
        assert!(err(json!({"window_secs": 0})).starts_with("rate_limits[1].window_secs: must be between 1 and 86400"));
        assert!(err(json!({"window_secs": 86401})).starts_with("rate_limits[1].window_secs"));
        assert!(err(json!({"id": ""})).starts_with("rate_limits[1].id"));
        assert!(err(json!({"id": "a.b"})).starts_with("rate_limits[1].id"));
        assert!(err(json!({"id": "x".repeat(65)})).starts_with("rate_limits[1].id"));
        assert!(err(json!({"id": "other"})).starts_with("rate_limits[1].id: duplicate"));
        assert!(compile(json!([base_other(), base()])).is_ok());
    }

    /// A host whose clock moves to `later` (nanoseconds) at its `at_read`-th reading, just
    /// after `meanwhile` ran (another worker's calls in the new window).
    struct WindowRollsOver<'h> {
        host: &'h MemoryHost,
        reads: std::cell::Cell<usize>,
        at_read: usize,
        later: u64,
        meanwhile: std::cell::RefCell<Option<Meanwhile<'h>>>,
    }

    type Meanwhile<'h> = Box<dyn FnOnce(&MemoryHost) + 'h>;

    impl WindowRollsOver<'_> {
        fn roll_over(&self) {
            if let Some(f) = self.meanwhile.borrow_mut().take() {
                *self.host.clock_nanos.borrow_mut() = self.later;
                f(self.host);
            }
        }
    }

    impl Host for WindowRollsOver<'_> {
        fn property(&self, path: &[&str]) -> tollgate_core::host::HostResult<Option<Vec<u8>>> {
            self.host.property(path)
        }
        fn set_property(&self, path: &[&str], value: &[u8]) -> tollgate_core::host::HostResult<()> {
            self.host.set_property(path, value)
        }
        fn header(&self, map: HeaderMap, name: &str) -> tollgate_core::host::HostResult<Option<String>> {
            self.host.header(map, name)
        }
        fn headers(&self, map: HeaderMap) -> tollgate_core::host::HostResult<Vec<(String, String)>> {
            self.host.headers(map)
        }
        fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> tollgate_core::host::HostResult<()> {
            self.host.set_header(map, name, value)
        }
        fn add_header(&self, map: HeaderMap, name: &str, value: &str) -> tollgate_core::host::HostResult<()> {
            self.host.add_header(map, name, value)
        }
        fn set_headers(&self, map: HeaderMap, pairs: &[(&str, &str)]) -> tollgate_core::host::HostResult<()> {
            self.host.set_headers(map, pairs)
        }
        fn body(&self, buffer: BodyBuffer, start: usize, size: usize) -> tollgate_core::host::HostResult<Option<Vec<u8>>> {
            self.host.body(buffer, start, size)
        }
        fn set_body(&self, buffer: BodyBuffer, start: usize, size: usize, value: &[u8]) -> tollgate_core::host::HostResult<()> {
            self.host.set_body(buffer, start, size, value)
        }
        fn shared_data(&self, key: &str) -> tollgate_core::host::HostResult<(Option<Vec<u8>>, Option<u32>)> {
            self.host.shared_data(key)
        }
        fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> tollgate_core::host::HostResult<()> {
            self.host.set_shared_data(key, value, cas)
        }
        fn define_metric(&self, kind: MetricKind, name: &str) -> tollgate_core::host::HostResult<u32> {
            self.host.define_metric(kind, name)
        }
        fn increment_metric(&self, id: u32, offset: i64) -> tollgate_core::host::HostResult<()> {
            self.host.increment_metric(id, offset)
        }
        fn record_metric(&self, id: u32, value: u64) -> tollgate_core::host::HostResult<()> {
            self.host.record_metric(id, value)
        }
        fn now_nanos(&self) -> u64 {
            self.reads.set(self.reads.get() + 1);
            if self.reads.get() == self.at_read {
                self.roll_over();
            }
            self.host.now_nanos()
        }
        fn random_bytes(&self, out: &mut [u8]) -> tollgate_core::host::HostResult<()> {
            self.host.random_bytes(out)
        }
        fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> tollgate_core::host::HostResult<()> {
            self.host.send_local_reply(status, headers, body)
        }
        fn log(&self, level: LogLevel, message: &str) {
            self.host.log(level, message)
        }
        fn dispatch_grpc(&self, call: &tollgate_core::host::GrpcCall<'_>) -> tollgate_core::host::HostResult<u32> {
            self.host.dispatch_grpc(call)
        }
        fn dispatch_http(&self, call: &tollgate_core::host::HttpCall<'_>) -> tollgate_core::host::HostResult<u32> {
            self.host.dispatch_http(call)
        }
        fn resume(&self, direction: tollgate_core::host::Direction) -> tollgate_core::host::HostResult<()> {
            self.host.resume(direction)
        }
    }

    #[test]
    fn a_rollback_after_the_window_rolled_over_gives_nothing_to_the_new_window() {
        let rl = compile(json!([
            {"id": "all", "max_calls": 3, "window_secs": 60, "per": "principal"},
            {"id": "money", "tools": ["transfer"], "max_calls": 1, "window_secs": 60, "per": "principal"},
        ]))
        .unwrap();
        let host = host_at(119); // the last second of the window [60, 120)
        let bob = who("bob", None, &[]);
        let s = Subject { identity: Some(&bob), server: "demo" };
        assert!(rl.admit(&host, s, &["transfer"]).is_ok());
        // The next transfer: `all` counts it, `money` refuses it, `all` is given it back. The
        // window rolls over before that rollback (the old code read the clock per counter, a
        // third time for the rollback), and meanwhile bob's other calls fill `all` in the new
        // window.
        let racing = WindowRollsOver {
            host: &host,
            reads: std::cell::Cell::new(0),
            at_read: 3,
            later: 120 * SEC,
            meanwhile: std::cell::RefCell::new(Some(Box::new(|h: &MemoryHost| {
                for _ in 0..3 {
                    assert!(rl.admit(h, s, &["add"]).is_ok());
                }
            }))),
        };
        assert_eq!(rl.admit(&racing, s, &["transfer"]).unwrap_err().limit_id, "money");
        racing.roll_over();
        assert_eq!(*host.clock_nanos.borrow(), 120 * SEC);
        // The new window counted three calls and keeps them: no fourth call is admitted.
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.all.bob", tollgate_core::shared_data::window::Window::fixed(60)), 3);
        assert_eq!(rl.admit(&host, s, &["add"]).unwrap_err().limit_id, "all");
    }

    fn store() -> StoreConfig {
        serde_json::from_value(json!({"cluster": "tollgate_limits"})).unwrap()
    }

    fn fleet(limits: Value) -> RateLimits {
        let configs: Vec<RateLimitConfig> = serde_json::from_value(limits).unwrap();
        RateLimits::compile(&configs, "rate_limits", Some(&store())).unwrap()
    }

    #[test]
    fn with_a_store_limits_count_in_the_fleet_unless_local() {
        let rl = fleet(json!([
            {"id": "fleet", "max_calls": 2, "window_secs": 60, "per": "principal"},
            {"id": "here", "max_calls": 1, "window_secs": 60, "per": "principal", "counters": "local"}
        ]));
        assert!(rl.uses_fleet());
        let alice = who("alice", None, &[]);
        let s = Subject { identity: Some(&alice), server: "srv" };
        let calls = rl.fleet_calls(s, &["add", "echo"]);
        assert_eq!(calls.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1], "one fleet limit, two calls");
        let message = rl.fleet_request(&store(), &calls);
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("mcp.fleet") && text.contains("alice") && text.contains("60s"), "{text}");
        // Local admission counts only the local limit.
        let host = host_at(100);
        assert!(rl.admit(&host, s, &["add"]).is_ok());
        assert_eq!(rl.admit(&host, s, &["add"]).unwrap_err().limit_id, "here");
        assert!(host.shared.borrow().keys().all(|k| !k.contains(".fleet.")));
    }

    #[test]
    fn store_answers_and_failures() {
        let rl = fleet(json!([
            {"id": "closed", "max_calls": 2, "window_secs": 60, "per": "principal", "tools": ["pay"]},
            {"id": "open", "max_calls": 1, "window_secs": 60, "per": "principal", "on_store_failure": "fail_open_local"}
        ]));
        let alice = who("alice", None, &[]);
        let s = Subject { identity: Some(&alice), server: "srv" };
        let calls = rl.fleet_calls(s, &["add", "pay"]);
        assert_eq!(calls.len(), 3);
        let over = rls::Answer {
            over_limit: true,
            statuses: vec![rls::Status::default(), rls::Status { over_limit: true, remaining: 0, reset_secs: Some(17) }, rls::Status::default()],
            reserved_at_ms: None,
        };
        assert_eq!(rl.fleet_answered(&calls, &over).unwrap_err(), Exceeded { index: 1, limit_id: "closed", retry_after_secs: 17, unavailable: false });
        assert!(rl.fleet_answered(&calls, &rls::Answer::default()).is_ok());
        // Store down: the fail_closed limit refuses; alone, the fail_open_local one counts here.
        let host = host_at(100);
        assert_eq!(rl.fleet_failed(&host, &calls).unwrap_err(), Exceeded { index: 1, limit_id: "closed", retry_after_secs: 1, unavailable: true });
        assert!(rl.fails_closed(&calls));
        let only_open = rl.fleet_calls(s, &["add"]);
        assert!(!rl.fails_closed(&only_open));
        assert_eq!(rl.fleet_failed(&host, &only_open), Ok(true));
        assert_eq!(window_counter::usage(&host, "tollgate.mcp.rl.open.alice", window_counter::Window::fixed(60)), 1);
        assert_eq!(rl.fleet_failed(&host, &only_open).unwrap_err().limit_id, "open");
        // A refund gives back each counted call.
        let refund = rl.fleet_refund(&store(), &calls, 5_000);
        assert!(String::from_utf8_lossy(&refund).contains("mcp.closed"));
    }

    #[test]
    fn fleet_without_a_store_is_refused_naming_the_field() {
        let configs: Vec<RateLimitConfig> =
            serde_json::from_value(json!([{"id": "x", "max_calls": 1, "window_secs": 60, "per": "principal", "counters": "fleet"}])).unwrap();
        let e = RateLimits::compile(&configs, "rate_limits", None).unwrap_err();
        assert!(e.0.starts_with("rate_limits[0].counters: `fleet` needs a `store`"), "{e}");
        let configs: Vec<RateLimitConfig> =
            serde_json::from_value(json!([{"id": "x", "max_calls": 1, "window_secs": 60, "per": "principal", "on_store_failure": "fail_closed"}])).unwrap();
        assert!(RateLimits::compile(&configs, "rate_limits", None).unwrap_err().0.starts_with("rate_limits[0].on_store_failure"));
    }
}
