//! Token accounting for the four client APIs, JSON and streamed, without buffering.
//!
//! Response bytes are fed chunk by chunk as they pass through; the tracker holds only:
//! - SSE: the event in progress (core [`SseParser`]);
//! - a streamed JSON array (Gemini `streamGenerateContent` without `alt=sse`): the element
//!   in progress (core [`JsonArraySplitter`]);
//! - a JSON body: only the values of the few top-level members it needs (`usage` /
//!   `usageMetadata`, and the content member for estimates), captured by a byte-level
//!   scanner (core [`TopLevelCapture`]) that never holds the rest of the document.
//!
//! Each client API is one file with its schema structs and its part of the work, an
//! [`ApiUsage`]: `openai_chat`, `openai_responses`, `openai_embeddings`, `anthropic`, `gemini`. Adding an API means
//! adding a file and one arm in [`ApiUsage::of`].
//!
//! Normalized counts ([`Tokens`]): `input` is every prompt token including cache reads and
//! cache writes; `cached_input` and `cache_creation` are parts of it; `output` is every
//! generated token including reasoning; `reasoning` is part of it. Per API:
//!
//! | API | input | cached_input | cache_creation | output | reasoning |
//! |---|---|---|---|---|---|
//! | OpenAI Chat | prompt_tokens | prompt_tokens_details.cached_tokens | – | completion_tokens | completion_tokens_details.reasoning_tokens |
//! | OpenAI Responses | input_tokens | input_tokens_details.cached_tokens | input_tokens_details.cache_write_tokens | output_tokens | output_tokens_details.reasoning_tokens |
//! | Anthropic | input_tokens + cache_read_input_tokens + cache_creation_input_tokens | cache_read_input_tokens | cache_creation_input_tokens | output_tokens | – |
//! | OpenAI Embeddings | prompt_tokens | – | – | 0 | – |
//! | Gemini | promptTokenCount + toolUsePromptTokenCount | cachedContentTokenCount | – | candidatesTokenCount + thoughtsTokenCount | thoughtsTokenCount |
//!
//! When the final usage never arrives (provider omitted it, stream cut short; see [`reported_or_estimated`]), the tracker
//! estimates: input = ceil(request bytes / bytes_per_token) unless the provider already
//! reported it, output = max(reported output, ceil(generated text bytes / bytes_per_token)).

use crate::api::{ClientApi, Text};
use serde::Serialize;
use tollgate_core::wire::sse::{SseItem, SseParser};

mod anthropic;
mod gemini;
mod openai_chat;
mod openai_embeddings;
mod openai_responses;

/// The streaming JSON framers, now in core (`tollgate_core::wire::json_framing`); re-exported
/// under their old paths.
pub use tollgate_core::wire::json_framing::{JsonArraySplitter, TopLevelCapture};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

// ---- per-API parts -------------------------------------------------------------------

/// One client API's part of usage accounting, defined in that API's file.
pub(crate) struct ApiUsage {
    /// Top-level members captured from a whole JSON response: [usage, content].
    json_keys: &'static [&'static str],
    /// One streamed unit (an SSE event's data, or one element of a streamed JSON array):
    /// records any usage in `seen`; returns the generated text bytes it carried, `None` when
    /// it could not be read.
    on_unit: fn(&mut Seen, &str) -> Option<u64>,
    /// The usage member of a whole JSON response (`None`: absent, null or unreadable).
    json_usage: fn(&[u8]) -> Option<Tokens>,
}

/// Anthropic's streamed usage, merged event by event exactly as the tracker does (the
/// translator keeps one to carry it into another API's stream).
pub(crate) use anthropic::Usage as AnthropicUsage;

/// One API's usage member (`usage` / `usageMetadata`, its JSON value) in normalized tokens,
/// read by the tracker's own parser, so a translation and the accounting cannot disagree.
pub(crate) fn parse_usage(api: ClientApi, raw: &[u8]) -> Option<Tokens> {
    (ApiUsage::of(api).json_usage)(raw)
}

