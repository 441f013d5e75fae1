//! The filter's own answers: why a request (or a `ListTasks` answer) is refused ([`Refusal`]),
//! and the reply for it in the call's binding and dialect — a JSON-RPC error with an
//! `ErrorInfo`, or an HTTP+JSON error with a google.rpc status. Pure: no host access.

use crate::chain::Violation;
use crate::classify::{Binding, BodyClass, Dialect, Method};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tollgate_core::reply;

/// JSON-RPC error codes the gateway uses. A2A itself uses -32001..-32009 and MCP -32000,
/// -32002 and -32042, so these sit in the free part of the server range.
pub mod codes {
    pub const DELEGATION_LOOP: i64 = -32050;
    pub const MAX_DEPTH: i64 = -32051;
    pub const FORBIDDEN: i64 = -32052;
    pub const UNAUTHENTICATED: i64 = -32053;
    pub const TOO_LARGE: i64 = -32054;
    pub const UNFILTERABLE: i64 = -32055;
}

pub const ERROR_DOMAIN: &str = "tollgate";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// A2A's own error domain and `TaskNotFoundError` (a2a-sdk's shapes: JSON-RPC -32001, REST
/// 404 `NOT_FOUND`, reason `TASK_NOT_FOUND`).
const A2A_DOMAIN: &str = "a2a-protocol.org";
const TASK_NOT_FOUND_CODE: i64 = -32001;
const TASK_NOT_FOUND_MESSAGE: &str = "Task not found";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Delegation(Violation),
    Forbidden,
    NotOriginator,
    Unauthenticated,
    TooLarge,
    /// Not JSON, or an empty body (JSON-RPC Parse error, -32700).
    Parse,
    /// JSON but not a valid JSON-RPC request (a response included), duplicate keys.
    Invalid,
    /// A JSON-RPC batch (A2A has none).
    Batch,
    /// A POST whose content type is not JSON (the SDK would still run it).
    MediaType,
    /// A path with an invalid or ambiguous percent-escape.
    BadPath,
    /// An HTTP method A2A does not use (PUT, PATCH...) on an agent route.
    HttpMethod,
    /// A `ListTasks` answer that had to be filtered to the caller's tasks but could not be
    /// (too large, encoded, not JSON, ambiguous): replaced, never passed.
    Unfilterable,
    /// Under `allow_originator`, a call naming a task the gateway has no record of at this
    /// agent: answered as the agent answers an unknown task (A2A `TaskNotFoundError`), never
    /// forwarded.
    TaskNotFound,
    /// A push-notification webhook URL the gateway refuses (SSRF: loopback, metadata, private
    /// addresses...; `push.rs`): JSON-RPC invalid params, HTTP+JSON 400.
    PushUrl,
}

