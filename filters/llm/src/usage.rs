//! Token accounting for the four client APIs, JSON and streamed, without buffering.
//!
//! Response bytes are fed chunk by chunk as they pass through; the tracker holds only:
//! - SSE: the event in progress (core [`SseParser`]);
//! - a streamed JSON array (Gemini `streamGenerateContent` without `alt=sse`): the element
//!   in progress ([`JsonArraySplitter`]);
//! - a JSON body: only the values of the few top-level members it needs (`usage` /
//!   `usageMetadata`, and the content member for estimates), captured by a byte-level
//!   scanner ([`TopLevelCapture`]) that never holds the rest of the document.
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
//! | Gemini | promptTokenCount + toolUsePromptTokenCount | cachedContentTokenCount | – | candidatesTokenCount + thoughtsTokenCount | thoughtsTokenCount |
//!
//! When the final usage never arrives (provider omitted it, stream cut short), the tracker
//! estimates: input = ceil(request bytes / bytes_per_token) unless the provider already
//! reported it, output = max(reported output, ceil(generated text bytes / bytes_per_token)).

use crate::api::{ClientApi, Text};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tollgate_core::json_scan::{Piece, StringBody};
use tollgate_core::sse::{SseItem, SseParser};

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

// ---- provider usage objects ----------------------------------------------------------

#[derive(Deserialize, Default)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningDetails>,
}

#[derive(Deserialize, Default)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct ReasoningDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl ChatUsage {
    fn tokens(&self) -> Tokens {
        let details = self.prompt_tokens_details.as_ref();
        Tokens {
            input: self.prompt_tokens.unwrap_or(0),
            output: self.completion_tokens.unwrap_or(0),
            cached_input: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_creation: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            reasoning: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize, Default)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    output_tokens_details: Option<ReasoningDetails>,
}

