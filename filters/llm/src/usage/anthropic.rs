//! Anthropic Messages: `usage` of a `message`, and streamed events (`message_start` carries
//! the input usage, `message_delta` the cumulative final usage).

use super::{text_len, ApiUsage, Seen, Tokens};
use crate::api::Text;
use serde::Deserialize;

pub(super) const API: ApiUsage = ApiUsage { json_keys: &["usage", "content"], on_unit, json_usage };

/// The usage fields seen so far in a stream (kept in [`Seen`]: later events carry cumulative
/// values, and a field present replaces the earlier one).
#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Later events carry cumulative values: a field present replaces the earlier one.
    pub(crate) fn merge(&mut self, later: &Usage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    pub(crate) fn tokens(&self) -> Tokens {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let creation = self.cache_creation_input_tokens.unwrap_or(0);
        Tokens {
            input: self.input_tokens.unwrap_or(0).saturating_add(read).saturating_add(creation),
            output: self.output_tokens.unwrap_or(0),
            cached_input: read,
            cache_creation: creation,
            reasoning: 0,
        }
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Text<'a>>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Text<'a>>,
}

fn on_unit(seen: &mut Seen, data: &str) -> Option<u64> {
    let event = serde_json::from_str::<Event<'_>>(data).ok()?;
    Some(match event.kind.as_ref().map(Text::as_str).unwrap_or("") {
        "message_start" => {
            if let Some(usage) = event.message.as_ref().and_then(|m| m.usage.as_ref()) {
                seen.anthropic.merge(usage);
                seen.reported = Some(seen.anthropic.tokens());
            }
            0
        }
        "message_delta" => {
            if let Some(usage) = &event.usage {
                seen.anthropic.merge(usage);
                seen.reported = Some(seen.anthropic.tokens());
                seen.final_seen = true;
            }
            0
        }
        "message_stop" => {
            seen.ended = true;
            0
        }
        "content_block_delta" => event
            .delta
            .as_ref()
            .map(|d| text_len(&d.text) + text_len(&d.thinking) + text_len(&d.partial_json))
            .unwrap_or(0),
        _ => 0,
    })
}

fn json_usage(raw: &[u8]) -> Option<Tokens> {
    serde_json::from_slice::<Option<Usage>>(raw).ok().flatten().map(|u| u.tokens())
}
