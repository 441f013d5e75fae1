//! [`SseGuard`]: the guardrail over a streamed answer, event by event, in the client API's
//! own stream format.
//!
//! Held between chunks: the event in progress (core [`SseParser`], or for a Gemini stream
//! without `?alt=sse` the JSON array element in progress), and per text stream a
//! [`StreamGuard`] with its window. A text stream is one choice's `content` (or `refusal`),
//! one Anthropic text block, one Gemini candidate's text (thoughts apart), one Responses
//! output text (or refusal) part.
//!
//! Each text delta is pushed into its stream's guard and the event is rewritten to carry the
//! text released (possibly empty: the event stays, valid). Before the event that closes a
//! stream, the held tail is released as one more delta event of the API; when the closing
//! event itself carries text for that stream the tail is appended to it instead:
//!
//! | API | closes a stream | tail event | on block |
//! |---|---|---|---|
//! | OpenAI Chat | the choice's chunk with a `finish_reason`; `data: [DONE]` (all) | a `chat.completion.chunk` (the stream's `id`, `model`, `created`…) with `choices: [{index, delta: {content}, finish_reason: null}]` | `data: {"error": {message, type: "invalid_request_error", param: null, code: "content_filter"}}` then `data: [DONE]` |
//! | Anthropic | the block's `content_block_stop`; `message_delta` / `message_stop` (all) | `event: content_block_delta` `{type, index, delta: {type: "text_delta", text}}` | `event: error` `{"type": "error", "error": {"type": "invalid_request_error", message}}` |
//! | Gemini | the candidate's chunk with a `finishReason`; the end of the stream (all) | a chunk (the stream's `responseId`, `modelVersion`…) with `candidates: [{content: {parts: [{text}], role: "model"}, index}]` | a chunk `{"error": {code: 400, message, status: "INVALID_ARGUMENT"}}`; in a JSON array it is the last element and the array is closed |
//! | OpenAI Responses | `response.output_text.done` (its part); `response.output_item.done` (its item); `response.completed` / `.incomplete` / `.failed` (all) | `event: response.output_text.delta` `{type, item_id, output_index, content_index, delta, logprobs: [], sequence_number}`; every later event's `sequence_number` is moved up by one per inserted event | `event: error` `{"type": "error", code: "content_filter", message, param: null, sequence_number}` |
//!
//! The Responses events that repeat the whole text (`response.output_text.done` `text`,
//! `response.content_part.done` `part`, `response.output_item.done` `item`,
//! `response.function_call_arguments.done` `arguments`, `response.completed` & co.
//! `response.output`) are redacted as a whole in redact mode (not counted again: their hits
//! were counted from the deltas).
//!
//! Tool calls: streamed argument deltas (OpenAI Chat `tool_calls[].function.arguments`,
//! Anthropic `input_json_delta`, Responses `response.function_call_arguments.delta`) are
//! JSON fragments: each call's fragments go through a detect-only guard, so their hits are
//! reported and `block` ends the stream once a match is decided (at the latest when the call
//! ends), but they are neither held back nor redacted (a redaction inside a fragment could
//! break the JSON): a match in streamed tool arguments may reach the client, in part or
//! whole, before a block.
//! Whole arguments (Gemini `functionCall.args`, Anthropic `content_block_start` `input`,
//! Responses `.done` events) are scanned and redacted like a JSON answer.
//!
//! Hits: `message_index` is the choice (OpenAI Chat) or candidate (Gemini) index, 0 for
//! Anthropic and Responses. Modes: `redact` rewrites released text, `block` holds text back
//! the same way and, at the first hit, drops the event that decided it, sends the API's
//! error event and drops everything after (a private key block, reported by the
//! [`StreamGuard`] only at its END line, is caught at its BEGIN line: released text that
//! differs from the text pushed); `log` passes every event byte for byte and only reports.
//!
//! Output depends only on the events, never on how the upstream cut its bytes. An event left
//! incomplete at the end of the stream is dropped (a conforming SSE reader drops it too). An
//! event larger than [`MAX_EVENT_BYTES`] cannot be inspected: in `log` mode the rest of the
//! stream passes as is, otherwise the stream ends with the error event.

use super::action::{block_message, GuardAction, GuardHit, HitLog, Place};
use super::json::{all, all_items, last, last_str, members, string, top, uint, Edits, Walk};
use super::request::responses_item;
use super::response::alt_index;
use super::{Scanner, StreamGuard};
use crate::api::ClientApi;
use serde_json::value::RawValue;
use std::rc::Rc;
use tollgate_core::wire::sse::{SseEvent, SseItem, SseParser};