impl ResponsesUsage {
    fn tokens(&self) -> Tokens {
        let details = self.input_tokens_details.as_ref();
        Tokens {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cached_input: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_creation: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            reasoning: self.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Later events carry cumulative values: a field present replaces the earlier one.
    fn merge(&mut self, later: &AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    fn tokens(&self) -> Tokens {
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
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

impl GeminiUsage {
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

// ---- streamed events -----------------------------------------------------------------

fn text_len(s: &Option<Text<'_>>) -> u64 {
    s.as_ref().map(|s| s.0.len() as u64).unwrap_or(0)
}

#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChatChoice<'a>>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChatDelta<'a>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    response: Option<ResponsesSnapshot>,
}

#[derive(Deserialize)]
struct ResponsesSnapshot {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Text<'a>>,
    #[serde(default)]
    message: Option<AnthropicMessage>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiChunk<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<GeminiCandidate<'a>>>,
    #[serde(default)]
    usage_metadata: Option<GeminiUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate<'a> {
    #[serde(borrow, default)]
    content: Option<GeminiContent<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct GeminiContent<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<GeminiPart<'a>>>,
}

#[derive(Deserialize)]
struct GeminiPart<'a> {
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
}

/// What the tracker learned so far, independent of framing.
#[derive(Default, Clone)]
struct Accumulator {
    reported: Option<Tokens>,
    anthropic: AnthropicUsage,
    final_seen: bool,
    text_bytes: u64,
    events: u64,
    unparsed_events: u64,
}

impl Accumulator {
    /// One streamed unit: an SSE event's data, or one element of a streamed JSON array.
    /// Returns the generated text bytes it carried.
    fn on_unit(&mut self, api: ClientApi, data: &str) -> u64 {
        self.events += 1;
        let text = match api {
            ClientApi::OpenaiChat => {
                if data.trim() == "[DONE]" {
                    return 0;
                }
                let Ok(chunk) = serde_json::from_str::<ChatChunk<'_>>(data) else {
                    self.unparsed_events += 1;
                    return 0;
                };
                if let Some(usage) = &chunk.usage {
                    self.reported = Some(usage.tokens());
                    self.final_seen = true;
                }
                chunk
                    .choices
                    .iter()
                    .flatten()
                    .filter_map(|c| c.delta.as_ref())
                    .map(|d| {
                        text_len(&d.content)
                            + text_len(&d.reasoning_content)
                            + text_len(&d.refusal)
                            + d.tool_calls.map(|t| t.get().len() as u64).unwrap_or(0)
                    })
                    .sum()
            }
            ClientApi::OpenaiResponses => {
                let Ok(event) = serde_json::from_str::<ResponsesEvent<'_>>(data) else {
                    self.unparsed_events += 1;
                    return 0;
                };
                let kind = event.kind.as_ref().map(Text::as_str).unwrap_or("");
                match kind {
                    "response.completed" | "response.incomplete" | "response.failed" => {
                        if let Some(usage) = event.response.as_ref().and_then(|r| r.usage.as_ref()) {
                            self.reported = Some(usage.tokens());
                            self.final_seen = true;
                        }
                        0
                    }
                    "response.output_text.delta"
                    | "response.refusal.delta"
                    | "response.reasoning_text.delta"
                    | "response.reasoning_summary_text.delta"
                    | "response.function_call_arguments.delta" => {
                        // A JSON string: its raw length less the quotes (escapes count as written).
                        event.delta.map(|d| d.get().len().saturating_sub(2) as u64).unwrap_or(0)
                    }
                    _ => 0,
                }
            }
            ClientApi::AnthropicMessages => {
                let Ok(event) = serde_json::from_str::<AnthropicEvent<'_>>(data) else {
                    self.unparsed_events += 1;
                    return 0;
                };
                match event.kind.as_ref().map(Text::as_str).unwrap_or("") {
                    "message_start" => {
                        if let Some(usage) = event.message.as_ref().and_then(|m| m.usage.as_ref()) {
                            self.anthropic.merge(usage);
                            self.reported = Some(self.anthropic.tokens());
                        }
                        0
                    }
                    "message_delta" => {
                        if let Some(usage) = &event.usage {
                            self.anthropic.merge(usage);
                            self.reported = Some(self.anthropic.tokens());
                            self.final_seen = true;
                        }
                        0
                    }
                    "content_block_delta" => event
                        .delta
                        .as_ref()
                        .map(|d| text_len(&d.text) + text_len(&d.thinking) + text_len(&d.partial_json))
                        .unwrap_or(0),
                    _ => 0,
                }
            }
            ClientApi::Gemini => {
                let Ok(chunk) = serde_json::from_str::<GeminiChunk<'_>>(data) else {
                    self.unparsed_events += 1;
                    return 0;
                };
                let candidates = chunk.candidates.as_deref().unwrap_or(&[]);
                if let Some(usage) = &chunk.usage_metadata {
                    // Cumulative in every chunk; final once a candidate finished.
                    self.reported = Some(usage.tokens());
                    if candidates.iter().any(|c| c.finish_reason.is_some()) {
                        self.final_seen = true;
                    }
                }
                candidates
                    .iter()
                    .filter_map(|c| c.content.as_ref()?.parts.as_ref())
                    .flatten()
                    .map(|p| text_len(&p.text))
                    .sum()
            }
        };
        self.text_bytes += text;
        text
    }

