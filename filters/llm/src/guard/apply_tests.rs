//! The appliers: requests, JSON answers and streams of each client API.

use super::action::{GuardAction, GuardHit, Place, SYSTEM};
use super::request::apply;
use super::response::{apply_json, SseGuard};
use super::{GuardConfig, Scanner};
use crate::api::ClientApi;
use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::wire::sse::{SseItem, SseParser};

const CARD: &str = "4111 1111 1111 1111";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

fn scanner() -> Rc<Scanner> {
    let c: GuardConfig = serde_json::from_value(json!({"detectors": {"builtin": ["card", "aws_key", "email"]}})).unwrap();
    Rc::new(c.compile().unwrap())
}

fn hit(place: Place, message_index: i64, detector: &str, count: u32) -> GuardHit {
    GuardHit { place, message_index, detector: detector.into(), count }
}

fn req(i: i64, d: &str, n: u32) -> GuardHit {
    hit(Place::Request, i, d, n)
}

fn resp(i: i64, d: &str, n: u32) -> GuardHit {
    hit(Place::Response, i, d, n)
}

fn body_json(b: &Option<Vec<u8>>) -> Value {
    serde_json::from_slice(b.as_deref().expect("a rewritten body")).expect("valid JSON")
}

// ---- requests --------------------------------------------------------------------------

#[test]
fn openai_chat_request() {
    let s = scanner();
    let body = json!({"model": "gpt-4o", "temperature": 0.7, "messages": [
        {"role": "system", "content": format!("key {AWS}")},
        {"role": "user", "content": [{"type": "text", "text": format!("pay with {CARD}")},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUtJQUlPU0ZPRE5ON0VYQU1QTEU="}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "pay", "arguments": format!("{{\"card\":\"{CARD}\",\"n\":1.50}}")}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "mail a@example.com"},
    ]});
    let raw = serde_json::to_vec(&body).unwrap();
    let r = apply(ClientApi::OpenaiChat, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(0, "aws_key", 1), req(1, "card", 1), req(2, "card", 1), req(3, "email", 1)]);
    assert!(!r.blocked);
    let v = body_json(&r.body);
    assert_eq!(v["messages"][0]["content"], "key [REDACTED:aws_key]");
    assert_eq!(v["messages"][1]["content"][0]["text"], "pay with [REDACTED:card]");
    assert_eq!(v["messages"][1]["content"][1], body["messages"][1]["content"][1]);
    let args: Value = serde_json::from_str(v["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"card": "[REDACTED:card]", "n": 1.50}));
    assert_eq!(v["messages"][3]["content"], "mail [REDACTED:email]");
    assert_eq!(v["temperature"], 0.7);

    let b = apply(ClientApi::OpenaiChat, &raw, &s, GuardAction::Block);
    assert!(b.blocked && b.body.is_none());
    assert_eq!(b.hits, r.hits);
    assert!(b.message().contains("aws_key, card, email"), "{}", b.message());
    assert!(!b.message().contains("4111"));
    let l = apply(ClientApi::OpenaiChat, &raw, &s, GuardAction::Log);
    assert!(!l.blocked && l.body.is_none());
    assert_eq!(l.hits, r.hits);
}

#[test]
fn redaction_keeps_every_other_byte() {
    let s = scanner();
    // Numbers as written, member order, whitespace, escapes elsewhere: untouched.
    let raw = format!(
        "{{\"z\": 1.0e0, \"messages\": [ {{\"role\":\"user\", \"content\": \"card {CARD} \\u00e9\"}} ], \"a\": 12345678901234567890123,\n \"s\": \"\\u0041\"}}"
    );
    let r = apply(ClientApi::OpenaiChat, raw.as_bytes(), &s, GuardAction::Redact);
    let out = String::from_utf8(r.body.unwrap()).unwrap();
    let want = raw.replace(&format!("\"card {CARD} \\u00e9\""), "\"card [REDACTED:card] é\"");
    assert_eq!(out, want);
    // Escaped text is read decoded.
    let raw = br#"{"messages":[{"role":"user","content":"\u0041KIAIOSFODNN7EXAMPLE"}]}"#;
    assert_eq!(apply(ClientApi::OpenaiChat, raw, &s, GuardAction::Log).hits, vec![req(0, "aws_key", 1)]);
    // Clean bodies and non-JSON are unchanged.
    let clean = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
    assert_eq!(apply(ClientApi::OpenaiChat, clean, &s, GuardAction::Redact), Default::default());
    assert_eq!(apply(ClientApi::OpenaiChat, b"not json 4111 1111 1111 1111", &s, GuardAction::Block), Default::default());
    // Repeated keys: every occurrence is read.
    let dup = format!(r#"{{"messages":[{{"role":"user","content":"ok","content":"{CARD}"}}]}}"#);
    let r = apply(ClientApi::OpenaiChat, dup.as_bytes(), &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(0, "card", 1)]);
    assert!(String::from_utf8(r.body.unwrap()).unwrap().contains(r#""content":"[REDACTED:card]""#));
}

#[test]
fn anthropic_request() {
    let s = scanner();
    let body = json!({"model": "claude", "max_tokens": 100,
        "system": [{"type": "text", "text": format!("aws {AWS}")}],
        "messages": [
            {"role": "user", "content": format!("card {CARD}")},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "pay", "input": {"card": CARD, "amount": 3}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "receipt to a@example.com"}]},
                {"type": "tool_result", "tool_use_id": "u", "content": format!("again {CARD}")},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "4111111111111111"}}]},
        ]});
    let raw = serde_json::to_vec(&body).unwrap();
    let r = apply(ClientApi::AnthropicMessages, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(SYSTEM, "aws_key", 1), req(0, "card", 1), req(1, "card", 1), req(2, "email", 1), req(2, "card", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["system"][0]["text"], "aws [REDACTED:aws_key]");
    assert_eq!(v["messages"][0]["content"], "card [REDACTED:card]");
    assert_eq!(v["messages"][1]["content"][0]["input"], json!({"card": "[REDACTED:card]", "amount": 3}));
    assert_eq!(v["messages"][2]["content"][0]["content"][0]["text"], "receipt to [REDACTED:email]");
    assert_eq!(v["messages"][2]["content"][1]["content"], "again [REDACTED:card]");
    assert_eq!(v["messages"][2]["content"][2]["source"]["data"], "4111111111111111");
    // A string system prompt.
    let raw = serde_json::to_vec(&json!({"system": format!("x {CARD}"), "messages": []})).unwrap();
    let b = apply(ClientApi::AnthropicMessages, &raw, &s, GuardAction::Block);
    assert!(b.blocked);
    assert_eq!(b.hits, vec![req(SYSTEM, "card", 1)]);
}

