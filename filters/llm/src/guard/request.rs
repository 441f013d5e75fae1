//! The guardrail over a request body, in the client API's own format: every text the
//! provider will read is scanned.
//!
//! | API | system (index [`SYSTEM`]) | messages (index in the list) |
//! |---|---|---|
//! | OpenAI Chat | system / developer messages are messages | `messages[i].content` (string, or parts' `text` / `refusal`), `refusal`, `tool_calls[].function.arguments`, `function_call.arguments`; role `tool` content likewise |
//! | OpenAI Responses | `instructions` | `input` (a string: index 0; items: `content` string or parts' `text` / `refusal`, `function_call.arguments`, `function_call_output.output` string or parts) |
//! | Anthropic Messages | `system` (string or text blocks) | `messages[i].content` (string; blocks: `text`, `tool_use.input` string values, `tool_result.content` string or text blocks, a `document` with a text source) |
//! | Gemini | `systemInstruction` parts' `text` | `contents[i].parts[]`: `text`, `functionCall.args` and `functionResponse.response` string values |
//! | OpenAI Embeddings | – | `input` (a string: index 0; an array of strings: each) |
//!
//! Tool-call arguments are a string holding JSON: its string values are scanned one by one
//! (so a redaction keeps it JSON); arguments that are not JSON are scanned as one text.
//! Every occurrence of a repeated key is scanned (providers differ in which one they read).
//! Images, audio, files, numbers and everything else stay byte for byte: a redaction replaces
//! only the string literals it changes. A body that is not a JSON object is not read (no
//! hits; the provider refuses it too).

use super::action::{block_message, GuardAction, GuardHit, Place, SYSTEM};
use super::json::{all, all_items, items, last_str, members, string, top, Edits, Walk};
use super::Scanner;
use crate::api::ClientApi;
use serde_json::value::RawValue;

/// What the guardrail made of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOutcome {
    pub hits: Vec<GuardHit>,
    /// The redacted body (redact mode, when something was redacted); `None`: unchanged.
    pub body: Option<Vec<u8>>,
    /// Block mode and something was found: refuse the request ([`RequestOutcome::message`]).
    pub blocked: bool,
}

impl RequestOutcome {
    /// The refusal message of a blocked request (names the detectors, never the text).
    pub fn message(&self) -> String {
        let log = super::action::HitLog(self.hits.clone());
        block_message(Place::Request, &log)
    }
}

/// Scans (and in redact mode redacts) a request body of `api`.
pub fn apply(api: ClientApi, body: &[u8], scanner: &Scanner, action: GuardAction) -> RequestOutcome {
    let Ok(src) = std::str::from_utf8(body) else { return RequestOutcome::default() };
    let Some((_, m)) = top(src) else { return RequestOutcome::default() };
    let mut walk = Walk::new(scanner, action, Place::Request);
    let mut edits = Edits::new(src);
    let w = &mut walk;
    let e = &mut edits;
    match api {
        ClientApi::OpenaiChat => {
            for (i, msg) in all_items(&m, "messages").into_iter().enumerate() {
                chat_message(w, index(i), msg, e);
            }
        }
        ClientApi::OpenaiResponses => {
            for v in all(&m, "instructions") {
                w.text(SYSTEM, v, e);
            }
            for input in all(&m, "input") {
                if string(input).is_some() {
                    w.text(0, input, e);
                }
                for (i, item) in items(input).unwrap_or_default().into_iter().enumerate() {
                    responses_item(w, index(i), item, e);
                }
            }
        }
        ClientApi::AnthropicMessages => {
            for system in all(&m, "system") {
                anthropic_content(w, SYSTEM, system, e);
            }
            for (i, msg) in all_items(&m, "messages").into_iter().enumerate() {
                if let Some(mm) = members(msg) {
                    for c in all(&mm, "content") {
                        anthropic_content(w, index(i), c, e);
                    }
                }
            }
        }
        ClientApi::Gemini => {
            for key in ["systemInstruction", "system_instruction"] {
                for sys in all(&m, key) {
                    gemini_content(w, SYSTEM, sys, e);
                }
            }
            for (i, c) in all_items(&m, "contents").into_iter().enumerate() {
                gemini_content(w, index(i), c, e);
            }
        }
        ClientApi::OpenaiEmbeddings => {
            for input in all(&m, "input") {
                if string(input).is_some() {
                    w.text(0, input, e);
                }
                for (i, v) in items(input).unwrap_or_default().into_iter().enumerate() {
                    w.text(index(i), v, e);
                }
            }
        }
    }
    let blocked = action == GuardAction::Block && !walk.log.is_empty();
    let body = if action == GuardAction::Redact { edits.apply().map(String::into_bytes) } else { None };
    RequestOutcome { hits: walk.log.0, body, blocked }
}

