//! Upstream errors in the client API's error shape, with the same HTTP status: the kind is
//! derived from the status (each API names kinds differently), the message is the provider's.

use crate::api::{upstream_error_message, ClientApi};
use serde_json::{json, Value};

/// (status, OpenAI `type`, Anthropic `error.type`, Gemini `status`): one row per kind. The
/// first row matching a status wins; unknown statuses fall back by class (4xx, 5xx).
const KINDS: &[(u16, &str, &str, &str)] = &[
    (400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (401, "authentication_error", "authentication_error", "UNAUTHENTICATED"),
    (403, "permission_error", "permission_error", "PERMISSION_DENIED"),
    (404, "not_found_error", "not_found_error", "NOT_FOUND"),
    (413, "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    (429, "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (500, "server_error", "api_error", "INTERNAL"),
    (503, "server_error", "overloaded_error", "UNAVAILABLE"),
    (529, "server_error", "overloaded_error", "UNAVAILABLE"),
    (504, "server_error", "api_error", "DEADLINE_EXCEEDED"),
];

fn kind(status: u16) -> (u16, &'static str, &'static str, &'static str) {
    let class = if status < 500 { 400 } else { 500 };
    let row = KINDS.iter().find(|k| k.0 == status).or_else(|| KINDS.iter().find(|k| k.0 == class));
    row.copied().unwrap_or((status, "server_error", "api_error", "INTERNAL"))
}

/// The status an error without one (a streamed error event) stands for, from its kind name
/// in any API.
pub(super) fn status_of(kind_name: &str) -> u16 {
    KINDS.iter().find(|k| k.1 == kind_name || k.2 == kind_name || k.3 == kind_name).map_or(500, |k| k.0)
}

/// The client API's error object for `status` and `message`.
pub(super) fn shape(client: ClientApi, status: u16, message: &str) -> Value {
    let (_, openai, anthropic, gemini) = kind(status);
    match client {
        ClientApi::OpenaiChat | ClientApi::OpenaiResponses | ClientApi::OpenaiEmbeddings => {
            let code = if status == 429 { json!("rate_limit_exceeded") } else { Value::Null };
            json!({"error": {"message": message, "type": openai, "param": null, "code": code}})
        }
        ClientApi::AnthropicMessages => json!({"type": "error", "error": {"type": anthropic, "message": message}}),
        ClientApi::Gemini => json!({"error": {"code": status, "message": message, "status": gemini}}),
    }
}

pub(super) fn error_body(_upstream: ClientApi, client: ClientApi, status: u16, body: &[u8]) -> Vec<u8> {
    // Every API's error message sits where `upstream_error_message` looks; a body that is not
    // one (an HTML page from a proxy, plain text) is quoted, shortened.
    let message = upstream_error_message(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        match text.is_empty() {
            true => format!("upstream error (HTTP {status})"),
            false => text.chars().take(512).collect(),
        }
    });
    serde_json::to_vec(&shape(client, status, &message)).unwrap_or_default()
}
