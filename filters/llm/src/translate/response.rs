//! Whole (non-streamed) responses: the upstream's body → a neutral [`Reply`] → the client's
//! body; plus what streams share with them: stop reasons, usage and ids.

use super::{obj, Unmappable};
use crate::api::ClientApi;
use crate::usage::{parse_usage, Tokens};
use serde_json::{json, Map, Value};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    End,
    Length,
    Sequence,
    ToolUse,
    Filter,
}

impl Stop {
    pub(super) fn from_openai(reason: &str) -> Stop {
        match reason {
            "length" => Stop::Length,
            "tool_calls" | "function_call" => Stop::ToolUse,
            "content_filter" => Stop::Filter,
            _ => Stop::End,
        }
    }

    pub(super) fn from_anthropic(reason: &str) -> Stop {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => Stop::Length,
            "stop_sequence" => Stop::Sequence,
            "tool_use" => Stop::ToolUse,
            "refusal" => Stop::Filter,
            _ => Stop::End,
        }
    }

    /// Gemini says STOP after function calls too: `called` tells them apart.
    pub(super) fn from_gemini(reason: &str, called: bool) -> Stop {
        match reason {
            "MAX_TOKENS" => Stop::Length,
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => Stop::Filter,
            _ if called => Stop::ToolUse,
            _ => Stop::End,
        }
    }

    pub(super) fn openai(self) -> &'static str {
        match self {
            Stop::End | Stop::Sequence => "stop",
            Stop::Length => "length",
            Stop::ToolUse => "tool_calls",
            Stop::Filter => "content_filter",
        }
    }

    pub(super) fn anthropic(self) -> &'static str {
        match self {
            Stop::End => "end_turn",
            Stop::Length => "max_tokens",
            Stop::Sequence => "stop_sequence",
            Stop::ToolUse => "tool_use",
            Stop::Filter => "refusal",
        }
    }

    pub(super) fn gemini(self) -> &'static str {
        match self {
            Stop::End | Stop::Sequence | Stop::ToolUse => "STOP",
            Stop::Length => "MAX_TOKENS",
            Stop::Filter => "SAFETY",
        }
    }

    /// A Responses API status and its `incomplete_details`.
    pub(super) fn responses(self) -> (&'static str, Value) {
        match self {
            Stop::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
            Stop::Filter => ("incomplete", json!({"reason": "content_filter"})),
            _ => ("completed", Value::Null),
        }
    }
}

/// Normalized tokens in the client API's usage member, laid out so the client API's usage
/// parser (`crate::usage`) reads back the same numbers: what the API has no field for is
/// lost (Anthropic: reasoning; Gemini: cache creation), totals never are.
#[inline(never)]
pub(super) fn usage_json(client: ClientApi, t: &Tokens) -> Value {
    let total = t.input.saturating_add(t.output);
    match client {
        ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => json!({
            "prompt_tokens": t.input, "completion_tokens": t.output, "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": t.cached_input, "cache_write_tokens": t.cache_creation},
            "completion_tokens_details": {"reasoning_tokens": t.reasoning},
        }),
        ClientApi::OpenaiResponses => json!({
            "input_tokens": t.input, "output_tokens": t.output, "total_tokens": total,
            "input_tokens_details": {"cached_tokens": t.cached_input, "cache_write_tokens": t.cache_creation},
            "output_tokens_details": {"reasoning_tokens": t.reasoning},
        }),
        // Anthropic's input_tokens excludes the cache reads and writes.
        ClientApi::AnthropicMessages => json!({
            "input_tokens": t.input.saturating_sub(t.cached_input).saturating_sub(t.cache_creation),
            "cache_read_input_tokens": t.cached_input, "cache_creation_input_tokens": t.cache_creation,
            "output_tokens": t.output,
        }),
        // Gemini's candidate count excludes the thoughts.
        ClientApi::Gemini => json!({
            "promptTokenCount": t.input, "candidatesTokenCount": t.output.saturating_sub(t.reasoning),
            "totalTokenCount": total, "cachedContentTokenCount": t.cached_input, "thoughtsTokenCount": t.reasoning,
        }),
    }
}

