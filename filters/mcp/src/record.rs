//! The MCP filter's audit records: one [`MessageRecord`] per JSON-RPC message (or one for a
//! request refused whole), and the request-level [`Detail`] each is written with.

use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tollgate_core::observe::audit::Decision;

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
pub struct Detail<'a> {
    pub server: &'a str,
    pub http_method: &'a str,
    pub revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<usize>,
    #[serde(flatten)]
    pub message: &'a MessageDetail,
}
