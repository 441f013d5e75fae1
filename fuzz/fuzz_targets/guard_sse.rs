//! LLM guardrails over streamed answers (filters/llm/src/guard/sse.rs, `SseGuard`).
//! Input: a flags byte (bits 0-1: client API — OpenAI Chat, Anthropic, Gemini, Responses;
//! bits 2-3: action — redact, block, log, redact; bit 4: Gemini as a JSON array; bit 5:
//! the scanner; bit 6: raw mode), a delta split seed, a chunk split seed, then the rest.
//! Built mode (bit 6 clear): the rest is a text (UTF-8, invalid bytes replaced), cut into
//! deltas (`tollgate_fuzz::chunks`, moved to character boundaries) and framed as the API's
//! stream (role/start events, one delta event per delta, closing events, usage, `[DONE]`).
//! Raw mode: the rest is the upstream stream itself.
//! Asserts:
//! - for any cut of the upstream bytes (whole, at the seed's cuts, one byte at a time) the
//!   concatenated output, the hits and the blocked flag are the same;
//! - built mode: every output event is JSON (or `[DONE]`), a Gemini array is one JSON
//!   array; redact: the concatenated delta texts equal `scanner.redact(text)`, no matched
//!   text is in the output, and the hit counts per detector are `scan(text)`'s; log: the
//!   output is the input byte for byte, hits as in redact; block: blocked exactly when
//!   `scan(text)` finds something, then the last event is the API's error, and otherwise
//!   the delta texts are the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::wire::sse::{SseItem, SseParser};
use tollgate_fuzz::{chunks, Input};
use tollgate_llm::api::ClientApi;
use tollgate_llm::guard::action::{GuardAction, GuardHit};
use tollgate_llm::guard::response::SseGuard;
use tollgate_llm::guard::{GuardConfig, Scanner};

fn build(v: Value) -> Rc<Scanner> {
    let c: GuardConfig = serde_json::from_value(v).expect("valid config");
    Rc::new(c.compile().expect("compiles"))
}

thread_local! {
    static SCANNERS: [Rc<Scanner>; 2] = [
        // Every built-in (window 1026), a regex and a word list.
        build(json!({"detectors": {
            "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{4}"}],
            "words": [{"name": "codenames", "words": ["Project Falcon", "bluebird"]}]}})),
        // Short built-ins and a permissive entropy detector (window 47): tails often.
        build(json!({"detectors": {"builtin": ["entropy", "ip", "card", "aws_key", "phone"],
            "entropy": {"min_len": 8, "max_len": 40, "threshold": 2.0}}})),
    ];
}

