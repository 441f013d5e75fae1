//! Whole (non-streamed) responses: the upstream's body → a neutral [`Reply`] → the client's
//! body; plus what streams share with them: stop reasons, usage and ids.

use super::out::{
    write_json, AnthropicMessage, Block, Candidate, ChatChoice, ChatCompletion, ChatMessage, FunctionCall, GeminiCall, GeminiChunk, GeminiContent,
    GeminiPart, Incomplete, Items, ResponsesObject, ToolCall, Usage,
};
use super::Unmappable;
use crate::api::ClientApi;
use crate::usage::{parse_usage, Tokens};
use serde_json::{json, Value};

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
    pub(super) fn responses(self) -> (&'static str, Option<Incomplete>) {
        match self {
            Stop::Length => ("incomplete", Some(Incomplete { reason: "max_output_tokens" })),
            Stop::Filter => ("incomplete", Some(Incomplete { reason: "content_filter" })),
            _ => ("completed", None),
        }
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
    let mut out = Vec::new();
    match client {
        ClientApi::OpenaiChat => to_openai(reply, client_model, &mut out),
        ClientApi::OpenaiResponses => to_responses(reply, client_model, &mut out),
        ClientApi::AnthropicMessages => to_anthropic(reply, client_model, &mut out)?,
        ClientApi::Gemini => to_gemini(reply, client_model, &mut out)?,
        ClientApi::OpenaiEmbeddings => return Err(Unmappable::new("api", "embeddings are not translated between APIs")),
    }
    Ok(out)
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

fn to_openai(reply: Reply, model: &str, out: &mut Vec<u8>) {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in &reply.parts {
        match part {
            OutPart::Text(t) => text.get_or_insert_with(String::new).push_str(t),
            OutPart::Tool { id, name, args } => tool_calls.push(ToolCall {
                function: FunctionCall { arguments: args, name: Some(name) },
                id: Some(id),
                index: None,
                kind: Some("function"),
            }),
        }
    }
    let message = ChatMessage { content: text, role: "assistant", tool_calls };
    let choice = ChatChoice { delta: None, finish_reason: Some(reply.stop.openai()), index: 0, logprobs: (), message: Some(message) };
    let id = reply_id(ClientApi::OpenaiChat, reply.id.as_deref());
    let usage = reply.usage.map(|t| Usage(ClientApi::OpenaiChat, t));
    write_json(out, &ChatCompletion { choices: vec![choice], created: 0, id: &id, model, object: "chat.completion", usage });
}

/// The Responses API `response` object around finished output items.
pub(super) fn responses_object<'a>(id: &'a str, model: &'a str, output: &'a [(OutPart, String)], stop: Option<Stop>, usage: Option<Tokens>) -> ResponsesObject<'a> {
    let (status, incomplete_details) = stop.map_or(("in_progress", None), Stop::responses);
    ResponsesObject {
        created_at: 0,
        error: (),
        id,
        incomplete_details,
        model,
        object: "response",
        output: Items(output),
        parallel_tool_calls: true,
        status,
        tool_choice: "auto",
        tools: [],
        usage: usage.map(|t| Usage(ClientApi::OpenaiResponses, t)),
    }
}

/// A Responses output item's id (the same in JSON and streams).
pub(super) fn responses_item_id(text: bool, output_index: usize) -> String {
    format!("{}_{output_index}", if text { "msg" } else { "fc" })
}

fn to_responses(reply: Reply, model: &str, out: &mut Vec<u8>) {
    let output: Vec<(OutPart, String)> = reply.parts.into_iter().enumerate().map(|(i, p)| {
        let id = responses_item_id(matches!(p, OutPart::Text(_)), i);
        (p, id)
    }).collect();
    let id = reply_id(ClientApi::OpenaiResponses, reply.id.as_deref());
    write_json(out, &responses_object(&id, model, &output, Some(reply.stop), reply.usage));
}

fn to_anthropic(reply: Reply, model: &str, out: &mut Vec<u8>) -> Result<(), Unmappable> {
    let mut content = Vec::with_capacity(reply.parts.len());
    for part in &reply.parts {
        content.push(match part {
            OutPart::Text(text) => Block::text(text),
            OutPart::Tool { id, name, args } => Block::tool_use(id, name, args_object(args)?),
        });
    }
    let id = reply_id(ClientApi::AnthropicMessages, reply.id.as_deref());
    let message = AnthropicMessage {
        content,
        id: &id,
        model,
        role: "assistant",
        stop_reason: Some(reply.stop.anthropic()),
        stop_sequence: (),
        kind: "message",
        usage: reply.usage.map(|t| Usage(ClientApi::AnthropicMessages, t)),
    };
    write_json(out, &message);
    Ok(())
}

/// A Gemini response chunk (or whole response) with one candidate.
pub(super) fn gemini_chunk<'a>(parts: Vec<GeminiPart>, stop: Option<Stop>, model: &'a str, id: &'a str, usage: Option<Tokens>) -> GeminiChunk<'a> {
    let candidate = Candidate { content: GeminiContent { parts, role: "model" }, finish_reason: stop.map(Stop::gemini), index: 0 };
    GeminiChunk { candidates: [candidate], model_version: model, response_id: id, usage_metadata: usage.map(|t| Usage(ClientApi::Gemini, t)) }
}

/// One Gemini part from an output part.
pub(super) fn gemini_part(part: OutPart) -> Result<GeminiPart, Unmappable> {
    Ok(match part {
        OutPart::Text(text) => GeminiPart { function_call: None, text: Some(text) },
        OutPart::Tool { name, args, .. } => GeminiPart { function_call: Some(GeminiCall { args: args_object(&args)?, name }), text: None },
    })
}

fn to_gemini(reply: Reply, model: &str, out: &mut Vec<u8>) -> Result<(), Unmappable> {
    let parts = reply.parts.into_iter().map(gemini_part).collect::<Result<Vec<_>, _>>()?;
    let id = reply_id(ClientApi::Gemini, reply.id.as_deref());
    write_json(out, &gemini_chunk(parts, Some(reply.stop), model, &id, reply.usage));
    Ok(())
}
