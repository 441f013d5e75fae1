//! The exchange's side of approvals (`approval.rs` decides): after the policy and the rate
//! limits passed a body, find the requests an `approve` rule matches, ask the approval
//! service with one HTTP call and hold the request (headers and body) until it answers;
//! forward on an explicit yes, answer the refusal otherwise. A child module of `exchange`, so
//! the hooks there stay two lines each.

use super::*;
use crate::approval::{self, Answer, ApprovalFact, Ask, Gate};
use crate::args::Json;
use crate::message::Message;
use crate::replies::DeniedRequest;
use std::borrow::Cow;
use tollgate_core::host::HttpCall;
use tollgate_core::stream::HttpAnswer;

/// A request held for the approval service's answer.
pub(super) struct Pending {
    token: u32,
    /// The record (and message) the approval is for.
    at: usize,
    rule_id: String,
    id: Option<Box<RawValue>>,
    method: String,
    target: Target<'static>,
    started_ms: u64,
}

fn owned(target: &Target<'_>) -> Target<'static> {
    match target {
        Target::None => Target::None,
        Target::Tool(n) => Target::Tool(Cow::Owned(n.to_string())),
        Target::Prompt(n) => Target::Prompt(Cow::Owned(n.to_string())),
        Target::Resource(u) => Target::Resource(Cow::Owned(u.to_string())),
    }
}

impl Exchange {
    /// The approval step of a judged body (nothing refused it so far). `None`: go on as
    /// before (no approval needed, or dry run: recorded only); `Some(step)`: the request is
    /// held for the answer, or refused.
    pub(super) fn approval_gate(&mut self, host: &dyn Host, messages: &[Message<'_>], judgement: &mut judge::Judgement) -> Option<Step> {
        let shared = self.shared.clone();
        let policy = shared.policy.as_ref().filter(|p| p.has_approve_rules())?;
        let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
        let empty = Json::Object(Vec::new());
        let needs: Vec<(usize, String)> = messages
            .iter()
            .zip(judgement.rulings.iter())
            .enumerate()
            .filter(|(_, (m, ruling))| m.kind == Kind::Request && **ruling == Ruling::Pass)
            .filter_map(|(i, (m, _))| {
                policy.approval(subject, &m.method, &m.target, m.arguments.as_ref().unwrap_or(&empty)).map(|r| (i, r.to_string()))
            })
            .collect();
        match approval::gate(needs, self.batch, policy.dry_run) {
            Gate::Pass => None,
            Gate::Record(needs) => {
                for (i, rule_id) in needs {
                    if let Some(record) = judgement.records.get_mut(i) {
                        record.enforced = false;
                        record.detail.reason = Some("approval required (dry run: not asked)".into());
                        record.detail.approval = Some(ApprovalFact::new(&rule_id, false));
                        record.rule_id = Some(rule_id);
                    }
                }
                None
            }
            Gate::RefuseBatch { at, rule_id } => {
                let mut records = std::mem::take(&mut judgement.records);
                for (i, (m, record)) in messages.iter().zip(records.iter_mut()).enumerate() {
                    if m.kind != Kind::Request || record.decision != Decision::Allow {
                        continue;
                    }
                    record.decision = Decision::Deny;
                    if i == at {
                        record.rule_id = Some(rule_id.clone());
                        record.detail.reason = Some(approval::IN_BATCH.into());
                        record.detail.approval = Some(ApprovalFact::new(&rule_id, false));
                    } else {
                        record.detail.reason = Some(approval::BATCH.into());
                    }
                }
                self.count_messages(host, messages, &records);
                self.records = records;
                let denied: Vec<DeniedRequest<'_>> = messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.kind == Kind::Request)
                    .map(|(i, m)| DeniedRequest {
                        id: m.id,
                        method: &m.method,
                        target: &m.target,
                        denied: (i == at).then_some(Some(rule_id.as_str())),
                        shown: false,
                    })
                    .collect();
                Some(self.reply(host, &approval::batch_refused(shared.deny_style(), &denied)))
            }
            Gate::Ask { at, rule_id } => {
                // The gate names a message of this request; if it ever did not, refuse
                // rather than forward a call that needs approval unasked.
                let Some(m) = messages.get(at) else {
                    let denied = judge::denied_requests(messages, &judgement.rulings);
                    return Some(self.reply(host, &approval::batch_refused(shared.deny_style(), &denied)));
                };
                self.records = std::mem::take(&mut judgement.records);
                Some(self.ask_approval(host, m, at, rule_id))
            }
        }
    }

    /// Sends the approval request for message `at` and holds the request; a call that cannot
    /// be made is a refusal.
    fn ask_approval(&mut self, host: &dyn Host, m: &Message<'_>, at: usize, rule_id: String) -> Step {
        let shared = self.shared.clone();
        let now = host.now_millis();
        let mut pending = Pending { token: 0, at, rule_id, id: m.id.map(RawValue::to_owned), method: m.method.to_string(), target: owned(&m.target), started_ms: now };
        if let Some(record) = self.records.get_mut(at) {
            // Until the answer: a refusal (also if the client leaves first).
            record.decision = Decision::Deny;
            record.rule_id = Some(pending.rule_id.clone());
            let fact = ApprovalFact::new(&pending.rule_id, true);
            record.detail.reason = Some(fact.outcome().into());
            record.detail.approval = Some(fact);
        }
        let Some(config) = shared.config.approval.as_ref() else {
            // Refused at load; never forward unasked.
            let failed = Answer::Failed { status: None, why: "no approval service configured".into() };
            return self.approval_decided(host, &pending, &failed, 0);
        };
        let arguments = match (&m.arguments, config.include_arguments) {
            (Some(args), true) => {
                let mut canonical = Vec::with_capacity(256);
                args.write_canonical(&mut canonical);
                String::from_utf8(canonical).ok().and_then(|c| RawValue::from_string(c).ok())
            }
            _ => None,
        };
        let digest = self.records.get(at).and_then(|r| r.detail.arguments_sha256.clone());
        let ask = Ask {
            version: 1,
            request_id: self.request_id.as_deref(),
            trace_id: self.trace.as_ref().map(|t| t.trace_id.as_str()),
            identity: self.identity.as_ref(),
            server: &self.server,
            session_id: self.session_id.as_deref(),
            method: &m.method,
            tool: None,
            prompt: None,
            resource_uri: None,
            rule_id: &pending.rule_id,
            arguments_sha256: digest.as_deref(),
            arguments: arguments.as_deref(),
        }
        .with_target(&m.target);
        let body = approval::request_body(&ask);
        let traceparent = self.trace.as_ref().map(|t| t.traceparent.clone());
        let mut headers = vec![
            (":method", "POST"),
            (":path", config.path.as_str()),
            (":authority", config.authority.as_deref().unwrap_or(&config.cluster)),
            ("content-type", "application/json"),
        ];
        if let Some(tp) = &traceparent {
            headers.push(("traceparent", tp.as_str()));
        }
        if let Some(rid) = &self.request_id {
            headers.push((audit::REQUEST_ID_HEADER, rid.as_str()));
        }
        let call = HttpCall { cluster: &config.cluster, headers: &headers, body: &body, timeout_ms: config.timeout_ms };
        match host.dispatch_http(&call) {
            Ok(token) => {
                pending.token = token;
                if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                    self.expect.push(Expect { key: id_key(id).into_owned(), list: ListKind::from_method(&m.method), record: at });
                }
                self.phase = Phase::AwaitingApproval(Box::new(pending));
                Step::Pause
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate-mcp: cannot call the approval service `{}`: {e}", config.cluster));
                let failed = Answer::Failed { status: None, why: format!("cannot call the approval service: {e}") };
                self.approval_decided(host, &pending, &failed, 0)
            }
        }
    }

    /// The approval service's answer to the held request (`false`: not this exchange's call).
    pub(super) fn approval_answered(&mut self, host: &dyn Host, token: u32, answer: HttpAnswer<'_>) -> bool {
        let pending = match std::mem::replace(&mut self.phase, Phase::Passed) {
            Phase::AwaitingApproval(p) if p.token == token => p,
            other => {
                self.phase = other;
                return false;
            }
        };
        let latency_ms = host.now_millis().saturating_sub(pending.started_ms);
        let answer = approval::read_answer(answer);
        if let Answer::Failed { why, .. } = &answer {
            host.log(LogLevel::Warn, &format!("tollgate-mcp: no usable approval: {why}"));
        }
        // An approved call still needs its upstream credential (`credentials.rs`): exchanged
        // only now, so no token is minted for a call the approver refuses.
        if self.approval_decided(host, &pending, &answer, latency_ms) == Step::Continue && self.forward(host) == Step::Continue {
            if let Err(e) = host.resume(Direction::Request) {
                host.log(LogLevel::Error, &format!("tollgate-mcp: cannot resume the request: {e}"));
            }
        }
        true
    }

    /// Applies an answer: records and counts it; `Continue` on an explicit yes, else the
    /// refusal is sent.
    fn approval_decided(&mut self, host: &dyn Host, pending: &Pending, answer: &Answer, latency_ms: u64) -> Step {
        let timeout_ms = self.shared.config.approval.as_ref().map_or(u64::MAX, |a| a.timeout_ms);
        let fact = ApprovalFact::answered(&pending.rule_id, answer, latency_ms, timeout_ms);
        let approved = fact.approved == Some(true);
        self.metrics.inc(host, "tollgate.mcp.approvals", &[("server", &self.server), ("outcome", fact.metric_outcome())]);
        let mut label = "not_approved";
        if let Some(record) = self.records.get_mut(pending.at) {
            record.decision = if approved { Decision::Allow } else { Decision::Deny };
            record.detail.reason = Some(fact.outcome().into());
            record.detail.approval = Some(fact.clone());
            label = record.label();
        }
        let tool = match &pending.target {
            Target::Tool(n) => Some(n.as_ref()),
            _ => None,
        };
        // Only a body of one message is ever held for an approval (batches are refused).
        self.count_message(host, &pending.method, tool, label);
        if approved {
            self.phase = Phase::Passed;
            return Step::Continue;
        }
        self.expect.clear();
        let reply = approval::not_approved(self.shared.deny_style(), pending.id.as_deref(), &pending.method, &pending.target, &fact);
        self.reply(host, &reply)
    }

    /// Counts each message of a body with its record's label (as `judge_body` does).
    fn count_messages(&self, host: &dyn Host, messages: &[Message<'_>], records: &[MessageRecord]) {
        for (m, record) in messages.iter().zip(records.iter()) {
            match (m.kind, &m.target) {
                (Kind::Request, Target::Tool(n)) => self.count_message(host, &m.method, Some(n), record.label()),
                (Kind::Request, _) | (Kind::Notification, _) => self.count_message(host, &m.method, None, record.label()),
                (Kind::Response, _) => self.count_message(host, "response", None, record.label()),
            }
        }
    }
}

#[cfg(test)]
#[path = "approval_exchange_tests.rs"]
mod tests;