const APIS: [ClientApi; 4] = [ClientApi::OpenaiChat, ClientApi::AnthropicMessages, ClientApi::Gemini, ClientApi::OpenaiResponses];

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// The API's stream carrying `deltas`; `crlf`: CRLF line ends.
fn stream(api: ClientApi, deltas: &[&str], array: bool) -> String {
    let mut s = String::new();
    match api {
        ClientApi::AnthropicMessages => {
            s += &sse(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m", "usage": {"input_tokens": 5, "output_tokens": 1}}}));
            s += &sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
            for d in deltas {
                s += &sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}));
            }
            s += &sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0}));
            s += &sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}));
            s += &sse(Some("message_stop"), &json!({"type": "message_stop"}));
        }
        ClientApi::Gemini => {
            let mut chunks: Vec<Value> = deltas
                .iter()
                .map(|d| json!({"candidates": [{"content": {"parts": [{"text": d}], "role": "model"}, "index": 0}], "responseId": "r"}))
                .collect();
            chunks.push(json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 2}, "responseId": "r"}));
            if array {
                s = format!("[{}]", chunks.iter().map(Value::to_string).collect::<Vec<_>>().join(",\r\n"));
            } else {
                for c in &chunks {
                    s += &sse(None, c);
                }
            }
        }
        ClientApi::OpenaiResponses => {
            let mut seq = 0;
            let mut ev = |s: &mut String, kind: &str, mut data: Value| {
                data["type"] = json!(kind);
                data["sequence_number"] = json!(seq);
                seq += 1;
                *s += &sse(Some(kind), &data);
            };
            let full: String = deltas.concat();
            ev(&mut s, "response.created", json!({"response": {"id": "resp_1", "output": []}}));
            for d in deltas {
                ev(&mut s, "response.output_text.delta", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": d}));
            }
            ev(&mut s, "response.output_text.done", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": full}));
            let item = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": full, "annotations": []}]});
            ev(&mut s, "response.output_item.done", json!({"output_index": 0, "item": item}));
            ev(&mut s, "response.completed", json!({"response": {"id": "resp_1", "output": [item]}}));
        }
        _ => {
            let chunk = |delta: Value, finish: Value| json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            s += &sse(None, &chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            for d in deltas {
                s += &sse(None, &chunk(json!({"content": d}), Value::Null));
            }
            s += &sse(None, &chunk(json!({}), json!("stop")));
            s += "data: [DONE]\n\n";
        }
    }
    s
}

struct Run {
    bytes: Vec<u8>,
    hits: Vec<GuardHit>,
    blocked: bool,
}

fn run(api: ClientApi, scanner: &Rc<Scanner>, action: GuardAction, array: bool, parts: &[&[u8]]) -> Run {
    let mut g = SseGuard::new(api, Rc::clone(scanner), action, scanner.window(), array);
    let mut r = Run { bytes: Vec::new(), hits: Vec::new(), blocked: false };
    let mut was_blocked = false;
    let mut fed = 0;
    for p in parts {
        let o = g.feed(p);
        assert!(!(was_blocked && !o.bytes.is_empty()), "output after the block");
        assert!(!(was_blocked && !o.blocked), "unblocked");
        was_blocked = o.blocked;
        r.bytes.extend(o.bytes);
        r.hits.extend(o.hits);
        fed += p.len();
        assert!(g.held() <= fed, "holds {} bytes of {fed}", g.held());
    }
    let o = g.finish();
    assert!(!(was_blocked && !o.bytes.is_empty()), "output after the block");
    r.bytes.extend(o.bytes);
    r.hits.extend(o.hits);
    r.blocked = o.blocked || was_blocked;
    assert!(g.finish().bytes.is_empty() && g.feed(b"data: {}\n\n").bytes.is_empty(), "output after finish");
    // Per detector totals (a hit of a detector may be split over calls).
    let mut totals: Vec<GuardHit> = Vec::new();
    for h in r.hits {
        match totals.iter_mut().find(|t| t.message_index == h.message_index && t.detector == h.detector) {
            Some(t) => t.count += h.count,
            None => totals.push(h),
        }
    }
    totals.sort_by(|a, b| a.detector.cmp(&b.detector));
    r.hits = totals;
    r
}

/// Every event's data as JSON (`[DONE]` as a string); panics on anything else.
fn events(api: ClientApi, bytes: &[u8], array: bool) -> Vec<(Option<String>, Value)> {
    if array {
        let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", String::from_utf8_lossy(bytes)));
        return v.as_array().expect("an array").iter().map(|e| (None, e.clone())).collect();
    }
    let mut p = SseParser::new(usize::MAX);
    let mut out = Vec::new();
    p.feed(bytes, |item, _| {
        if let SseItem::Event(e) = item {
            let v = if api == ClientApi::OpenaiChat && e.data == "[DONE]" {
                Value::String(e.data.clone())
            } else {
                serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("event not JSON ({err}): {:?}", e.data))
            };
            out.push((e.event.clone(), v));
        }
    })
    .expect("parses");
    out
}

fn delta_text(api: ClientApi, evs: &[(Option<String>, Value)]) -> String {
    let mut s = String::new();
    for (_, v) in evs {
        let t = match api {
            ClientApi::OpenaiChat => v.pointer("/choices/0/delta/content"),
            ClientApi::AnthropicMessages if v["type"] == "content_block_delta" => v.pointer("/delta/text"),
            ClientApi::AnthropicMessages => v.pointer("/content_block/text"),
            ClientApi::Gemini => v.pointer("/candidates/0/content/parts/0/text"),
            ClientApi::OpenaiResponses if v["type"] == "response.output_text.delta" => v.get("delta"),
            _ => None,
        };
        s += t.and_then(Value::as_str).unwrap_or("");
    }
    s
}

