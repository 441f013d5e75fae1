//! Requests: the client's body → a neutral conversation ([`Chat`]) → the upstream's body.
//! Reading is strict: every member is either mapped, deliberately dropped (listed in the
//! module docs), or refused naming it; so nothing the client asked for vanishes silently.

use super::{obj, RequestOptions, TranslatedRequest, Unmappable};
use crate::api::{ClientApi, GeminiAction, GeminiPath};
use serde_json::{json, Map, Value};

type Res<T> = Result<T, Unmappable>;
type Object = Map<String, Value>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

enum Part {
    Text(String),
    /// `mime` is known for inline data, guessed (or refused) for URLs when a target needs it.
    Image { mime: Option<String>, source: Source },
    ToolCall { id: String, name: String, args: Value },
    /// `field` names the client's member, for a refusal raised only when writing the target.
    ToolResult { id: String, content: Vec<Part>, is_error: bool, field: String },
}

enum Source {
    Base64(String),
    Url(String),
}

struct Tool {
    name: String,
    description: Option<Value>,
    schema: Option<Value>,
}

enum Choice {
    Auto,
    None,
    Any,
    Named(String),
}

/// The neutral conversation. A target-only limitation is refused when writing the target, so
/// the fields that can hit one keep the client's member name.
#[derive(Default)]
struct Chat {
    system: Vec<String>,
    messages: Vec<(Role, Vec<Part>)>,
    tools: Vec<Tool>,
    choice: Option<Choice>,
    /// `Some(false)`: one tool call at a time (with the client's field name).
    parallel: Option<(bool, &'static str)>,
    max_tokens: Option<u64>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    top_k: Option<(Value, &'static str)>,
    stop: Vec<String>,
}

impl Chat {
    /// Appends to the previous message when it has the same role: Anthropic wants every
    /// result of an assistant turn in the one next user message, Gemini alternates roles.
    fn push(&mut self, role: Role, parts: Vec<Part>) {
        match self.messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ if parts.is_empty() => {}
            _ => self.messages.push((role, parts)),
        }
    }
}

pub(super) fn request(
    client: ClientApi,
    upstream: ClientApi,
    body: &[u8],
    stream: bool,
    upstream_model: &str,
    opts: &RequestOptions,
) -> Res<TranslatedRequest> {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(Unmappable::new("body", "the request body must be a JSON object")),
        Err(e) => return Err(Unmappable::new("body", format!("the request body is not valid JSON: {e}"))),
    };
    let chat = match client {
        ClientApi::OpenaiChat => from_openai_chat(body)?,
        ClientApi::OpenaiResponses => from_responses(body)?,
        ClientApi::AnthropicMessages => from_anthropic(body)?,
        ClientApi::Gemini => from_gemini(body)?,
        ClientApi::OpenaiEmbeddings => return Err(Unmappable::new("api", "embeddings are not translated between APIs")),
    };
    let (value, path) = match upstream {
        ClientApi::OpenaiChat => (to_openai(chat, upstream_model, stream, opts.include_usage)?, "/v1/chat/completions".to_string()),
        ClientApi::AnthropicMessages => (to_anthropic(chat, upstream_model, stream, opts.default_max_tokens)?, "/v1/messages".to_string()),
        ClientApi::Gemini => {
            let (action, query) = match stream {
                true => (GeminiAction::Stream, vec!["alt=sse".to_string()]),
                false => (GeminiAction::Generate, Vec::new()),
            };
            let path = GeminiPath { version: "v1beta".into(), model: String::new(), action, query, key: None };
            (to_gemini(chat)?, path.to_path(upstream_model))
        }
        ClientApi::OpenaiResponses => return Err(super::responses_upstream()),
        ClientApi::OpenaiEmbeddings => return Err(Unmappable::new("api", "embeddings are not translated between APIs")),
    };
    let body = serde_json::to_vec(&value).map_err(|e| Unmappable::new("body", e.to_string()))?;
    Ok(TranslatedRequest { body, path, stream })
}

// ---- reading helpers -------------------------------------------------------------------

/// A member, `null` counting as absent (clients send explicit nulls for defaults).
#[inline(never)]
fn take(map: &mut Object, key: &str) -> Option<Value> {
    map.remove(key).filter(|v| !v.is_null())
}

fn kind(what: &str) -> String {
    format!("must be {what}")
}

#[inline(never)]
fn string(v: Value, field: &str) -> Res<String> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(Unmappable::new(field, kind("a string"))),
    }
}

#[inline(never)]
fn array(v: Value, field: &str) -> Res<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(Unmappable::new(field, kind("an array"))),
    }
}

#[inline(never)]
fn object(v: Value, field: &str) -> Res<Object> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(Unmappable::new(field, kind("an object"))),
    }
}

#[inline(never)]
fn number(v: Value, field: &str) -> Res<Value> {
    match v.is_number() {
        true => Ok(v),
        false => Err(Unmappable::new(field, kind("a number"))),
    }
}

#[inline(never)]
fn count(v: Value, field: &str) -> Res<u64> {
    v.as_u64().ok_or_else(|| Unmappable::new(field, kind("a non-negative integer")))
}

#[inline(never)]
fn boolean(v: Value, field: &str) -> Res<bool> {
    v.as_bool().ok_or_else(|| Unmappable::new(field, kind("a boolean")))
}

/// A string or an array of strings (stop sequences).
#[inline(never)]
fn strings(v: Value, field: &str) -> Res<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s]),
        v => array(v, field)?.into_iter().map(|s| string(s, field)).collect(),
    }
}

#[inline(never)]
fn opt<T>(map: &mut Object, key: &str, field: &str, read: fn(Value, &str) -> Res<T>) -> Res<Option<T>> {
    take(map, key).map(|v| read(v, field)).transpose()
}

/// A member this module does not map: refused by name (see the module docs).
#[inline(never)]
fn refuse_rest(map: Object, path: &str) -> Res<()> {
    match map.into_iter().find(|(_, v)| !v.is_null()) {
        Some((key, _)) => Err(Unmappable::new(join(path, &key), "cannot be translated to another provider's API")),
        None => Ok(()),
    }
}

