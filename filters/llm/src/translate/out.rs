//! What responses, streams and errors write, as `#[derive(Serialize)]` shapes borrowing from
//! the reply: serialized straight into the client's bytes, no `serde_json::Value` tree built
//! first (which at opt-level 3 cost ~15–20 KB of wasm per writer).
//!
//! Fields are declared in alphabetical order: the bytes are the ones the `Value` trees (sorted
//! maps) wrote. `Option` fields skipped when `None` are members that only some events carry;
//! `()` is a JSON `null`.

use super::response::OutPart;
use crate::api::ClientApi;
use crate::usage::Tokens;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value;

// ---- usage ------------------------------------------------------------------------------------

/// Normalized tokens in the client API's usage member, laid out so the client API's usage
/// parser (`crate::usage`) reads back the same numbers: what the API has no field for is
/// lost (Anthropic: reasoning; Gemini: cache creation), totals never are.
#[derive(Clone, Copy)]
pub(super) struct Usage(pub ClientApi, pub Tokens);

#[derive(Serialize)]
struct CacheDetails {
    cache_write_tokens: u64,
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct ChatUsage {
    completion_tokens: u64,
    completion_tokens_details: ReasoningDetails,
    prompt_tokens: u64,
    prompt_tokens_details: CacheDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: CacheDetails,
    output_tokens: u64,
    output_tokens_details: ReasoningDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct AnthropicUsage {
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    cached_content_token_count: u64,
    candidates_token_count: u64,
    prompt_token_count: u64,
    thoughts_token_count: u64,
    total_token_count: u64,
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Usage(client, t) = *self;
        let total = t.input.saturating_add(t.output);
        let cache = CacheDetails { cache_write_tokens: t.cache_creation, cached_tokens: t.cached_input };
        let reasoning = ReasoningDetails { reasoning_tokens: t.reasoning };
        match client {
            ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => ChatUsage {
                completion_tokens: t.output,
                completion_tokens_details: reasoning,
                prompt_tokens: t.input,
                prompt_tokens_details: cache,
                total_tokens: total,
            }
            .serialize(s),
            ClientApi::OpenaiResponses => ResponsesUsage {
                input_tokens: t.input,
                input_tokens_details: cache,
                output_tokens: t.output,
                output_tokens_details: reasoning,
                total_tokens: total,
            }
            .serialize(s),
            // Anthropic's input_tokens excludes the cache reads and writes.
            ClientApi::AnthropicMessages => AnthropicUsage {
                cache_creation_input_tokens: t.cache_creation,
                cache_read_input_tokens: t.cached_input,
                input_tokens: t.input.saturating_sub(t.cached_input).saturating_sub(t.cache_creation),
                output_tokens: t.output,
            }
            .serialize(s),
            // Gemini's candidate count excludes the thoughts.
            ClientApi::Gemini => GeminiUsage {
                cached_content_token_count: t.cached_input,
                candidates_token_count: t.output.saturating_sub(t.reasoning),
                prompt_token_count: t.input,
                thoughts_token_count: t.reasoning,
                total_token_count: total,
            }
            .serialize(s),
        }
    }
}

// ---- OpenAI Chat ------------------------------------------------------------------------------

/// A chat completion, or (`object` `chat.completion.chunk`, `delta` choices) a stream chunk.
#[derive(Serialize)]
pub(super) struct ChatCompletion<'a> {
    pub choices: Vec<ChatChoice<'a>>,
    pub created: u32,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Serialize)]
pub(super) struct ChatChoice<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatDelta<'a>>,
    pub finish_reason: Option<&'a str>,
    pub index: u32,
    pub logprobs: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatMessage<'a>>,
}

#[derive(Serialize)]
pub(super) struct ChatMessage<'a> {
    pub content: Option<String>,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Default, Serialize)]
pub(super) struct ChatDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCall<'a>; 1]>,
}

/// A tool call; in a stream its first chunk (with `id`, `type`, `name`), then arguments.
#[derive(Serialize)]
pub(super) struct ToolCall<'a> {
    pub function: FunctionCall<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

#[derive(Serialize)]
pub(super) struct FunctionCall<'a> {
    pub arguments: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

// ---- OpenAI Responses -------------------------------------------------------------------------