impl ApiUsage {
    fn of(api: ClientApi) -> &'static ApiUsage {
        match api {
            ClientApi::OpenaiChat => &openai_chat::API,
            ClientApi::OpenaiResponses => &openai_responses::API,
            ClientApi::AnthropicMessages => &anthropic::API,
            ClientApi::Gemini => &gemini::API,
            ClientApi::OpenaiEmbeddings => &openai_embeddings::API,
        }
    }
}

/// What the provider reported so far.
#[derive(Default, Clone)]
pub(crate) struct Seen {
    reported: Option<Tokens>,
    /// The final usage arrived (no estimate needed).
    final_seen: bool,
    /// The stream's own last event arrived (OpenAI Chat `[DONE]`, Responses
    /// `response.completed` / `.incomplete` / `.failed`, Anthropic `message_stop`): the
    /// answer is whole even if Envoy's end of stream never reaches the filter (a client that
    /// closes right after it, as the `openai` SDK does).
    ended: bool,
    /// Anthropic's usage fields so far (its events carry some fields each).
    anthropic: anthropic::Usage,
}

fn text_len(s: &Option<Text<'_>>) -> u64 {
    s.as_ref().map(|s| s.0.len() as u64).unwrap_or(0)
}

/// What the tracker learned so far, independent of framing.
#[derive(Default, Clone)]
struct Accumulator {
    seen: Seen,
    text_bytes: u64,
    events: u64,
    unparsed_events: u64,
}

impl Accumulator {
    /// One streamed unit. Returns the generated text bytes it carried.
    fn on_unit(&mut self, api: &ApiUsage, data: &str) -> u64 {
        self.events += 1;
        let Some(text) = (api.on_unit)(&mut self.seen, data) else {
            self.unparsed_events += 1;
            return 0;
        };
        self.text_bytes += text;
        text
    }

    /// A whole JSON response: its usage member and, for estimates, its content member.
    fn on_json(&mut self, api: &ApiUsage, usage: Option<&[u8]>, content: Option<&[u8]>) {
        if let Some(tokens) = usage.and_then(api.json_usage) {
            self.seen.reported = Some(tokens);
            self.seen.final_seen = true;
        }
        if !self.seen.final_seen {
            if let Some(raw) = content {
                self.text_bytes += generated_text_bytes(raw);
            }
        }
    }
}

/// Bytes of generated text in a JSON content member (fallback path only: no usage came).
fn generated_text_bytes(raw: &[u8]) -> u64 {
    fn walk(v: &serde_json::Value, key: Option<&str>) -> u64 {
        match v {
            serde_json::Value::String(s) => match key {
                Some("text" | "content" | "refusal" | "arguments" | "thinking" | "reasoning_content") => s.len() as u64,
                _ => 0,
            },
            serde_json::Value::Array(items) => items.iter().map(|i| walk(i, key)).sum(),
            serde_json::Value::Object(map) => map.iter().map(|(k, v)| walk(v, Some(k))).sum(),
            _ => 0,
        }
    }
    serde_json::from_slice::<serde_json::Value>(raw).map(|v| walk(&v, None)).unwrap_or(0)
}

// ---- framing and tracking ---------------------------------------------------------

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    Sse,
    /// A JSON array streamed element by element (Gemini without `alt=sse`).
    JsonArray,
}

impl Framing {
    /// From the response `content-type`, and whether the request was a Gemini stream.
    pub fn detect(content_type: Option<&str>, gemini_stream: bool) -> Framing {
        if tollgate_core::text::is_sse(content_type) {
            Framing::Sse
        } else if gemini_stream {
            Framing::JsonArray
        } else {
            Framing::Json
        }
    }
}

#[derive(Debug)]
enum Framer {
    Json(TopLevelCapture),
    Sse(SseParser),
    Array(JsonArraySplitter),
}

/// The final accounting of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageReport {
    pub tokens: Tokens,
    /// The counts are (at least partly) estimates: final usage never arrived.
    pub estimated: bool,
    /// The provider reported usage (possibly partial).
    pub reported: bool,
}

/// Per-response token accounting; feed every body chunk, then `finish`.
pub struct UsageTracker {
    api: &'static ApiUsage,
    framer: Framer,
    acc: Accumulator,
    body_bytes: u64,
    saw_content: bool,
    broken: bool,
}

