//! OpenAI Embeddings: `usage {prompt_tokens, total_tokens}` of an embeddings list. Nothing
//! is generated, so output is always 0; embeddings are never streamed.

use super::{ApiUsage, Seen, Tokens};
use serde::Deserialize;

/// Only `usage` is captured: `data` holds the vectors, never generated text (an estimate's
/// output stays 0), and can be large.
pub(super) const API: ApiUsage = ApiUsage { json_keys: &["usage"], on_unit, json_usage };

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

/// Not a streaming API: a unit is unreadable.
fn on_unit(_seen: &mut Seen, _data: &str) -> Option<u64> {
    None
}

fn json_usage(raw: &[u8]) -> Option<Tokens> {
    let usage = serde_json::from_slice::<Option<Usage>>(raw).ok().flatten()?;
    Some(Tokens { input: usage.prompt_tokens.unwrap_or(0), ..Default::default() })
}
