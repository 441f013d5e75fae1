//! The MCP filter's ruling on the messages of one POST body, pure: the exchange reads and
//! checks the body (duplicate keys, batches, routing headers), [`judge`] builds one audit
//! record per message and asks the policy about every request, and the exchange applies the
//! [`Judgement`]: rate limits on shared data ([`Judgement::rate_limit_candidates`],
//! [`Judgement::rate_limited`]), the batch refused whole ([`Judgement::refuse_batch`]),
//! metrics, the local reply ([`Judgement::denied`]) or the expected responses.

use crate::args::Json;
use crate::message::{self, Message, Target};
use crate::policy::{Policy, Subject};
use crate::record::{MessageRecord, RATE_LIMITED};
use crate::replies::DeniedRequest;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::hash::sha256_hex;
use tollgate_core::observe::audit::Decision;
use tollgate_core::wire::jsonrpc::Kind;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    /// Not refused: allowed by the policy, or not judged (no policy; not a request).
    Pass,
    /// Denied by the policy (also in dry run): the deciding rule, `None` when no rule allows.
    Denied { rule_id: Option<String> },
    /// Denied by the policy (also in dry run), but the caller's lists show its target: `hide`
    /// must not answer that it does not exist (`denials.rs`).
    DeniedShown { rule_id: Option<String> },
    /// A call the policy allowed, refused by a rate limit (also in dry run).
    RateLimited { limit_id: String },
}

impl Ruling {
    /// As a denial reply names it: `Some(rule)` when this message was refused, `None` when it
    /// was not.
    fn refused_by(&self) -> Option<Option<&str>> {
        match self {
            Ruling::Pass => None,
            Ruling::Denied { rule_id } | Ruling::DeniedShown { rule_id } => Some(rule_id.as_deref()),
            Ruling::RateLimited { limit_id } => Some(Some(limit_id)),
        }
    }
}

/// One audit record and one verdict per message, in body order.
#[derive(Debug)]
pub struct Judgement {
    pub records: Vec<MessageRecord>,
    pub rulings: Vec<Ruling>,
}