#[test]
fn gemini_request() {
    let s = scanner();
    let body = json!({
        "systemInstruction": {"parts": [{"text": format!("aws {AWS}")}]},
        "contents": [
            {"role": "user", "parts": [{"text": format!("card {CARD}")}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "pay", "args": {"card": CARD, "n": 2}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "pay", "response": {"to": "a@example.com", "ok": true}}}]},
        ],
        "generationConfig": {"temperature": 0.5}});
    let raw = serde_json::to_vec(&body).unwrap();
    let r = apply(ClientApi::Gemini, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(SYSTEM, "aws_key", 1), req(0, "card", 1), req(1, "card", 1), req(2, "email", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["systemInstruction"]["parts"][0]["text"], "aws [REDACTED:aws_key]");
    assert_eq!(v["contents"][0]["parts"][0]["text"], "card [REDACTED:card]");
    assert_eq!(v["contents"][0]["parts"][1], body["contents"][0]["parts"][1]);
    assert_eq!(v["contents"][1]["parts"][0]["functionCall"]["args"], json!({"card": "[REDACTED:card]", "n": 2}));
    assert_eq!(v["contents"][2]["parts"][0]["functionResponse"]["response"], json!({"to": "[REDACTED:email]", "ok": true}));
    let l = apply(ClientApi::Gemini, &raw, &s, GuardAction::Log);
    assert!(l.body.is_none() && !l.blocked && l.hits == r.hits);
}