    /// A whole JSON response: its usage member and, for estimates, its content member.
    fn on_json(&mut self, api: ClientApi, usage: Option<&[u8]>, content: Option<&[u8]>) {
        if let Some(raw) = usage {
            let tokens = match api {
                ClientApi::OpenaiChat => serde_json::from_slice::<Option<ChatUsage>>(raw).ok().flatten().map(|u| u.tokens()),
                ClientApi::OpenaiResponses => {
                    serde_json::from_slice::<Option<ResponsesUsage>>(raw).ok().flatten().map(|u| u.tokens())
                }
                ClientApi::AnthropicMessages => {
                    serde_json::from_slice::<Option<AnthropicUsage>>(raw).ok().flatten().map(|u| u.tokens())
                }
                ClientApi::Gemini => serde_json::from_slice::<Option<GeminiUsage>>(raw).ok().flatten().map(|u| u.tokens()),
            };
            if tokens.is_some() {
                self.reported = tokens;
                self.final_seen = true;
            }
        }
        if !self.final_seen {
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

// ---- framing -------------------------------------------------------------------------

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

/// Splits a streamed JSON array into its top-level elements, holding only the element in
/// progress. Elements that are not objects or arrays are skipped.
#[derive(Debug)]
pub struct JsonArraySplitter {
    depth: u32,
    in_string: bool,
    string: StringBody,
    capturing: bool,
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl JsonArraySplitter {
    pub fn new(max: usize) -> Self {
        JsonArraySplitter {
            depth: 0,
            in_string: false,
            string: StringBody::default(),
            capturing: false,
            buf: Vec::new(),
            max,
            overflowed: false,
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, chunk: &[u8], mut on_element: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if self.in_string {
                // Every string byte, quote included, belongs to the element as written.
                let (piece, n) = self.string.next(rest);
                let (bytes, tail) = rest.split_at(n.min(rest.len()));
                self.push(bytes);
                if piece == Piece::End {
                    self.in_string = false;
                }
                rest = tail;
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.push(&[b]);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        self.capturing = true;
                        self.overflowed = false;
                        self.buf.clear();
                    }
                    self.push(&[b]);
                }
                b'}' | b']' => {
                    self.push(&[b]);
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 && self.capturing {
                        self.capturing = false;
                        if !self.overflowed {
                            on_element(&self.buf);
                        }
                        self.buf.clear();
                    }
                }
                _ => self.push(&[b]),
            }
            rest = tail;
        }
    }

    /// Adds `bytes` to the element being captured; drops the element once it outgrows `max`.
    fn push(&mut self, bytes: &[u8]) {
        if self.capturing && !self.overflowed {
            self.overflowed = !append_bounded(&mut self.buf, bytes, self.max);
        }
    }
}

/// Appends `bytes` to a capture of at most `max` bytes; past that the capture is dropped
/// (its memory freed) and false returned.
fn append_bounded(buf: &mut Vec<u8>, bytes: &[u8], max: usize) -> bool {
    if buf.len() + bytes.len() > max {
        *buf = Vec::new();
        return false;
    }
    buf.extend_from_slice(bytes);
    true
}

/// Captures the values of chosen top-level members of a JSON object streamed in chunks,
/// holding nothing else. Values over `max` bytes are dropped.
#[derive(Debug)]
pub struct TopLevelCapture {
    keys: &'static [&'static str],
    max: usize,
    depth: u32,
    in_string: bool,
    string: StringBody,
    /// The top-level value is an object (only then are depth-1 strings member names).
    object: bool,
    expect_key: bool,
    reading_key: bool,
    key: Vec<u8>,
    after_colon: bool,
    pending: Option<usize>,
    /// (member index, is a scalar) of the value being captured.
    capture: Option<(usize, bool)>,
    buf: Vec<u8>,
    found: Vec<Option<Vec<u8>>>,
}

impl TopLevelCapture {
    pub fn new(keys: &'static [&'static str], max: usize) -> Self {
        TopLevelCapture {
            keys,
            max,
            depth: 0,
            in_string: false,
            string: StringBody::default(),
            object: false,
            expect_key: false,
            reading_key: false,
            key: Vec::new(),
            after_colon: false,
            pending: None,
            capture: None,
            buf: Vec::new(),
            found: vec![None; keys.len()],
        }
    }

    /// The raw value of `keys[index]`, if seen (the last one, for duplicates).
    pub fn value(&self, index: usize) -> Option<&[u8]> {
        self.found.get(index).and_then(|v| v.as_deref())
    }

    pub fn pending_bytes(&self) -> usize {
        self.buf.len() + self.key.len()
    }

    fn finish(&mut self, drop_last: bool) {
        if let Some((index, _)) = self.capture.take() {
            let mut value = std::mem::take(&mut self.buf);
            if drop_last {
                value.pop();
            }
            if let Some(slot) = self.found.get_mut(index) {
                *slot = Some(value);
            }
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if !self.in_string {
                self.byte(b);
                rest = tail;
                continue;
            }
            let (piece, n) = self.string.next(rest);
            let (bytes, tail) = rest.split_at(n.min(rest.len()));
            self.keep(bytes);
            match piece {
                // A key keeps only its text bytes (escapes left out, as before), at most 64: enough
                // for the names looked for, and a long key costs no memory.
                Piece::Text if self.reading_key => {
                    let room = 64usize.saturating_sub(self.key.len());
                    self.key.extend(bytes.iter().take(room));
                }
                Piece::End => {
                    self.in_string = false;
                    if self.reading_key {
                        self.reading_key = false;
                    } else if self.depth == 1 && self.capture.is_some() {
                        self.finish(false);
                    }
                }
                _ => {}
            }
            rest = tail;
        }
    }