/// A usage member read by the accounting's own parser.
#[inline(never)]
pub(super) fn tokens(api: ClientApi, usage: Option<&Value>) -> Option<Tokens> {
    let raw = serde_json::to_vec(usage.filter(|u| !u.is_null())?).ok()?;
    parse_usage(api, &raw)
}

/// An id for Gemini's calls, which have none (the client's next request answers by it).
pub(super) fn call_id(n: usize) -> String {
    format!("call_{n}")
}

/// Ids the client API's SDKs expect the shape of, from the upstream's.
#[inline(never)]
pub(super) fn reply_id(client: ClientApi, upstream_id: Option<&str>) -> String {
    let id = upstream_id.unwrap_or("tollgate");
    let prefix = match client {
        ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => "chatcmpl-",
        ClientApi::OpenaiResponses => "resp_",
        ClientApi::AnthropicMessages => "msg_",
        ClientApi::Gemini => "",
    };
    match id.starts_with(prefix) {
        true => id.to_string(),
        false => format!("{prefix}{id}"),
    }
}

pub(super) enum OutPart {
    Text(String),
    /// `args` as JSON text (OpenAI's form; the others parse it).
    Tool { id: String, name: String, args: String },
}

struct Reply {
    id: Option<String>,
    parts: Vec<OutPart>,
    stop: Stop,
    usage: Option<Tokens>,
}

pub(super) fn response_json(upstream: ClientApi, client: ClientApi, body: &[u8], client_model: &str) -> Result<Vec<u8>, Unmappable> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Unmappable::new("body", format!("the response is not valid JSON: {e}")))?;
    let reply = match upstream {
        ClientApi::OpenaiChat => from_openai(value)?,
        ClientApi::AnthropicMessages => from_anthropic(value)?,
        ClientApi::Gemini => from_gemini(value)?,
        ClientApi::OpenaiResponses => return Err(super::responses_upstream()),
        ClientApi::OpenaiEmbeddings => return Err(Unmappable::new("api", "embeddings are not translated between APIs")),
    };
    let out = match client {
        ClientApi::OpenaiChat => to_openai(reply, client_model),
        ClientApi::OpenaiResponses => to_responses(reply, client_model),
        ClientApi::AnthropicMessages => to_anthropic(reply, client_model)?,
        ClientApi::Gemini => to_gemini(reply, client_model)?,
        ClientApi::OpenaiEmbeddings => return Err(Unmappable::new("api", "embeddings are not translated between APIs")),
    };
    serde_json::to_vec(&out).map_err(|e| Unmappable::new("body", e.to_string()))
}

#[inline(never)]
fn text_of(v: &mut Value, key: &str) -> Option<String> {
    match v.get_mut(key).map(Value::take) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn from_openai(mut v: Value) -> Result<Reply, Unmappable> {
    let usage = tokens(ClientApi::OpenaiChat, v.get("usage"));
    let id = text_of(&mut v, "id");
    let mut choice = match v.get_mut("choices").map(Value::take) {
        Some(Value::Array(choices)) => choices.into_iter().next().unwrap_or_default(),
        _ => return Err(Unmappable::new("choices", "the response has no choices")),
    };
    let stop = Stop::from_openai(choice.get("finish_reason").and_then(Value::as_str).unwrap_or(""));
    let mut message = choice.get_mut("message").map(Value::take).unwrap_or_default();
    let mut parts = Vec::new();
    for key in ["content", "refusal"] {
        if let Some(text) = text_of(&mut message, key).filter(|t| !t.is_empty()) {
            parts.push(OutPart::Text(text));
        }
    }
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls").map(Value::take) {
        for mut call in calls {
            let mut f = call.get_mut("function").map(Value::take).unwrap_or_default();
            parts.push(OutPart::Tool {
                id: text_of(&mut call, "id").unwrap_or_default(),
                name: text_of(&mut f, "name").unwrap_or_default(),
                args: text_of(&mut f, "arguments").unwrap_or_default(),
            });
        }
    }
    Ok(Reply { id, parts, stop, usage })
}