#[test]
fn responses_and_embeddings_requests() {
    let s = scanner();
    let body = json!({"model": "gpt-4o", "instructions": format!("aws {AWS}"), "input": [
        {"role": "user", "content": [{"type": "input_text", "text": format!("card {CARD}")}, {"type": "input_image", "image_url": "https://x/4111111111111111.png"}]},
        {"type": "function_call", "call_id": "c", "name": "pay", "arguments": format!("{{\"card\":\"{CARD}\"}}")},
        {"type": "function_call_output", "call_id": "c", "output": "sent to a@example.com"},
        {"role": "assistant", "content": "plain"},
    ]});
    let raw = serde_json::to_vec(&body).unwrap();
    let r = apply(ClientApi::OpenaiResponses, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(SYSTEM, "aws_key", 1), req(0, "card", 1), req(1, "card", 1), req(2, "email", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["instructions"], "aws [REDACTED:aws_key]");
    assert_eq!(v["input"][0]["content"][0]["text"], "card [REDACTED:card]");
    assert_eq!(v["input"][0]["content"][1], body["input"][0]["content"][1]);
    assert_eq!(v["input"][1]["arguments"], r#"{"card":"[REDACTED:card]"}"#);
    assert_eq!(v["input"][2]["output"], "sent to [REDACTED:email]");
    // A string input.
    let raw = serde_json::to_vec(&json!({"input": format!("{CARD}")})).unwrap();
    assert_eq!(apply(ClientApi::OpenaiResponses, &raw, &s, GuardAction::Block).hits, vec![req(0, "card", 1)]);
    // Embeddings.
    let raw = serde_json::to_vec(&json!({"model": "e", "input": ["ok", format!("c {CARD}")]})).unwrap();
    let r = apply(ClientApi::OpenaiEmbeddings, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![req(1, "card", 1)]);
    assert_eq!(body_json(&r.body)["input"], json!(["ok", "c [REDACTED:card]"]));
}

#[test]
fn arguments_that_are_not_json_are_text() {
    let s = scanner();
    let raw = serde_json::to_vec(&json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": format!("{{broken {CARD}")}}]}]})).unwrap();
    let r = apply(ClientApi::OpenaiChat, &raw, &s, GuardAction::Redact);
    assert_eq!(body_json(&r.body)["messages"][0]["tool_calls"][0]["function"]["arguments"], "{broken [REDACTED:card]");
}

// ---- JSON answers ----------------------------------------------------------------------

#[test]
fn json_answers() {
    let s = scanner();
    let chat = json!({"id": "x", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": format!("card {CARD}")}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": format!("{{\"k\":\"{AWS}\"}}")}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
    let raw = serde_json::to_vec(&chat).unwrap();
    let r = apply_json(ClientApi::OpenaiChat, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![resp(0, "card", 1), resp(1, "aws_key", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["choices"][0]["message"]["content"], "card [REDACTED:card]");
    assert_eq!(v["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"k":"[REDACTED:aws_key]"}"#);
    assert_eq!(v["usage"], chat["usage"]);
    let b = apply_json(ClientApi::OpenaiChat, &raw, &s, GuardAction::Block);
    assert!(b.blocked && b.body.is_none() && b.message().contains("card"));

    let anthropic = json!({"type": "message", "content": [{"type": "text", "text": format!("aws {AWS}")},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"c": CARD}}], "stop_reason": "end_turn"});
    let raw = serde_json::to_vec(&anthropic).unwrap();
    let r = apply_json(ClientApi::AnthropicMessages, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![resp(0, "aws_key", 1), resp(0, "card", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["content"][0]["text"], "aws [REDACTED:aws_key]");
    assert_eq!(v["content"][1]["input"]["c"], "[REDACTED:card]");

    let gemini = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}, {"text": format!("c {CARD}")}]}, "finishReason": "STOP", "index": 0},
        {"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"e": "a@example.com"}}}]}, "index": 1}],
        "usageMetadata": {"promptTokenCount": 3}});
    let raw = serde_json::to_vec(&gemini).unwrap();
    let r = apply_json(ClientApi::Gemini, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![resp(0, "card", 1), resp(1, "email", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["candidates"][0]["content"]["parts"][1]["text"], "c [REDACTED:card]");
    assert_eq!(v["candidates"][1]["content"]["parts"][0]["functionCall"]["args"]["e"], "[REDACTED:email]");
    // A streamed answer read whole (a JSON array).
    let arr = serde_json::to_vec(&json!([gemini, gemini])).unwrap();
    let r = apply_json(ClientApi::Gemini, &arr, &s, GuardAction::Log);
    assert_eq!(r.hits, vec![resp(0, "card", 2), resp(1, "email", 2)]);

    let responses = json!({"id": "resp_1", "object": "response", "output": [
        {"type": "reasoning", "id": "rs", "summary": []},
        {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": format!("c {CARD}"), "annotations": []}]},
        {"type": "function_call", "id": "f", "call_id": "c", "name": "f", "arguments": format!("{{\"k\":\"{AWS}\"}}")}]});
    let raw = serde_json::to_vec(&responses).unwrap();
    let r = apply_json(ClientApi::OpenaiResponses, &raw, &s, GuardAction::Redact);
    assert_eq!(r.hits, vec![resp(0, "card", 1), resp(0, "aws_key", 1)]);
    let v = body_json(&r.body);
    assert_eq!(v["output"][1]["content"][0]["text"], "c [REDACTED:card]");
    assert_eq!(v["output"][2]["arguments"], r#"{"k":"[REDACTED:aws_key]"}"#);
    let l = apply_json(ClientApi::OpenaiResponses, &raw, &s, GuardAction::Log);
    assert!(l.body.is_none() && !l.blocked && l.hits == r.hits);
}

// ---- streams ---------------------------------------------------------------------------

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// An upstream stream of `api` carrying `deltas` as one answer's text.
fn stream(api: ClientApi, deltas: &[&str]) -> String {
    let mut s = String::new();
    match api {
        ClientApi::OpenaiChat => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-4o",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            s += &sse(None, &chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            for d in deltas {
                s += &sse(None, &chunk(json!({"content": d}), Value::Null));
            }
            s += &sse(None, &chunk(json!({}), json!("stop")));
            s += &sse(None, &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-4o", "choices": [],
                                    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}));
            s += "data: [DONE]\n\n";
        }
        ClientApi::AnthropicMessages => {
            s += &sse(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude", "usage": {"input_tokens": 5, "output_tokens": 1}}}));
            s += &sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
            s += &sse(Some("ping"), &json!({"type": "ping"}));
            for d in deltas {
                s += &sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}));
            }
            s += &sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0}));
            s += &sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}));
            s += &sse(Some("message_stop"), &json!({"type": "message_stop"}));
        }
        ClientApi::Gemini => {
            let n = deltas.len();
            for (k, d) in deltas.iter().enumerate() {
                let mut c = json!({"content": {"parts": [{"text": d}], "role": "model"}, "index": 0});
                if k + 1 == n {
                    c["finishReason"] = json!("STOP");
                }
                s += &sse(None, &json!({"candidates": [c], "usageMetadata": {"promptTokenCount": 5}, "modelVersion": "gemini-2.5", "responseId": "r1"}));
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
            ev(&mut s, "response.created", json!({"response": {"id": "resp_1", "output": [], "status": "in_progress"}}));
            ev(&mut s, "response.output_item.added", json!({"output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}));
            ev(&mut s, "response.content_part.added", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
            for d in deltas {
                ev(&mut s, "response.output_text.delta", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}));
            }
            ev(&mut s, "response.output_text.done", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": full, "logprobs": []}));
            ev(&mut s, "response.content_part.done", json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": full, "annotations": []}}));
            let item = json!({"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": full, "annotations": []}]});
            ev(&mut s, "response.output_item.done", json!({"output_index": 0, "item": item}));
            ev(&mut s, "response.completed", json!({"response": {"id": "resp_1", "status": "completed", "output": [item], "usage": {"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}}}));
        }
        ClientApi::OpenaiEmbeddings => {}
    }
    s
}

/// Every event of an SSE body: (event name, data as JSON or a string).
fn events(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut p = SseParser::new(1 << 24);
    let mut out = Vec::new();
    p.feed(bytes, |item, _| {
        if let SseItem::Event(e) = item {
            let v = serde_json::from_str(&e.data).unwrap_or_else(|_| Value::String(e.data.clone()));
            out.push((e.event.clone(), v));
        }
    })
    .unwrap();
    assert!(p.pending_bytes() <= 1, "a partial event left");
    out
}

/// The answer text a client assembles from the deltas (choice / candidate / block 0).
fn delta_text(api: ClientApi, evs: &[(Option<String>, Value)]) -> String {
    let mut s = String::new();
    for (_, v) in evs {
        match api {
            ClientApi::OpenaiChat => {
                if let Some(t) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                    s += t;
                }
            }
            ClientApi::AnthropicMessages => match v["type"].as_str() {
                Some("content_block_delta") => s += v["delta"]["text"].as_str().unwrap_or(""),
                Some("content_block_start") => s += v["content_block"]["text"].as_str().unwrap_or(""),
                _ => {}
            },
            ClientApi::Gemini => {
                for p in v.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten() {
                    s += p["text"].as_str().unwrap_or("");
                }
            }
            ClientApi::OpenaiResponses => {
                if v["type"] == "response.output_text.delta" {
                    s += v["delta"].as_str().unwrap();
                }
            }
            ClientApi::OpenaiEmbeddings => {}
        }
    }
    s
}

struct Run {
    bytes: Vec<u8>,
    hits: Vec<GuardHit>,
    blocked: bool,
}

fn run_chunks(api: ClientApi, action: GuardAction, chunks: &[&[u8]], array: bool) -> Run {
    let mut g = SseGuard::new(api, scanner(), action, scanner().window(), array);
    let mut run = Run { bytes: Vec::new(), hits: Vec::new(), blocked: false };
    let add = |o: super::response::SseOut, run: &mut Run| {
        run.bytes.extend(o.bytes);
        for h in o.hits {
            match run.hits.iter_mut().find(|x| x.message_index == h.message_index && x.detector == h.detector) {
                Some(x) => x.count += h.count,
                None => run.hits.push(h),
            }
        }
        run.blocked |= o.blocked;
    };
    for c in chunks {
        let o = g.feed(c);
        add(o, &mut run);
    }
    let o = g.finish();
    add(o, &mut run);
    run
}

/// Runs `input` whole, byte by byte and in 7-byte chunks: all three give the same.
fn run(api: ClientApi, action: GuardAction, input: &str, array: bool) -> Run {
    let whole = run_chunks(api, action, &[input.as_bytes()], array);
    for size in [1, 7] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
        let r = run_chunks(api, action, &chunks, array);
        assert_eq!(String::from_utf8_lossy(&r.bytes), String::from_utf8_lossy(&whole.bytes), "{api:?} {action:?} cut every {size}");
        assert_eq!((r.hits, r.blocked), (whole.hits.clone(), whole.blocked));
    }
    whole
}

const APIS: [ClientApi; 4] = [ClientApi::OpenaiChat, ClientApi::AnthropicMessages, ClientApi::Gemini, ClientApi::OpenaiResponses];

#[test]
fn streams_redact_a_card_split_across_deltas() {
    let s = scanner();
    let deltas = ["Pay with 4111 11", "11 1111 1111 please, key AKIAIOSF", "ODNN7EXAMPLE.", " Done."];
    let full = deltas.concat();
    let want = s.redact(&full, &s.scan(&full));
    assert_eq!(want, "Pay with [REDACTED:card] please, key [REDACTED:aws_key]. Done.");
    for api in APIS {
        let input = stream(api, &deltas);
        let r = run(api, GuardAction::Redact, &input, false);
        let evs = events(&r.bytes);
        assert_eq!(delta_text(api, &evs), want, "{api:?}");
        assert!(!r.blocked);
        assert_eq!(r.hits, vec![resp(0, "card", 1), resp(0, "aws_key", 1)], "{api:?}");
        let text = String::from_utf8(r.bytes.clone()).unwrap();
        assert!(!text.contains("1111") && !text.contains("AKIA"), "{api:?}: {text}");
        // Every other event is still there.
        assert_eq!(evs.len(), events(input.as_bytes()).len() + usize::from(api != ClientApi::Gemini), "{api:?}: {text}");
    }
}

#[test]
fn stream_tails_per_api() {
    // The text is shorter than the window: all of it is held to the end.
    let deltas = ["Pay with 4111 11", "11 1111 1111 please"];
    let redacted = "Pay with [REDACTED:card] please";
    // OpenAI: the tail is a chunk of the same stream before the finish chunk.
    let r = run(ClientApi::OpenaiChat, GuardAction::Redact, &stream(ClientApi::OpenaiChat, &deltas), false);
    let evs = events(&r.bytes);
    let finish = evs.iter().position(|(_, v)| v.pointer("/choices/0/finish_reason") == Some(&json!("stop"))).unwrap();
    let tail = &evs[finish - 1].1;
    assert_eq!(tail["id"], "chatcmpl-1");
    assert_eq!(tail["model"], "gpt-4o");
    assert_eq!(tail["object"], "chat.completion.chunk");
    assert_eq!(tail["choices"][0]["delta"]["content"], redacted);
    assert_eq!(evs.last().unwrap().1, json!("[DONE]"));
    // Every delta stays an event (possibly with empty text).
    assert!(evs.iter().any(|(_, v)| v.pointer("/choices/0/delta/content") == Some(&json!(""))));

    // Anthropic: a content_block_delta before content_block_stop.
    let r = run(ClientApi::AnthropicMessages, GuardAction::Redact, &stream(ClientApi::AnthropicMessages, &deltas), false);
    let evs = events(&r.bytes);
    let stop = evs.iter().position(|(e, _)| e.as_deref() == Some("content_block_stop")).unwrap();
    assert_eq!(evs[stop - 1].0.as_deref(), Some("content_block_delta"));
    assert_eq!(evs[stop - 1].1, json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": redacted}}));

    // Gemini: the finishing chunk carries its text: the tail joins it.
    let r = run(ClientApi::Gemini, GuardAction::Redact, &stream(ClientApi::Gemini, &deltas), false);
    let evs = events(&r.bytes);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].1["candidates"][0]["content"]["parts"][0]["text"], redacted);
    assert_eq!(evs[1].1["candidates"][0]["finishReason"], "STOP");
    // A finishing chunk without text: a chunk before it.
    let input = stream(ClientApi::Gemini, &deltas).replace(r#""finishReason":"STOP","#, "")
        + &sse(None, &json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "STOP", "index": 0}], "responseId": "r1", "modelVersion": "gemini-2.5"}));
    let r = run(ClientApi::Gemini, GuardAction::Redact, &input, false);
    let evs = events(&r.bytes);
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[2].1, json!({"candidates": [{"content": {"parts": [{"text": redacted}], "role": "model"}, "index": 0}], "modelVersion": "gemini-2.5", "responseId": "r1"}));

    // Responses: a delta before output_text.done; the full texts redacted; numbers in order.
    let r = run(ClientApi::OpenaiResponses, GuardAction::Redact, &stream(ClientApi::OpenaiResponses, &deltas), false);
    let evs = events(&r.bytes);
    let done = evs.iter().position(|(e, _)| e.as_deref() == Some("response.output_text.done")).unwrap();
    let tail = &evs[done - 1].1;
    assert_eq!(tail["type"], "response.output_text.delta");
    assert_eq!(tail["item_id"], "msg_1");
    assert_eq!(tail["delta"], redacted);
    assert_eq!(evs[done].1["text"], redacted);
    assert_eq!(evs[done + 1].1["part"]["text"], redacted);
    assert_eq!(evs[done + 2].1["item"]["content"][0]["text"], redacted);
    assert_eq!(evs[done + 3].1["response"]["output"][0]["content"][0]["text"], redacted);
    for (k, (e, v)) in evs.iter().enumerate() {
        assert_eq!(v["sequence_number"], json!(k), "{e:?}");
        assert_eq!(e.as_deref(), v["type"].as_str());
    }
}