/// The largest event (or JSON array element) held for inspection.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// What one [`SseGuard::feed`] (or [`SseGuard::finish`]) gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseOut {
    /// Bytes to send to the client now.
    pub bytes: Vec<u8>,
    /// Hits decided by this call (counts add up over the calls).
    pub hits: Vec<GuardHit>,
    /// The stream is blocked (from the call that blocked it on): the error event was sent
    /// and nothing more will be.
    pub blocked: bool,
}

/// A text stream: (choice / candidate / block / output index, content part, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    alt: u64,
    part: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Refusal,
    Thought,
}

#[derive(Debug)]
struct TextStream {
    key: Key,
    guard: StreamGuard,
    /// Responses: the output item's id, for the tail event.
    item_id: Option<String>,
    /// Block mode: the text pushed and not released yet (see [`SseGuard::push`]).
    raw: String,
}

#[derive(Debug)]
struct ToolStream {
    alt: u64,
    tool: u64,
    guard: StreamGuard,
}

/// A held tail to send as one more delta event.
#[derive(Debug)]
struct Tail {
    key: Key,
    text: String,
    item_id: Option<String>,
}

#[derive(Debug)]
enum Framing {
    Sse(SseParser),
    Array(ArrayFramer),
    /// Passing the rest as is (log mode after an event too large to inspect).
    Raw,
}

/// The guardrail over one streamed answer.
#[derive(Debug)]
pub struct SseGuard {
    api: ClientApi,
    scanner: Rc<Scanner>,
    action: GuardAction,
    window: usize,
    framing: Framing,
    texts: Vec<TextStream>,
    tools: Vec<ToolStream>,
    log: HitLog,
    blocked: bool,
    finished: bool,
    /// Responses: events inserted so far (later `sequence_number`s move up by this).
    seq_offset: u64,
    /// Responses: the sequence number the next event would have.
    next_seq: u64,
    /// OpenAI Chat / Gemini: the last chunk's members other than its content (`"k":v`).
    envelope: Vec<String>,
    /// JSON array: elements sent so far (for the separators of inserted ones).
    elements: usize,
    /// JSON array: the separator before the element being handled was sent.
    sep_sent: bool,
}

/// The result of one event: extra events before it, and its rewritten data.
#[derive(Debug, Default)]
struct Step {
    pre: Vec<Tail>,
    data: Option<String>,
}

