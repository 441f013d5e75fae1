//! Streams, event by event: the upstream's SSE events are decoded into neutral [`Ev`]ents,
//! which an encoder writes in the client API's framing at once. Held between chunks: the
//! upstream event in progress (core SSE parser), the usage and stop reason so far, and what
//! a target cannot stream piecemeal: a Gemini client's function call until its arguments are
//! complete (Gemini sends calls whole), a Responses client's output items (its final
//! `response.completed` repeats the whole output).

use super::error::{openai_kind, status_of, Shape};
use super::out::{
    write_json, AnthropicDelta, AnthropicEvent, AnthropicMessage, Block, ChatChoice, ChatCompletion, ChatDelta, FunctionCall, GeminiPart, Item, OutputText,
    ResponsesEvent, ToolCall, Usage,
};
use super::response::{self, call_id, gemini_part, reply_id, responses_item_id, responses_object, tokens, OutPart, Stop};
use crate::api::ClientApi;
use crate::usage::{AnthropicUsage, Tokens};
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_core::wire::sse::{SseItem, SseParser};

/// The largest upstream event held (the filter's default `max_event_bytes`).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// One step of a streamed answer, in no API's terms. Tools are numbered in order of their
/// start (`tool`), whatever the upstream calls them (OpenAI index, Anthropic block index).
#[derive(Debug)]
enum Ev {
    /// The upstream's response id (repeated by some upstreams: only the first counts).
    Start(Option<String>),
    Text(String),
    ToolStart { id: String, name: String },
    ToolArgs { tool: usize, json: String },
    Finish(Stop),
    /// Usage so far (cumulative: the latest replaces the earlier).
    Usage(Tokens),
    Error { status: u16, message: String },
    /// The upstream said it is done (`[DONE]`, `message_stop`); else `finish` says it.
    End,
}

enum Decoder {
    OpenAi,
    /// Anthropic's usage merges across events; `tools` maps tool numbers to block indexes.
    Anthropic { usage: AnthropicUsage, tools: Vec<u64> },
    /// Gemini's calls so far (for synthesized ids and for a STOP after calls).
    Gemini { calls: usize },
    /// The Responses API is a client API only: one error, then nothing.
    Unsupported { reported: bool },
}

#[inline(never)]
fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

#[inline(never)]
fn owned_at(v: &Value, pointer: &str) -> Option<String> {
    str_at(v, pointer).map(String::from)
}

#[inline(never)]
fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(String::from)
}

impl Decoder {
    fn new(upstream: ClientApi) -> Decoder {
        match upstream {
            ClientApi::OpenaiChat => Decoder::OpenAi,
            ClientApi::AnthropicMessages => Decoder::Anthropic { usage: AnthropicUsage::default(), tools: Vec::new() },
            ClientApi::Gemini => Decoder::Gemini { calls: 0 },
            ClientApi::OpenaiResponses | ClientApi::OpenaiEmbeddings => Decoder::Unsupported { reported: false },
        }
    }

    fn decode(&mut self, data: &str, evs: &mut Vec<Ev>) {
        if let Decoder::Unsupported { reported } = self {
            if !std::mem::replace(reported, true) {
                evs.push(Ev::Error { status: 500, message: super::responses_upstream().message });
            }
            return;
        }
        if matches!(self, Decoder::OpenAi) && data.trim() == "[DONE]" {
            evs.push(Ev::End);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            evs.push(Ev::Error { status: 502, message: "the provider sent an event that is not JSON".into() });
            return;
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            // Gemini says `code` (a number), the others a kind name.
            let status = e.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
            let status = status.unwrap_or_else(|| status_of(str_at(e, "/type").unwrap_or("")));
            evs.push(Ev::Error { status, message: str_at(e, "/message").unwrap_or("upstream error").into() });
            return;
        }
        match self {
            Decoder::OpenAi => decode_openai(&v, evs),
            Decoder::Anthropic { usage, tools } => decode_anthropic(v, usage, tools, evs),
            Decoder::Gemini { calls } => decode_gemini(&v, calls, evs),
            Decoder::Unsupported { .. } => {}
        }
    }
}

