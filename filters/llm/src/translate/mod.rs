//! API translation, pure (no host calls): a client of one LLM API served by a provider that
//! speaks another. MAPPING-TABLE

use crate::api::RefusalKind;

pub use crate::api::ClientApi;
pub use stream::StreamTranslator;

mod error;
mod request;
mod response;
mod stream;

/// How requests are completed where the target needs more than the client said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Anthropic requires `max_tokens`: this stands in when the client gave no maximum.
    pub default_max_tokens: u32,
    /// `stream_options.include_usage` for a streamed request to OpenAI Chat (the translated
    /// stream carries usage only when the upstream sends it).
    pub include_usage: bool,
}

/// A request body in the upstream's API, and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    /// `/v1/chat/completions`, `/v1/messages`, `/v1beta/models/{model}:generateContent` or
    /// `:streamGenerateContent?alt=sse`.
    pub path: String,
    pub stream: bool,
}

/// What cannot be translated: the client's `field` (a JSON path such as
/// `messages[2].content[0].type`) and why. Answered with a 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmappable {
    pub field: String,
    pub message: String,
}

impl Unmappable {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Unmappable { field: field.into(), message: message.into() }
    }

    /// The 400 body in the client API's error shape.
    pub fn error_body(&self, client: ClientApi) -> Vec<u8> {
        crate::api::error_body(Some(client), RefusalKind::BadRequest, &format!("`{}` {}", self.field, self.message))
    }
}

/// The Responses API is stateful at OpenAI (stored responses, server-side tools): only its
/// clients are served, never a provider spoken to in it.
fn responses_upstream() -> Unmappable {
    Unmappable::new("api", "translation to the OpenAI Responses API is not supported (it is a client API only)")
}

/// The client's request body in the upstream's API. `stream` is the client's (for Gemini
/// clients, from the path); `upstream_model` goes into the body (the path for Gemini).
pub fn request(
    client: ClientApi,
    upstream: ClientApi,
    body: &[u8],
    stream: bool,
    upstream_model: &str,
    opts: &RequestOptions,
) -> Result<TranslatedRequest, Unmappable> {
    request::request(client, upstream, body, stream, upstream_model, opts)
}

/// A successful (2xx) JSON response in the client's API, naming the client's model.
pub fn response_json(upstream: ClientApi, client: ClientApi, body: &[u8], client_model: &str) -> Result<Vec<u8>, Unmappable> {
    response::response_json(upstream, client, body, client_model)
}

/// Any upstream error body (JSON of any API, or not JSON at all) in the client's error
/// shape; the HTTP status stays the upstream's.
pub fn error_body(upstream: ClientApi, client: ClientApi, status: u16, body: &[u8]) -> Vec<u8> {
    error::error_body(upstream, client, status, body)
}

#[cfg(test)]
mod tests;
