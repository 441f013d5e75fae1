//! Approval for risky tools (the gateway's "are you sure?"), pure: which messages need an
//! approval ([`gate`]), what the approval service is asked ([`request_body`]), what its answer
//! means ([`read_answer`]), the audit fact ([`ApprovalFact`]) and the refusals
//! ([`not_approved`], [`batch_refused`]). The exchange glue (`exchange/approval_glue.rs`) makes
//! the HTTP call and holds the request.
//!
//! Semantics (see `filters/mcp/README.md#approval`):
//! - a rule with `effect: approve` is an allow rule for combining (`deny_overrides`: a
//!   matching deny still wins) and for lists (the tool is shown: the caller may call it,
//!   subject to approval);
//! - a request the policy allows and that some `approve` rule matches needs the approval,
//!   also when an `allow` rule matches it too: approve rules mark risk ("transfers above
//!   1000"), allow rules grant access ("finance may transfer"); if the allow won, the order
//!   of rules or a broad grant would silently switch an approval off. Deny > approve > allow;
//!   the approve rule's argument conditions are read fail closed for this (as a deny rule
//!   reads them), strictly when it is the rule that allows;
//! - the request (headers and body) is held and forwarded only on HTTP 200 with a JSON
//!   object whose `approved` is exactly `true`; anything else is a refusal;
//! - rate limits are counted before the approval is asked (a call a limit refuses is never
//!   asked about; a call the approver refuses still counted);
//! - a batch (≤ 2025-03-26) holding a request that needs approval is refused whole: one
//!   approval per HTTP request, never a batch forwarded half-approved;
//! - dry run: nothing is asked or held; the record says the approval would be needed.

use crate::config::{Config, DenyStyle, RuleEffect};
use crate::message::{codes, Target};
use crate::replies::{DeniedRequest, Reply};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tollgate_core::config::ConfigError;
use tollgate_core::identity::Identity;
use tollgate_core::observe::audit::Decision;
use tollgate_core::reply::rpc_error_body;
use tollgate_core::stream::HttpAnswer;

/// Where and how the approval service is asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// The Envoy cluster of the approval service.
    pub cluster: String,
    /// `:authority` of the call; default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// The path POSTed to.
    #[serde(default = "default_path")]
    pub path: String,
    /// How long a request is held for the answer (1 to 300000 ms); no answer in time is a
    /// refusal.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Send the call's canonical arguments (the digest is always sent).
    #[serde(default)]
    pub include_arguments: bool,
}

fn default_path() -> String {
    "/approve".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// The longest hold: an approval a human gives must come within this.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// Checks `approval` and that an `approve` rule has it (config load).
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if let Some(a) = &config.approval {
        if a.cluster.trim().is_empty() {
            return Err(ConfigError::field("approval.cluster", "must name an Envoy cluster"));
        }
        if !a.path.starts_with('/') || a.path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(ConfigError::field("approval.path", "must be a path starting with `/`"));
        }
        if let Some(authority) = &a.authority {
            if authority.is_empty() || authority.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                return Err(ConfigError::field("approval.authority", "must be a host[:port]"));
            }
        }
        if a.timeout_ms == 0 || a.timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::field("approval.timeout_ms", format!("must be between 1 and {MAX_TIMEOUT_MS}")));
        }
    }
    if config.approval.is_none() {
        let rules = config.policy.as_ref().map(|p| p.rules.as_slice()).unwrap_or_default();
        if let Some((i, rule)) = rules.iter().enumerate().find(|(_, r)| r.effect == RuleEffect::Approve) {
            return Err(ConfigError::field(
                &format!("policy.rules[{i}].effect"),
                format!("`approve` needs `approval` (the approval service) configured (rule `{}`)", rule.id),
            ));
        }
    }
    Ok(())
}

/// What to do with a body's messages, given those that need an approval (`needs`: message
/// index and approve rule id, from `Policy::approval` on the requests nothing refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No approval needed.
    Pass,
    /// Dry run: nothing is asked; these messages are recorded as needing it.
    Record(Vec<(usize, String)>),
    /// A batch with a request that needs approval: refused whole (`at`: the first such one).
    RefuseBatch { at: usize, rule_id: String },
    /// Ask the approval service about message `at`, hold the request.
    Ask { at: usize, rule_id: String },
}

pub fn gate(needs: Vec<(usize, String)>, batch: bool, dry_run: bool) -> Gate {
    let Some((at, rule_id)) = needs.first().cloned() else { return Gate::Pass };
    if dry_run {
        Gate::Record(needs)
    } else if batch || needs.len() > 1 {
        Gate::RefuseBatch { at, rule_id }
    } else {
        Gate::Ask { at, rule_id }
    }
}