pub(crate) fn index(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Content parts (OpenAI, Responses): `text` and `refusal` strings of every part.
pub(crate) fn parts_text(w: &mut Walk<'_>, i: i64, content: &RawValue, e: &mut Edits<'_>) {
    if string(content).is_some() {
        w.text(i, content, e);
        return;
    }
    for part in items(content).unwrap_or_default() {
        if let Some(pm) = members(part) {
            for key in ["text", "refusal"] {
                for v in all(&pm, key) {
                    w.text(i, v, e);
                }
            }
        }
    }
}

/// An OpenAI Chat message (request) or a choice's `message` (response).
pub(crate) fn chat_message(w: &mut Walk<'_>, i: i64, msg: &RawValue, e: &mut Edits<'_>) {
    let Some(mm) = members(msg) else { return };
    for c in all(&mm, "content") {
        parts_text(w, i, c, e);
    }
    for r in all(&mm, "refusal") {
        w.text(i, r, e);
    }
    for call in all_items(&mm, "tool_calls") {
        let Some(cm) = members(call) else { continue };
        for f in all(&cm, "function") {
            arguments_of(w, i, f, e);
        }
    }
    for f in all(&mm, "function_call") {
        arguments_of(w, i, f, e);
    }
}

/// `{"arguments": "<json>"}` (an OpenAI function call).
fn arguments_of(w: &mut Walk<'_>, i: i64, f: &RawValue, e: &mut Edits<'_>) {
    if let Some(fm) = members(f) {
        for a in all(&fm, "arguments") {
            w.arguments(i, a, e);
        }
    }
}

/// A Responses input or output item.
pub(crate) fn responses_item(w: &mut Walk<'_>, i: i64, item: &RawValue, e: &mut Edits<'_>) {
    let Some(im) = members(item) else { return };
    match last_str(&im, "type").as_deref() {
        Some("function_call") | Some("custom_tool_call") => {
            for a in all(&im, "arguments") {
                w.arguments(i, a, e);
            }
            for a in all(&im, "input") {
                w.text(i, a, e);
            }
        }
        Some("function_call_output") | Some("custom_tool_call_output") => {
            for o in all(&im, "output") {
                parts_text(w, i, o, e);
            }
        }
        // Messages (`type` "message", or absent: the easy input form).
        Some("message") | None => {
            for c in all(&im, "content") {
                parts_text(w, i, c, e);
            }
        }
        _ => {}
    }
}

/// Anthropic content: a string or blocks (also `system`).
pub(crate) fn anthropic_content(w: &mut Walk<'_>, i: i64, content: &RawValue, e: &mut Edits<'_>) {
    if string(content).is_some() {
        w.text(i, content, e);
        return;
    }
    for block in items(content).unwrap_or_default() {
        anthropic_block(w, i, block, e);
    }
}

pub(crate) fn anthropic_block(w: &mut Walk<'_>, i: i64, block: &RawValue, e: &mut Edits<'_>) {
    let Some(bm) = members(block) else { return };
    match last_str(&bm, "type").as_deref() {
        Some("text") => {
            for t in all(&bm, "text") {
                w.text(i, t, e);
            }
        }
        Some("tool_use") | Some("server_tool_use") => {
            for input in all(&bm, "input") {
                w.strings(i, input, e);
            }
        }
        Some("tool_result") => {
            for c in all(&bm, "content") {
                anthropic_content(w, i, c, e);
            }
        }
        Some("document") => {
            for source in all(&bm, "source") {
                let Some(sm) = members(source) else { continue };
                if last_str(&sm, "type").as_deref() == Some("text") {
                    for d in all(&sm, "data") {
                        w.text(i, d, e);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A Gemini `Content` (`{role, parts}`).
pub(crate) fn gemini_content(w: &mut Walk<'_>, i: i64, content: &RawValue, e: &mut Edits<'_>) {
    let Some(cm) = members(content) else { return };
    for part in all_items(&cm, "parts") {
        gemini_part(w, i, part, e);
    }
}

pub(crate) fn gemini_part(w: &mut Walk<'_>, i: i64, part: &RawValue, e: &mut Edits<'_>) {
    let Some(pm) = members(part) else { return };
    for t in all(&pm, "text") {
        w.text(i, t, e);
    }
    for key in ["functionCall", "function_call"] {
        for call in all(&pm, key) {
            if let Some(cm) = members(call) {
                for args in all(&cm, "args") {
                    w.strings(i, args, e);
                }
            }
        }
    }
    for key in ["functionResponse", "function_response"] {
        for resp in all(&pm, key) {
            if let Some(rm) = members(resp) {
                for r in all(&rm, "response") {
                    w.strings(i, r, e);
                }
            }
        }
    }
}
