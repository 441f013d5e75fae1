//! Gemini `generateContent` / `streamGenerateContent`: `usageMetadata`, cumulative in every
//! streamed chunk (SSE or JSON array element), final once a candidate has a `finishReason`.

use super::{text_len, ApiUsage, Seen, Tokens};
use crate::api::Text;
use serde::Deserialize;

pub(super) const API: ApiUsage = ApiUsage { json_keys: &["usageMetadata", "candidates"], on_unit, json_usage };

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
}

impl Usage {
    fn tokens(&self) -> Tokens {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Tokens {
            input: self.prompt_token_count.unwrap_or(0).saturating_add(self.tool_use_prompt_token_count.unwrap_or(0)),
            output: self.candidates_token_count.unwrap_or(0).saturating_add(thoughts),
            cached_input: self.cached_content_token_count.unwrap_or(0),
            cache_creation: 0,
            reasoning: thoughts,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default)]
    usage_metadata: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
}

fn on_unit(seen: &mut Seen, data: &str) -> Option<u64> {
    let chunk = serde_json::from_str::<Chunk<'_>>(data).ok()?;
    let candidates = chunk.candidates.as_deref().unwrap_or(&[]);
    if let Some(usage) = &chunk.usage_metadata {
        // Cumulative in every chunk; final once a candidate finished.
        seen.reported = Some(usage.tokens());
        if candidates.iter().any(|c| c.finish_reason.is_some()) {
            seen.final_seen = true;
        }
    }
    Some(
        candidates
            .iter()
            .filter_map(|c| c.content.as_ref()?.parts.as_ref())
            .flatten()
            .map(|p| text_len(&p.text))
            .sum(),
    )
}

fn json_usage(raw: &[u8]) -> Option<Tokens> {
    serde_json::from_slice::<Option<Usage>>(raw).ok().flatten().map(|u| u.tokens())
}