fn is_error(api: ClientApi, ev: &(Option<String>, Value)) -> bool {
    match api {
        ClientApi::AnthropicMessages => ev.0.as_deref() == Some("error") && ev.1["error"]["type"] == "invalid_request_error",
        ClientApi::OpenaiResponses => ev.0.as_deref() == Some("error") && ev.1["code"] == "content_filter",
        ClientApi::Gemini => ev.1["error"]["code"] == 400,
        _ => ev.1 == json!("[DONE]"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let delta_seed = input.byte();
    let chunk_seed = input.byte();
    let api = APIS[usize::from(flags & 3)];
    let action = match (flags >> 2) & 3 {
        1 => GuardAction::Block,
        2 => GuardAction::Log,
        _ => GuardAction::Redact,
    };
    let array = flags & 16 != 0 && api == ClientApi::Gemini;
    let scanner = SCANNERS.with(|s| Rc::clone(&s[usize::from((flags >> 5) & 1)]));
    let raw_mode = flags & 64 != 0;
    let rest = input.rest();

    let (upstream, text) = if raw_mode {
        (rest.to_vec(), None)
    } else {
        let text = String::from_utf8_lossy(rest).into_owned();
        let mut deltas = Vec::new();
        let (mut at, mut pos) = (0, 0);
        for c in chunks(text.as_bytes(), delta_seed) {
            pos += c.len();
            let mut end = pos;
            while !text.is_char_boundary(end) {
                end += 1;
            }
            if end > at {
                deltas.push(&text[at..end]);
                at = end;
            }
        }
        (stream(api, &deltas, array).into_bytes(), Some(text))
    };

    let whole = run(api, &scanner, action, array, &[&upstream]);
    let mut cuts: Vec<Vec<&[u8]>> = vec![chunks(&upstream, chunk_seed)];
    if upstream.len() <= 4096 {
        cuts.push(upstream.chunks(1).collect());
    }
    for parts in cuts {
        let r = run(api, &scanner, action, array, &parts);
        assert!(r.bytes == whole.bytes, "output depends on the cut ({} parts):\n{}\n---\n{}", parts.len(), String::from_utf8_lossy(&r.bytes), String::from_utf8_lossy(&whole.bytes));
        assert_eq!(r.hits, whole.hits, "hits depend on the cut");
        assert_eq!(r.blocked, whole.blocked, "blocking depends on the cut");
    }

    let Some(text) = text else { return };
    let hits = scanner.scan(&text);
    let mut want: Vec<(String, u32)> = Vec::new();
    for h in &hits {
        let name = scanner.name(h.detector).to_string();
        match want.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => want.push((name, 1)),
        }
    }
    want.sort();
    let got: Vec<(String, u32)> = whole.hits.iter().map(|h| (h.detector.clone(), h.count)).collect();
    let evs = events(api, &whole.bytes, array);
    match action {
        GuardAction::Redact => {
            assert_eq!(got, want, "hit counts");
            assert!(!whole.blocked);
            assert_eq!(delta_text(api, &evs), scanner.redact(&text, &hits), "redacted deltas");
            if api == ClientApi::OpenaiResponses {
                for (k, (_, v)) in evs.iter().enumerate() {
                    assert_eq!(v["sequence_number"], json!(k), "sequence numbers");
                }
            }
        }
        GuardAction::Log => {
            assert_eq!(got, want, "hit counts");
            assert!(whole.bytes == upstream, "log mode changed the stream");
        }
        GuardAction::Block => {
            assert_eq!(whole.blocked, !hits.is_empty(), "blocked iff a hit");
            if whole.blocked {
                assert!(evs.last().is_some_and(|e| is_error(api, e)), "no error event last");
                let sent = delta_text(api, &evs);
                assert!(text.starts_with(&sent), "sent text is not a prefix");
                let first = hits.iter().map(|h| h.start).min().unwrap_or(0);
                assert!(sent.len() <= first, "part of a match was sent");
            } else {
                assert_eq!(delta_text(api, &evs), text, "unblocked text changed");
            }
        }
    }
});
