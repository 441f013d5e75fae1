//! Upstream errors in the client API's error shape, with the same HTTP status: the kind is
//! derived from the status (each API names kinds differently), the message is the provider's.

use crate::api::{upstream_error_message, ClientApi};
use serde::{Serialize, Serializer};

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

/// The client API's error object for `status` and `message` (fields in alphabetical order,
/// see `out.rs`).
pub(super) struct Shape<'a> {
    pub client: ClientApi,
    pub status: u16,
    pub message: &'a str,
}

#[derive(Serialize)]
struct Wrapped<T> {
    error: T,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    code: Option<&'static str>,
    message: &'a str,
    param: (),
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    error: AnthropicErrorBody<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct GeminiError<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

/// OpenAI's error `type` for `status` (a Responses stream's error `code`).
pub(super) fn openai_kind(status: u16) -> &'static str {
    kind(status).1
}

impl Serialize for Shape<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (_, openai, anthropic, gemini) = kind(self.status);
        let (status, message) = (self.status, self.message);
        match self.client {
            ClientApi::OpenaiChat | ClientApi::OpenaiResponses | ClientApi::OpenaiEmbeddings => {
                let code = (status == 429).then_some("rate_limit_exceeded");
                Wrapped { error: OpenAiError { code, message, param: (), kind: openai } }.serialize(s)
            }
            ClientApi::AnthropicMessages => AnthropicError { error: AnthropicErrorBody { message, kind: anthropic }, kind: "error" }.serialize(s),
            ClientApi::Gemini => Wrapped { error: GeminiError { code: status, message, status: gemini } }.serialize(s),
        }
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
    serde_json::to_vec(&Shape { client, status, message: &message }).unwrap_or_default()
}