impl Refusal {
    /// The refusal of a JSON-RPC body that is not a request A2A can take.
    pub fn for_body(class: &BodyClass) -> Refusal {
        match class {
            BodyClass::Batch => Refusal::Batch,
            BodyClass::Parse(_) => Refusal::Parse,
            BodyClass::Invalid { .. } | BodyClass::Ambiguous { .. } => Refusal::Invalid,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Delegation(r) => r.reason(),
            Refusal::Forbidden => "A2A_FORBIDDEN",
            Refusal::NotOriginator => "A2A_NOT_TASK_ORIGINATOR",
            Refusal::Unauthenticated => "A2A_UNAUTHENTICATED",
            Refusal::TooLarge => "A2A_REQUEST_TOO_LARGE",
            Refusal::Parse | Refusal::Invalid | Refusal::Batch | Refusal::MediaType | Refusal::BadPath | Refusal::HttpMethod => "A2A_INVALID_REQUEST",
            Refusal::Unfilterable => "A2A_RESPONSE_UNFILTERABLE",
            Refusal::TaskNotFound => "A2A_TASK_NOT_FOUND",
            Refusal::PushUrl => "A2A_PUSH_URL_REFUSED",
        }
    }
    pub fn rpc_code(self) -> i64 {
        match self {
            Refusal::Delegation(Violation::Loop) => codes::DELEGATION_LOOP,
            Refusal::Delegation(Violation::MaxDepth) => codes::MAX_DEPTH,
            Refusal::Forbidden | Refusal::NotOriginator => codes::FORBIDDEN,
            Refusal::Unauthenticated => codes::UNAUTHENTICATED,
            Refusal::TooLarge => codes::TOO_LARGE,
            Refusal::Parse => reply::codes::PARSE_ERROR,
            Refusal::Invalid | Refusal::Batch | Refusal::MediaType | Refusal::BadPath | Refusal::HttpMethod => reply::codes::INVALID_REQUEST,
            Refusal::Unfilterable => codes::UNFILTERABLE,
            Refusal::TaskNotFound => TASK_NOT_FOUND_CODE,
            Refusal::PushUrl => reply::codes::INVALID_PARAMS,
        }
    }
    /// HTTP status for JSON-RPC replies: 200 (the error is in the body) except where the
    /// transport itself failed.
    pub fn rpc_http_status(self) -> u32 {
        match self {
            Refusal::Unauthenticated => 401,
            Refusal::TooLarge => 413,
            Refusal::MediaType => 415,
            Refusal::BadPath => 400,
            Refusal::HttpMethod => 405,
            Refusal::Unfilterable => 502,
            _ => 200,
        }
    }
    /// HTTP status and google.rpc status for REST and card replies.
    pub fn rest_status(self) -> (u32, &'static str) {
        match self {
            Refusal::Delegation(Violation::Loop) => (409, "ABORTED"),
            Refusal::Delegation(Violation::MaxDepth) => (400, "FAILED_PRECONDITION"),
            Refusal::Forbidden | Refusal::NotOriginator => (403, "PERMISSION_DENIED"),
            Refusal::Unauthenticated => (401, "UNAUTHENTICATED"),
            Refusal::TooLarge => (413, "RESOURCE_EXHAUSTED"),
            Refusal::Parse | Refusal::Invalid | Refusal::Batch | Refusal::BadPath => (400, "INVALID_ARGUMENT"),
            Refusal::MediaType => (415, "INVALID_ARGUMENT"),
            Refusal::HttpMethod => (405, "UNIMPLEMENTED"),
            Refusal::Unfilterable => (502, "INTERNAL"),
            Refusal::TaskNotFound => (404, "NOT_FOUND"),
            Refusal::PushUrl => (400, "INVALID_ARGUMENT"),
        }
    }
    /// A refusal the filter reports as an error (the request or answer was unusable), not a
    /// policy decision.
    pub fn is_error(self) -> bool {
        !matches!(self, Refusal::Delegation(_) | Refusal::Forbidden | Refusal::NotOriginator | Refusal::TaskNotFound | Refusal::PushUrl)
    }
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Delegation(Violation::Loop) => "delegation loop: the target agent is already in this call's delegation chain",
            Refusal::Delegation(Violation::MaxDepth) => "delegation chain too deep: the maximum number of hops is reached",
            Refusal::Forbidden => "this caller may not call this method on this agent",
            Refusal::NotOriginator => "only the identity that created the task may do this",
            Refusal::Unauthenticated => "unknown credential",
            Refusal::TooLarge => "request body too large",
            Refusal::Parse => "Parse error: the request body is not JSON",
            Refusal::Invalid => "invalid JSON-RPC request",
            Refusal::Batch => "JSON-RPC batches are not part of A2A",
            Refusal::MediaType => "A2A requests must be JSON (Content-Type application/json or application/a2a+json)",
            Refusal::BadPath => "invalid or ambiguous percent-escape in the request path",
            Refusal::HttpMethod => "A2A uses only GET, POST and DELETE: this HTTP method is refused on agent routes",
            Refusal::Unfilterable => "the agent's task list could not be filtered to the caller's own tasks, so it was not passed on",
            Refusal::TaskNotFound => TASK_NOT_FOUND_MESSAGE,
            Refusal::PushUrl => "push-notification URL refused: only http(s) webhooks on hosts the gateway allows (no loopback, link-local, metadata or private addresses)",
        }
    }
    /// Headers the local reply carries beside its content type.
    pub fn reply_headers(self) -> &'static [(&'static str, &'static str)] {
        if self == Refusal::HttpMethod {
            &[("allow", "GET, POST, DELETE")]
        } else {
            &[]
        }
    }
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    #[serde(rename = "@type")]
    type_url: &'static str,
    reason: &'a str,
    domain: &'static str,
    metadata: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct RestError<'a> {
    error: RestErrorBody<'a>,
}

#[derive(Serialize)]
struct RestErrorBody<'a> {
    code: u32,
    status: &'static str,
    message: &'a str,
    details: [ErrorInfo<'a>; 1],
}

/// What a reply says about the call it refuses.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub binding: Option<Binding>,
    pub dialect: Dialect,
    /// The JSON-RPC request id, when it could be read.
    pub rpc_id: Option<&'a RawValue>,
    pub target: &'a str,
    pub hop: Option<u32>,
    pub chain: &'a [String],
    pub method: Option<Method>,
}

/// The HTTP status and body refusing `call` for `why`, in the shape of its binding and
/// dialect (JSON-RPC error, else HTTP+JSON error).
pub fn body(why: Refusal, call: &Call<'_>) -> (u32, Vec<u8>) {
    let info = if why == Refusal::TaskNotFound {
        // A2A's own answer, as the agent gives it: nothing says the gateway answered.
        ErrorInfo { type_url: ERROR_INFO_TYPE, reason: "TASK_NOT_FOUND", domain: A2A_DOMAIN, metadata: BTreeMap::new() }
    } else {
        let mut metadata = BTreeMap::new();
        metadata.insert("target", call.target.to_string());
        if let Some(hop) = call.hop {
            metadata.insert("hop", hop.to_string());
        }
        if !call.chain.is_empty() {
            metadata.insert("chain", call.chain.join(","));
        }
        if let Some(m) = call.method {
            metadata.insert("method", m.name().to_string());
        }
        ErrorInfo { type_url: ERROR_INFO_TYPE, reason: why.reason(), domain: ERROR_DOMAIN, metadata }
    };
    match call.binding {
        Some(Binding::JsonRpc) => {
            let body = match call.dialect {
                Dialect::V10 => reply::rpc_error_body(call.rpc_id, why.rpc_code(), why.message(), Some([info])),
                // The 0.3 TaskNotFoundError carries `"data": null`.
                Dialect::V03 if why == Refusal::TaskNotFound => {
                    reply::rpc_error_body(call.rpc_id, why.rpc_code(), why.message(), Some(serde_json::Value::Null))
                }
                Dialect::V03 => reply::rpc_error_body(call.rpc_id, why.rpc_code(), why.message(), Some(info)),
            };
            (why.rpc_http_status(), body)
        }
        _ => {
            let (status, grpc) = why.rest_status();
            let body = RestError { error: RestErrorBody { code: status, status: grpc, message: why.message(), details: [info] } };
            (status, serde_json::to_vec(&body).unwrap_or_default())
        }
    }
}

#[cfg(test)]
#[path = "replies_tests.rs"]
mod tests;
