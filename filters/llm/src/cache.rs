//! Exact-match response cache: which requests may be served from it, their key, and a
//! bounded store in Envoy shared data that every worker of one Envoy sees.
//!
//! **Key**: SHA-256 over the scope (the key's name, the team or nothing), the client API, the
//! model the request is routed to, the stream flag and the request body with its volatile
//! members removed (`user`, `metadata`, `store`, `service_tier`, `stream_options`,
//! `parallel_tool_calls` is kept: it changes the answer), serialized canonically (object keys
//! sorted, numbers as parsed, whitespace dropped), so two requests that differ only in member
//! order or spacing share an entry.
//!
//! **Which requests**: only generation requests whose sampling is deterministic by config —
//! `temperature: 0` (OpenAI, Anthropic, Gemini `generationConfig.temperature`) — or that opt in
//! with `x-tollgate-cache: on`; `Cache-Control: no-store` neither reads nor writes,
//! `no-cache` does not read (the answer may refresh the entry). Only complete 2xx answers are
//! stored, never errors or broken streams.
//!
//! **Store**: `max_entries` slots in shared data (`tollgate.llm.cache.slot.<n>`), two
//! candidate slots per key (set-associative): a read checks both for the key and the expiry;
//! a write takes an empty or expired candidate, else the older one (evicting it). Shared data
//! cannot delete keys, so the store is bounded by construction: `max_entries` values of at
//! most `max_entry_bytes`. Per Envoy (not shared by replicas): a miss costs one provider call.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_core::config::ConfigError;
use tollgate_core::host::{Host, HostResult};

/// Request header that opts a request into the cache, and response header that says a hit.
pub const CACHE_HEADER: &str = "x-tollgate-cache";

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// One cache per API key (identities without a key: per principal).
    Key,
    /// One cache per team (the default: a team's members see each other's answers).
    #[default]
    Team,
    /// One cache for everybody.
    Global,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheWhen {
    /// `temperature: 0`, or the opt-in header.
    #[default]
    Deterministic,
    /// Only requests with the opt-in header.
    OptIn,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default)]
    pub scope: CacheScope,
    #[serde(default)]
    pub when: CacheWhen,
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    #[serde(default = "default_max_entries")]
    pub max_entries: u32,
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
}

fn default_ttl_secs() -> u64 {
    300
}
fn default_max_entries() -> u32 {
    256
}
fn default_max_entry_bytes() -> usize {
    256 * 1024
}

impl CacheConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.ttl_secs == 0 || self.ttl_secs > 7 * 86_400 {
            return Err(ConfigError::field(&format!("{at}.ttl_secs"), "must be between 1 and 604800"));
        }
        if self.max_entries == 0 || self.max_entries > 65_536 {
            return Err(ConfigError::field(&format!("{at}.max_entries"), "must be between 1 and 65536"));
        }
        if self.max_entry_bytes < 1024 || self.max_entry_bytes > 4 << 20 {
            return Err(ConfigError::field(&format!("{at}.max_entry_bytes"), "must be between 1024 and 4194304"));
        }
        Ok(())
    }
}

/// What the client said about caching (`Cache-Control` and the opt-in header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientWish {
    pub opt_in: bool,
    pub no_cache: bool,
    pub no_store: bool,
}

impl ClientWish {
    pub fn read(cache_control: Option<&str>, opt_in: Option<&str>) -> Self {
        let directives: Vec<String> =
            cache_control.unwrap_or_default().split(',').map(|d| d.trim().to_ascii_lowercase()).collect();
        ClientWish {
            opt_in: opt_in.is_some_and(|v| v.trim().eq_ignore_ascii_case("on")),
            no_cache: directives.iter().any(|d| d == "no-cache"),
            no_store: directives.iter().any(|d| d == "no-store"),
        }
    }
}

/// Whether this request may use the cache: (read, write).
pub fn usable(config: &CacheConfig, wish: ClientWish, body: &Value) -> (bool, bool) {
    if wish.no_store {
        return (false, false);
    }
    let eligible = wish.opt_in || (config.when == CacheWhen::Deterministic && temperature_is_zero(body));
    (eligible && !wish.no_cache, eligible)
}

fn temperature_is_zero(body: &Value) -> bool {
    let t = body.get("temperature").or_else(|| body.get("generationConfig").and_then(|g| g.get("temperature")));
    t.and_then(Value::as_f64) == Some(0.0)
}

/// Members that do not change the answer.
const VOLATILE: [&str; 5] = ["user", "metadata", "store", "service_tier", "stream_options"];