fn from_anthropic(mut v: Value) -> Result<Reply, Unmappable> {
    let usage = tokens(ClientApi::AnthropicMessages, v.get("usage"));
    let id = text_of(&mut v, "id");
    let stop = Stop::from_anthropic(v.get("stop_reason").and_then(Value::as_str).unwrap_or(""));
    let mut parts = Vec::new();
    if let Some(Value::Array(blocks)) = v.get_mut("content").map(Value::take) {
        for (i, mut b) in blocks.into_iter().enumerate() {
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => parts.push(OutPart::Text(text_of(&mut b, "text").unwrap_or_default())),
                "tool_use" => parts.push(OutPart::Tool {
                    id: text_of(&mut b, "id").unwrap_or_default(),
                    name: text_of(&mut b, "name").unwrap_or_default(),
                    args: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                }),
                // Thinking comes only when asked for, which the request translation refuses.
                "thinking" | "redacted_thinking" => {}
                other => return Err(Unmappable::new(format!("content[{i}].type"), format!("content block type `{other}` cannot be translated"))),
            }
        }
    }
    Ok(Reply { id, parts, stop, usage })
}

fn from_gemini(mut v: Value) -> Result<Reply, Unmappable> {
    let usage = tokens(ClientApi::Gemini, v.get("usageMetadata"));
    let id = text_of(&mut v, "responseId");
    let mut candidate = match v.get_mut("candidates").map(Value::take) {
        Some(Value::Array(c)) => c.into_iter().next().unwrap_or_default(),
        // A prompt blocked by safety filters has no candidates.
        _ => json!({"finishReason": "SAFETY"}),
    };
    let mut parts = Vec::new();
    if let Some(Value::Array(items)) = candidate.pointer_mut("/content/parts").map(Value::take) {
        for mut p in items {
            if let Some(text) = text_of(&mut p, "text") {
                // Thought summaries come only when asked for (never, through translation).
                if p.get("thought") != Some(&Value::Bool(true)) {
                    parts.push(OutPart::Text(text));
                }
            } else if let Some(mut call) = p.get_mut("functionCall").map(Value::take) {
                let n = parts.iter().filter(|p| matches!(p, OutPart::Tool { .. })).count();
                parts.push(OutPart::Tool {
                    id: text_of(&mut call, "id").unwrap_or_else(|| call_id(n)),
                    name: text_of(&mut call, "name").unwrap_or_default(),
                    args: call.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                });
            } else {
                return Err(Unmappable::new("candidates[0].content.parts", "only text and function calls can be translated"));
            }
        }
    }
    let called = parts.iter().any(|p| matches!(p, OutPart::Tool { .. }));
    let stop = Stop::from_gemini(candidate.get("finishReason").and_then(Value::as_str).unwrap_or(""), called);
    Ok(Reply { id, parts, stop, usage })
}

/// Tool arguments as the JSON object Anthropic and Gemini carry.
pub(super) fn args_object(args: &str) -> Result<Value, Unmappable> {
    match args.trim().is_empty() {
        true => Ok(json!({})),
        false => serde_json::from_str(args).map_err(|e| Unmappable::new("arguments", format!("tool call arguments are not valid JSON: {e}"))),
    }
}

