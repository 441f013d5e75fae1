//! Local replies: HTTP JSON errors and JSON-RPC 2.0 error objects.

use crate::host::{Host, HostResult};
use serde::Serialize;
use serde_json::value::RawValue;

/// Sends a JSON local reply with `content-type: application/json` plus extra headers.
pub fn send_json(host: &dyn Host, status: u32, extra_headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
    headers.push(("content-type", "application/json"));
    headers.extend_from_slice(extra_headers);
    host.send_local_reply(status, &headers, body)
}

/// A JSON-RPC 2.0 error object.
#[derive(Debug, Serialize)]
pub struct RpcError<'a, D: Serialize = ()> {
    pub code: i64,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

#[derive(Serialize)]
struct RpcErrorResponse<'a, D: Serialize> {
    jsonrpc: &'static str,
    /// The request's id verbatim; `null` when it could not be read.
    id: &'a RawValue,
    error: RpcError<'a, D>,
}

const NULL_ID: &str = "null";

/// Serializes a JSON-RPC error response for the given request id (raw JSON) or `null`.
pub fn rpc_error_body<D: Serialize>(id: Option<&RawValue>, code: i64, message: &str, data: Option<D>) -> Vec<u8> {
    let null: Box<RawValue> = RawValue::from_string(NULL_ID.to_string()).unwrap_or_else(|_| null_raw());
    let response = RpcErrorResponse {
        jsonrpc: "2.0",
        id: id.unwrap_or(&null),
        error: RpcError { code, message, data },
    };
    serde_json::to_vec(&response).unwrap_or_else(|_| {
        format!(r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":{code},"message":"internal error"}}}}"#).into_bytes()
    })
}

fn null_raw() -> Box<RawValue> {
    // `null` is always valid JSON; this branch only satisfies the type checker.
    serde_json::from_str("null").unwrap_or_else(|_| Box::<RawValue>::default())
}

/// JSON-RPC standard error codes.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// Escapes a string for embedding in hand-written JSON.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn rpc_error_keeps_id_verbatim() {
        let id: Box<RawValue> = serde_json::from_str("\"abc-1\"").unwrap();
        let body = rpc_error_body::<()>(Some(&id), codes::INVALID_PARAMS, "Unknown tool: x", None);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"jsonrpc":"2.0","id":"abc-1","error":{"code":-32602,"message":"Unknown tool: x"}}"#
        );
        let body = rpc_error_body(None, codes::PARSE_ERROR, "Parse error", Some(serde_json::json!({"reason":"x"})));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["data"]["reason"], "x");
    }

    #[test]
    fn send_json_sets_content_type() {
        let host = MemoryHost::new();
        send_json(&host, 403, &[("www-authenticate", "Bearer")], b"{}").unwrap();
        let (status, headers, _) = host.local_reply.borrow().clone().unwrap();
        assert_eq!(status, 403);
        assert_eq!(headers[0].1, "application/json");
        assert_eq!(headers[1].0, "www-authenticate");
    }
}