#[inline(never)]
fn join(path: &str, key: &str) -> String {
    match path.is_empty() {
        true => key.to_string(),
        false => format!("{path}.{key}"),
    }
}

fn drop_keys(map: &mut Object, keys: &[&str]) {
    for key in keys {
        map.remove(*key);
    }
}

/// A required `value` must equal `expected` (e.g. `n` = 1), else it is refused.
#[inline(never)]
fn only(value: Option<Value>, expected: Value, field: &str, message: &str) -> Res<()> {
    match value {
        Some(v) if v != expected => Err(Unmappable::new(field, message)),
        _ => Ok(()),
    }
}

#[inline(never)]
fn text_part(s: String) -> Vec<Part> {
    match s.is_empty() {
        // Anthropic refuses empty text blocks; an empty string says nothing anyway.
        true => Vec::new(),
        false => vec![Part::Text(s)],
    }
}

/// The text of parts that may only be text (system prompts), joined by newlines.
#[inline(never)]
fn only_text(parts: Vec<Part>, field: &str) -> Res<String> {
    let mut out = String::new();
    for part in parts {
        let Part::Text(t) = part else {
            return Err(Unmappable::new(field, "only text can be translated here"));
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&t);
    }
    Ok(out)
}

/// `data:<mime>;base64,<data>` becomes inline data (the string reused, not copied), any other
/// URL stays a URL.
#[inline(never)]
fn image_url(mut url: String, field: &str) -> Res<Part> {
    if !url.starts_with("data:") {
        return Ok(Part::Image { mime: None, source: Source::Url(url) });
    }
    let Some((meta, _)) = url.split_once(',') else {
        return Err(Unmappable::new(field, "a data: URL without data"));
    };
    let Some(mime) = meta.strip_prefix("data:").and_then(|m| m.strip_suffix(";base64")) else {
        return Err(Unmappable::new(field, "only base64 data: URLs can be translated"));
    };
    let mime = mime.to_string();
    let cut = meta.len() + 1;
    url.replace_range(..cut, "");
    Ok(Part::Image { mime: Some(mime), source: Source::Base64(url) })
}

#[inline(never)]
fn parse_arguments(arguments: &str, field: &str) -> Res<Value> {
    match arguments.trim().is_empty() {
        true => Ok(json!({})),
        false => serde_json::from_str(arguments).map_err(|e| Unmappable::new(field, format!("not valid JSON: {e}"))),
    }
}

// ---- OpenAI Chat Completions -----------------------------------------------------------

fn from_openai_chat(mut body: Object) -> Res<Chat> {
    let mut chat = Chat::default();
    // The model and stream flag come from the caller; the rest are client-side or
    // bookkeeping hints with no equivalent (documented as dropped).
    drop_keys(&mut body, &["model", "stream", "stream_options", "user", "metadata", "store", "service_tier"]);
    for (i, m) in opt(&mut body, "messages", "messages", array)?.unwrap_or_default().into_iter().enumerate() {
        openai_message(&mut chat, m, &format!("messages[{i}]"))?;
    }
    let newer = opt(&mut body, "max_completion_tokens", "max_completion_tokens", count)?;
    chat.max_tokens = newer.or(opt(&mut body, "max_tokens", "max_tokens", count)?);
    chat.temperature = opt(&mut body, "temperature", "temperature", number)?;
    chat.top_p = opt(&mut body, "top_p", "top_p", number)?;
    chat.stop = opt(&mut body, "stop", "stop", strings)?.unwrap_or_default();
    only(take(&mut body, "n"), json!(1), "n", "only one choice (n = 1) can be translated")?;
    only(take(&mut body, "logprobs"), json!(false), "logprobs", "log probabilities cannot be translated")?;
    let text_format = take(&mut body, "response_format").map(|f| f.get("type") == Some(&json!("text")));
    only(text_format.map(Value::Bool), json!(true), "response_format", "only the text response format can be translated")?;
    for (i, t) in opt(&mut body, "tools", "tools", array)?.unwrap_or_default().into_iter().enumerate() {
        let field = format!("tools[{i}]");
        let mut t = object(t, &field)?;
        only(take(&mut t, "type"), json!("function"), &join(&field, "type"), "only function tools can be translated")?;
        let f = object(take(&mut t, "function").unwrap_or_default(), &join(&field, "function"))?;
        chat.tools.push(function_tool(f, &join(&field, "function"), "parameters")?);
        refuse_rest(t, &field)?;
    }
    chat.choice = take(&mut body, "tool_choice").map(openai_choice).transpose()?;
    chat.parallel = opt(&mut body, "parallel_tool_calls", "parallel_tool_calls", boolean)?.map(|p| (p, "parallel_tool_calls"));
    refuse_rest(body, "")?;
    Ok(chat)
}

/// `{name, description, <schema key>}` (OpenAI's function object, a Responses tool).
fn function_tool(mut f: Object, field: &str, schema_key: &str) -> Res<Tool> {
    let name = string(take(&mut f, "name").unwrap_or_default(), &join(field, "name"))?;
    let description = take(&mut f, "description");
    let schema = take(&mut f, schema_key);
    // `strict` asks OpenAI for exact schema adherence: no other provider has it.
    f.remove("strict");
    refuse_rest(f, field)?;
    Ok(Tool { name, description, schema })
}

/// `"auto" | "none" | "required" | {type: function, function: {name}}` (Responses: `{type, name}`).
fn openai_choice(v: Value) -> Res<Choice> {
    let field = "tool_choice";
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Choice::Auto),
            "none" => Ok(Choice::None),
            "required" => Ok(Choice::Any),
            _ => Err(Unmappable::new(field, format!("`{s}` cannot be translated"))),
        },
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name")).or_else(|| o.get("name"));
            match (o.get("type").and_then(Value::as_str), name.and_then(Value::as_str)) {
                (Some("function"), Some(name)) => Ok(Choice::Named(name.to_string())),
                _ => Err(Unmappable::new(field, "only a named function can be translated")),
            }
        }
        _ => Err(Unmappable::new(field, kind("a string or an object"))),
    }
}