impl SseGuard {
    /// A guard for a streamed answer of `api`; `window`: the bytes each text stream holds
    /// back (usually [`Scanner::window`]); `gemini_json_array`: a Gemini stream without
    /// `?alt=sse` (one JSON array).
    pub fn new(api: ClientApi, scanner: Rc<Scanner>, action: GuardAction, window: usize, gemini_json_array: bool) -> Self {
        let framing = if gemini_json_array && api == ClientApi::Gemini {
            Framing::Array(ArrayFramer::new(MAX_EVENT_BYTES))
        } else {
            Framing::Sse(SseParser::new(MAX_EVENT_BYTES).keeping_raw())
        };
        SseGuard {
            api,
            scanner,
            action,
            window,
            framing,
            texts: Vec::new(),
            tools: Vec::new(),
            log: HitLog::default(),
            blocked: false,
            finished: false,
            seq_offset: 0,
            next_seq: 0,
            envelope: Vec::new(),
            elements: 0,
            sep_sent: false,
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Bytes held: the event in progress and the text streams' windows.
    pub fn held(&self) -> usize {
        let framing = match &self.framing {
            Framing::Sse(p) => p.pending_bytes(),
            Framing::Array(a) => a.pending_bytes(),
            Framing::Raw => 0,
        };
        framing + self.texts.iter().map(|t| t.guard.held()).sum::<usize>()
    }

    /// Upstream bytes in, bytes for the client out.
    pub fn feed(&mut self, chunk: &[u8]) -> SseOut {
        let mut out = Vec::new();
        if !self.blocked && !self.finished {
            match &mut self.framing {
                Framing::Raw => out.extend_from_slice(chunk),
                Framing::Sse(parser) => {
                    let mut items: Vec<(Option<SseEvent>, Vec<u8>)> = Vec::new();
                    let r = parser.feed(chunk, |item, raw| {
                        let ev = match item {
                            SseItem::Event(e) => Some(e.clone()),
                            SseItem::Other => None,
                        };
                        items.push((ev, raw.to_vec()));
                    });
                    let pending = parser.pending_raw().to_vec();
                    for (ev, raw) in items {
                        if self.blocked {
                            break;
                        }
                        match ev {
                            Some(ev) => self.sse_event(&ev, &raw, &mut out),
                            None => out.extend_from_slice(&raw),
                        }
                    }
                    if r.is_err() && !self.blocked {
                        self.too_large(pending, &mut out);
                    }
                }
                Framing::Array(framer) => {
                    let mut pieces = Vec::new();
                    framer.feed(chunk, &mut pieces);
                    for piece in pieces {
                        if self.blocked {
                            break;
                        }
                        self.array_piece(piece, &mut out);
                    }
                }
            }
        }
        self.out(out)
    }

    /// The upstream ended: releases every held tail.
    pub fn finish(&mut self) -> SseOut {
        let mut out = Vec::new();
        if !self.blocked && !self.finished {
            self.finished = true;
            let mode = match &self.framing {
                Framing::Sse(_) => 1,
                Framing::Array(a) if a.state == AState::Inside => 2,
                Framing::Array(_) | Framing::Raw => 0,
            };
            if mode == 1 {
                let pre = self.close_all();
                if !self.block_if_hit(&mut out) {
                    self.write_sse_tails(pre, None, &mut out);
                }
            } else if mode == 2 {
                // Never closed: the tails as last elements, the array left as it was.
                self.sep_sent = false;
                let pre = self.close_all();
                if !self.block_if_hit(&mut out) {
                    self.write_array_tails(pre, &mut out);
                }
            }
        }
        self.out(out)
    }

    fn out(&mut self, bytes: Vec<u8>) -> SseOut {
        SseOut { bytes, hits: std::mem::take(&mut self.log).0, blocked: self.blocked }
    }

    // ---- framing --------------------------------------------------------------------

    fn sse_event(&mut self, ev: &SseEvent, raw: &[u8], out: &mut Vec<u8>) {
        let step = self.unit(&ev.data);
        if self.block_if_hit(out) {
            return;
        }
        let seq = self.seq_of(&ev.data);
        self.write_sse_tails(step.pre, seq, out);
        self.bump_seq(seq);
        match self.renumber(step.data, &ev.data, seq) {
            Some(data) => out.extend_from_slice(&SseEvent { data, ..ev.clone() }.to_bytes_replacing(raw)),
            None => out.extend_from_slice(raw),
        }
    }

    fn array_piece(&mut self, piece: APiece, out: &mut Vec<u8>) {
        match piece {
            APiece::Raw(bytes) => out.extend_from_slice(&bytes),
            APiece::Element(bytes) => {
                self.sep_sent = true;
                let Ok(data) = std::str::from_utf8(&bytes) else {
                    out.extend_from_slice(&bytes);
                    self.elements += 1;
                    return;
                };
                let step = self.unit(data);
                if self.block_if_hit(out) {
                    return;
                }
                for tail in step.pre {
                    out.extend_from_slice(self.tail_json(&tail, None).as_bytes());
                    out.push(b',');
                    self.elements += 1;
                }
                match step.data {
                    Some(d) => out.extend_from_slice(d.as_bytes()),
                    None => out.extend_from_slice(&bytes),
                }
                self.elements += 1;
            }
            APiece::Close(bytes) => {
                self.sep_sent = false;
                let pre = self.close_all();
                if self.block_if_hit(out) {
                    return;
                }
                self.write_array_tails(pre, out);
                out.extend_from_slice(&bytes);
            }
            APiece::Overflow(pending) => {
                self.sep_sent = true;
                self.too_large(pending, out);
            }
        }
    }

    /// Tails as delta events before an event numbered `seq` (Responses), or at the end.
    fn write_sse_tails(&mut self, pre: Vec<Tail>, seq: Option<u64>, out: &mut Vec<u8>) {
        let n = pre.len() as u64;
        let base = match seq {
            Some(s) => s.saturating_add(self.seq_offset),
            None => self.next_seq,
        };
        for (k, tail) in pre.iter().enumerate() {
            let json = self.tail_json(tail, Some(base.saturating_add(k as u64)));
            let event = match (self.api, tail.key.kind) {
                (ClientApi::AnthropicMessages, _) => Some("content_block_delta"),
                (ClientApi::OpenaiResponses, Kind::Refusal) => Some("response.refusal.delta"),
                (ClientApi::OpenaiResponses, _) => Some("response.output_text.delta"),
                _ => None,
            };
            out.extend_from_slice(&SseEvent { event: event.map(String::from), data: json, id: None }.to_bytes());
        }
        match seq {
            Some(_) => self.seq_offset = self.seq_offset.saturating_add(n),
            None => self.next_seq = self.next_seq.saturating_add(n),
        }
    }

    fn write_array_tails(&mut self, pre: Vec<Tail>, out: &mut Vec<u8>) {
        for tail in pre {
            if self.elements > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.tail_json(&tail, None).as_bytes());
            self.elements += 1;
        }
    }

    /// An event too large to inspect: passes the rest in log mode, else ends the stream.
    fn too_large(&mut self, pending: Vec<u8>, out: &mut Vec<u8>) {
        if self.action == GuardAction::Log {
            out.extend_from_slice(&pending);
            self.framing = Framing::Raw;
            return;
        }
        let message = "The response could not be inspected by a guardrail (an event is too large)".to_string();
        self.write_error(&message, out);
    }

    // ---- Responses sequence numbers ---------------------------------------------------

    fn seq_of(&self, data: &str) -> Option<u64> {
        if self.api != ClientApi::OpenaiResponses {
            return None;
        }
        let (_, m) = top(data)?;
        last(&m, "sequence_number").and_then(uint)
    }

    fn bump_seq(&mut self, seq: Option<u64>) {
        if let Some(s) = seq {
            self.next_seq = s.saturating_add(self.seq_offset).saturating_add(1);
        }
    }

    /// The event's data with its `sequence_number` moved up past inserted events.
    fn renumber(&self, data: Option<String>, original: &str, seq: Option<u64>) -> Option<String> {
        let Some(s) = seq.filter(|_| self.seq_offset > 0) else { return data };
        let src = data.as_deref().unwrap_or(original);
        let (_, m) = top(src)?;
        let raw = last(&m, "sequence_number")?;
        let mut edits = Edits::new(src);
        edits.replace(raw, s.saturating_add(self.seq_offset).to_string());
        edits.apply().or(data)
    }

    // ---- blocking -------------------------------------------------------------------

    /// In block mode, after a hit: sends the error event and ends the stream.
    fn block_if_hit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.action != GuardAction::Block || self.log.is_empty() {
            return false;
        }
        let message = block_message(Place::Response, &self.log);
        self.write_error(&message, out);
        true
    }

