//! OpenAI Chat Completions: `usage` of a `chat.completion`, and streamed `chat.completion.chunk`
//! events (usage only in the last chunk, when `stream_options.include_usage` asked for it).

use super::{text_len, ApiUsage, Seen, Tokens};
use crate::api::Text;
use serde::Deserialize;
use serde_json::value::RawValue;

pub(super) const API: ApiUsage = ApiUsage { json_keys: &["usage", "choices"], on_unit, json_usage };

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningDetails>,
}

/// `prompt_tokens_details` here, `input_tokens_details` in the Responses API.
#[derive(Deserialize, Default)]
pub(super) struct CachedDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

/// `completion_tokens_details` here, `output_tokens_details` in the Responses API.
#[derive(Deserialize, Default)]
pub(super) struct ReasoningDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    fn tokens(&self) -> Tokens {
        let details = self.prompt_tokens_details.as_ref();
        Tokens {
            input: self.prompt_tokens.unwrap_or(0),
            output: self.completion_tokens.unwrap_or(0),
            cached_input: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_creation: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            reasoning: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

fn on_unit(seen: &mut Seen, data: &str) -> Option<u64> {
    if data.trim() == "[DONE]" {
        seen.ended = true;
        return Some(0);
    }
    let chunk = serde_json::from_str::<Chunk<'_>>(data).ok()?;
    if let Some(usage) = &chunk.usage {
        seen.reported = Some(usage.tokens());
        seen.final_seen = true;
    }
    Some(
        chunk
            .choices
            .iter()
            .flatten()
            .filter_map(|c| c.delta.as_ref())
            .map(|d| {
                text_len(&d.content)
                    + text_len(&d.reasoning_content)
                    + text_len(&d.refusal)
                    + d.tool_calls.map(|t| t.get().len() as u64).unwrap_or(0)
            })
            .sum(),
    )
}

fn json_usage(raw: &[u8]) -> Option<Tokens> {
    serde_json::from_slice::<Option<Usage>>(raw).ok().flatten().map(|u| u.tokens())
}