fn decode_openai(v: &Value, evs: &mut Vec<Ev>) {
    evs.push(Ev::Start(owned_at(v, "/id")));
    let choice = v.pointer("/choices/0");
    let delta = choice.and_then(|c| c.get("delta"));
    for key in ["/content", "/refusal"] {
        if let Some(text) = non_empty(delta.and_then(|d| str_at(d, key))) {
            evs.push(Ev::Text(text));
        }
    }
    for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
        let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        if let Some(id) = owned_at(call, "/id") {
            evs.push(Ev::ToolStart { id, name: owned_at(call, "/function/name").unwrap_or_default() });
        }
        if let Some(json) = non_empty(str_at(call, "/function/arguments")) {
            evs.push(Ev::ToolArgs { tool, json });
        }
    }
    if let Some(reason) = choice.and_then(|c| str_at(c, "/finish_reason")) {
        evs.push(Ev::Finish(Stop::from_openai(reason)));
    }
    if let Some(t) = tokens(ClientApi::OpenaiChat, v.get("usage")) {
        evs.push(Ev::Usage(t));
    }
}

fn decode_anthropic(mut v: Value, usage: &mut AnthropicUsage, tools: &mut Vec<u64>, evs: &mut Vec<Ev>) {
    let mut merge_usage = |u: Option<&mut Value>, evs: &mut Vec<Ev>| {
        if let Some(Ok(later)) = u.map(|u| serde_json::from_value::<AnthropicUsage>(u.take())) {
            usage.merge(&later);
            evs.push(Ev::Usage(usage.tokens()));
        }
    };
    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
    match str_at(&v, "/type").unwrap_or("") {
        "message_start" => {
            evs.push(Ev::Start(owned_at(&v, "/message/id")));
            merge_usage(v.pointer_mut("/message/usage"), evs);
        }
        "content_block_start" => match str_at(&v, "/content_block/type") {
            Some("text") => evs.extend(non_empty(str_at(&v, "/content_block/text")).map(Ev::Text)),
            Some("tool_use") => {
                tools.push(index);
                let id = owned_at(&v, "/content_block/id").unwrap_or_default();
                evs.push(Ev::ToolStart { id, name: owned_at(&v, "/content_block/name").unwrap_or_default() });
            }
            // Thinking blocks come only when asked for, which translation refuses.
            _ => {}
        },
        "content_block_delta" => match str_at(&v, "/delta/type") {
            Some("text_delta") => evs.extend(non_empty(str_at(&v, "/delta/text")).map(Ev::Text)),
            Some("input_json_delta") => {
                if let (Some(tool), Some(json)) = (tools.iter().position(|b| *b == index), non_empty(str_at(&v, "/delta/partial_json"))) {
                    evs.push(Ev::ToolArgs { tool, json });
                }
            }
            _ => {}
        },
        "message_delta" => {
            if let Some(reason) = str_at(&v, "/delta/stop_reason") {
                evs.push(Ev::Finish(Stop::from_anthropic(reason)));
            }
            merge_usage(v.get_mut("usage"), evs);
        }
        "message_stop" => evs.push(Ev::End),
        // ping, content_block_stop: nothing to carry over.
        _ => {}
    }
}

fn decode_gemini(v: &Value, calls: &mut usize, evs: &mut Vec<Ev>) {
    evs.push(Ev::Start(owned_at(v, "/responseId")));
    // Before the content: an Anthropic client's `message_start` carries the input count.
    if let Some(t) = tokens(ClientApi::Gemini, v.get("usageMetadata")) {
        evs.push(Ev::Usage(t));
    }
    let candidate = v.pointer("/candidates/0");
    for part in candidate.and_then(|c| c.pointer("/content/parts")).and_then(Value::as_array).into_iter().flatten() {
        if let Some(call) = part.get("functionCall") {
            let id = owned_at(call, "/id").unwrap_or_else(|| call_id(*calls));
            evs.push(Ev::ToolStart { id, name: owned_at(call, "/name").unwrap_or_default() });
            let json = call.get("args").map_or_else(|| "{}".to_string(), Value::to_string);
            evs.push(Ev::ToolArgs { tool: *calls, json });
            *calls += 1;
        } else if part.get("thought") != Some(&Value::Bool(true)) {
            evs.extend(non_empty(str_at(part, "/text")).map(Ev::Text));
        }
    }
    if let Some(reason) = candidate.and_then(|c| str_at(c, "/finishReason")) {
        evs.push(Ev::Finish(Stop::from_gemini(reason, *calls > 0)));
    } else if candidate.is_none() && v.pointer("/promptFeedback/blockReason").is_some() {
        evs.push(Ev::Finish(Stop::Filter));
    }
}

/// A Responses client's output item in progress.
struct Open {
    part: OutPart,
    /// The tool number of a function call (for its argument deltas).
    tool: Option<usize>,
    id: String,
}