#[test]
fn streams_block_with_the_api_error() {
    // A first delta longer than the window (322 with email on): its start is sent.
    let hello = "Hello. ".repeat(60) + "Pay with 4111 11";
    let deltas = [hello.as_str(), "11 1111 1111 please", " more"];
    for api in APIS {
        let r = run(api, GuardAction::Block, &stream(api, &deltas), false);
        assert!(r.blocked, "{api:?}");
        assert_eq!(r.hits, vec![resp(0, "card", 1)]);
        let text = String::from_utf8(r.bytes.clone()).unwrap();
        assert!(!text.contains("4111") && !text.contains("more") && !text.contains("please"), "{api:?}: {text}");
        let evs = events(&r.bytes);
        let (name, last) = evs.last().unwrap().clone();
        match api {
            ClientApi::OpenaiChat => {
                assert_eq!(last, json!("[DONE]"));
                let err = &evs[evs.len() - 2].1["error"];
                assert_eq!(err["code"], "content_filter");
                assert_eq!(err["type"], "invalid_request_error");
                assert!(err["message"].as_str().unwrap().contains("card"));
            }
            ClientApi::AnthropicMessages => {
                assert_eq!(name.as_deref(), Some("error"));
                assert_eq!(last["type"], "error");
                assert_eq!(last["error"]["type"], "invalid_request_error");
            }
            ClientApi::Gemini => {
                assert_eq!(last["error"]["code"], 400);
                assert_eq!(last["error"]["status"], "INVALID_ARGUMENT");
            }
            ClientApi::OpenaiResponses => {
                assert_eq!(name.as_deref(), Some("error"));
                assert_eq!(last["type"], "error");
                assert_eq!(last["code"], "content_filter");
                assert_eq!(last["sequence_number"], json!(evs.len() - 1));
            }
            ClientApi::OpenaiEmbeddings => {}
        }
        // Text before the match was sent.
        assert!(delta_text(api, &evs).starts_with("Hello."), "{api:?}: {text}");
    }
}