fn openai_message(chat: &mut Chat, m: Value, path: &str) -> Res<()> {
    let mut m = object(m, path)?;
    let role = opt(&mut m, "role", &join(path, "role"), string)?.unwrap_or_default();
    // A participant name: no equivalent elsewhere, and no effect on the answer's format.
    m.remove("name");
    let content = openai_parts(take(&mut m, "content"), path)?;
    match role.as_str() {
        "system" | "developer" => chat.system.push(only_text(content, &join(path, "content"))?),
        "user" => chat.push(Role::User, content),
        "assistant" => {
            let mut parts = content;
            // The assistant's own earlier refusal text is part of the conversation.
            if let Some(refusal) = opt(&mut m, "refusal", &join(path, "refusal"), string)? {
                parts.extend(text_part(refusal));
            }
            for (j, call) in opt(&mut m, "tool_calls", &join(path, "tool_calls"), array)?.unwrap_or_default().into_iter().enumerate() {
                let field = format!("{path}.tool_calls[{j}]");
                let mut call = object(call, &field)?;
                let id = string(take(&mut call, "id").unwrap_or_default(), &join(&field, "id"))?;
                only(take(&mut call, "type"), json!("function"), &join(&field, "type"), "only function calls can be translated")?;
                let mut f = object(take(&mut call, "function").unwrap_or_default(), &join(&field, "function"))?;
                let name = string(take(&mut f, "name").unwrap_or_default(), &join(&field, "function.name"))?;
                let arguments = opt(&mut f, "arguments", &join(&field, "function.arguments"), string)?.unwrap_or_default();
                let args = parse_arguments(&arguments, &join(&field, "function.arguments"))?;
                parts.push(Part::ToolCall { id, name, args });
            }
            chat.push(Role::Assistant, parts);
        }
        "tool" => {
            let field = join(path, "tool_call_id");
            let id = string(take(&mut m, "tool_call_id").unwrap_or_default(), &field)?;
            chat.push(Role::User, vec![Part::ToolResult { id, content, is_error: false, field }]);
        }
        other => return Err(Unmappable::new(join(path, "role"), format!("role `{other}` cannot be translated"))),
    }
    refuse_rest(m, path)
}

fn openai_parts(content: Option<Value>, path: &str) -> Res<Vec<Part>> {
    let items = match content {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(text_part(s)),
        Some(v) => array(v, &join(path, "content"))?,
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, item) in items.into_iter().enumerate() {
        let field = format!("{path}.content[{j}]");
        let mut item = object(item, &field)?;
        let kind = opt(&mut item, "type", &join(&field, "type"), string)?.unwrap_or_default();
        match kind.as_str() {
            "text" | "input_text" | "output_text" => parts.extend(text_part(string(take(&mut item, "text").unwrap_or_default(), &join(&field, "text"))?)),
            "refusal" => parts.extend(text_part(string(take(&mut item, "refusal").unwrap_or_default(), &join(&field, "refusal"))?)),
            // `detail` is a resolution hint only OpenAI has (dropped).
            "image_url" => {
                let url = match take(&mut item, "image_url") {
                    Some(Value::Object(mut o)) => take(&mut o, "url").unwrap_or_default(),
                    other => other.unwrap_or_default(),
                };
                parts.push(image_url(string(url, &join(&field, "image_url.url"))?, &join(&field, "image_url.url"))?);
            }
            "input_image" => {
                let url = string(take(&mut item, "image_url").unwrap_or_default(), &join(&field, "image_url"))?;
                parts.push(image_url(url, &join(&field, "image_url"))?);
            }
            other => return Err(Unmappable::new(join(&field, "type"), format!("content part type `{other}` cannot be translated"))),
        }
    }
    Ok(parts)
}

// ---- OpenAI Responses ---------------------------------------------------------------------

fn from_responses(mut body: Object) -> Res<Chat> {
    let mut chat = Chat::default();
    // `store` (keep the response on OpenAI's side) has no meaning elsewhere; the rest as for Chat.
    drop_keys(&mut body, &["model", "stream", "stream_options", "user", "metadata", "store", "service_tier"]);
    if let Some(instructions) = opt(&mut body, "instructions", "instructions", string)? {
        chat.system.push(instructions);
    }
    match take(&mut body, "input") {
        Some(Value::String(s)) => chat.push(Role::User, text_part(s)),
        Some(v) => {
            for (i, item) in array(v, "input")?.into_iter().enumerate() {
                responses_item(&mut chat, item, &format!("input[{i}]"))?;
            }
        }
        None => {}
    }
    chat.max_tokens = opt(&mut body, "max_output_tokens", "max_output_tokens", count)?;
    chat.temperature = opt(&mut body, "temperature", "temperature", number)?;
    chat.top_p = opt(&mut body, "top_p", "top_p", number)?;
    only(take(&mut body, "truncation"), json!("disabled"), "truncation", "only `disabled` can be translated")?;
    let text_format = take(&mut body, "text").map(|t| !matches!(t.pointer("/format/type"), Some(k) if k != "text"));
    only(text_format.map(Value::Bool), json!(true), "text.format", "only the text format can be translated")?;
    only(take(&mut body, "include").filter(|i| i.as_array().is_some_and(|a| !a.is_empty())), json!(null), "include", "cannot be translated")?;
    for (i, t) in opt(&mut body, "tools", "tools", array)?.unwrap_or_default().into_iter().enumerate() {
        let field = format!("tools[{i}]");
        let mut t = object(t, &field)?;
        only(take(&mut t, "type"), json!("function"), &join(&field, "type"), "only function tools can be translated")?;
        chat.tools.push(function_tool(t, &field, "parameters")?);
    }
    chat.choice = take(&mut body, "tool_choice").map(openai_choice).transpose()?;
    chat.parallel = opt(&mut body, "parallel_tool_calls", "parallel_tool_calls", boolean)?.map(|p| (p, "parallel_tool_calls"));
    refuse_rest(body, "")?;
    Ok(chat)
}