enum Kind {
    OpenAi,
    /// Content blocks: the open one (index, is text) and each tool's block index.
    Anthropic { next_block: usize, open: Option<(usize, bool)>, blocks: Vec<usize> },
    /// `pending`: the function call whose arguments are still arriving.
    Gemini { sse: bool, chunks: usize, pending: Option<OutPart> },
    /// `output`: the finished items, with their ids.
    Responses { sequence: u64, output: Vec<(OutPart, String)>, current: Option<Open> },
}

struct Encoder {
    client: ClientApi,
    model: String,
    id: Option<String>,
    started: bool,
    ended: bool,
    usage: Option<Tokens>,
    stop: Option<Stop>,
    tools: usize,
    kind: Kind,
}

#[inline(never)]
fn write_sse<T: Serialize>(out: &mut Vec<u8>, event: Option<&str>, data: &T) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // serde_json escapes control characters, so the data is one line.
    write_json(out, data);
    out.extend_from_slice(b"\n\n");
}

/// One Responses event, numbered.
#[inline(never)]
fn responses_event<'a>(sequence: &mut u64, kind: &'a str, mut event: ResponsesEvent<'a>, out: &mut Vec<u8>) {
    event.kind = kind;
    event.sequence_number = *sequence;
    *sequence += 1;
    write_sse(out, Some(kind), &event);
}

#[inline(never)]
fn anthropic_event(out: &mut Vec<u8>, event: AnthropicEvent<'_>) {
    write_sse(out, Some(event.kind), &event);
}

/// SSE, or an element of the streamed JSON array (`[` first, `,` between, `]` at finish).
fn gemini_write<T: Serialize>(kind: &mut Kind, value: &T, out: &mut Vec<u8>) {
    if let Kind::Gemini { sse, chunks, .. } = kind {
        match (*sse, *chunks) {
            (true, _) => return write_sse(out, None, value),
            (false, 0) => out.push(b'['),
            (false, _) => out.extend_from_slice(b",\r\n"),
        }
        *chunks += 1;
        write_json(out, value);
    }
}