/// Records every message and judges every request by the policy (none: all pass).
/// `audit_arguments`: the records keep the canonical arguments, not only their hash.
pub fn judge(messages: &[Message<'_>], policy: Option<&Policy>, subject: Subject<'_>, audit_arguments: bool) -> Judgement {
    let mut records = Vec::with_capacity(messages.len());
    let mut rulings = Vec::with_capacity(messages.len());
    for m in messages {
        let mut record = describe(m, audit_arguments);
        let mut ruling = Ruling::Pass;
        if let (Some(policy), Kind::Request) = (policy, m.kind) {
            let empty = Json::Object(Vec::new());
            let v = policy.decide(subject, &m.method, &m.target, m.arguments.as_ref().unwrap_or(&empty));
            record.rule_id = v.rule_id.map(String::from);
            if !v.allowed() {
                record.decision = Decision::Deny;
                record.enforced = !policy.dry_run;
                record.detail.reason = Some(if v.rule_id.is_some() { "denied by rule" } else { "no rule allows" }.to_string());
                let rule_id = v.rule_id.map(String::from);
                ruling = if crate::denials::shown(policy, subject, &m.target) {
                    Ruling::DeniedShown { rule_id }
                } else {
                    Ruling::Denied { rule_id }
                };
            }
        }
        records.push(record);
        rulings.push(ruling);
    }
    Judgement { records, rulings }
}

/// A GET or DELETE (the server's stream, the session's end): may the subject use the server
/// at all. One record; the verdict is `Denied` also in dry run (the record says whether it
/// is enforced).
pub fn session(policy: Option<&Policy>, subject: Subject<'_>) -> (MessageRecord, Ruling) {
    let mut record = MessageRecord::new(Decision::Allow);
    let Some(policy) = policy else { return (record, Ruling::Pass) };
    let verdict = policy.may_use_server(subject);
    record.rule_id = verdict.rule_id.map(String::from);
    if verdict.allowed() {
        return (record, Ruling::Pass);
    }
    record.decision = Decision::Deny;
    record.enforced = !policy.dry_run;
    record.detail.reason = Some("identity may not use this server".into());
    (record, Ruling::Denied { rule_id: verdict.rule_id.map(String::from) })
}

/// The record of one message before any ruling: what it is, what it addresses, its arguments.
fn describe(m: &Message<'_>, audit_arguments: bool) -> MessageRecord {
    let mut record = MessageRecord::new(Decision::Allow);
    record.detail.kind = Some(match m.kind {
        Kind::Request => "request",
        Kind::Notification => "notification",
        Kind::Response => "response",
    });
    if m.kind != Kind::Response {
        let method = message::static_method(&m.method).map_or_else(|| Cow::Owned(m.method.to_string()), Cow::Borrowed);
        record.detail.method = Some(method);
    }
    record.detail.jsonrpc_id = m.id.map(RawValue::to_owned);
    match &m.target {
        Target::Tool(n) => record.detail.tool = Some(n.to_string()),
        Target::Prompt(n) => record.detail.prompt = Some(n.to_string()),
        Target::Resource(u) => record.detail.resource_uri = Some(u.to_string()),
        Target::None => {}
    }
    if let Some(v) = &m.arguments {
        // Arguments are mostly short: one buffer, seldom grown.
        let mut canonical = Vec::with_capacity(256);
        v.write_canonical(&mut canonical);
        record.detail.arguments_sha256 = Some(sha256_hex(&canonical));
        if audit_arguments {
            record.detail.arguments = String::from_utf8(canonical).ok().and_then(|c| RawValue::from_string(c).ok());
        }
    }
    record
}

impl Judgement {
    /// The policy denied a message (enforced unless the policy is a dry run).
    pub fn denied(&self) -> bool {
        self.rulings.iter().any(|v| matches!(v, Ruling::Denied { .. } | Ruling::DeniedShown { .. }))
    }

    /// The calls rate limits count: the `tools/call` requests the policy let pass, as
    /// (message index, tool).
    pub fn rate_limit_candidates<'m>(&self, messages: &'m [Message<'_>]) -> Vec<(usize, &'m str)> {
        messages
            .iter()
            .zip(self.rulings.iter())
            .enumerate()
            .filter_map(|(i, (m, ruling))| match &m.target {
                Target::Tool(name) if m.kind == Kind::Request && *ruling == Ruling::Pass => Some((i, name.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Message `at` was refused by the rate limit `limit_id` (enforced unless `dry_run`).
    pub fn rate_limited(&mut self, at: usize, limit_id: &str, dry_run: bool) {
        if let Some(record) = self.records.get_mut(at) {
            record.decision = Decision::Deny;
            record.enforced = !dry_run;
            record.rate_limited = true;
            record.rule_id = Some(limit_id.to_string());
            record.detail.reason = Some(RATE_LIMITED.to_string());
        }
        if let Some(ruling) = self.rulings.get_mut(at) {
            *ruling = Ruling::RateLimited { limit_id: limit_id.to_string() };
        }
    }

    /// The request is refused whole: every request still allowed is denied for `reason`.
    pub fn refuse_batch(&mut self, messages: &[Message<'_>], reason: &str) {
        for (m, record) in messages.iter().zip(self.records.iter_mut()) {
            if m.kind == Kind::Request && record.decision == Decision::Allow {
                record.decision = Decision::Deny;
                record.detail.reason = Some(reason.into());
            }
        }
    }
}

/// The requests as a denial reply lists them, each with what refused it (`rulings` of a
/// [`Judgement`] on these `messages`).
pub fn denied_requests<'m>(messages: &'m [Message<'m>], rulings: &'m [Ruling]) -> Vec<DeniedRequest<'m>> {
    messages
        .iter()
        .zip(rulings.iter())
        .filter(|(m, _)| m.kind == Kind::Request)
        .map(|(m, v)| DeniedRequest {
            id: m.id,
            method: &m.method,
            target: &m.target,
            denied: v.refused_by(),
            shown: matches!(v, Ruling::DeniedShown { .. }),
        })
        .collect()
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