fn to_openai(reply: Reply, model: &str) -> Value {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for part in reply.parts {
        match part {
            OutPart::Text(t) => text.get_or_insert_with(String::new).push_str(&t),
            OutPart::Tool { id, name, args } => {
                let function = obj([("name", name.into()), ("arguments", args.into())]);
                calls.push(obj([("id", id.into()), ("type", "function".into()), ("function", function)]));
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let choice = obj([("index", 0.into()), ("message", message.into()), ("finish_reason", reply.stop.openai().into()), ("logprobs", Value::Null)]);
    let mut out = obj([
        ("id", reply_id(ClientApi::OpenaiChat, reply.id.as_deref()).into()),
        ("object", "chat.completion".into()),
        ("created", 0.into()),
        ("model", model.into()),
        ("choices", vec![choice].into()),
    ]);
    add_usage(&mut out, "usage", ClientApi::OpenaiChat, reply.usage);
    out
}

#[inline(never)]
fn add_usage(out: &mut Value, key: &str, client: ClientApi, usage: Option<Tokens>) {
    if let (Some(map), Some(t)) = (out.as_object_mut(), usage) {
        map.insert(key.into(), usage_json(client, &t));
    }
}

/// A Responses API output item (also built by the stream translator for its `done` events).
pub(super) fn responses_item(part: &OutPart, item_id: &str) -> Value {
    match part {
        OutPart::Text(text) => json!({
            "type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }),
        OutPart::Tool { id, name, args } => json!({
            "type": "function_call", "id": item_id, "call_id": id, "name": name, "arguments": args, "status": "completed",
        }),
    }
}

/// The Responses API `response` object around finished output items.
pub(super) fn responses_object(id: &str, model: &str, output: Vec<Value>, stop: Option<Stop>, usage: Option<Tokens>) -> Value {
    let (status, incomplete) = stop.map_or(("in_progress", Value::Null), Stop::responses);
    let mut out = obj([
        ("id", id.into()),
        ("object", "response".into()),
        ("created_at", 0.into()),
        ("status", status.into()),
        ("model", model.into()),
        ("output", output.into()),
        ("incomplete_details", incomplete),
        ("error", Value::Null),
        ("parallel_tool_calls", true.into()),
        ("tool_choice", "auto".into()),
        ("tools", json!([])),
    ]);
    add_usage(&mut out, "usage", ClientApi::OpenaiResponses, usage);
    out
}

/// A Responses output item's id (the same in JSON and streams).
pub(super) fn responses_item_id(text: bool, output_index: usize) -> String {
    format!("{}_{output_index}", if text { "msg" } else { "fc" })
}

fn to_responses(reply: Reply, model: &str) -> Value {
    let id = |i, p: &OutPart| responses_item_id(matches!(p, OutPart::Text(_)), i);
    let output = reply.parts.iter().enumerate().map(|(i, p)| responses_item(p, &id(i, p))).collect();
    responses_object(&reply_id(ClientApi::OpenaiResponses, reply.id.as_deref()), model, output, Some(reply.stop), reply.usage)
}

fn to_anthropic(reply: Reply, model: &str) -> Result<Value, Unmappable> {
    let mut content = Vec::with_capacity(reply.parts.len());
    for part in reply.parts {
        content.push(match part {
            OutPart::Text(text) => obj([("type", "text".into()), ("text", text.into())]),
            OutPart::Tool { id, name, args } => obj([("type", "tool_use".into()), ("id", id.into()), ("name", name.into()), ("input", args_object(&args)?)]),
        });
    }
    let mut out = obj([
        ("id", reply_id(ClientApi::AnthropicMessages, reply.id.as_deref()).into()),
        ("type", "message".into()),
        ("role", "assistant".into()),
        ("model", model.into()),
        ("content", content.into()),
        ("stop_reason", reply.stop.anthropic().into()),
        ("stop_sequence", Value::Null),
    ]);
    add_usage(&mut out, "usage", ClientApi::AnthropicMessages, reply.usage);
    Ok(out)
}

/// A Gemini response chunk (or whole response) with one candidate.
pub(super) fn gemini_chunk(parts: Vec<Value>, stop: Option<Stop>, model: &str, id: String) -> Value {
    let mut candidate = obj([("content", obj([("role", "model".into()), ("parts", parts.into())])), ("index", 0.into())]);
    if let (Some(stop), Value::Object(c)) = (stop, &mut candidate) {
        c.insert("finishReason".into(), stop.gemini().into());
    }
    obj([("candidates", vec![candidate].into()), ("modelVersion", model.into()), ("responseId", id.into())])
}

/// One Gemini part from an output part.
pub(super) fn gemini_part(part: OutPart) -> Result<Value, Unmappable> {
    Ok(match part {
        OutPart::Text(text) => obj([("text", text.into())]),
        OutPart::Tool { name, args, .. } => obj([("functionCall", obj([("name", name.into()), ("args", args_object(&args)?)]))]),
    })
}

fn to_gemini(reply: Reply, model: &str) -> Result<Value, Unmappable> {
    let parts = reply.parts.into_iter().map(gemini_part).collect::<Result<Vec<_>, _>>()?;
    let mut out = gemini_chunk(parts, Some(reply.stop), model, reply_id(ClientApi::Gemini, reply.id.as_deref()));
    add_usage(&mut out, "usageMetadata", ClientApi::Gemini, reply.usage);
    Ok(out)
}