/// The `response` object around finished output items (`output`: each part with its item id).
#[derive(Serialize)]
pub(super) struct ResponsesObject<'a> {
    pub created_at: u32,
    pub error: (),
    pub id: &'a str,
    pub incomplete_details: Option<Incomplete>,
    pub model: &'a str,
    pub object: &'static str,
    pub output: Items<'a>,
    pub parallel_tool_calls: bool,
    pub status: &'static str,
    pub tool_choice: &'static str,
    pub tools: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Serialize)]
pub(super) struct Incomplete {
    pub reason: &'static str,
}

/// Finished output items.
pub(super) struct Items<'a>(pub &'a [(OutPart, String)]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (part, id) in self.0 {
            seq.serialize_element(&Item { part, id, done: true })?;
        }
        seq.end()
    }
}

/// A Responses output item: in progress (no content, no arguments yet) or `done`.
pub(super) struct Item<'a> {
    pub part: &'a OutPart,
    pub id: &'a str,
    pub done: bool,
}

#[derive(Serialize)]
struct MessageItem<'a> {
    content: &'a [OutputText<'a>],
    id: &'a str,
    role: &'static str,
    status: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct FunctionCallItem<'a> {
    arguments: &'a str,
    call_id: &'a str,
    id: &'a str,
    name: &'a str,
    status: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
pub(super) struct OutputText<'a> {
    pub annotations: [(); 0],
    pub text: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl<'a> OutputText<'a> {
    pub fn new(text: &'a str) -> Self {
        OutputText { annotations: [], text, kind: "output_text" }
    }
}

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let status = if self.done { "completed" } else { "in_progress" };
        match self.part {
            OutPart::Text(text) => {
                let content = [OutputText::new(text)];
                let content = if self.done { &content[..] } else { &[] };
                MessageItem { content, id: self.id, role: "assistant", status, kind: "message" }.serialize(s)
            }
            OutPart::Tool { id, name, args } => {
                let arguments = if self.done { args } else { "" };
                FunctionCallItem { arguments, call_id: id, id: self.id, name, status, kind: "function_call" }.serialize(s)
            }
        }
    }
}

/// Every streamed Responses event: `kind` and `sequence_number` set by the encoder, the
/// members the event carries `Some`.
#[derive(Default, Serialize)]
pub(super) struct ResponsesEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<OutputText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponsesObject<'a>>,
    pub sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

// ---- Anthropic --------------------------------------------------------------------------------

/// A message: the whole response, or (no content, no stop reason yet) `message_start`'s.
#[derive(Serialize)]
pub(super) struct AnthropicMessage<'a> {
    pub content: Vec<Block<'a>>,
    pub id: &'a str,
    pub model: &'a str,
    pub role: &'static str,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: (),
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A content block: `text` (`text`) or `tool_use` (`id`, `name`, `input`).
#[derive(Serialize)]
pub(super) struct Block<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl<'a> Block<'a> {
    pub fn text(text: &'a str) -> Self {
        Block { id: None, input: None, name: None, text: Some(text), kind: "text" }
    }

    pub fn tool_use(id: &'a str, name: &'a str, input: Value) -> Self {
        Block { id: Some(id), input: Some(input), name: Some(name), text: None, kind: "tool_use" }
    }
}

/// Every streamed Anthropic event.
#[derive(Default, Serialize)]
pub(super) struct AnthropicEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_block: Option<Block<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<AnthropicDelta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AnthropicMessage<'a>>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Default, Serialize)]
pub(super) struct AnthropicDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_json: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

// ---- Gemini -----------------------------------------------------------------------------------

/// A Gemini response chunk (or whole response) with one candidate.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GeminiChunk<'a> {
    pub candidates: [Candidate; 1],
    pub model_version: &'a str,
    pub response_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<Usage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    pub content: GeminiContent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    pub index: u32,
}

#[derive(Serialize)]
pub(super) struct GeminiContent {
    pub parts: Vec<GeminiPart>,
    pub role: &'static str,
}

/// `{text}` or `{functionCall: {name, args}}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GeminiPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<GeminiCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Serialize)]
pub(super) struct GeminiCall {
    pub args: Value,
    pub name: String,
}

// ---- writing --------------------------------------------------------------------------------

/// The JSON text of `value` (the shapes above cannot fail to serialize).
#[inline(never)]
pub(super) fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}