    /// Adds `bytes` to the value being captured; drops the value once it outgrows `max`.
    fn keep(&mut self, bytes: &[u8]) {
        if self.capture.is_some() && !append_bounded(&mut self.buf, bytes, self.max) {
            self.capture = None;
        }
    }

    /// One byte outside any string.
    fn byte(&mut self, b: u8) {
        if self.after_colon && !b.is_ascii_whitespace() {
            self.after_colon = false;
            if let Some(index) = self.pending.take() {
                self.capture = Some((index, !matches!(b, b'{' | b'[' | b'"')));
                self.buf.clear();
            }
        }
        self.keep(&[b]);
        let scalar_capture = matches!(self.capture, Some((_, true)));
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.reading_key = true;
                    self.key.clear();
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.object = b == b'{';
                    self.expect_key = self.object;
                }
            }
            b'}' | b']' => {
                if self.depth == 1 && scalar_capture {
                    self.finish(true);
                }
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 && self.capture.is_some() {
                    self.finish(false);
                }
            }
            b',' if self.depth == 1 => {
                if scalar_capture {
                    self.finish(true);
                }
                self.expect_key = self.object;
            }
            b':' if self.depth == 1 => {
                self.pending = self.keys.iter().position(|k| k.as_bytes() == self.key.as_slice());
                self.key.clear();
                self.after_colon = true;
            }
            b' ' | b'\t' | b'\r' | b'\n' if self.depth == 1 && scalar_capture => self.finish(true),
            _ => {}
        }
    }
}