/// What the approval service is told about one request.
#[derive(Debug, Serialize)]
pub struct Ask<'a> {
    /// Of this small protocol (`filters/mcp/README.md#approval`).
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// `null` for an anonymous caller.
    pub identity: Option<&'a Identity>,
    pub server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<&'a str>,
    /// The approve rule that matched.
    pub rule_id: &'a str,
    /// SHA-256 of the canonical arguments, as in the audit record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<&'a str>,
    /// The canonical arguments, only with `include_arguments`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a RawValue>,
}

impl<'a> Ask<'a> {
    /// The target fields of `target`.
    pub fn with_target(mut self, target: &'a Target<'a>) -> Self {
        match target {
            Target::Tool(n) => self.tool = Some(n),
            Target::Prompt(n) => self.prompt = Some(n),
            Target::Resource(u) => self.resource_uri = Some(u),
            Target::None => {}
        }
        self
    }
}

/// The JSON body of the call.
pub fn request_body(ask: &Ask<'_>) -> Vec<u8> {
    serde_json::to_vec(ask).unwrap_or_default()
}

/// What the approval service's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200, `{"approved": true}`: forward.
    Approved { approver: Option<String>, reason: Option<String> },
    /// HTTP 200, `{"approved": false}`: refuse.
    Denied { approver: Option<String>, reason: Option<String> },
    /// No usable answer (no answer at all, another status, not such JSON): refuse.
    Failed { status: Option<u16>, why: String },
}

/// The answer's members as written (read as `RawValue`s: no `serde_json::Value` in the module).
#[derive(Deserialize)]
struct Said<'a> {
    #[serde(borrow, default)]
    approved: Option<&'a RawValue>,
    #[serde(borrow, default)]
    approver: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
}

/// Longest `approver` / `reason` kept (bytes).
const MAX_TEXT: usize = 256;

/// Reads the service's answer, fail closed: only HTTP 200 with a JSON object (no repeated
/// key) whose `approved` is the boolean `true` approves; `approver` and `reason` are
/// optional strings (another type: no usable answer).
pub fn read_answer(answer: HttpAnswer<'_>) -> Answer {
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(()) => return Answer::Failed { status: None, why: "no answer (timeout, reset or unknown cluster)".into() },
    };
    let failed = |why: String| Answer::Failed { status: Some(status), why };
    if status != 200 {
        return failed(format!("HTTP status {status}"));
    }
    if let Err(e) = tollgate_core::wire::jsonrpc::check_no_duplicate_keys(body) {
        return failed(format!("ambiguous JSON: {e}"));
    }
    let said: Said = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => return failed(format!("not a JSON object with `approved`: {}", tollgate_core::text::truncate(&e.to_string(), 128))),
    };
    let text = |v: Option<&RawValue>, name: &str| match v.map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None | Some(Ok(None)) => Ok(None),
        Some(Ok(Some(s))) => Ok(Some(tollgate_core::text::truncate(&s, MAX_TEXT).to_string())),
        Some(Err(_)) => Err(format!("`{name}` is not a string")),
    };
    let (approver, reason) = match (text(said.approver, "approver"), text(said.reason, "reason")) {
        (Ok(a), Ok(r)) => (a, r),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    match said.approved.map(|raw| raw.get().trim()) {
        Some("true") => Answer::Approved { approver, reason },
        Some("false") => Answer::Denied { approver, reason },
        _ => failed("`approved` is not a boolean".into()),
    }
}