/// The cache key of a request: scope, API, routed model, stream flag and the canonical body.
pub fn key(scope: &str, api: &str, routed_model: &str, stream: bool, body: &Value) -> [u8; 32] {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        for member in VOLATILE {
            object.remove(member);
        }
    }
    let mut hash = Sha256::new();
    for part in [scope, api, routed_model, if stream { "stream" } else { "json" }] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    // serde_json's map keeps keys sorted (no `preserve_order`): this is canonical.
    hash.update(serde_json::to_vec(&body).unwrap_or_default());
    hash.finalize().into()
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub content_type: String,
    pub body: Vec<u8>,
    /// The cost the original request was charged (the record's "saved").
    pub cost_micro_usd: u64,
    /// Its tokens (input + output), for the record.
    pub tokens: u64,
}

const MAGIC: &[u8; 4] = b"TGC1";

fn encode(key: &[u8; 32], expires_ms: u64, entry: &Entry) -> Vec<u8> {
    let ct = entry.content_type.as_bytes();
    let mut out = Vec::with_capacity(4 + 32 + 8 + 8 + 8 + 2 + ct.len() + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(&entry.cost_micro_usd.to_be_bytes());
    out.extend_from_slice(&entry.tokens.to_be_bytes());
    out.extend_from_slice(&(ct.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(ct.get(..usize::from(u16::MAX)).unwrap_or(ct));
    out.extend_from_slice(&entry.body);
    out
}

/// (key, expires_ms, entry) of a slot's bytes; `None`: empty or not an entry.
fn decode(bytes: &[u8]) -> Option<([u8; 32], u64, Entry)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (key, rest) = rest.split_at_checked(32)?;
    let (expires, rest) = rest.split_at_checked(8)?;
    let (cost, rest) = rest.split_at_checked(8)?;
    let (tokens, rest) = rest.split_at_checked(8)?;
    let (ct_len, rest) = rest.split_at_checked(2)?;
    let ct_len = usize::from(u16::from_be_bytes(ct_len.try_into().ok()?));
    let (ct, body) = rest.split_at_checked(ct_len)?;
    let entry = Entry {
        content_type: String::from_utf8(ct.to_vec()).ok()?,
        body: body.to_vec(),
        cost_micro_usd: u64::from_be_bytes(cost.try_into().ok()?),
        tokens: u64::from_be_bytes(tokens.try_into().ok()?),
    };
    Some((key.try_into().ok()?, u64::from_be_bytes(expires.try_into().ok()?), entry))
}

fn slots(key: &[u8; 32], max_entries: u32) -> [u32; 2] {
    let word = |i: usize| key.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
    let n = max_entries.max(1);
    let a = word(0) % n;
    let mut b = word(4) % n;
    if b == a && n > 1 {
        b = (a + 1) % n;
    }
    [a, b]
}

fn slot_key(slot: u32) -> String {
    format!("tollgate.llm.cache.slot.{slot}")
}

/// The live entry for `key`, if one of its slots holds it.
pub fn get(host: &dyn Host, config: &CacheConfig, key: &[u8; 32], now_ms: u64) -> Option<Entry> {
    for slot in slots(key, config.max_entries) {
        if let Ok((Some(bytes), _)) = host.shared_data(&slot_key(slot)) {
            if let Some((k, expires, entry)) = decode(&bytes) {
                if &k == key && expires > now_ms {
                    return Some(entry);
                }
            }
        }
    }
    None
}

/// Stores `entry` for `key` (skipped when larger than `max_entry_bytes`): in the slot that
/// already holds the key, else an empty or expired one, else the one expiring first.
pub fn put(host: &dyn Host, config: &CacheConfig, key: &[u8; 32], entry: &Entry, now_ms: u64) -> HostResult<bool> {
    if entry.body.len() > config.max_entry_bytes {
        return Ok(false);
    }
    let candidates = slots(key, config.max_entries);
    let mut best: Option<(u32, u64, Option<u32>)> = None;
    for slot in candidates {
        let (bytes, cas) = host.shared_data(&slot_key(slot))?;
        let held = bytes.as_deref().and_then(decode);
        let rank = match &held {
            Some((k, _, _)) if k == key => 0,
            None => 0,
            Some((_, expires, _)) if *expires <= now_ms => 0,
            Some((_, expires, _)) => *expires,
        };
        if best.is_none_or(|(_, r, _)| rank < r) {
            best = Some((slot, rank, cas));
        }
    }
    let Some((slot, _, cas)) = best else { return Ok(false) };
    let expires = now_ms.saturating_add(config.ttl_secs.saturating_mul(1000));
    // A concurrent writer won the slot: its answer is as good as ours.
    Ok(host.set_shared_data(&slot_key(slot), &encode(key, expires, entry), cas).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_core::host::MemoryHost;

    fn config(max_entries: u32) -> CacheConfig {
        CacheConfig { scope: CacheScope::Team, when: CacheWhen::Deterministic, ttl_secs: 10, max_entries, max_entry_bytes: 2048 }
    }

    fn entry(body: &str) -> Entry {
        Entry { content_type: "application/json".into(), body: body.as_bytes().to_vec(), cost_micro_usd: 7, tokens: 3 }
    }

    #[test]
    fn key_ignores_order_spacing_and_volatile_members_but_not_content_or_scope() {
        let a: Value = serde_json::from_str(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"user":"u1"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "messages":[{"content":"hi","role":"user"}], "temperature":0, "model":"m", "user":"u2", "stream_options":{} }"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"ho"}]}"#).unwrap();
        assert_eq!(key("t", "openai_chat", "m", false, &a), key("t", "openai_chat", "m", false, &b));
        assert_ne!(key("t", "openai_chat", "m", false, &a), key("t", "openai_chat", "m", false, &c));
        assert_ne!(key("t", "openai_chat", "m", false, &a), key("u", "openai_chat", "m", false, &a));
        assert_ne!(key("t", "openai_chat", "m", false, &a), key("t", "openai_chat", "m", true, &a));
        assert_ne!(key("t", "openai_chat", "m", false, &a), key("t", "openai_chat", "m2", false, &a));
        // Length-prefixed parts: ("ab", "c") is not ("a", "bc").
        assert_ne!(key("ab", "c", "m", false, &a), key("a", "bc", "m", false, &a));
    }

    #[test]
    fn only_deterministic_or_opted_in_requests_and_cache_control_is_honoured() {
        let cfg = config(4);
        let zero = json!({"temperature": 0});
        let gemini_zero = json!({"generationConfig": {"temperature": 0.0}});
        let warm = json!({"temperature": 0.7});
        let none = ClientWish::default();
        assert_eq!(usable(&cfg, none, &zero), (true, true));
        assert_eq!(usable(&cfg, none, &gemini_zero), (true, true));
        assert_eq!(usable(&cfg, none, &warm), (false, false));
        assert_eq!(usable(&cfg, ClientWish::read(None, Some("on")), &warm), (true, true));
        assert_eq!(usable(&cfg, ClientWish::read(Some("no-cache"), None), &zero), (false, true));
        assert_eq!(usable(&cfg, ClientWish::read(Some("max-age=0, No-Store"), Some("on")), &zero), (false, false));
        let opt_in = CacheConfig { when: CacheWhen::OptIn, ..cfg };
        assert_eq!(usable(&opt_in, none, &zero), (false, false));
    }

    #[test]
    fn entries_expire_and_the_store_stays_within_its_slots() {
        let host = MemoryHost::new();
        let cfg = config(2);
        let k1 = [1u8; 32];
        assert!(put(&host, &cfg, &k1, &entry("one"), 1000).unwrap());
        assert_eq!(get(&host, &cfg, &k1, 1500), Some(entry("one")));
        assert_eq!(get(&host, &cfg, &k1, 11_000), None, "expired");
        for i in 0..50u8 {
            let mut k = [0u8; 32];
            k[0] = i;
            k[5] = i.wrapping_mul(7);
            put(&host, &cfg, &k, &entry("x"), 2000 + u64::from(i)).unwrap();
        }
        assert!(host.shared.borrow().len() <= 2, "bounded by max_entries");
        assert!(!put(&host, &cfg, &k1, &entry(&"y".repeat(4096)), 0).unwrap(), "over max_entry_bytes");
    }

    #[test]
    fn a_newer_entry_for_another_key_evicts_the_one_expiring_first() {
        let host = MemoryHost::new();
        let cfg = config(2);
        let (a, b, c) = ([0u8; 32], { let mut k = [0u8; 32]; k[3] = 1; k }, { let mut k = [0u8; 32]; k[3] = 1; k[7] = 1; k });
        put(&host, &cfg, &a, &entry("a"), 1000).unwrap();
        put(&host, &cfg, &b, &entry("b"), 2000).unwrap();
        put(&host, &cfg, &c, &entry("c"), 3000).unwrap();
        assert_eq!(get(&host, &cfg, &a, 3001), None, "the oldest went");
        assert_eq!(get(&host, &cfg, &c, 3001), Some(entry("c")));
    }

    #[test]
    fn garbage_in_a_slot_is_a_miss() {
        let host = MemoryHost::new();
        let cfg = config(1);
        host.set_shared_data("tollgate.llm.cache.slot.0", b"TGC1short", None).unwrap();
        assert_eq!(get(&host, &cfg, &[0u8; 32], 0), None);
        assert!(put(&host, &cfg, &[0u8; 32], &entry("ok"), 0).unwrap());
        assert_eq!(get(&host, &cfg, &[0u8; 32], 1), Some(entry("ok")));
    }
}
