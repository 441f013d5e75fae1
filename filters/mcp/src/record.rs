//! The MCP filter's audit records: one [`MessageRecord`] per JSON-RPC message (or one for a
//! request refused whole), written by [`serialize`] with what the exchange's records share
//! ([`ExchangeFacts`]); the exchange emits the bytes.

use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::observe::audit::{Decision, Envelope, Layer, Record};

/// The audit detail of one message (flattened beside the core envelope).
#[derive(Debug, Default, Serialize)]
pub struct MessageDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// Behind Envoy's `mcp_router`: the name as the client sent it (`alpha__echo`); `server`
    /// and `tool`/`prompt`/`resource_uri` are then the backend's (`crate::router`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_as: Option<String>,
    /// SHA-256 of the canonical arguments (sorted keys, no whitespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// The canonical arguments themselves (only with `audit_arguments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `result.isError` of the upstream's tool result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `error.code` when the upstream answered with a JSON-RPC error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_error_code: Option<i64>,
    /// Items removed from a list result (counted, not removed, in dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_hidden: Option<usize>,
    /// A request an `approve` rule matched: the approval asked for and the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::ApprovalFact>,
    /// Tool definitions that differ from their pins (`tool_pinning`): tool, pinned and
    /// current SHA-256, action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_pins: Option<Vec<crate::pinning::PinNote>>,
}

#[derive(Debug)]
pub struct MessageRecord {
    pub decision: Decision,
    pub enforced: bool,
    /// Refused (or, in dry run, would have been) by a rate limit: `rule_id` is the limit.
    pub rate_limited: bool,
    pub rule_id: Option<String>,
    pub error: Option<String>,
    pub detail: MessageDetail,
}

impl MessageRecord {
    pub fn new(decision: Decision) -> Self {
        MessageRecord {
            decision,
            enforced: true,
            rate_limited: false,
            rule_id: None,
            error: None,
            detail: MessageDetail::default(),
        }
    }

    /// The `decision` label of the message and call counters.
    pub fn label(&self) -> &'static str {
        if let Some(approval) = &self.detail.approval {
            return approval.label(self.decision, self.enforced);
        }
        match self.decision {
            Decision::Allow => "allow",
            Decision::Deny if self.rate_limited && self.enforced => "rate_limited",
            Decision::Deny if self.rate_limited => "dryrun_rate_limited",
            Decision::Deny if self.enforced => "deny",
            Decision::Deny => "dryrun_deny",
            Decision::Error => "error",
        }
    }
}

/// Audit `reason` of a call refused by a rate limit.
pub const RATE_LIMITED: &str = "rate_limited";

/// The request-level part of every record.
#[derive(Serialize)]
struct Detail<'a> {
    server: &'a str,
    http_method: &'a str,
    revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_index: Option<usize>,
    /// The fleet-wide store could not answer: `fail_open_local` rate limits counted on this
    /// Envoy only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    limits_degraded: bool,
    #[serde(flatten)]
    message: &'a MessageDetail,
}

/// What every record of one exchange shares.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeFacts<'a> {
    pub server: &'a str,
    pub http_method: &'a str,
    /// The revision as judged, or the unsupported one the client asked for.
    pub revision: &'a str,
    pub session_id: Option<&'a str>,
    /// Request id, trace and identity.
    pub envelope: Envelope<'a>,
    pub status: Option<u32>,
    pub start_ms: u64,
    /// A JSON-RPC batch: every record, with its `batch_index`, in one JSON array; otherwise
    /// the first record alone.
    pub batch: bool,
    pub limits_degraded: bool,
}

/// The audit JSON of an exchange's records at `now_ms`, with the errors of records that
/// could not be written (left out).
pub fn serialize(facts: &ExchangeFacts<'_>, records: &[MessageRecord], now_ms: u64) -> (Vec<u8>, Vec<serde_json::Error>) {
    let mut errors = Vec::new();
    // A record is 500-700 bytes: sized once, not grown while written.
    let mut out: Vec<u8> = Vec::with_capacity(1024 * records.len());
    if facts.batch {
        out.push(b'[');
    }
    for (i, rec) in records.iter().enumerate() {
        let detail = Detail {
            server: facts.server,
            http_method: facts.http_method,
            revision: facts.revision,
            session_id: facts.session_id,
            batch_index: facts.batch.then_some(i),
            limits_degraded: facts.limits_degraded,
            message: &rec.detail,
        };
        let mut record = Record::of_request(Layer::Mcp, facts.start_ms, facts.envelope, detail);
        record.decision = rec.decision;
        record.enforced = rec.enforced;
        record.rule_id = rec.rule_id.as_deref();
        record.status = facts.status;
        record.duration_ms = Some(now_ms.saturating_sub(facts.start_ms));
        record.error = rec.error.as_deref();
        if i > 0 {
            out.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut out, &record) {
            errors.push(e);
        }
        if !facts.batch {
            break;
        }
    }
    if facts.batch {
        out.push(b']');
    }
    (out, errors)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