fn responses_item(chat: &mut Chat, item: Value, path: &str) -> Res<()> {
    let mut item = object(item, path)?;
    let kind = opt(&mut item, "type", &join(path, "type"), string)?.unwrap_or_else(|| "message".into());
    // Item ids and statuses are OpenAI's bookkeeping of earlier output.
    drop_keys(&mut item, &["id", "status"]);
    match kind.as_str() {
        "message" => {
            let role = opt(&mut item, "role", &join(path, "role"), string)?.unwrap_or_default();
            let content = openai_parts(take(&mut item, "content"), path)?;
            match role.as_str() {
                "system" | "developer" => chat.system.push(only_text(content, &join(path, "content"))?),
                "user" => chat.push(Role::User, content),
                "assistant" => chat.push(Role::Assistant, content),
                other => return Err(Unmappable::new(join(path, "role"), format!("role `{other}` cannot be translated"))),
            }
        }
        "function_call" => {
            let id = string(take(&mut item, "call_id").unwrap_or_default(), &join(path, "call_id"))?;
            let name = string(take(&mut item, "name").unwrap_or_default(), &join(path, "name"))?;
            let arguments = opt(&mut item, "arguments", &join(path, "arguments"), string)?.unwrap_or_default();
            let args = parse_arguments(&arguments, &join(path, "arguments"))?;
            chat.push(Role::Assistant, vec![Part::ToolCall { id, name, args }]);
        }
        "function_call_output" => {
            let field = join(path, "call_id");
            let id = string(take(&mut item, "call_id").unwrap_or_default(), &field)?;
            let content = match take(&mut item, "output") {
                Some(Value::String(s)) => text_part(s),
                other => openai_parts(other, path)?,
            };
            chat.push(Role::User, vec![Part::ToolResult { id, content, is_error: false, field }]);
        }
        other => return Err(Unmappable::new(join(path, "type"), format!("input item type `{other}` cannot be translated"))),
    }
    refuse_rest(item, path)
}

// ---- Anthropic Messages ----------------------------------------------------------------

fn from_anthropic(mut body: Object) -> Res<Chat> {
    let mut chat = Chat::default();
    // `metadata.user_id` is an abuse-tracking id and `service_tier` a capacity hint: dropped.
    drop_keys(&mut body, &["model", "stream", "metadata", "service_tier"]);
    match take(&mut body, "system") {
        Some(Value::String(s)) => chat.system.push(s),
        Some(v) => chat.system.push(only_text(anthropic_blocks(v, "system")?, "system")?),
        None => {}
    }
    for (i, m) in opt(&mut body, "messages", "messages", array)?.unwrap_or_default().into_iter().enumerate() {
        let path = format!("messages[{i}]");
        let mut m = object(m, &path)?;
        let role = match opt(&mut m, "role", &join(&path, "role"), string)?.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(Unmappable::new(join(&path, "role"), "must be `user` or `assistant`")),
        };
        let content = anthropic_blocks(take(&mut m, "content").unwrap_or_default(), &join(&path, "content"))?;
        chat.push(role, content);
        refuse_rest(m, &path)?;
    }
    chat.max_tokens = opt(&mut body, "max_tokens", "max_tokens", count)?;
    chat.temperature = opt(&mut body, "temperature", "temperature", number)?;
    chat.top_p = opt(&mut body, "top_p", "top_p", number)?;
    chat.top_k = opt(&mut body, "top_k", "top_k", number)?.map(|k| (k, "top_k"));
    chat.stop = opt(&mut body, "stop_sequences", "stop_sequences", strings)?.unwrap_or_default();
    let thinking_off = take(&mut body, "thinking").map(|t| t.get("type") == Some(&json!("disabled")));
    only(thinking_off.map(Value::Bool), json!(true), "thinking", "extended thinking cannot be translated")?;
    for (i, t) in opt(&mut body, "tools", "tools", array)?.unwrap_or_default().into_iter().enumerate() {
        let field = format!("tools[{i}]");
        let mut t = object(t, &field)?;
        // Server tools (`web_search_…`, `bash_…`) run at Anthropic: only custom tools map.
        only(take(&mut t, "type"), json!("custom"), &join(&field, "type"), "only custom (function) tools can be translated")?;
        t.remove("cache_control");
        chat.tools.push(function_tool(t, &field, "input_schema")?);
    }
    if let Some(choice) = opt(&mut body, "tool_choice", "tool_choice", object)? {
        anthropic_choice(&mut chat, choice)?;
    }
    refuse_rest(body, "")?;
    Ok(chat)
}

