//! Guardrails as the gateway applies them: which policies apply to a request (by team, key
//! and model), and the external moderation call. The scanning itself is `guard/`.
//!
//! **External moderation** (`guardrails.moderation`): before a generation request is
//! forwarded, its text — every string under `content`, `text`, `system`, `instructions`,
//! `input` and `output` members, whatever the client API — is sent to a moderation service
//! in the OpenAI moderations API's shape (`POST {path}` with `{"model", "input": [texts]}`,
//! so any compatible service works) through an Envoy cluster, with a timeout. An answer
//! whose `results[].flagged` is true refuses the request (`status`, the client API's error
//! shape, `error_type: moderation_flagged`, the flagged categories in the message); no
//! answer, or one that is not 200 with `results`, is handled by `on_failure`: `fail_closed`
//! (default: refused, 503) or `fail_open` (forwarded, recorded). The record shows the
//! decision and the call's latency.

use crate::guard::action::GuardAction;
use crate::guard::{DetectorsConfig, GuardConfig, Scanner};
use serde::Deserialize;
use serde_json::Value;
use std::rc::Rc;
use tollgate_core::config::ConfigError;
use tollgate_core::glob::Glob;
use tollgate_core::identity::Identity;

/// The `guardrails` section of the configuration.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// Detector policies, each applied on its own (a request meets every policy that
    /// applies to it, in order).
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    #[serde(default)]
    pub moderation: Option<ModerationConfig>,
}

/// Which side of the exchange a policy scans.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Request,
    Response,
}

/// One guardrail policy: detectors, where and for whom they apply, and what a hit does.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names the policy in records and refusals: letters, digits, `-`, `_`.
    pub id: String,
    /// Only for these teams / key names / requested models (globs); absent: everyone.
    #[serde(default)]
    pub teams: Option<Vec<String>>,
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// `request`, `response` or both (default).
    #[serde(default = "both_sides")]
    pub on: Vec<Side>,
    /// `block` (refuse; a stream ends with the API's error event), `redact`
    /// (`[REDACTED:<detector>]`) or `log` (record only).
    pub action: GuardAction,
    /// The status of a blocked request or JSON answer (default 400).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The detectors (default: every built-in).
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Bytes of streamed text held back so a match split across deltas is still caught
    /// (default: the longest bounded pattern of its detectors).
    #[serde(default)]
    pub window: Option<usize>,
}

fn both_sides() -> Vec<Side> {
    vec![Side::Request, Side::Response]
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    teams: Option<Vec<String>>,
    keys: Option<Vec<String>>,
    models: Option<Vec<Glob>>,
    pub request: bool,
    pub response: bool,
    pub action: GuardAction,
    pub status: u16,
    pub scanner: Rc<Scanner>,
}

impl Policy {
    /// Whether the policy applies to this caller and requested model.
    pub fn applies(&self, who: Option<&Identity>, model: &str) -> bool {
        let team = who.and_then(|w| w.team.as_deref());
        let key = who.and_then(|w| w.key_name.as_deref());
        self.teams.as_ref().is_none_or(|t| team.is_some_and(|team| t.iter().any(|x| x == team)))
            && self.keys.as_ref().is_none_or(|k| key.is_some_and(|key| k.iter().any(|x| x == key)))
            && self.models.as_ref().is_none_or(|m| m.iter().any(|g| g.matches(model)))
    }
}

/// Compiled guardrails.
#[derive(Debug, Clone)]
pub struct Guardrails {
    pub policies: Vec<Policy>,
    pub moderation: Option<ModerationConfig>,
    /// The moderation service's bearer token, read from the VM environment at load.
    pub moderation_token: Option<String>,
}