    fn write_error(&mut self, message: &str, out: &mut Vec<u8>) {
        self.blocked = true;
        let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"blocked\"".into());
        let sse = |event: Option<&str>, data: String| SseEvent { event: event.map(String::from), data, id: None }.to_bytes();
        match self.api {
            ClientApi::AnthropicMessages => out.extend_from_slice(&sse(
                Some("error"),
                format!(r#"{{"type":"error","error":{{"type":"invalid_request_error","message":{msg}}}}}"#),
            )),
            ClientApi::OpenaiResponses => out.extend_from_slice(&sse(
                Some("error"),
                format!(
                    r#"{{"type":"error","code":"content_filter","message":{msg},"param":null,"sequence_number":{}}}"#,
                    self.next_seq
                ),
            )),
            ClientApi::Gemini => {
                let json = format!(r#"{{"error":{{"code":400,"message":{msg},"status":"INVALID_ARGUMENT"}}}}"#);
                if let Framing::Array(_) = &self.framing {
                    // For an element the separator before it (or the `[`) was sent already.
                    if !self.sep_sent && self.elements > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(json.as_bytes());
                    out.push(b']');
                } else {
                    out.extend_from_slice(&sse(None, json));
                }
            }
            ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => {
                out.extend_from_slice(&sse(
                    None,
                    format!(r#"{{"error":{{"message":{msg},"type":"invalid_request_error","param":null,"code":"content_filter"}}}}"#),
                ));
                out.extend_from_slice(&sse(None, "[DONE]".into()));
            }
        }
    }

    // ---- text streams ---------------------------------------------------------------

    fn hit_index(&self, alt: u64) -> i64 {
        match self.api {
            ClientApi::OpenaiChat | ClientApi::Gemini => i64::try_from(alt).unwrap_or(i64::MAX),
            _ => 0,
        }
    }

    fn rewriting(&self) -> bool {
        self.action != GuardAction::Log
    }

    /// Pushes a delta of `key`; the text released.
    fn push(&mut self, key: Key, delta: &str) -> String {
        let pos = match self.texts.iter().position(|t| t.key == key) {
            Some(p) => p,
            None => {
                // Block mode redacts too: what is released must equal what was pushed.
                let guard = StreamGuard::with_window(Rc::clone(&self.scanner), self.action != GuardAction::Log, self.window);
                self.texts.push(TextStream { key, guard, item_id: None, raw: String::new() });
                self.texts.len() - 1
            }
        };
        let Some(t) = self.texts.get_mut(pos) else { return String::new() };
        let mut r = t.guard.push(delta);
        if self.action == GuardAction::Block {
            // A private key block is reported when it ends, but withheld from its BEGIN line
            // on: released text that differs from the text pushed means a hit is open.
            t.raw.push_str(delta);
            let n = t.raw.len().saturating_sub(t.guard.held());
            let same = t.raw.get(..n) == Some(r.text.as_str());
            if t.raw.is_char_boundary(n) {
                t.raw.drain(..n);
            }
            if !same && r.hits.is_empty() {
                r.hits = t.guard.finish().hits;
            }
        }
        let index = self.hit_index(key.alt);
        self.log.add_hits(&self.scanner, Place::Response, index, &r.hits);
        r.text
    }

    fn set_item_id(&mut self, key: Key, id: Option<String>) {
        if let (Some(t), Some(id)) = (self.texts.iter_mut().find(|t| t.key == key), id) {
            t.item_id = Some(id);
        }
    }

    /// Ends the streams matching `which`: their tails (non-empty ones), in stream order.
    fn close(&mut self, which: impl Fn(&Key) -> bool) -> Vec<Tail> {
        let mut tails = Vec::new();
        let mut k = 0;
        while let Some(t) = self.texts.get(k) {
            if !which(&t.key) {
                k += 1;
                continue;
            }
            let mut t = self.texts.remove(k);
            let r = t.guard.finish();
            let index = self.hit_index(t.key.alt);
            self.log.add_hits(&self.scanner, Place::Response, index, &r.hits);
            if !r.text.is_empty() && self.rewriting() {
                tails.push(Tail { key: t.key, text: r.text, item_id: t.item_id });
            }
        }
        tails
    }

    /// Ends every stream, tool calls too.
    fn close_all(&mut self) -> Vec<Tail> {
        let alts: Vec<u64> = self.tools.iter().map(|t| t.alt).collect();
        for alt in alts {
            self.close_tool(alt, None);
        }
        self.close(|_| true)
    }

    /// Tool-call argument fragments: detect only.
    fn push_tool(&mut self, alt: u64, tool: u64, delta: &str) {
        let pos = match self.tools.iter().position(|t| t.alt == alt && t.tool == tool) {
            Some(p) => p,
            None => {
                let guard = StreamGuard::with_window(Rc::clone(&self.scanner), false, self.window);
                self.tools.push(ToolStream { alt, tool, guard });
                self.tools.len() - 1
            }
        };
        let Some(t) = self.tools.get_mut(pos) else { return };
        let r = t.guard.push(delta);
        let index = self.hit_index(alt);
        self.log.add_hits(&self.scanner, Place::Response, index, &r.hits);
    }

    /// Ends tool streams of `alt` (all, or tool `tool`).
    fn close_tool(&mut self, alt: u64, tool: Option<u64>) {
        let mut k = 0;
        while let Some(t) = self.tools.get(k) {
            if t.alt != alt || tool.is_some_and(|x| x != t.tool) {
                k += 1;
                continue;
            }
            let mut t = self.tools.remove(k);
            let r = t.guard.finish();
            let index = self.hit_index(alt);
            self.log.add_hits(&self.scanner, Place::Response, index, &r.hits);
        }
    }

    /// Counts the hits of a [`Walk`] over whole JSON inside an event (tool inputs).
    fn keep_walk(&mut self, log: HitLog) {
        for h in log.0 {
            self.log.add(h.place, h.message_index, &h.detector, h.count);
        }
    }

    // ---- events of each API ---------------------------------------------------------

    fn unit(&mut self, data: &str) -> Step {
        match self.api {
            ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => self.chat(data),
            ClientApi::AnthropicMessages => self.anthropic(data),
            ClientApi::Gemini => self.gemini(data),
            ClientApi::OpenaiResponses => self.responses(data),
        }
    }

    /// Applies the texts of one event: each `(key, value, released)`; tails of the streams
    /// closed by this event go into the last text of their stream here, or before it.
    fn apply_texts(&self, texts: Vec<(Key, &RawValue, String)>, mut closed: Vec<Tail>, edits: &mut Edits<'_>, step: &mut Step) {
        let mut texts = texts;
        for tail in closed.drain(..) {
            match texts.iter_mut().rev().find(|(k, _, _)| *k == tail.key) {
                Some((_, _, released)) => released.push_str(&tail.text),
                None => step.pre.push(tail),
            }
        }
        if !self.rewriting() {
            step.pre.clear();
            return;
        }
        for (_, raw, released) in texts {
            if string(raw).as_deref() != Some(released.as_str()) {
                if let Ok(json) = serde_json::to_string(&released) {
                    edits.replace(raw, json);
                }
            }
        }
    }

    fn chat(&mut self, data: &str) -> Step {
        let mut step = Step::default();
        if data.trim() == "[DONE]" {
            step.pre = self.close_all();
            if !self.rewriting() {
                step.pre.clear();
            }
            return step;
        }
        let Some((_, m)) = top(data) else { return step };
        self.envelope = envelope(&m, &["choices", "usage", "obfuscation"]);
        let mut edits = Edits::new(data);
        for (k, choice) in all_items(&m, "choices").into_iter().enumerate() {
            let alt = u64::try_from(alt_index(choice, k)).unwrap_or(0);
            let Some(cm) = members(choice) else { continue };
            let mut texts = Vec::new();
            for delta in all(&cm, "delta") {
                let Some(dm) = members(delta) else { continue };
                for (kind, field) in [(Kind::Text, "content"), (Kind::Refusal, "refusal")] {
                    for v in all(&dm, field) {
                        if let Some(s) = string(v) {
                            let key = Key { alt, part: 0, kind };
                            let released = self.push(key, &s);
                            texts.push((key, v, released));
                        }
                    }
                }
                for (t, call) in all_items(&dm, "tool_calls").into_iter().enumerate() {
                    let Some(tm) = members(call) else { continue };
                    let tool = last(&tm, "index").and_then(uint).unwrap_or(t as u64);
                    for f in all(&tm, "function") {
                        if let Some(args) = members(f).and_then(|fm| last_str(&fm, "arguments")) {
                            self.push_tool(alt, tool, &args);
                        }
                    }
                }
            }
            let finished = last(&cm, "finish_reason").is_some_and(|r| r.get().starts_with('"'));
            let mut closed = Vec::new();
            if finished {
                closed = self.close(|key| key.alt == alt);
                self.close_tool(alt, None);
            }
            self.apply_texts(texts, closed, &mut edits, &mut step);
        }
        step.data = if self.rewriting() { edits.apply() } else { None };
        step
    }

    fn anthropic(&mut self, data: &str) -> Step {
        let mut step = Step::default();
        let Some((_, m)) = top(data) else { return step };
        let index = last(&m, "index").and_then(uint).unwrap_or(0);
        let key = Key { alt: index, part: 0, kind: Kind::Text };
        let mut edits = Edits::new(data);
        let mut texts = Vec::new();
        let mut closed = Vec::new();
        match last_str(&m, "type").as_deref() {
            Some("content_block_start") => {
                for block in all(&m, "content_block") {
                    let Some(bm) = members(block) else { continue };
                    match last_str(&bm, "type").as_deref() {
                        Some("text") => {
                            for v in all(&bm, "text") {
                                if let Some(s) = string(v) {
                                    let released = self.push(key, &s);
                                    texts.push((key, v, released));
                                }
                            }
                        }
                        Some("tool_use") | Some("server_tool_use") => {
                            let scanner = Rc::clone(&self.scanner);
                            let mut w = Walk::new(&scanner, self.action, Place::Response);
                            for input in all(&bm, "input") {
                                w.strings(0, input, &mut edits);
                            }
                            self.keep_walk(w.log);
                        }
                        _ => {}
                    }
                }
            }
            Some("content_block_delta") => {
                for delta in all(&m, "delta") {
                    let Some(dm) = members(delta) else { continue };
                    match last_str(&dm, "type").as_deref() {
                        Some("text_delta") => {
                            for v in all(&dm, "text") {
                                if let Some(s) = string(v) {
                                    let released = self.push(key, &s);
                                    texts.push((key, v, released));
                                }
                            }
                        }
                        Some("input_json_delta") => {
                            if let Some(s) = last_str(&dm, "partial_json") {
                                self.push_tool(index, 0, &s);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some("content_block_stop") => {
                closed = self.close(|k| k.alt == index);
                self.close_tool(index, None);
            }
            Some("message_delta") | Some("message_stop") => closed = self.close_all(),
            _ => {}
        }
        self.apply_texts(texts, closed, &mut edits, &mut step);
        step.data = if self.rewriting() { edits.apply() } else { None };
        step
    }

    fn gemini(&mut self, data: &str) -> Step {
        let mut step = Step::default();
        let Some((_, m)) = top(data) else { return step };
        self.envelope = envelope(&m, &["candidates", "usageMetadata", "promptFeedback"]);
        let mut edits = Edits::new(data);
        for (k, cand) in all_items(&m, "candidates").into_iter().enumerate() {
            let alt = u64::try_from(alt_index(cand, k)).unwrap_or(0);
            let Some(cm) = members(cand) else { continue };
            let mut texts = Vec::new();
            for content in all(&cm, "content") {
                let Some(ccm) = members(content) else { continue };
                for part in all_items(&ccm, "parts") {
                    let Some(pm) = members(part) else { continue };
                    let thought = last(&pm, "thought").is_some_and(|t| t.get() == "true");
                    let kind = if thought { Kind::Thought } else { Kind::Text };
                    for v in all(&pm, "text") {
                        if let Some(s) = string(v) {
                            let key = Key { alt, part: 0, kind };
                            let released = self.push(key, &s);
                            texts.push((key, v, released));
                        }
                    }
                    let scanner = Rc::clone(&self.scanner);
                    let mut w = Walk::new(&scanner, self.action, Place::Response);
                    for name in ["functionCall", "function_call"] {
                        for call in all(&pm, name) {
                            if let Some(args) = members(call).and_then(|c| last(&c, "args")) {
                                w.strings(self.hit_index(alt), args, &mut edits);
                            }
                        }
                    }
                    self.keep_walk(w.log);
                }
            }
            let finished = last(&cm, "finishReason").is_some_and(|r| r.get().starts_with('"'));
            let closed = if finished { self.close(|key| key.alt == alt) } else { Vec::new() };
            self.apply_texts(texts, closed, &mut edits, &mut step);
        }
        step.data = if self.rewriting() { edits.apply() } else { None };
        step
    }

    fn responses(&mut self, data: &str) -> Step {
        let mut step = Step::default();
        let Some((_, m)) = top(data) else { return step };
        let output = last(&m, "output_index").and_then(uint).unwrap_or(0);
        let part = last(&m, "content_index").and_then(uint).unwrap_or(0);
        let mut edits = Edits::new(data);
        let mut texts = Vec::new();
        let mut closed = Vec::new();
        // Full texts are redacted whole in redact mode, not counted (their deltas were).
        let scanner = Rc::clone(&self.scanner);
        let mut w = Walk::new(&scanner, self.action, Place::Response);
        let redact = self.action == GuardAction::Redact;
        match last_str(&m, "type").as_deref() {
            Some(kind @ ("response.output_text.delta" | "response.refusal.delta")) => {
                let kind = if kind == "response.refusal.delta" { Kind::Refusal } else { Kind::Text };
                let key = Key { alt: output, part, kind };
                let item_id = last_str(&m, "item_id");
                for v in all(&m, "delta") {
                    if let Some(s) = string(v) {
                        let released = self.push(key, &s);
                        texts.push((key, v, released));
                    }
                }
                self.set_item_id(key, item_id);
            }
            Some(kind @ ("response.output_text.done" | "response.refusal.done")) => {
                let (kind, field) = if kind == "response.refusal.done" { (Kind::Refusal, "refusal") } else { (Kind::Text, "text") };
                closed = self.close(|k| *k == Key { alt: output, part, kind });
                for v in all(&m, field).filter(|_| redact) {
                    w.text(0, v, &mut edits);
                }
            }
            Some("response.content_part.done") => {
                closed = self.close(|k| k.alt == output && k.part == part);
                for p in all(&m, "part").filter(|_| redact) {
                    if let Some(pm) = members(p) {
                        for key in ["text", "refusal"] {
                            for v in all(&pm, key) {
                                w.text(0, v, &mut edits);
                            }
                        }
                    }
                }
            }
            Some("response.function_call_arguments.delta") => {
                if let Some(s) = last_str(&m, "delta") {
                    self.push_tool(output, 0, &s);
                }
            }
            Some("response.function_call_arguments.done") => {
                self.close_tool(output, None);
                for v in all(&m, "arguments").filter(|_| redact) {
                    w.arguments(0, v, &mut edits);
                }
            }
            Some("response.output_item.done") => {
                closed = self.close(|k| k.alt == output);
                self.close_tool(output, None);
                for item in all(&m, "item").filter(|_| redact) {
                    responses_item(&mut w, 0, item, &mut edits);
                }
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                closed = self.close_all();
                for r in all(&m, "response").filter(|_| redact) {
                    if let Some(rm) = members(r) {
                        for item in all_items(&rm, "output") {
                            responses_item(&mut w, 0, item, &mut edits);
                        }
                    }
                }
            }
            _ => {}
        }
        self.apply_texts(texts, closed, &mut edits, &mut step);
        step.data = if self.rewriting() { edits.apply() } else { None };
        step
    }

    /// A tail as the API's delta event (JSON data).
    fn tail_json(&self, tail: &Tail, seq: Option<u64>) -> String {
        let text = serde_json::to_string(&tail.text).unwrap_or_else(|_| "\"\"".into());
        let Key { alt, part, kind } = tail.key;
        let with_envelope = |first: String| {
            let mut s = String::from("{");
            s.push_str(&first);
            for m in &self.envelope {
                s.push(',');
                s.push_str(m);
            }
            s.push('}');
            s
        };
        match self.api {
            ClientApi::OpenaiChat | ClientApi::OpenaiEmbeddings => {
                let field = if kind == Kind::Refusal { "refusal" } else { "content" };
                with_envelope(format!(r#""choices":[{{"index":{alt},"delta":{{"{field}":{text}}},"finish_reason":null}}]"#))
            }
            ClientApi::AnthropicMessages => {
                format!(r#"{{"type":"content_block_delta","index":{alt},"delta":{{"type":"text_delta","text":{text}}}}}"#)
            }
            ClientApi::Gemini => {
                let thought = if kind == Kind::Thought { r#","thought":true"# } else { "" };
                with_envelope(format!(r#""candidates":[{{"content":{{"parts":[{{"text":{text}{thought}}}],"role":"model"}},"index":{alt}}}]"#))
            }
            ClientApi::OpenaiResponses => {
                let kind = if kind == Kind::Refusal { "response.refusal.delta" } else { "response.output_text.delta" };
                let item_id = tail.item_id.as_deref().and_then(|i| serde_json::to_string(i).ok()).unwrap_or_else(|| "\"\"".into());
                let seq = seq.unwrap_or(0);
                format!(
                    r#"{{"type":"{kind}","item_id":{item_id},"output_index":{alt},"content_index":{part},"delta":{text},"logprobs":[],"sequence_number":{seq}}}"#
                )
            }
        }
    }
}

/// `"key":value` of every member not in `skip`, as written.
fn envelope(m: &tollgate_core::wire::raw_object::RawMembers<'_>, skip: &[&str]) -> Vec<String> {
    m.0.iter()
        .filter(|(k, _)| !skip.contains(&k.as_ref()))
        .filter_map(|(k, v)| serde_json::to_string(k.as_ref()).ok().map(|k| format!("{k}:{}", v.get())))
        .collect()
}

// ---- a streamed JSON array ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    /// Before the `[`.
    Start,
    Inside,
    /// After the closing `]`.
    After,
    /// Not an array: passed as is.
    NotArray,
}

#[derive(Debug)]
enum APiece {
    /// Bytes between elements (whitespace, separators, scalars).
    Raw(Vec<u8>),
    /// An object or array element, whole.
    Element(Vec<u8>),
    /// The closing `]` (and nothing else).
    Close(Vec<u8>),
    /// An element outgrew the limit: its bytes so far.
    Overflow(Vec<u8>),
}

/// Cuts a streamed JSON array into separators and whole elements (holding only the element
/// in progress).
#[derive(Debug)]
struct ArrayFramer {
    state: AState,
    depth: u32,
    in_str: bool,
    escaped: bool,
    elem: Vec<u8>,
    max: usize,
}

impl ArrayFramer {
    fn new(max: usize) -> Self {
        ArrayFramer { state: AState::Start, depth: 0, in_str: false, escaped: false, elem: Vec::new(), max }
    }

    fn pending_bytes(&self) -> usize {
        self.elem.len()
    }

    /// Tracks strings; true when `b` is outside any string (and not its closing quote).
    fn structural(&mut self, b: u8) -> bool {
        if self.in_str {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_str = false;
            }
            return false;
        }
        if b == b'"' {
            self.in_str = true;
            return false;
        }
        true
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<APiece>) {
        let mut raw = Vec::new();
        for &b in chunk {
            match self.state {
                AState::Start => {
                    raw.push(b);
                    if b == b'[' {
                        self.state = AState::Inside;
                    } else if !b.is_ascii_whitespace() {
                        self.state = AState::NotArray;
                    }
                }
                AState::After | AState::NotArray => raw.push(b),
                AState::Inside if self.depth == 0 => {
                    let structural = self.structural(b);
                    match b {
                        b'{' | b'[' if structural => {
                            if !raw.is_empty() {
                                out.push(APiece::Raw(std::mem::take(&mut raw)));
                            }
                            self.elem.push(b);
                            self.depth = 1;
                        }
                        b']' if structural => {
                            if !raw.is_empty() {
                                out.push(APiece::Raw(std::mem::take(&mut raw)));
                            }
                            out.push(APiece::Close(vec![b]));
                            self.state = AState::After;
                        }
                        _ => raw.push(b),
                    }
                }
                AState::Inside => {
                    self.elem.push(b);
                    if self.elem.len() > self.max {
                        out.push(APiece::Overflow(std::mem::take(&mut self.elem)));
                        self.state = AState::NotArray;
                        continue;
                    }
                    if self.structural(b) {
                        match b {
                            b'{' | b'[' => self.depth += 1,
                            b'}' | b']' => {
                                self.depth = self.depth.saturating_sub(1);
                                if self.depth == 0 {
                                    out.push(APiece::Element(std::mem::take(&mut self.elem)));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if !raw.is_empty() {
            out.push(APiece::Raw(raw));
        }
    }
}