impl UsageTracker {
    pub fn new(api: ClientApi, framing: Framing, max_event_bytes: usize) -> Self {
        let framer = match framing {
            Framing::Json => Framer::Json(TopLevelCapture::new(ApiUsage::of(api).json_keys, max_event_bytes)),
            Framing::Sse => Framer::Sse(SseParser::new(max_event_bytes)),
            Framing::JsonArray => Framer::Array(JsonArraySplitter::new(max_event_bytes)),
        };
        UsageTracker { api: ApiUsage::of(api), framer, acc: Accumulator::default(), body_bytes: 0, saw_content: false, broken: false }
    }

    /// Feeds one response body chunk. Returns true when this chunk carried the first
    /// generated content (time to first token): for JSON, the first body byte.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        self.body_bytes += chunk.len() as u64;
        let api = self.api;
        let acc = &mut self.acc;
        let mut content = false;
        match &mut self.framer {
            Framer::Json(capture) => {
                capture.feed(chunk);
                content = !chunk.is_empty();
            }
            Framer::Sse(parser) => {
                if !self.broken {
                    let result = parser.feed(chunk, |item, _| {
                        if let SseItem::Event(event) = item {
                            content |= acc.on_unit(api, &event.data) > 0;
                        }
                    });
                    self.broken = result.is_err();
                }
            }
            Framer::Array(splitter) => splitter.feed(chunk, |element| {
                if let Ok(text) = std::str::from_utf8(element) {
                    content |= acc.on_unit(api, text) > 0;
                }
            }),
        }
        let first = content && !self.saw_content;
        self.saw_content |= content;
        first
    }

    /// Bytes the tracker holds right now (an event or element in progress, captured values).
    pub fn pending_bytes(&self) -> usize {
        match &self.framer {
            Framer::Json(c) => c.pending_bytes(),
            Framer::Sse(p) => p.pending_bytes(),
            Framer::Array(s) => s.pending_bytes(),
        }
    }

    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The stream's terminal event was seen ([`Seen::ended`]; never for a JSON body or
    /// Gemini, whose ends are only the end of the body).
    pub fn ended(&self) -> bool {
        self.acc.seen.ended
    }

    /// Streamed units (events or elements) seen and how many could not be parsed.
    pub fn events(&self) -> (u64, u64) {
        (self.acc.events, self.acc.unparsed_events)
    }

    /// The counts as of now; estimates fill in what the provider did not report (yet).
    /// Does not consume anything: call it again as more bytes arrive.
    pub fn report(&self, request_bytes: u64, bytes_per_token: u32) -> UsageReport {
        let json_acc;
        let acc = match &self.framer {
            Framer::Json(capture) => {
                let mut acc = self.acc.clone();
                acc.on_json(self.api, capture.value(0), capture.value(1));
                json_acc = acc;
                &json_acc
            }
            _ => &self.acc,
        };
        reported_or_estimated(acc.seen.reported, acc.seen.final_seen, request_bytes, acc.text_bytes, bytes_per_token)
    }
}

fn ceil_div(n: u64, d: u32) -> u64 {
    n.div_ceil(u64::from(d.max(1)))
}

/// Combines reported usage with estimates (see the module docs): the usage fallback, not to be
/// confused with the admission estimate of `limits::admission_estimate`.
pub fn reported_or_estimated(reported: Option<Tokens>, final_seen: bool, request_bytes: u64, text_bytes: u64, bpt: u32) -> UsageReport {
    match reported {
        Some(tokens) if final_seen => UsageReport { tokens, estimated: false, reported: true },
        Some(mut tokens) => {
            if tokens.input == 0 {
                tokens.input = ceil_div(request_bytes, bpt);
            }
            tokens.output = tokens.output.max(ceil_div(text_bytes, bpt));
            UsageReport { tokens, estimated: true, reported: true }
        }
        None => UsageReport {
            tokens: Tokens { input: ceil_div(request_bytes, bpt), output: ceil_div(text_bytes, bpt), ..Default::default() },
            estimated: true,
            reported: false,
        },
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