/// The approval part of an audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApprovalFact {
    /// The approve rule that asked for it.
    pub rule_id: String,
    /// Whether the service was asked (not in dry run, not inside a batch).
    pub asked: bool,
    /// The outcome: `true` only on an explicit yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// No answer within `timeout_ms`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timeout: bool,
    /// Why an answer was not usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl ApprovalFact {
    pub fn new(rule_id: &str, asked: bool) -> Self {
        ApprovalFact { rule_id: rule_id.to_string(), asked, ..ApprovalFact::default() }
    }

    /// The fact of an answer. A failure when `timeout_ms` has passed (no answer, or Envoy's
    /// own 504 for the call; its timer may fire a millisecond early by the filter's clock, so
    /// within 5% or 5 ms of it) is a timeout.
    pub fn answered(rule_id: &str, answer: &Answer, latency_ms: u64, timeout_ms: u64) -> Self {
        let mut fact = ApprovalFact::new(rule_id, true);
        fact.latency_ms = Some(latency_ms);
        match answer {
            Answer::Approved { approver, reason } | Answer::Denied { approver, reason } => {
                fact.approved = Some(matches!(answer, Answer::Approved { .. }));
                fact.approver = approver.clone();
                fact.reason = reason.clone();
                fact.status = Some(200);
            }
            Answer::Failed { status, why } => {
                fact.approved = Some(false);
                fact.status = *status;
                let slack = (timeout_ms / 20).max(5);
                fact.timeout = latency_ms.saturating_add(slack) >= timeout_ms && matches!(status, None | Some(504));
                fact.error = Some(why.clone());
            }
        }
        fact
    }

    /// The audit `reason` of the message.
    pub fn outcome(&self) -> &'static str {
        match (self.asked, self.approved) {
            (false, _) => "approval required",
            (true, None) => "approval pending",
            (true, Some(true)) => "approved",
            (true, Some(false)) if self.timeout => "approval timed out",
            (true, Some(false)) if self.error.is_some() => "approval service failed",
            (true, Some(false)) => "not approved",
        }
    }

    /// The `decision` label of the message and call counters for a record with this fact:
    /// `approved`, `not_approved` (refused: no, timeout, failure, inside a batch),
    /// `dryrun_approval` (dry run: would have been asked), `error`.
    pub fn label(&self, decision: Decision, enforced: bool) -> &'static str {
        match decision {
            Decision::Allow if self.approved == Some(true) => "approved",
            Decision::Allow if !enforced || !self.asked => "dryrun_approval",
            Decision::Allow | Decision::Deny => "not_approved",
            Decision::Error => "error",
        }
    }

    /// The `outcome` label of the approvals metric.
    pub fn metric_outcome(&self) -> &'static str {
        match self.approved {
            Some(true) => "approved",
            _ if self.timeout => "timeout",
            _ if self.error.is_some() => "error",
            Some(false) => "denied",
            None => "not_asked",
        }
    }
}

#[derive(Serialize)]
struct NotApprovedData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_id: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approver: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approver_reason: Option<&'a str>,
}

fn describe(method: &str, target: &Target<'_>) -> String {
    match target.name() {
        Some(name) => format!("{method} {name}"),
        None => method.to_string(),
    }
}

/// A request the approval service did not approve: HTTP 403, JSON-RPC -31403
/// `Not approved: tools/call X`. `explain`: `data` names the rule, the outcome and the
/// approver's answer; `hide`: only the outcome (the tool was listed to the caller, so it is
/// not hidden; the rule and the approver are not told). No `WWW-Authenticate`: another
/// token or scope would not change a human's answer.
pub fn not_approved(style: DenyStyle, id: Option<&RawValue>, method: &str, target: &Target<'_>, fact: &ApprovalFact) -> Reply {
    let explain = style == DenyStyle::Explain;
    let data = NotApprovedData {
        rule_id: explain.then_some(fact.rule_id.as_str()),
        reason: fact.outcome(),
        approver: fact.approver.as_deref().filter(|_| explain),
        approver_reason: fact.reason.as_deref().filter(|_| explain),
    };
    let message = format!("Not approved: {}", describe(method, target));
    Reply { status: 403, headers: Vec::new(), body: rpc_error_body(id, codes::FORBIDDEN, &message, Some(data)) }
}

/// Reason of the other requests of a batch refused for an approval.
pub const BATCH: &str = "another message in the batch needs approval";
/// Reason of the request that needs approval inside a batch.
pub const IN_BATCH: &str = "approval cannot be asked inside a batch";

/// A batch holding a request that needs approval (`denied: Some(rule)` marks it): refused
/// whole with 403, each request answered -31403; the one that needs approval is told to come
/// alone.
pub fn batch_refused(style: DenyStyle, messages: &[DeniedRequest<'_>]) -> Reply {
    let explain = style == DenyStyle::Explain;
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| match m.denied {
            Some(rule) => {
                let data = NotApprovedData { rule_id: rule.filter(|_| explain), reason: IN_BATCH, approver: None, approver_reason: None };
                let message = format!("Approval required: {} must be sent on its own, not in a batch", describe(m.method, m.target));
                rpc_error_body(m.id, codes::FORBIDDEN, &message, Some(data))
            }
            None => {
                let data = NotApprovedData { rule_id: None, reason: BATCH, approver: None, approver_reason: None };
                rpc_error_body(m.id, codes::FORBIDDEN, "Forbidden: batch rejected", Some(data))
            }
        })
        .collect();
    let mut body = Vec::with_capacity(bodies.iter().map(Vec::len).sum::<usize>() + bodies.len() + 2);
    body.push(b'[');
    for (i, b) in bodies.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b);
    }
    body.push(b']');
    Reply { status: 403, headers: Vec::new(), body }
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