fn anthropic_choice(chat: &mut Chat, mut c: Object) -> Res<()> {
    let field = "tool_choice";
    chat.choice = Some(match opt(&mut c, "type", "tool_choice.type", string)?.as_deref() {
        Some("auto") => Choice::Auto,
        Some("any") => Choice::Any,
        Some("none") => Choice::None,
        Some("tool") => Choice::Named(string(take(&mut c, "name").unwrap_or_default(), "tool_choice.name")?),
        _ => return Err(Unmappable::new("tool_choice.type", "must be auto, any, tool or none")),
    });
    let disable = opt(&mut c, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use", boolean)?;
    chat.parallel = disable.map(|d| (!d, "tool_choice.disable_parallel_tool_use"));
    refuse_rest(c, field)
}

fn anthropic_blocks(content: Value, path: &str) -> Res<Vec<Part>> {
    let blocks = match content {
        Value::String(s) => return Ok(text_part(s)),
        v => array(v, path)?,
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.into_iter().enumerate() {
        let field = format!("{path}[{j}]");
        let mut b = object(block, &field)?;
        // Prompt-caching breakpoints: the other providers cache on their own (dropped).
        b.remove("cache_control");
        let kind = opt(&mut b, "type", &join(&field, "type"), string)?.unwrap_or_default();
        match kind.as_str() {
            "text" => {
                // Citations of an earlier answer: references, not content (dropped).
                b.remove("citations");
                parts.extend(text_part(string(take(&mut b, "text").unwrap_or_default(), &join(&field, "text"))?));
            }
            "image" => {
                let source_field = join(&field, "source");
                let mut source = object(take(&mut b, "source").unwrap_or_default(), &source_field)?;
                let image = match opt(&mut source, "type", &join(&source_field, "type"), string)?.as_deref() {
                    Some("base64") => Part::Image {
                        mime: opt(&mut source, "media_type", &join(&source_field, "media_type"), string)?,
                        source: Source::Base64(string(take(&mut source, "data").unwrap_or_default(), &join(&source_field, "data"))?),
                    },
                    Some("url") => Part::Image {
                        mime: None,
                        source: Source::Url(string(take(&mut source, "url").unwrap_or_default(), &join(&source_field, "url"))?),
                    },
                    _ => return Err(Unmappable::new(join(&source_field, "type"), "only base64 and url image sources can be translated")),
                };
                refuse_rest(source, &source_field)?;
                parts.push(image);
            }
            "tool_use" => {
                let id = string(take(&mut b, "id").unwrap_or_default(), &join(&field, "id"))?;
                let name = string(take(&mut b, "name").unwrap_or_default(), &join(&field, "name"))?;
                let args = take(&mut b, "input").unwrap_or_else(|| json!({}));
                parts.push(Part::ToolCall { id, name, args });
            }
            "tool_result" => {
                let id_field = join(&field, "tool_use_id");
                let id = string(take(&mut b, "tool_use_id").unwrap_or_default(), &id_field)?;
                let content = match take(&mut b, "content") {
                    Some(c) => anthropic_blocks(c, &join(&field, "content"))?,
                    None => Vec::new(),
                };
                let is_error = opt(&mut b, "is_error", &join(&field, "is_error"), boolean)?.unwrap_or(false);
                parts.push(Part::ToolResult { id, content, is_error, field: id_field });
            }
            other => return Err(Unmappable::new(join(&field, "type"), format!("content block type `{other}` cannot be translated"))),
        }
        refuse_rest(b, &field)?;
    }
    Ok(parts)
}

// ---- Gemini -------------------------------------------------------------------------------

/// Gemini's JSON accepts proto field names too (`generation_config`): read them as lowerCamel.
fn camel(map: Object) -> Object {
    map.into_iter()
        .map(|(k, v)| match k.contains('_') {
            false => (k, v),
            true => {
                let mut out = String::with_capacity(k.len());
                let mut upper = false;
                for c in k.chars() {
                    match (c, upper) {
                        ('_', _) => upper = true,
                        (c, true) => {
                            out.extend(c.to_uppercase());
                            upper = false;
                        }
                        (c, false) => out.push(c),
                    }
                }
                (out, v)
            }
        })
        .collect()
}

fn gemini_object(v: Value, field: &str) -> Res<Object> {
    object(v, field).map(camel)
}

fn from_gemini(body: Object) -> Res<Chat> {
    let mut body = camel(body);
    let mut chat = Chat::default();
    // Some clients repeat the path's model in the body; `labels` are billing tags (dropped).
    drop_keys(&mut body, &["model", "labels"]);
    let mut calls = Calls::default();
    if let Some(mut system) = opt(&mut body, "systemInstruction", "systemInstruction", gemini_object)? {
        system.remove("role");
        let parts = gemini_parts(system, "systemInstruction", &mut calls)?;
        chat.system.push(only_text(parts, "systemInstruction")?);
    }
    for (i, c) in opt(&mut body, "contents", "contents", array)?.unwrap_or_default().into_iter().enumerate() {
        let path = format!("contents[{i}]");
        let mut c = gemini_object(c, &path)?;
        let role = match opt(&mut c, "role", &join(&path, "role"), string)?.as_deref() {
            None | Some("user" | "function") => Role::User,
            Some("model") => Role::Assistant,
            Some(other) => return Err(Unmappable::new(join(&path, "role"), format!("role `{other}` cannot be translated"))),
        };
        let parts = gemini_parts(c, &path, &mut calls)?;
        chat.push(role, parts);
    }
    if let Some(config) = opt(&mut body, "generationConfig", "generationConfig", gemini_object)? {
        generation_config(&mut chat, config)?;
    }
    for (i, t) in opt(&mut body, "tools", "tools", array)?.unwrap_or_default().into_iter().enumerate() {
        let field = format!("tools[{i}]");
        let mut t = gemini_object(t, &field)?;
        for (j, f) in opt(&mut t, "functionDeclarations", &join(&field, "functionDeclarations"), array)?.unwrap_or_default().into_iter().enumerate() {
            let field = format!("{field}.functionDeclarations[{j}]");
            let mut f = gemini_object(f, &field)?;
            // The OpenAPI-subset `parameters` spell types in capitals; JSON Schema wants them lower.
            let schema = match take(&mut f, "parametersJsonSchema") {
                Some(s) => Some(s),
                None => take(&mut f, "parameters").map(lowercase_types),
            };
            f.insert("parameters".into(), schema.unwrap_or_default());
            chat.tools.push(function_tool(f, &field, "parameters")?);
        }
        // googleSearch, codeExecution, ...: Google's own tools.
        refuse_rest(t, &field)?;
    }
    if let Some(mut config) = opt(&mut body, "toolConfig", "toolConfig", gemini_object)? {
        if let Some(f) = opt(&mut config, "functionCallingConfig", "toolConfig.functionCallingConfig", gemini_object)? {
            chat.choice = Some(gemini_choice(f)?);
        }
        refuse_rest(config, "toolConfig")?;
    }
    refuse_rest(body, "")?;
    Ok(chat)
}

fn lowercase_types(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match (k.as_str(), v) {
                        ("type", Value::String(t)) => *t = t.to_lowercase(),
                        (_, v) => walk(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

fn gemini_choice(mut f: Object) -> Res<Choice> {
    let field = "toolConfig.functionCallingConfig";
    let mode = opt(&mut f, "mode", &join(field, "mode"), string)?.unwrap_or_else(|| "AUTO".into());
    let names = opt(&mut f, "allowedFunctionNames", &join(field, "allowedFunctionNames"), strings)?.unwrap_or_default();
    refuse_rest(f, field)?;
    let mut names = names.into_iter();
    match (mode.as_str(), names.next(), names.next()) {
        ("AUTO" | "MODE_UNSPECIFIED", None, _) => Ok(Choice::Auto),
        ("NONE", None, _) => Ok(Choice::None),
        ("ANY", None, _) => Ok(Choice::Any),
        ("ANY", Some(name), None) => Ok(Choice::Named(name)),
        _ => Err(Unmappable::new(field, "only AUTO, NONE, ANY or ANY with one allowed function can be translated")),
    }
}

fn generation_config(chat: &mut Chat, mut c: Object) -> Res<()> {
    let field = "generationConfig";
    chat.max_tokens = opt(&mut c, "maxOutputTokens", &join(field, "maxOutputTokens"), count)?;
    chat.temperature = opt(&mut c, "temperature", &join(field, "temperature"), number)?;
    chat.top_p = opt(&mut c, "topP", &join(field, "topP"), number)?;
    chat.top_k = opt(&mut c, "topK", &join(field, "topK"), number)?.map(|k| (k, "generationConfig.topK"));
    chat.stop = opt(&mut c, "stopSequences", &join(field, "stopSequences"), strings)?.unwrap_or_default();
    only(take(&mut c, "candidateCount"), json!(1), &join(field, "candidateCount"), "only one candidate can be translated")?;
    only(take(&mut c, "responseMimeType"), json!("text/plain"), &join(field, "responseMimeType"), "only text/plain can be translated")?;
    refuse_rest(c, field)
}

/// Gemini's function calls so far: calls without an id get `call_<n>` (the other APIs need
/// one), and a `functionResponse`, which names only its function, takes the id of the oldest
/// unanswered call of that name.
#[derive(Default)]
struct Calls {
    /// Unanswered calls: (name, id).
    open: Vec<(String, String)>,
    made: usize,
}

/// The parts of one Gemini content.
fn gemini_parts(mut content: Object, path: &str, calls: &mut Calls) -> Res<Vec<Part>> {
    let items = opt(&mut content, "parts", &join(path, "parts"), array)?.unwrap_or_default();
    refuse_rest(content, path)?;
    let mut parts = Vec::with_capacity(items.len());
    for (j, p) in items.into_iter().enumerate() {
        let field = format!("{path}.parts[{j}]");
        let mut p = gemini_object(p, &field)?;
        // A thought signature only means something to Gemini itself.
        p.remove("thoughtSignature");
        if opt(&mut p, "thought", &join(&field, "thought"), boolean)? == Some(true) {
            // The model's earlier thoughts: Gemini-only, not part of the answer.
            continue;
        }
        if let Some(text) = opt(&mut p, "text", &join(&field, "text"), string)? {
            parts.extend(text_part(text));
        } else if let Some(mut data) = opt(&mut p, "inlineData", &join(&field, "inlineData"), gemini_object)? {
            let data_field = join(&field, "inlineData");
            let mime = opt(&mut data, "mimeType", &join(&data_field, "mimeType"), string)?;
            let bytes = string(take(&mut data, "data").unwrap_or_default(), &join(&data_field, "data"))?;
            parts.push(image_part(mime, Source::Base64(bytes), &data_field)?);
            refuse_rest(data, &data_field)?;
        } else if let Some(mut file) = opt(&mut p, "fileData", &join(&field, "fileData"), gemini_object)? {
            let file_field = join(&field, "fileData");
            let mime = opt(&mut file, "mimeType", &join(&file_field, "mimeType"), string)?;
            let uri = string(take(&mut file, "fileUri").unwrap_or_default(), &join(&file_field, "fileUri"))?;
            parts.push(image_part(mime, Source::Url(uri), &file_field)?);
            refuse_rest(file, &file_field)?;
        } else if let Some(mut call) = opt(&mut p, "functionCall", &join(&field, "functionCall"), gemini_object)? {
            let name = string(take(&mut call, "name").unwrap_or_default(), &join(&field, "functionCall.name"))?;
            let id = opt(&mut call, "id", &join(&field, "functionCall.id"), string)?;
            let id = id.unwrap_or_else(|| format!("call_{}", calls.made));
            calls.made += 1;
            calls.open.push((name.clone(), id.clone()));
            let args = take(&mut call, "args").unwrap_or_else(|| json!({}));
            parts.push(Part::ToolCall { id, name, args });
            refuse_rest(call, &join(&field, "functionCall"))?;
        } else if let Some(mut response) = opt(&mut p, "functionResponse", &join(&field, "functionResponse"), gemini_object)? {
            let response_field = join(&field, "functionResponse");
            let name = string(take(&mut response, "name").unwrap_or_default(), &join(&response_field, "name"))?;
            let given = opt(&mut response, "id", &join(&response_field, "id"), string)?;
            let position = calls.open.iter().position(|(n, id)| given.as_ref().map_or(*n == name, |g| g == id));
            let Some((_, id)) = position.map(|i| calls.open.remove(i)) else {
                return Err(Unmappable::new(response_field, format!("no earlier functionCall of `{name}` to answer")));
            };
            let result = take(&mut response, "response").unwrap_or_else(|| json!({}));
            let content = text_part(serde_json::to_string(&result).unwrap_or_default());
            parts.push(Part::ToolResult { id, content, is_error: false, field: response_field.clone() });
            refuse_rest(response, &response_field)?;
        } else {
            // executableCode, videoMetadata, ...: named by `refuse_rest`.
            refuse_rest(p, &field)?;
            return Err(Unmappable::new(field, "an empty part cannot be translated"));
        }
        refuse_rest(p, &field)?;
    }
    Ok(parts)
}

/// Only images translate (the other providers take documents differently, or not at all).
fn image_part(mime: Option<String>, source: Source, field: &str) -> Res<Part> {
    match mime {
        Some(m) if !m.starts_with("image/") => Err(Unmappable::new(join(field, "mimeType"), format!("`{m}` cannot be translated (images only)"))),
        mime => Ok(Part::Image { mime, source }),
    }
}

// ---- writing ---------------------------------------------------------------------------------

#[inline(never)]
fn put(map: &mut Object, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

/// The text of a tool result for APIs whose results are text only.
fn result_text(content: Vec<Part>, field: &str, target: ClientApi) -> Res<String> {
    only_text(content, field).map_err(|_| Unmappable::new(field, format!("a tool result with images cannot be translated to the {}", target.title())))
}

fn refuse_for(field: &str, target: ClientApi) -> Unmappable {
    Unmappable::new(field, format!("has no equivalent in the {}", target.title()))
}

fn to_openai(chat: Chat, model: &str, stream: bool, include_usage: bool) -> Res<Value> {
    let target = ClientApi::OpenaiChat;
    let mut messages: Vec<Value> = chat.system.into_iter().map(|s| obj([("role", "system".into()), ("content", s.into())])).collect();
    for (role, parts) in chat.messages {
        let mut content: Vec<Value> = Vec::new();
        let mut calls = Vec::new();
        for part in parts {
            match part {
                Part::Text(text) => content.push(obj([("type", "text".into()), ("text", text.into())])),
                Part::Image { mime, source } => {
                    let url = match source {
                        Source::Base64(data) => format!("data:{};base64,{data}", mime.unwrap_or_default()),
                        Source::Url(url) => url,
                    };
                    content.push(obj([("type", "image_url".into()), ("image_url", obj([("url", url.into())]))]));
                }
                Part::ToolCall { id, name, args } => {
                    let function = obj([("name", name.into()), ("arguments", args.to_string().into())]);
                    calls.push(obj([("id", id.into()), ("type", "function".into()), ("function", function)]));
                }
                // Results are messages of their own, right after the assistant's calls.
                Part::ToolResult { id, content: result, field, .. } => {
                    messages.push(obj([("role", "tool".into()), ("tool_call_id", id.into()), ("content", result_text(result, &field, target)?.into())]));
                }
            }
        }
        // One text part as a plain string (what every OpenAI-compatible server takes); more
        // stay parts, so merged messages keep their boundaries.
        let content = match content.len() {
            0 => Value::Null,
            1 if content.first().and_then(|c| c.get("type")) == Some(&json!("text")) => {
                content.pop().and_then(|mut c| c.get_mut("text").map(Value::take)).unwrap_or_default()
            }
            _ => Value::Array(content),
        };
        match role {
            Role::User if !content.is_null() => messages.push(obj([("role", "user".into()), ("content", content)])),
            Role::User => {}
            Role::Assistant => {
                let mut m = Object::new();
                m.insert("role".into(), json!("assistant"));
                m.insert("content".into(), content);
                if !calls.is_empty() {
                    m.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(m));
            }
        }
    }
    if let Some((_, field)) = chat.top_k {
        return Err(refuse_for(field, target));
    }
    let mut out = Object::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), json!(true));
        // Usage then arrives in a last chunk, which the translated stream needs.
        out.insert("stream_options".into(), json!({"include_usage": include_usage}));
    }
    put(&mut out, "max_completion_tokens", chat.max_tokens.map(Value::from));
    put(&mut out, "temperature", chat.temperature);
    put(&mut out, "top_p", chat.top_p);
    if !chat.stop.is_empty() {
        out.insert("stop".into(), chat.stop.into());
    }
    if !chat.tools.is_empty() {
        let tools = chat.tools.into_iter().map(|t| {
            let mut f = Object::new();
            f.insert("name".into(), json!(t.name));
            put(&mut f, "description", t.description);
            put(&mut f, "parameters", t.schema);
            obj([("type", "function".into()), ("function", Value::Object(f))])
        });
        out.insert("tools".into(), Value::Array(tools.collect()));
    }
    put(&mut out, "tool_choice", chat.choice.map(|c| match c {
        Choice::Auto => json!("auto"),
        Choice::None => json!("none"),
        Choice::Any => json!("required"),
        Choice::Named(name) => obj([("type", "function".into()), ("function", obj([("name", name.into())]))]),
    }));
    put(&mut out, "parallel_tool_calls", chat.parallel.map(|(p, _)| Value::Bool(p)));
    Ok(Value::Object(out))
}

fn anthropic_image(mime: Option<String>, source: Source, field: &str) -> Res<Value> {
    Ok(match source {
        Source::Base64(data) => {
            let Some(mime) = mime else { return Err(Unmappable::new(field, "an inline image needs its media type")) };
            let source = obj([("type", "base64".into()), ("media_type", mime.into()), ("data", data.into())]);
            obj([("type", "image".into()), ("source", source)])
        }
        Source::Url(url) => obj([("type", "image".into()), ("source", obj([("type", "url".into()), ("url", url.into())]))]),
    })
}

fn to_anthropic(chat: Chat, model: &str, stream: bool, default_max_tokens: u32) -> Res<Value> {
    let mut messages = Vec::with_capacity(chat.messages.len());
    for (role, parts) in chat.messages {
        let mut blocks = Vec::with_capacity(parts.len());
        for part in parts {
            blocks.push(match part {
                Part::Text(text) => obj([("type", "text".into()), ("text", text.into())]),
                Part::Image { mime, source } => anthropic_image(mime, source, "image")?,
                Part::ToolCall { id, name, args } => obj([("type", "tool_use".into()), ("id", id.into()), ("name", name.into()), ("input", args)]),
                Part::ToolResult { id, content, is_error, field } => {
                    let mut result = Vec::with_capacity(content.len());
                    for c in content {
                        result.push(match c {
                            Part::Text(text) => obj([("type", "text".into()), ("text", text.into())]),
                            Part::Image { mime, source } => anthropic_image(mime, source, &field)?,
                            _ => return Err(Unmappable::new(field, "a tool result holds only text and images")),
                        });
                    }
                    obj([("type", "tool_result".into()), ("tool_use_id", id.into()), ("content", result.into()), ("is_error", is_error.into())])
                }
            });
        }
        let role = match role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(obj([("role", role.into()), ("content", blocks.into())]));
    }
    let mut out = Object::new();
    out.insert("model".into(), json!(model));
    // Anthropic requires a maximum; the configured default stands in for an absent one.
    out.insert("max_tokens".into(), json!(chat.max_tokens.unwrap_or(u64::from(default_max_tokens))));
    out.insert("messages".into(), Value::Array(messages));
    if !chat.system.is_empty() {
        let blocks: Vec<Value> = chat.system.into_iter().map(|s| obj([("type", "text".into()), ("text", s.into())])).collect();
        out.insert("system".into(), Value::Array(blocks));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    put(&mut out, "temperature", chat.temperature);
    put(&mut out, "top_p", chat.top_p);
    put(&mut out, "top_k", chat.top_k.map(|(k, _)| k));
    if !chat.stop.is_empty() {
        out.insert("stop_sequences".into(), chat.stop.into());
    }
    if !chat.tools.is_empty() {
        let tools = chat.tools.into_iter().map(|t| {
            let mut tool = Object::new();
            tool.insert("name".into(), json!(t.name));
            put(&mut tool, "description", t.description);
            // Anthropic requires a schema; a function without parameters takes none.
            tool.insert("input_schema".into(), t.schema.unwrap_or_else(|| json!({"type": "object", "properties": {}})));
            Value::Object(tool)
        });
        out.insert("tools".into(), Value::Array(tools.collect()));
    }
    let mut choice = chat.choice.map(|c| match c {
        Choice::Auto => json!({"type": "auto"}),
        Choice::None => json!({"type": "none"}),
        Choice::Any => json!({"type": "any"}),
        Choice::Named(name) => obj([("type", "tool".into()), ("name", name.into())]),
    });
    if let Some((false, _)) = chat.parallel {
        if let Value::Object(c) = choice.get_or_insert_with(|| json!({"type": "auto"})) {
            c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    put(&mut out, "tool_choice", choice);
    Ok(Value::Object(out))
}

/// Gemini needs a MIME type for a file URI: the image's extension gives it.
fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_string()).unwrap_or_default();
    match ext.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

fn to_gemini(chat: Chat) -> Res<Value> {
    let target = ClientApi::Gemini;
    // Calls so far (id → name): a functionResponse names its function, not the call's id.
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut contents = Vec::with_capacity(chat.messages.len());
    for (role, parts) in chat.messages {
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            out.push(match part {
                Part::Text(text) => obj([("text", text.into())]),
                Part::Image { mime, source: Source::Base64(data) } => {
                    let Some(mime) = mime else { return Err(Unmappable::new("image", "an inline image needs its media type")) };
                    obj([("inlineData", obj([("mimeType", mime.into()), ("data", data.into())]))])
                }
                Part::Image { mime, source: Source::Url(url) } => {
                    let Some(mime) = mime.or_else(|| guess_mime(&url).map(String::from)) else {
                        return Err(Unmappable::new("image_url", format!("the image type of `{}` is unknown (Gemini needs it)", url.chars().take(100).collect::<String>())));
                    };
                    obj([("fileData", obj([("mimeType", mime.into()), ("fileUri", url.into())]))])
                }
                Part::ToolCall { id, name, args } => {
                    calls.push((id, name.clone()));
                    obj([("functionCall", obj([("name", name.into()), ("args", args)]))])
                }
                Part::ToolResult { id, content, field, .. } => {
                    let Some((_, name)) = calls.iter().rev().find(|(call, _)| *call == id) else {
                        return Err(Unmappable::new(field, format!("no earlier tool call has the id `{id}`")));
                    };
                    // Gemini wants an object: a JSON object result as is, anything else wrapped.
                    let text = result_text(content, &field, target)?;
                    let response = match serde_json::from_str::<Value>(&text) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => obj([("content", text.into())]),
                    };
                    obj([("functionResponse", obj([("name", name.as_str().into()), ("response", response)]))])
                }
            });
        }
        let role = match role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        contents.push(obj([("role", role.into()), ("parts", out.into())]));
    }
    if let Some((false, field)) = chat.parallel {
        return Err(refuse_for(field, target));
    }
    let mut out = Object::new();
    out.insert("contents".into(), Value::Array(contents));
    if !chat.system.is_empty() {
        let parts: Vec<Value> = chat.system.into_iter().map(|s| obj([("text", s.into())])).collect();
        out.insert("systemInstruction".into(), obj([("parts", parts.into())]));
    }
    let mut config = Object::new();
    put(&mut config, "maxOutputTokens", chat.max_tokens.map(Value::from));
    put(&mut config, "temperature", chat.temperature);
    put(&mut config, "topP", chat.top_p);
    put(&mut config, "topK", chat.top_k.map(|(k, _)| k));
    if !chat.stop.is_empty() {
        config.insert("stopSequences".into(), chat.stop.into());
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if !chat.tools.is_empty() {
        let declarations = chat.tools.into_iter().map(|t| {
            let mut f = Object::new();
            f.insert("name".into(), json!(t.name));
            put(&mut f, "description", t.description);
            // Full JSON Schema (`parameters` takes only Gemini's OpenAPI subset).
            put(&mut f, "parametersJsonSchema", t.schema);
            Value::Object(f)
        });
        out.insert("tools".into(), vec![obj([("functionDeclarations", declarations.collect::<Vec<_>>().into())])].into());
    }
    put(&mut out, "toolConfig", chat.choice.map(|c| {
        let config = match c {
            Choice::Auto => json!({"mode": "AUTO"}),
            Choice::None => json!({"mode": "NONE"}),
            Choice::Any => json!({"mode": "ANY"}),
            Choice::Named(name) => obj([("mode", "ANY".into()), ("allowedFunctionNames", vec![Value::String(name)].into())]),
        };
        obj([("functionCallingConfig", config)])
    }));
    Ok(Value::Object(out))
}