impl GuardrailsConfig {
    pub fn compile(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Guardrails, ConfigError> {
        let mut policies = Vec::with_capacity(self.policies.len());
        for (i, p) in self.policies.into_iter().enumerate() {
            let at = format!("guardrails.policies[{i}]");
            let id_ok = !p.id.is_empty() && p.id.len() <= 64 && p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(ConfigError::field(&format!("{at}.id"), "must be 1 to 64 letters, digits, `-` or `_`"));
            }
            if policies.iter().any(|q: &Policy| q.id == p.id) {
                return Err(ConfigError::field(&format!("{at}.id"), format!("duplicate policy `{}`", p.id)));
            }
            if p.on.is_empty() {
                return Err(ConfigError::field(&format!("{at}.on"), "must name `request`, `response` or both"));
            }
            if !(400..=599).contains(&p.status) {
                return Err(ConfigError::field(&format!("{at}.status"), "must be an HTTP error status (400-599)"));
            }
            let scanner = GuardConfig { detectors: p.detectors, window: p.window }.compile_at(&at)?;
            policies.push(Policy {
                id: p.id,
                teams: p.teams,
                keys: p.keys,
                models: p.models.map(|m| m.iter().map(|g| Glob::new(g)).collect()),
                request: p.on.contains(&Side::Request),
                response: p.on.contains(&Side::Response),
                action: p.action,
                status: p.status,
                scanner: Rc::new(scanner),
            });
        }
        let mut token = None;
        if let Some(m) = &self.moderation {
            m.validate("guardrails.moderation")?;
            if let Some(var) = &m.credential_env {
                match env(var).filter(|v| !v.is_empty() && !v.bytes().any(|b| b == b'\r' || b == b'\n')) {
                    Some(v) => token = Some(v),
                    None => {
                        return Err(ConfigError::field(
                            "guardrails.moderation.credential_env",
                            format!("environment variable `{var}` is not set in the Wasm VM"),
                        ))
                    }
                }
            }
        }
        Ok(Guardrails { policies, moderation: self.moderation, moderation_token: token })
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModerationConfig {
    /// The Envoy cluster of the moderation service.
    pub cluster: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the call; default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// The `model` member of the call; absent: not sent.
    #[serde(default)]
    pub model: Option<String>,
    /// A bearer token for the service (prefer `env`, a VM environment variable).
    #[serde(default)]
    pub credential_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The status of a refusal for flagged content.
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_path() -> String {
    "/v1/moderations".into()
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_status() -> u16 {
    400
}

impl ModerationConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(ConfigError::field(&format!("{at}.cluster"), "must name an Envoy cluster"));
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(ConfigError::field(&format!("{at}.path"), "must be a path starting with `/`"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(ConfigError::field(&format!("{at}.timeout_ms"), "must be between 1 and 60000"));
        }
        if !(400..=599).contains(&self.status) {
            return Err(ConfigError::field(&format!("{at}.status"), "must be an HTTP error status (400-599)"));
        }
        Ok(())
    }
}

/// The moderation service's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderated {
    Clean,
    /// Flagged, with the categories it named (sorted, deduplicated).
    Flagged(Vec<String>),
}

/// Members whose string values are text a model reads (in any of the client APIs).
const TEXT_MEMBERS: [&str; 6] = ["content", "text", "system", "instructions", "input", "output"];

/// Every text of a request body, in document order.
pub fn texts(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(body, false, &mut out);
    out
}

fn collect(value: &Value, in_text: bool, out: &mut Vec<String>) {
    match value {
        Value::String(s) if in_text && !s.is_empty() => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect(v, in_text, out)),
        Value::Object(members) => {
            for (key, v) in members {
                // `type`, `role`, `id`, `url`, image `data` ... are never text.
                let text = TEXT_MEMBERS.contains(&key.as_str()) || (in_text && key == "parts");
                collect(v, text, out);
            }
        }
        _ => {}
    }
}

/// The body of the call: `{"input": [...], "model"?}`.
pub fn request_body(texts: &[String], model: Option<&str>) -> Vec<u8> {
    let mut call = serde_json::Map::new();
    if let Some(model) = model {
        call.insert("model".into(), Value::String(model.into()));
    }
    call.insert("input".into(), Value::Array(texts.iter().map(|t| Value::String(t.clone())).collect()));
    serde_json::to_vec(&Value::Object(call)).unwrap_or_default()
}

/// Reads the service's answer; `Err`: it is not a moderation answer.
pub fn verdict(status: u16, body: &[u8]) -> Result<Moderated, String> {
    if status != 200 {
        return Err(format!("the moderation service answered {status}"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the moderation answer is not JSON: {e}"))?;
    let results = value.get("results").and_then(Value::as_array).ok_or("the moderation answer has no `results`")?;
    let mut categories = Vec::new();
    let mut flagged = false;
    for result in results {
        match result.get("flagged").and_then(Value::as_bool) {
            Some(true) => flagged = true,
            Some(false) => {}
            None => return Err("a moderation result has no boolean `flagged`".into()),
        }
        if let Some(named) = result.get("categories").and_then(Value::as_object) {
            categories.extend(named.iter().filter(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.clone()));
        }
    }
    categories.sort();
    categories.dedup();
    Ok(if flagged { Moderated::Flagged(categories) } else { Moderated::Clean })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts_come_from_every_api_and_never_from_ids_roles_or_images() {
        let openai = json!({"model": "m", "messages": [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "result"}]});
        assert_eq!(texts(&openai), ["sys", "hi", "result"]);
        let anthropic = json!({"model": "m", "system": "sys", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"}, {"type": "tool_result", "tool_use_id": "t", "content": "out"}]}]});
        assert_eq!(texts(&anthropic), ["hi", "out", "sys"]);
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"data": "AAAA"}}]}],
            "systemInstruction": {"parts": [{"text": "sys"}]}});
        assert_eq!(texts(&gemini), ["hi", "sys"]);
        let responses = json!({"model": "m", "instructions": "be nice", "input": "hello"});
        assert_eq!(texts(&responses), ["hello", "be nice"]);
    }

    #[test]
    fn the_call_and_the_verdict_follow_the_openai_moderations_api() {
        let body: Value = serde_json::from_slice(&request_body(&["a".into(), "b".into()], Some("omni-moderation-latest"))).unwrap();
        assert_eq!(body, json!({"model": "omni-moderation-latest", "input": ["a", "b"]}));
        let flagged = br#"{"id":"m","results":[{"flagged":false,"categories":{"violence":false}},{"flagged":true,"categories":{"violence":true,"hate":true,"sexual":false}}]}"#;
        assert_eq!(verdict(200, flagged), Ok(Moderated::Flagged(vec!["hate".into(), "violence".into()])));
        assert_eq!(verdict(200, br#"{"results":[{"flagged":false}]}"#), Ok(Moderated::Clean));
        assert!(verdict(500, b"{}").is_err());
        assert!(verdict(200, b"not json").is_err());
        assert!(verdict(200, br#"{"results":[{"flagged":"yes"}]}"#).is_err());
        assert!(verdict(200, br#"{"data":[]}"#).is_err());
    }

    #[test]
    fn bad_moderation_config_is_refused_naming_the_field() {
        let cfg = |v: Value| serde_json::from_value::<ModerationConfig>(v).unwrap();
        let ok = cfg(json!({"cluster": "moderation"}));
        assert!(ok.validate("guardrails.moderation").is_ok());
        let e = cfg(json!({"cluster": "moderation", "timeout_ms": 0})).validate("guardrails.moderation").unwrap_err();
        assert!(e.0.starts_with("guardrails.moderation.timeout_ms:"), "{e}");
        let e = cfg(json!({"cluster": "m", "path": "v1"})).validate("guardrails.moderation").unwrap_err();
        assert!(e.0.starts_with("guardrails.moderation.path:"), "{e}");
    }
}