#[test]
fn streams_log_passes_every_byte() {
    let deltas = ["Pay with 4111 11", "11 1111 1111 please, AKIAIOSF", "ODNN7EXAMPLE"];
    for api in APIS {
        let input = stream(api, &deltas);
        let r = run(api, GuardAction::Log, &input, false);
        assert_eq!(String::from_utf8(r.bytes).unwrap(), input, "{api:?}");
        assert_eq!(r.hits, vec![resp(0, "card", 1), resp(0, "aws_key", 1)], "{api:?}");
        assert!(!r.blocked);
    }
}

#[test]
fn gemini_json_array_stream() {
    let s = scanner();
    let chunk = |text: &str, finish: bool| {
        let mut c = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if finish {
            c["finishReason"] = json!("STOP");
        }
        json!({"candidates": [c], "responseId": "r1"})
    };
    let input = format!("[{},\r\n{},\r\n{}]", chunk("card 4111 11", false), chunk("11 1111 1111 ok", false), json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "STOP", "index": 0}], "responseId": "r1"}));
    let r = run(ClientApi::Gemini, GuardAction::Redact, &input, true);
    let v: Value = serde_json::from_slice(&r.bytes).unwrap();
    let texts: String = v.as_array().unwrap().iter().flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().unwrap().clone()).map(|p| p["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, "card [REDACTED:card] ok");
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(r.hits, vec![resp(0, "card", 1)]);
    // No finish at all: the tail is a last element before `]`.
    let input = format!("[{},{}]", chunk("card 4111 11", false), chunk("11 1111 1111 ok", false));
    let r = run(ClientApi::Gemini, GuardAction::Redact, &input, true);
    let v: Value = serde_json::from_slice(&r.bytes).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    // Block: the error is the last element, the array closed.
    let r = run(ClientApi::Gemini, GuardAction::Block, &input, true);
    let v: Value = serde_json::from_slice(&r.bytes).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.last().unwrap()["error"]["code"], 400);
    assert!(r.blocked);
    assert!(!String::from_utf8(r.bytes).unwrap().contains("4111"));
    // Log: byte for byte.
    let r = run(ClientApi::Gemini, GuardAction::Log, &input, true);
    assert_eq!(String::from_utf8(r.bytes).unwrap(), input);
    let _ = s;
}