/// Top-level members captured from a JSON response: [usage, content].
fn json_keys(api: ClientApi) -> &'static [&'static str] {
    match api {
        ClientApi::OpenaiChat => &["usage", "choices"],
        ClientApi::OpenaiResponses => &["usage", "output"],
        ClientApi::AnthropicMessages => &["usage", "content"],
        ClientApi::Gemini => &["usageMetadata", "candidates"],
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
    api: ClientApi,
    framer: Framer,
    acc: Accumulator,
    body_bytes: u64,
    saw_content: bool,
    broken: bool,
}

impl UsageTracker {
    pub fn new(api: ClientApi, framing: Framing, max_event_bytes: usize) -> Self {
        let framer = match framing {
            Framing::Json => Framer::Json(TopLevelCapture::new(json_keys(api), max_event_bytes)),
            Framing::Sse => Framer::Sse(SseParser::new(max_event_bytes)),
            Framing::JsonArray => Framer::Array(JsonArraySplitter::new(max_event_bytes)),
        };
        UsageTracker { api, framer, acc: Accumulator::default(), body_bytes: 0, saw_content: false, broken: false }
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
        estimate(acc.reported, acc.final_seen, request_bytes, acc.text_bytes, bytes_per_token)
    }
}

fn ceil_div(n: u64, d: u32) -> u64 {
    n.div_ceil(u64::from(d.max(1)))
}

/// Combines reported usage with estimates (see the module docs).
pub fn estimate(reported: Option<Tokens>, final_seen: bool, request_bytes: u64, text_bytes: u64, bpt: u32) -> UsageReport {
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
mod tests {
    use super::*;

    /// Feeds `body` whole, then split at every byte boundary, then one byte at a time, and
    /// checks every way gives the same report.
    fn report_all_splits(api: ClientApi, framing: Framing, body: &[u8]) -> UsageReport {
        let run = |chunks: &[&[u8]]| {
            let mut t = UsageTracker::new(api, framing, 1 << 16);
            let mut firsts = 0;
            for c in chunks {
                firsts += usize::from(t.feed(c));
            }
            assert!(firsts <= 1);
            assert_eq!(t.report(400, 4), t.report(400, 4));
            t.report(400, 4)
        };
        let whole = run(&[body]);
        for split in 0..=body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(run(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&bytes), whole);
        whole
    }

    fn exact(tokens: Tokens) -> UsageReport {
        UsageReport { tokens, estimated: false, reported: true }
    }

    #[test]
    fn openai_chat_json() {
        let body = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a \"usage\": {} b"}}],
            "usage" : {"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,
                       "prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},
                       "completion_tokens_details":{"reasoning_tokens":4}}, "system_fingerprint":"fp"}"#;
        let r = report_all_splits(ClientApi::OpenaiChat, Framing::Json, body);
        assert_eq!(r, exact(Tokens { input: 12, output: 9, cached_input: 3, cache_creation: 0, reasoning: 4 }));
    }

    #[test]
    fn openai_chat_sse_with_usage_chunk() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"prompt_tokens_details\":null}}\n\n",
            "data: [DONE]\n\n"
        );
        let r = report_all_splits(ClientApi::OpenaiChat, Framing::Sse, body.as_bytes());
        assert_eq!(r, exact(Tokens { input: 7, output: 2, ..Default::default() }));
    }

    #[test]
    fn openai_chat_sse_without_usage_is_estimated() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n\ndata: [DONE]\n\n";
        let r = report_all_splits(ClientApi::OpenaiChat, Framing::Sse, body.as_bytes());
        // input: 400 request bytes / 4; output: ceil(10 / 4).
        assert_eq!(r, UsageReport { tokens: Tokens { input: 100, output: 3, ..Default::default() }, estimated: true, reported: false });
    }

    #[test]
    fn openai_responses_json_and_sse() {
        let json = br#"{"id":"r","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],
            "usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":5,"cache_write_tokens":2},"output_tokens":8,
            "output_tokens_details":{"reasoning_tokens":3},"total_tokens":28}}"#;
        let expected = Tokens { input: 20, output: 8, cached_input: 5, cache_creation: 2, reasoning: 3 };
        assert_eq!(report_all_splits(ClientApi::OpenaiResponses, Framing::Json, json), exact(expected));
        let sse = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":20,",
            "\"input_tokens_details\":{\"cached_tokens\":5,\"cache_write_tokens\":2},\"output_tokens\":8,",
            "\"output_tokens_details\":{\"reasoning_tokens\":3},\"total_tokens\":28}}}\n\n"
        );
        assert_eq!(report_all_splits(ClientApi::OpenaiResponses, Framing::Sse, sse.as_bytes()), exact(expected));
    }

    #[test]
    fn anthropic_json_and_sse_replace_cumulative_output() {
        let json = br#"{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":10,"cache_creation_input_tokens":4,"cache_read_input_tokens":6,"output_tokens":5}}"#;
        let expected = Tokens { input: 20, output: 5, cached_input: 6, cache_creation: 4, reasoning: 0 };
        assert_eq!(report_all_splits(ClientApi::AnthropicMessages, Framing::Json, json), exact(expected));
        let sse = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,",
            "\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":6,\"output_tokens\":1}}}\r\n\r\n",
            "event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n",
            "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\r\n\r\n",
            "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\r\n\r\n",
            "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n"
        );
        assert_eq!(report_all_splits(ClientApi::AnthropicMessages, Framing::Sse, sse.as_bytes()), exact(expected));
    }

    #[test]
    fn anthropic_stream_cut_before_message_delta_keeps_reported_input() {
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdefghijkl\"}}\n\n",
        );
        let r = report_all_splits(ClientApi::AnthropicMessages, Framing::Sse, sse.as_bytes());
        assert_eq!(r, UsageReport { tokens: Tokens { input: 10, output: 3, ..Default::default() }, estimated: true, reported: true });
    }

    const GEMINI_CHUNKS: [&str; 2] = [
        r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1,"totalTokenCount":10}}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"lo]}\""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":19,"cachedContentTokenCount":2,"thoughtsTokenCount":6}}"#,
    ];

    #[test]
    fn gemini_json_sse_and_array() {
        let expected = Tokens { input: 9, output: 10, cached_input: 2, cache_creation: 0, reasoning: 6 };
        assert_eq!(report_all_splits(ClientApi::Gemini, Framing::Json, GEMINI_CHUNKS[1].as_bytes()), exact(expected));
        let sse = format!("data: {}\r\n\r\ndata: {}\r\n\r\n", GEMINI_CHUNKS[0], GEMINI_CHUNKS[1]);
        assert_eq!(report_all_splits(ClientApi::Gemini, Framing::Sse, sse.as_bytes()), exact(expected));
        let array = format!("[{},\r\n{}]", GEMINI_CHUNKS[0], GEMINI_CHUNKS[1]);
        assert_eq!(report_all_splits(ClientApi::Gemini, Framing::JsonArray, array.as_bytes()), exact(expected));
    }

    #[test]
    fn gemini_stream_without_finish_is_estimated_from_cumulative_usage() {
        let sse = format!("data: {}\n\n", GEMINI_CHUNKS[0]);
        let r = report_all_splits(ClientApi::Gemini, Framing::Sse, sse.as_bytes());
        assert!(r.estimated && r.reported);
        assert_eq!(r.tokens.input, 9);
        assert_eq!(r.tokens.output, 1);
    }

    #[test]
    fn json_without_usage_estimates_from_generated_text() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"0123456789abcdef"}}],"usage":null}"#;
        let r = report_all_splits(ClientApi::OpenaiChat, Framing::Json, body);
        assert_eq!(r, UsageReport { tokens: Tokens { input: 100, output: 4, ..Default::default() }, estimated: true, reported: false });
    }

    #[test]
    fn top_level_capture_handles_scalars_strings_nesting_and_escapes() {
        let mut c = TopLevelCapture::new(&["a", "b", "c", "d"], 1024);
        c.feed(br#" { "x": {"a": 1}, "a" : 42 , "b":"q\"}\\" ,"c":[1,{"a":[]}],"d":true}"#);
        assert_eq!(c.value(0), Some(&b"42"[..]));
        assert_eq!(c.value(1), Some(&br#""q\"}\\""#[..]));
        assert_eq!(c.value(2), Some(&br#"[1,{"a":[]}]"#[..]));
        assert_eq!(c.value(3), Some(&b"true"[..]));
        let mut c = TopLevelCapture::new(&["a"], 4);
        c.feed(br#"{"a":"too long for the cap"}"#);
        assert_eq!(c.value(0), None);
        let mut c = TopLevelCapture::new(&["a"], 64);
        c.feed(br#"["a", {"a": 1}]"#);
        assert_eq!(c.value(0), None);
    }

    #[test]
    fn top_level_capture_skips_string_runs_exactly_as_byte_by_byte() {
        let docs: [&[u8]; 4] = [
            br#" { "x": {"a": "s\"t"}, "a" : 42 , "b":"q\"}\\ long text here" ,"c":[1,{"a":"]"}],"d":true}"#,
            br#"{"usage":{"prompt_tokens":9},"choices":[{"message":{"content":"hello \u00e9 \" world"}}]}"#,
            br#"{"a":"0123456789abcdef","b":"x"}"#,
            br#"{"ke\"y":"v","a":"w"}"#,
        ];
        for doc in docs {
            for max in [4, 16, 17, 18, 1024] {
                for split in 0..doc.len() {
                    let mut fast = TopLevelCapture::new(&["a", "b", "c", "d", "usage", "choices"], max);
                    fast.feed(&doc[..split]);
                    fast.feed(&doc[split..]);
                    let mut slow = TopLevelCapture::new(&["a", "b", "c", "d", "usage", "choices"], max);
                    for b in doc.chunks(1) {
                        slow.feed(b);
                    }
                    assert_eq!(fast.found, slow.found, "{} max {max} split {split}", String::from_utf8_lossy(doc));
                }
            }
        }
    }

    #[test]
    fn array_splitter_holds_one_element() {
        let mut s = JsonArraySplitter::new(1024);
        let mut out = Vec::new();
        s.feed(br#"[{"a":"]}"},"#, |e| out.push(e.to_vec()));
        s.feed(br#" {"b":[1,2]"#, |e| out.push(e.to_vec()));
        assert_eq!(s.pending_bytes(), 10);
        s.feed(b"}]", |e| out.push(e.to_vec()));
        assert_eq!(out, vec![br#"{"a":"]}"}"#.to_vec(), br#"{"b":[1,2]}"#.to_vec()]);
    }

    #[test]
    fn array_splitter_gives_the_same_elements_for_any_split() {
        // Escaped quotes and backslashes, brackets inside strings, skipped top-level scalars and
        // an unfinished last element; every split puts some string state at a chunk boundary.
        let docs: [&[u8]; 4] = [
            br#"[{"a":"]}"},"x\"]",{"b":[1,2,{"c":"\\"}]}, 3, "s\\\"{", [ "\\\\" ,"q\"}"] ]"#,
            br#"[ {"k":"long text \" with [brackets] and \\ slashes","n":[{"m":"\\\""}]} ,{"x":"\u00e9"}]"#,
            br#"[{"a":"0123456789"},{"b":"01234567890123456789"},{"c":1}]"#,
            br#"[{"a":"\\"},{"b":"unterminated \"#,
        ];
        let run = |max: usize, chunks: &[&[u8]]| {
            let mut s = JsonArraySplitter::new(max);
            let mut out = Vec::new();
            for c in chunks {
                s.feed(c, |e| out.push(e.to_vec()));
            }
            (out, s.pending_bytes())
        };
        for doc in docs {
            for max in [4, 12, 13, 14, 24, 1024] {
                let whole = run(max, &[doc]);
                let bytes: Vec<&[u8]> = doc.chunks(1).collect();
                assert_eq!(run(max, &bytes), whole, "{} max {max} byte by byte", String::from_utf8_lossy(doc));
                for split in 0..=doc.len() {
                    let (a, b) = doc.split_at(split);
                    assert_eq!(run(max, &[a, b]), whole, "{} max {max} split {split}", String::from_utf8_lossy(doc));
                }
            }
        }
        let (out, _) = run(1024, &[docs[0]]);
        assert_eq!(
            out,
            vec![
                br#"{"a":"]}"}"#.to_vec(),
                br#"{"b":[1,2,{"c":"\\"}]}"#.to_vec(),
                br#"[ "\\\\" ,"q\"}"]"#.to_vec(),
            ]
        );
        // An element longer than `max` is dropped whole; the next one is still found.
        let (out, pending) = run(13, &[docs[2]]);
        assert_eq!((out, pending), (vec![br#"{"c":1}"#.to_vec()], 0));
        let (out, _) = run(18, &[docs[2]]);
        assert_eq!(out, vec![br#"{"a":"0123456789"}"#.to_vec(), br#"{"c":1}"#.to_vec()]);
    }

    #[test]
    fn sse_tracker_holds_only_the_event_in_progress() {
        let mut t = UsageTracker::new(ClientApi::OpenaiChat, Framing::Sse, 1 << 16);
        for _ in 0..500 {
            t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n");
        }
        t.feed(b"data: {\"choi");
        assert_eq!(t.pending_bytes(), 12);
        assert_eq!(t.events(), (500, 0));
    }

    #[test]
    fn first_content_is_reported_once() {
        let mut t = UsageTracker::new(ClientApi::AnthropicMessages, Framing::Sse, 1 << 16);
        assert!(!t.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"));
        assert!(t.feed(b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a\"}}\n\n"));
        assert!(!t.feed(b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"b\"}}\n\n"));
    }

    #[test]
    fn framing_detection() {
        assert_eq!(Framing::detect(Some("text/event-stream; charset=utf-8"), false), Framing::Sse);
        assert_eq!(Framing::detect(Some("application/json"), true), Framing::JsonArray);
        assert_eq!(Framing::detect(Some("Text/Event-Stream"), true), Framing::Sse);
        assert_eq!(Framing::detect(None, false), Framing::Json);
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(ceil_div(0, 4), 0);
        assert_eq!(ceil_div(1, 4), 1);
        assert_eq!(ceil_div(8, 4), 2);
        assert_eq!(ceil_div(9, 0), 9);
    }
}
