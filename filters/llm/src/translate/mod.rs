//! API translation, pure (no host calls): a client of one LLM API served by a provider that
//! speaks another. Clients: OpenAI Chat Completions, OpenAI Responses, Anthropic Messages,
//! Gemini `generateContent`; providers: the same but Responses (stateful at OpenAI: its
//! clients are served, it is never spoken to). `client == upstream` is not handled (the filter
//! passes those through).
//!
//! Requests go through a neutral conversation (`request.rs`), whole responses through a
//! neutral reply (`response.rs`), streams event by event through neutral events
//! (`stream.rs`): each API is read once and written once, not once per pair.
//!
//! ## Mapping
//!
//! | meaning | OpenAI Chat | Responses (client only) | Anthropic | Gemini |
//! |---|---|---|---|---|
//! | system prompt | `system` / `developer` messages (moved first) | `instructions`, system items | `system` (string or text blocks) | `systemInstruction.parts` |
//! | turns | `user` / `assistant` | `input` (string or message items) | `user` / `assistant` (same-role turns merged) | `user` / `model` |
//! | image | `image_url.url`: `data:<mime>;base64,` or URL | `input_image.image_url` | `image.source` `base64` / `url` | `inlineData` / `fileData` (URL: MIME from the extension) |
//! | tool definition | `tools[].function{name, description, parameters}` | `tools[]{name, description, parameters}` | `tools[]{name, description, input_schema}` | `functionDeclarations[]`, sent as `parametersJsonSchema` (read: `parameters`, types lowercased) |
//! | tool choice | `auto` / `none` / `required` / named | same | `auto` / `none` / `any` / `tool` | `AUTO` / `NONE` / `ANY` / `ANY` + one allowed name |
//! | one call at a time | `parallel_tool_calls: false` | same | `disable_parallel_tool_use` | refused |
//! | tool call | `tool_calls[]{id, function{name, arguments (JSON text)}}` | `function_call{call_id, name, arguments}` | `tool_use{id, name, input}` | `functionCall{name, args}`: no id, `call_<n>` made up |
//! | tool result | `tool` message `tool_call_id` | `function_call_output{call_id, output}` | `tool_result{tool_use_id, content, is_error}` | `functionResponse{name, response}`: name from the call with that id; a JSON-object result as is, else `{"content": text}` |
//! | max output | `max_completion_tokens` (or `max_tokens`) | `max_output_tokens` | `max_tokens` (required: `RequestOptions::default_max_tokens` when absent) | `generationConfig.maxOutputTokens` |
//! | sampling | `temperature`, `top_p` | same | `temperature`, `top_p`, `top_k` | `temperature`, `topP`, `topK` (`top_k` to OpenAI: refused) |
//! | stop sequences | `stop` | – | `stop_sequences` | `stopSequences` |
//! | stop reason | `stop` / `length` / `tool_calls` / `content_filter` | `completed` / `incomplete` (`max_output_tokens`, `content_filter`) | `end_turn` / `stop_sequence` / `max_tokens` / `tool_use` / `refusal` | `STOP` (after calls: tool use) / `MAX_TOKENS` / `SAFETY`… |
//! | usage | `prompt_tokens` (+`_details.cached_tokens`, `cache_write_tokens`), `completion_tokens` (+`reasoning_tokens`) | `input_tokens…`, `output_tokens…` | `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens`, `output_tokens` | `promptTokenCount`, `cachedContentTokenCount`, `candidatesTokenCount` + `thoughtsTokenCount` |
//! | errors | `{"error":{message, type, param, code}}` | same | `{"type":"error","error":{type, message}}` | `{"error":{code, message, status}}` |
//!
//! Usage is read with the accounting's own parsers (`crate::usage::parse_usage`) and written
//! so that they read it back equal in the client's API (a test checks every pair): totals
//! always; Anthropic has no reasoning field and Gemini no cache-creation field, so those two
//! breakdowns are lost there. Streams: an OpenAI client gets the usage chunk (`choices: []`)
//! and `data: [DONE]` at the end; an Anthropic client `message_start` with the input known so
//! far (zeros from an OpenAI upstream, which reports at the end) and a complete cumulative
//! `message_delta.usage`; a Gemini client `usageMetadata` in every chunk, final with
//! `finishReason`; a Responses client usage in `response.completed`. Upstream usage that never
//! came stays absent (never a made-up zero final), so the accounting estimates.
//!
//! Ids: the provider's response and tool-call ids are kept (prefixed `chatcmpl-`, `msg_`,
//! `resp_` where the client's SDK expects one); `created` is 0 (no clock without the host).
//!
//! ## Dropped on purpose (no equivalent, no effect on the answer's format)
//! OpenAI `user`, `metadata`, `store`, `service_tier`, `stream_options` (the translator asks an
//! OpenAI upstream for usage itself), message `name`, `image_url.detail`, `function.strict`;
//! Anthropic `metadata`, `service_tier`, `cache_control`, `citations`, `is_error` towards
//! OpenAI and Gemini (the text says it); Gemini `labels`, `thoughtSignature` and thought parts;
//! Responses item `id` / `status`; `ping` keep-alives; thinking output (only sent when asked
//! for, which is refused).
//!
//! ## Refused ([`Unmappable`], a 400 naming the client's field)
//! Any member not in the table or the list above, e.g. `n` > 1, `candidateCount` > 1,
//! `logprobs`, `response_format` / `text.format` / `responseMimeType` other than text,
//! `frequency_penalty`, `seed`, `safetySettings`, `thinking`, `reasoning`,
//! `previous_response_id`, server-side tools (Anthropic `web_search_…`, Gemini
//! `googleSearch`), unknown content part types (audio, documents, `executableCode`, non-image
//! inline data), non-base64 `data:` URLs, URL images of unknown type towards Gemini, tool
//! results with images towards OpenAI or Gemini, a `functionResponse` or tool result with no
//! earlier call, invalid JSON tool arguments. A 2xx upstream body this module cannot read
//! (e.g. an unknown content block type) is an [`Unmappable`] too.
//!
//! ## Size
//! Not the hot path, so inputs are read as `serde_json::Value`. Responses, stream events and
//! errors are written with the `#[derive(Serialize)]` shapes of `out.rs` (25 KB of wasm less
//! than building `Value` trees); translated requests are still built as `Value`s with [`obj`]
//! (moves, where `json!` would copy): derived shapes measured 12 KB *larger* there, the
//! per-field serializer instances outweighing the trees. The small reading and writing
//! helpers called from hundreds of sites are `#[inline(never)]`, and `Unmappable::new` is
//! cold and out of line (4 KB): the release profile's opt-level 3 would otherwise copy each
//! into every caller.

use crate::api::RefusalKind;

pub use crate::api::ClientApi;
pub use stream::StreamTranslator;

mod error;
mod out;
mod request;
mod response;
mod stream;

/// A JSON object of `pairs`, moving each value in: `serde_json::json!` serializes (copies)
/// every variable it embeds, which for message contents means copying images.
#[inline(never)]
fn obj<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> serde_json::Value {
    serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

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
    #[cold]
    #[inline(never)]
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