#[test]
fn stream_tool_calls() {
    // OpenAI tool-call argument fragments: scanned (a key split across two), not rewritten.
    let chunk = |delta: Value, finish: Value| json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let input = sse(None, &chunk(json!({"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null))
        + &sse(None, &chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"k\":\"AKIAIOSF"}}]}), Value::Null))
        + &sse(None, &chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ODNN7EXAMPLE\"}"}}]}), Value::Null))
        + &sse(None, &chunk(json!({}), json!("tool_calls")))
        + "data: [DONE]\n\n";
    let r = run(ClientApi::OpenaiChat, GuardAction::Redact, &input, false);
    assert_eq!(r.hits, vec![resp(0, "aws_key", 1)]);
    assert_eq!(String::from_utf8(r.bytes).unwrap(), input);
    // Not held back: the block comes when the match is decided (here: the call's end).
    let r = run(ClientApi::OpenaiChat, GuardAction::Block, &input, false);
    assert!(r.blocked);
    let evs = events(&r.bytes);
    assert_eq!(evs[evs.len() - 2].1["error"]["code"], "content_filter");

    // Gemini sends calls whole: redacted in place.
    let input = sse(None, &json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"k": AWS}}}], "role": "model"}, "finishReason": "STOP", "index": 0}]}));
    let r = run(ClientApi::Gemini, GuardAction::Redact, &input, false);
    assert_eq!(events(&r.bytes)[0].1["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["k"], "[REDACTED:aws_key]");
    assert_eq!(r.hits, vec![resp(0, "aws_key", 1)]);

    // Anthropic input_json_delta: scanned.
    let input = sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}))
        + &sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"c\": \"4111 1111 "}}))
        + &sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1111 1111\"}"}}))
        + &sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 1}));
    let r = run(ClientApi::AnthropicMessages, GuardAction::Log, &input, false);
    assert_eq!(r.hits, vec![resp(0, "card", 1)]);
}

