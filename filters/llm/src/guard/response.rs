//! The guardrail over an answer, in the client API's own format: [`apply_json`] for a whole
//! JSON answer, [`SseGuard`] for a streamed one (see its documentation for each API's
//! rewrite).
//!
//! Scanned in a JSON answer (hits' `message_index`: the choice or candidate index, 0 for
//! Anthropic and Responses):
//!
//! | API | texts |
//! |---|---|
//! | OpenAI Chat | `choices[].message`: `content` (string or parts), `refusal`, `tool_calls[].function.arguments` |
//! | OpenAI Responses | `output[]`: message `content[].text` / `refusal`, `function_call.arguments` |
//! | Anthropic Messages | `content[]`: `text` blocks, `tool_use.input` string values |
//! | Gemini | `candidates[].content.parts[]`: `text`, `functionCall.args` string values (a streamed answer read whole, a JSON array of such objects, too) |
//! | OpenAI Embeddings | nothing (vectors) |
//!
//! Thinking blocks (Anthropic `thinking`, Responses `reasoning`) are not scanned: they are
//! signed, and a rewrite would make the provider refuse them on the next turn.

use super::action::{block_message, GuardAction, GuardHit, HitLog, Place};
use super::json::{all, all_items, items, members, top, uint, Edits, Walk};
use super::request::{anthropic_block, chat_message, gemini_content, index, responses_item};
use super::Scanner;
use crate::api::ClientApi;
use serde_json::value::RawValue;

pub use super::sse::{SseGuard, SseOut};

/// What the guardrail made of a JSON answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseOutcome {
    pub hits: Vec<GuardHit>,
    /// The redacted body (redact mode, when something was redacted); `None`: unchanged.
    pub body: Option<Vec<u8>>,
    /// Block mode and something was found: replace the answer with an error.
    pub blocked: bool,
}

impl ResponseOutcome {
    /// The error message of a blocked answer (names the detectors, never the text).
    pub fn message(&self) -> String {
        block_message(Place::Response, &HitLog(self.hits.clone()))
    }
}

/// Scans (and in redact mode redacts) a whole JSON answer of `api`.
pub fn apply_json(api: ClientApi, body: &[u8], scanner: &Scanner, action: GuardAction) -> ResponseOutcome {
    let Ok(src) = std::str::from_utf8(body) else { return ResponseOutcome::default() };
    let mut walk = Walk::new(scanner, action, Place::Response);
    let mut edits = Edits::new(src);
    if api == ClientApi::Gemini && src.trim_start().starts_with('[') {
        if let Ok(raw) = serde_json::from_str::<&RawValue>(src) {
            for element in items(raw).unwrap_or_default() {
                answer(api, &mut walk, element, &mut edits);
            }
        }
    } else if let Some((raw, _)) = top(src) {
        answer(api, &mut walk, raw, &mut edits);
    }
    let blocked = action == GuardAction::Block && !walk.log.is_empty();
    let body = if action == GuardAction::Redact { edits.apply().map(String::into_bytes) } else { None };
    ResponseOutcome { hits: walk.log.0, body, blocked }
}

/// The answer's alternative: its `index` member, else its position.
pub(crate) fn alt_index(raw: &RawValue, position: usize) -> i64 {
    members(raw)
        .and_then(|m| super::json::last(&m, "index"))
        .and_then(uint)
        .and_then(|i| i64::try_from(i).ok())
        .unwrap_or_else(|| index(position))
}

/// One answer object (a response, a Responses `response`, a Gemini chunk).
pub(crate) fn answer(api: ClientApi, w: &mut Walk<'_>, raw: &RawValue, e: &mut Edits<'_>) {
    let Some(m) = members(raw) else { return };
    match api {
        ClientApi::OpenaiChat => {
            for (k, choice) in all_items(&m, "choices").into_iter().enumerate() {
                let i = alt_index(choice, k);
                if let Some(cm) = members(choice) {
                    for msg in all(&cm, "message") {
                        chat_message(w, i, msg, e);
                    }
                }
            }
        }
        ClientApi::OpenaiResponses => {
            for item in all_items(&m, "output") {
                responses_item(w, 0, item, e);
            }
        }
        ClientApi::AnthropicMessages => {
            for block in all_items(&m, "content") {
                anthropic_block(w, 0, block, e);
            }
        }
        ClientApi::Gemini => {
            for (k, cand) in all_items(&m, "candidates").into_iter().enumerate() {
                let i = alt_index(cand, k);
                if let Some(cm) = members(cand) {
                    for c in all(&cm, "content") {
                        gemini_content(w, i, c, e);
                    }
                }
            }
        }
        ClientApi::OpenaiEmbeddings => {}
    }
}
