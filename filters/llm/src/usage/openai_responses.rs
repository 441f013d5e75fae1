//! OpenAI Responses: `usage` of a `response` object, and streamed events (usage in the
//! `response.completed` / `.incomplete` / `.failed` event's `response`).

use super::openai_chat::{CachedDetails, ReasoningDetails};
use super::{ApiUsage, Seen, Tokens};
use crate::api::Text;
use serde::Deserialize;
use serde_json::value::RawValue;

pub(super) const API: ApiUsage = ApiUsage { json_keys: &["usage", "output"], on_unit, json_usage };

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    output_tokens_details: Option<ReasoningDetails>,
}

impl Usage {
    fn tokens(&self) -> Tokens {
        let details = self.input_tokens_details.as_ref();
        Tokens {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cached_input: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_creation: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            reasoning: self.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    response: Option<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    #[serde(default)]
    usage: Option<Usage>,
}

fn on_unit(seen: &mut Seen, data: &str) -> Option<u64> {
    let event = serde_json::from_str::<Event<'_>>(data).ok()?;
    let kind = event.kind.as_ref().map(Text::as_str).unwrap_or("");
    Some(match kind {
        "response.completed" | "response.incomplete" | "response.failed" => {
            seen.ended = true;
            if let Some(usage) = event.response.as_ref().and_then(|r| r.usage.as_ref()) {
                seen.reported = Some(usage.tokens());
                seen.final_seen = true;
            }
            0
        }
        "response.output_text.delta"
        | "response.refusal.delta"
        | "response.reasoning_text.delta"
        | "response.reasoning_summary_text.delta"
        | "response.function_call_arguments.delta" => {
            // A JSON string: its raw length less the quotes (escapes count as written).
            event.delta.map(|d| d.get().len().saturating_sub(2) as u64).unwrap_or(0)
        }
        _ => 0,
    })
}

fn json_usage(raw: &[u8]) -> Option<Tokens> {
    serde_json::from_slice::<Option<Usage>>(raw).ok().flatten().map(|u| u.tokens())
}