impl Encoder {
    fn id(&self) -> String {
        reply_id(self.client, self.id.as_deref())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|t| Usage(self.client, t))
    }

    fn on(&mut self, ev: Ev, out: &mut Vec<u8>) {
        match ev {
            Ev::Start(id) => {
                if !self.started && self.id.is_none() {
                    self.id = id;
                }
            }
            Ev::Usage(t) => self.usage = Some(t),
            Ev::Error { status, message } => self.error(status, &message, out),
            _ if self.ended => {}
            Ev::Text(text) => {
                self.start(out);
                self.text(text, out);
            }
            Ev::ToolStart { id, name } => {
                self.start(out);
                let tool = self.tools;
                self.tools += 1;
                self.tool_start(tool, id, name, out);
            }
            Ev::ToolArgs { tool, json } => {
                self.start(out);
                self.tool_args(tool, json, out);
            }
            Ev::Finish(stop) => {
                self.start(out);
                self.stop = Some(stop);
                // OpenAI clients get the finish reason at once, before the usage chunk.
                if let Kind::OpenAi = self.kind {
                    self.openai_chunk(ChatDelta::default(), Some(stop.openai()), out);
                }
            }
            Ev::End => {
                self.start(out);
                self.end(out);
                self.ended = true;
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let id = self.id();
        match &mut self.kind {
            Kind::OpenAi => self.openai_chunk(ChatDelta { content: Some(""), role: Some("assistant"), tool_calls: None }, None, out),
            Kind::Anthropic { .. } => {
                let message = AnthropicMessage {
                    content: Vec::new(),
                    id: &id,
                    model: &self.model,
                    role: "assistant",
                    stop_reason: None,
                    stop_sequence: (),
                    kind: "message",
                    usage: Some(Usage(self.client, self.usage.unwrap_or_default())),
                };
                anthropic_event(out, AnthropicEvent { message: Some(message), kind: "message_start", ..Default::default() });
            }
            Kind::Gemini { .. } => {}
            Kind::Responses { sequence, .. } => {
                let response = responses_object(&id, &self.model, &[], None, None);
                responses_event(sequence, "response.created", ResponsesEvent { response: Some(response), ..Default::default() }, out);
            }
        }
    }

    fn error(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        let body = Shape { client: self.client, status, message };
        match &mut self.kind {
            Kind::OpenAi => write_sse(out, None, &body),
            Kind::Anthropic { .. } => write_sse(out, Some("error"), &body),
            Kind::Gemini { .. } => gemini_write(&mut self.kind, &body, out),
            Kind::Responses { sequence, .. } => {
                let event = ResponsesEvent { code: Some(openai_kind(status)), message: Some(message), param: Some(()), ..Default::default() };
                responses_event(sequence, "error", event, out);
            }
        }
        // The provider stops after an error: no made-up ending follows it.
        self.ended = true;
    }

    fn text(&mut self, text: String, out: &mut Vec<u8>) {
        match &mut self.kind {
            Kind::OpenAi => self.openai_chunk(ChatDelta { content: Some(&text), ..Default::default() }, None, out),
            Kind::Anthropic { next_block, open, .. } => {
                let index = match *open {
                    Some((index, true)) => index,
                    _ => {
                        let index = *next_block;
                        *next_block += 1;
                        let previous = open.replace((index, true));
                        close_block(previous, out);
                        let block = Some(Block::text(""));
                        anthropic_event(out, AnthropicEvent { content_block: block, index: Some(index), kind: "content_block_start", ..Default::default() });
                        index
                    }
                };
                let delta = AnthropicDelta { text: Some(&text), kind: Some("text_delta"), ..Default::default() };
                anthropic_event(out, AnthropicEvent { delta: Some(delta), index: Some(index), kind: "content_block_delta", ..Default::default() });
            }
            Kind::Gemini { .. } => {
                self.gemini_flush(out);
                self.gemini_chunk(vec![GeminiPart { function_call: None, text: Some(text) }], None, out);
            }
            Kind::Responses { current, output, sequence } => {
                if let Some(Open { part: OutPart::Text(all), id, .. }) = current {
                    all.push_str(&text);
                    text_delta(sequence, id, output.len(), &text, out);
                    return;
                }
                // The item in progress joins the output first: the new one comes after it.
                self.responses_close(out);
                let Kind::Responses { current, sequence, output } = &mut self.kind else { return };
                let output_index = output.len();
                let id = responses_item_id(true, output_index);
                let empty = OutPart::Text(String::new());
                let item = Some(Item { part: &empty, id: &id, done: false });
                responses_event(sequence, "response.output_item.added", ResponsesEvent { item, output_index: Some(output_index), ..Default::default() }, out);
                let added = ResponsesEvent { content_index: Some(0), item_id: Some(&id), output_index: Some(output_index), part: Some(OutputText::new("")), ..Default::default() };
                responses_event(sequence, "response.content_part.added", added, out);
                text_delta(sequence, &id, output_index, &text, out);
                *current = Some(Open { part: OutPart::Text(text), tool: None, id });
            }
        }
    }

    fn tool_start(&mut self, tool: usize, id: String, name: String, out: &mut Vec<u8>) {
        match &mut self.kind {
            Kind::OpenAi => {
                let call = ToolCall { function: FunctionCall { arguments: "", name: Some(&name) }, id: Some(&id), index: Some(tool), kind: Some("function") };
                self.openai_chunk(ChatDelta { tool_calls: Some([call]), ..Default::default() }, None, out);
            }
            Kind::Anthropic { next_block, open, blocks } => {
                let index = *next_block;
                *next_block += 1;
                blocks.push(index);
                close_block(open.replace((index, false)), out);
                let block = Some(Block::tool_use(&id, &name, Value::Object(Map::new())));
                anthropic_event(out, AnthropicEvent { content_block: block, index: Some(index), kind: "content_block_start", ..Default::default() });
            }
            Kind::Gemini { .. } => {
                self.gemini_flush(out);
                if let Kind::Gemini { pending, .. } = &mut self.kind {
                    *pending = Some(OutPart::Tool { id, name, args: String::new() });
                }
            }
            Kind::Responses { .. } => {
                self.responses_close(out);
                let Kind::Responses { current, sequence, output } = &mut self.kind else { return };
                let output_index = output.len();
                let item_id = responses_item_id(false, output_index);
                let part = OutPart::Tool { id, name, args: String::new() };
                let item = Some(Item { part: &part, id: &item_id, done: false });
                responses_event(sequence, "response.output_item.added", ResponsesEvent { item, output_index: Some(output_index), ..Default::default() }, out);
                *current = Some(Open { part, tool: Some(tool), id: item_id });
            }
        }
    }

    fn tool_args(&mut self, tool: usize, json: String, out: &mut Vec<u8>) {
        match &mut self.kind {
            Kind::OpenAi => {
                let call = ToolCall { function: FunctionCall { arguments: &json, name: None }, id: None, index: Some(tool), kind: None };
                self.openai_chunk(ChatDelta { tool_calls: Some([call]), ..Default::default() }, None, out);
            }
            Kind::Anthropic { blocks, .. } => {
                if let Some(index) = blocks.get(tool) {
                    let delta = AnthropicDelta { partial_json: Some(&json), kind: Some("input_json_delta"), ..Default::default() };
                    anthropic_event(out, AnthropicEvent { delta: Some(delta), index: Some(*index), kind: "content_block_delta", ..Default::default() });
                }
            }
            Kind::Gemini { pending, .. } => {
                if let Some(OutPart::Tool { args, .. }) = pending {
                    args.push_str(&json);
                }
            }
            Kind::Responses { current, output, sequence } => {
                let output_index = output.len();
                if let Some(Open { part: OutPart::Tool { args, .. }, tool: Some(t), id }) = current {
                    if *t == tool {
                        args.push_str(&json);
                        let delta = ResponsesEvent { delta: Some(&json), item_id: Some(id), output_index: Some(output_index), ..Default::default() };
                        responses_event(sequence, "response.function_call_arguments.delta", delta, out);
                    }
                }
            }
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        let stop = self.stop.unwrap_or(Stop::End);
        let id = self.id();
        let usage = self.usage();
        match &mut self.kind {
            Kind::OpenAi => {
                // The usage chunk the accounting (and `include_usage` clients) read.
                if usage.is_some() {
                    let chunk = ChatCompletion { choices: Vec::new(), created: 0, id: &id, model: &self.model, object: "chat.completion.chunk", usage };
                    write_sse(out, None, &chunk);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Kind::Anthropic { open, .. } => {
                close_block(open.take(), out);
                // Cumulative and complete (input too), as Anthropic itself sends it; absent
                // when the upstream never reported usage, so the accounting estimates.
                let delta = AnthropicDelta { stop_reason: Some(stop.anthropic()), stop_sequence: Some(()), ..Default::default() };
                anthropic_event(out, AnthropicEvent { delta: Some(delta), kind: "message_delta", usage, ..Default::default() });
                anthropic_event(out, AnthropicEvent { kind: "message_stop", ..Default::default() });
            }
            Kind::Gemini { .. } => {
                self.gemini_flush(out);
                self.gemini_chunk(vec![GeminiPart { function_call: None, text: Some(String::new()) }], Some(stop), out);
            }
            Kind::Responses { .. } => {
                self.responses_close(out);
                if let Kind::Responses { output, sequence, .. } = &mut self.kind {
                    let (status, _) = stop.responses();
                    let response = responses_object(&id, &self.model, output, Some(stop), self.usage);
                    let kind = format!("response.{status}");
                    responses_event(sequence, &kind, ResponsesEvent { response: Some(response), ..Default::default() }, out);
                }
            }
        }
    }

    fn openai_chunk(&self, delta: ChatDelta<'_>, finish: Option<&str>, out: &mut Vec<u8>) {
        let id = self.id();
        let choice = ChatChoice { delta: Some(delta), finish_reason: finish, index: 0, logprobs: (), message: None };
        let chunk = ChatCompletion { choices: vec![choice], created: 0, id: &id, model: &self.model, object: "chat.completion.chunk", usage: None };
        write_sse(out, None, &chunk);
    }

    /// One Gemini chunk, with the usage so far (Gemini repeats it, cumulative, in each).
    fn gemini_chunk(&mut self, parts: Vec<GeminiPart>, finish: Option<Stop>, out: &mut Vec<u8>) {
        let id = self.id();
        let chunk = response::gemini_chunk(parts, finish, &self.model, &id, self.usage);
        gemini_write(&mut self.kind, &chunk, out);
    }

    /// Sends a Gemini client the function call whose arguments are now complete.
    fn gemini_flush(&mut self, out: &mut Vec<u8>) {
        let Kind::Gemini { pending, .. } = &mut self.kind else { return };
        match pending.take().map(gemini_part) {
            Some(Ok(part)) => self.gemini_chunk(vec![part], None, out),
            Some(Err(e)) => self.error(502, &e.message, out),
            None => {}
        }
    }

    /// Finishes a Responses client's item in progress: its `done` events, then it joins the output.
    fn responses_close(&mut self, out: &mut Vec<u8>) {
        let Kind::Responses { current, output, sequence } = &mut self.kind else { return };
        let Some(item) = current.take() else { return };
        let output_index = Some(output.len());
        let id = Some(item.id.as_str());
        match &item.part {
            OutPart::Text(text) => {
                let done = ResponsesEvent { content_index: Some(0), item_id: id, logprobs: Some([]), output_index, text: Some(text), ..Default::default() };
                responses_event(sequence, "response.output_text.done", done, out);
                let done = ResponsesEvent { content_index: Some(0), item_id: id, output_index, part: Some(OutputText::new(text)), ..Default::default() };
                responses_event(sequence, "response.content_part.done", done, out);
            }
            OutPart::Tool { args, .. } => {
                let done = ResponsesEvent { arguments: Some(args), item_id: id, output_index, ..Default::default() };
                responses_event(sequence, "response.function_call_arguments.done", done, out);
            }
        }
        let done = Item { part: &item.part, id: &item.id, done: true };
        responses_event(sequence, "response.output_item.done", ResponsesEvent { item: Some(done), output_index, ..Default::default() }, out);
        output.push((item.part, item.id));
    }
}

/// A Responses client's text delta.
fn text_delta(sequence: &mut u64, id: &str, output_index: usize, text: &str, out: &mut Vec<u8>) {
    let delta = ResponsesEvent { content_index: Some(0), delta: Some(text), item_id: Some(id), logprobs: Some([]), output_index: Some(output_index), ..Default::default() };
    responses_event(sequence, "response.output_text.delta", delta, out);
}

#[inline(never)]
fn close_block(open: Option<(usize, bool)>, out: &mut Vec<u8>) {
    if let Some((index, _)) = open {
        anthropic_event(out, AnthropicEvent { index: Some(index), kind: "content_block_stop", ..Default::default() });
    }
}

/// Translates one streamed response; see the module docs.
pub struct StreamTranslator {
    parser: SseParser,
    decoder: Decoder,
    encoder: Encoder,
    broken: bool,
    finished: bool,
}

impl StreamTranslator {
    /// `gemini_client_sse`: a Gemini client asked with `?alt=sse`; without it, it reads a JSON
    /// array. Upstream Gemini streams are always asked for SSE (see `request`).
    pub fn new(upstream: ClientApi, client: ClientApi, client_model: &str, gemini_client_sse: bool) -> Self {
        let kind = match client {
            ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => Kind::OpenAi,
            ClientApi::AnthropicMessages => Kind::Anthropic { next_block: 0, open: None, blocks: Vec::new() },
            ClientApi::Gemini => Kind::Gemini { sse: gemini_client_sse, chunks: 0, pending: None },
            ClientApi::OpenaiResponses => Kind::Responses { sequence: 0, output: Vec::new(), current: None },
        };
        let encoder = Encoder {
            client,
            model: client_model.to_string(),
            id: None,
            started: false,
            ended: false,
            usage: None,
            stop: None,
            tools: 0,
            kind,
        };
        StreamTranslator { parser: SseParser::new(MAX_EVENT_BYTES), decoder: Decoder::new(upstream), encoder, broken: false, finished: false }
    }

    /// The client's bytes for this upstream chunk (only the incomplete event is held back).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        let (decoder, encoder) = (&mut self.decoder, &mut self.encoder);
        let mut evs = Vec::new();
        let result = self.parser.feed(chunk, |item, _| {
            if let SseItem::Event(event) = item {
                decoder.decode(&event.data, &mut evs);
                for ev in evs.drain(..) {
                    encoder.on(ev, &mut out);
                }
            }
        });
        if result.is_err() {
            self.broken = true;
            self.encoder.on(Ev::Error { status: 502, message: "the provider sent an event larger than 1 MiB".into() }, &mut out);
        }
        out
    }

    /// The end of the client's stream (its usage chunk and `[DONE]`, `message_stop`, the
    /// closing `]`), unless the upstream's own end already produced it. Idempotent.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if std::mem::replace(&mut self.finished, true) {
            return out;
        }
        // Nothing came at all: no made-up answer, only the framing's end.
        if self.encoder.started {
            self.encoder.on(Ev::End, &mut out);
        }
        if let Kind::Gemini { sse: false, chunks, .. } = self.encoder.kind {
            out.extend_from_slice(if chunks == 0 { b"[]" } else { b"]" });
        }
        out
    }
}