#[test]
fn multiple_choices_and_crlf() {
    let s = scanner();
    let chunk = |i: u64, text: &str, finish: Value| json!({"id": "c", "choices": [{"index": i, "delta": {"content": text}, "finish_reason": finish}]});
    let input = [
        chunk(0, "a 4111 1111 ", Value::Null),
        chunk(1, "b AKIAIOSFODNN7", Value::Null),
        chunk(0, "1111 1111", json!("stop")),
        chunk(1, "EXAMPLE", Value::Null),
        chunk(1, "", json!("length")),
    ]
    .iter()
    .map(|c| format!("data: {c}\r\n\r\n"))
    .collect::<String>()
        + "data: [DONE]\r\n\r\n";
    let r = run(ClientApi::OpenaiChat, GuardAction::Redact, &input, false);
    assert_eq!(r.hits, vec![resp(0, "card", 1), resp(1, "aws_key", 1)]);
    let evs = events(&r.bytes);
    let text = |i: u64| -> String {
        evs.iter()
            .filter(|(_, v)| v.pointer("/choices/0/index") == Some(&json!(i)))
            .map(|(_, v)| v.pointer("/choices/0/delta/content").and_then(Value::as_str).unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(text(0), "a [REDACTED:card]");
    assert_eq!(text(1), "b [REDACTED:aws_key]");
    let out = String::from_utf8(r.bytes).unwrap();
    assert!(out.contains("\r\n\r\n"));
    let _ = s;
}

#[test]
fn window_holds_text_back() {
    // With a window of 8 bytes, a long delta is released but for its last 8 bytes.
    let s = scanner();
    let mut g = SseGuard::new(ClientApi::AnthropicMessages, Rc::clone(&s), GuardAction::Redact, 8, false);
    let ev = sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello world, how are you"}}));
    let o = g.feed(ev.as_bytes());
    let evs = events(&o.bytes);
    assert_eq!(evs[0].1["delta"]["text"], "hello world, how");
    let o = g.finish();
    assert_eq!(events(&o.bytes)[0].1["delta"]["text"], " are you");
    assert_eq!(GuardAction::default(), GuardAction::Log);
    let a: GuardAction = serde_json::from_str("\"redact\"").unwrap();
    assert_eq!(a, GuardAction::Redact);
    assert!(serde_json::from_str::<GuardAction>("\"Block\"").is_err());
    assert_eq!(serde_json::to_value(resp(-1, "card", 2)).unwrap(), json!({"where": "response", "message_index": -1, "detector": "card", "count": 2}));
}

#[test]
fn block_catches_a_private_key_at_its_begin_line() {
    // The stream guard reports a key block at its END line; block mode must not send the
    // key's lines meanwhile.
    let c: GuardConfig = serde_json::from_value(json!({"detectors": {"builtin": ["private_key"]}})).unwrap();
    let s = Rc::new(c.compile().unwrap());
    let body = "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n".repeat(8);
    let deltas = [format!("{}here -----BEGIN RSA PRIVATE KEY-----\n", "x".repeat(200)), body.clone(), body, "-----END RSA PRIVATE KEY-----\n".to_string()];
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    for api in APIS {
        let input = stream(api, &deltas);
        let mut g = SseGuard::new(api, Rc::clone(&s), GuardAction::Block, s.window(), false);
        let mut out = g.feed(input.as_bytes());
        out.bytes.extend(g.finish().bytes);
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(g.is_blocked(), "{api:?}");
        assert!(!text.contains("MIIB") && !text.contains("BEGIN") && !text.contains("REDACTED"), "{api:?}: {text}");
        assert!(text.contains("xxxx"), "{api:?}: {text}");
    }
}
