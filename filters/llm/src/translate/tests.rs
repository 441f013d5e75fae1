use super::*;
use crate::usage::{Framing, Tokens, UsageReport, UsageTracker};
use serde_json::{json, Value};
use tollgate_core::wire::sse::{SseItem, SseParser};

const UPSTREAMS: [ClientApi; 3] = [ClientApi::OpenaiChat, ClientApi::AnthropicMessages, ClientApi::Gemini];
const CLIENTS: [ClientApi; 4] = [ClientApi::OpenaiChat, ClientApi::OpenaiResponses, ClientApi::AnthropicMessages, ClientApi::Gemini];
const OPTS: RequestOptions = RequestOptions { default_max_tokens: 1024, include_usage: true };

// ---- provider samples: text with multi-byte UTF-8, a tool call, full usage -------------------

const TEXT: &str = "Héllo wörld 😀";

fn upstream_json(api: ClientApi) -> Value {
    match api {
        ClientApi::OpenaiChat => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": TEXT,
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Zürich\"}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                      "prompt_tokens_details": {"cached_tokens": 30}, "completion_tokens_details": {"reasoning_tokens": 20}},
        }),
        ClientApi::AnthropicMessages => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": TEXT}, {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Zürich"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 60, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 10, "output_tokens": 50},
        }),
        _ => json!({
            "responseId": "r1", "modelVersion": "gemini",
            "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model",
                "parts": [{"text": TEXT}, {"functionCall": {"name": "weather", "args": {"city": "Zürich"}}}]}}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 30, "thoughtsTokenCount": 20,
                              "cachedContentTokenCount": 30, "totalTokenCount": 150},
        }),
    }
}

/// Upstream streams; Anthropic's and Gemini's with CRLF line ends, as Gemini sends them.
fn upstream_stream(api: ClientApi) -> String {
    let lines: Vec<(Option<&str>, Value)> = match api {
        ClientApi::OpenaiChat => {
            let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            vec![
                (None, chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
                (None, chunk(json!({"content": "Héllo "}), Value::Null)),
                (None, chunk(json!({"content": "wörld 😀"}), Value::Null)),
                (None, chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}), Value::Null)),
                (None, chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null)),
                (None, chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Zürich\"}"}}]}), Value::Null)),
                (None, chunk(json!({}), json!("tool_calls"))),
                (None, json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 30},
                              "completion_tokens_details": {"reasoning_tokens": 20}}})),
            ]
        }
        ClientApi::AnthropicMessages => vec![
            (Some("message_start"), json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                "usage": {"input_tokens": 60, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 10, "output_tokens": 1}}})),
            (Some("ping"), json!({"type": "ping"})),
            (Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Héllo "}})),
            (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "wörld 😀"}})),
            (Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})),
            (Some("content_block_start"), json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}})),
            (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})),
            (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Zürich\"}"}})),
            (Some("content_block_stop"), json!({"type": "content_block_stop", "index": 1})),
            (Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 50}})),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ],
        _ => vec![
            (None, json!({"responseId": "r1", "candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "Héllo "}]}}],
                "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 30, "candidatesTokenCount": 2, "totalTokenCount": 102}})),
            (None, json!({"responseId": "r1", "candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "wörld 😀"}]}}],
                "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 30, "candidatesTokenCount": 5, "totalTokenCount": 105}})),
            (None, json!({"responseId": "r1", "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model",
                "parts": [{"functionCall": {"name": "weather", "args": {"city": "Zürich"}}}]}}],
                "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 30, "candidatesTokenCount": 30, "thoughtsTokenCount": 20, "totalTokenCount": 150}})),
        ],
    };
    let eol = if api == ClientApi::OpenaiChat { "\n" } else { "\r\n" };
    let mut out = String::new();
    for (event, data) in lines {
        if let Some(e) = event {
            out.push_str(&format!("event: {e}{eol}"));
        }
        out.push_str(&format!("data: {data}{eol}{eol}"));
    }
    if api == ClientApi::OpenaiChat {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

fn pairs() -> impl Iterator<Item = (ClientApi, ClientApi)> {
    UPSTREAMS.into_iter().flat_map(|u| CLIENTS.into_iter().filter(move |c| *c != u).map(move |c| (u, c)))
}

fn report(api: ClientApi, framing: Framing, body: &[u8]) -> UsageReport {
    let mut t = UsageTracker::new(api, framing, 1 << 20);
    t.feed(body);
    t.report(0, 4)
}

/// What the client API can express of `t`: Anthropic has no reasoning field, Gemini no cache
/// creation field. The totals always survive.
fn expressible(client: ClientApi, mut t: Tokens) -> Tokens {
    match client {
        ClientApi::AnthropicMessages => t.reasoning = 0,
        ClientApi::Gemini => t.cache_creation = 0,
        _ => {}
    }
    t
}

fn translate_stream(upstream: ClientApi, client: ClientApi, chunks: &[&[u8]], sse: bool) -> Vec<u8> {
    let mut s = StreamTranslator::new(upstream, client, "client-model", sse);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(s.feed(c));
    }
    out.extend(s.finish());
    assert!(s.finish().is_empty(), "finish is idempotent");
    out
}

/// Whole, byte by byte (splitting every UTF-8 sequence and CRLF), and in every two-piece split:
/// the same client bytes.
fn translate_all_splits(upstream: ClientApi, client: ClientApi, body: &[u8], sse: bool) -> Vec<u8> {
    let whole = translate_stream(upstream, client, &[body], sse);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(translate_stream(upstream, client, &bytes, sse), whole, "{upstream:?} -> {client:?} byte by byte");
    for split in (0..=body.len()).step_by(7) {
        let (a, b) = body.split_at(split);
        assert_eq!(translate_stream(upstream, client, &[a, b], sse), whole, "{upstream:?} -> {client:?} split at {split}");
    }
    whole
}

#[test]
fn usage_survives_translation_for_every_pair_json_and_stream() {
    for (upstream, client) in pairs() {
        let json = serde_json::to_vec(&upstream_json(upstream)).unwrap();
        let original = report(upstream, Framing::Json, &json);
        assert!(!original.estimated && original.tokens.input == 100 && original.tokens.output == 50, "{upstream:?} sample");
        let translated = response_json(upstream, client, &json, "client-model").unwrap();
        let got = report(client, Framing::Json, &translated);
        assert_eq!(got, UsageReport { tokens: expressible(client, original.tokens), ..original }, "JSON {upstream:?} -> {client:?}");

        let stream = upstream_stream(upstream);
        let original = report(upstream, Framing::Sse, stream.as_bytes());
        assert!(!original.estimated && original.tokens.total() == 150, "{upstream:?} stream sample: {original:?}");
        let framings: &[(bool, Framing)] = match client {
            ClientApi::Gemini => &[(true, Framing::Sse), (false, Framing::JsonArray)],
            _ => &[(true, Framing::Sse)],
        };
        for &(sse, framing) in framings {
            let translated = translate_all_splits(upstream, client, stream.as_bytes(), sse);
            let got = report(client, framing, &translated);
            assert_eq!(got, UsageReport { tokens: expressible(client, original.tokens), ..original }, "stream {upstream:?} -> {client:?} ({framing:?})");
        }
    }
}

/// The SSE events of a translated stream: (event name, data).
fn events(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    SseParser::new(1 << 20)
        .feed(body, |item, _| {
            if let SseItem::Event(e) = item {
                let data = if e.data == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(&e.data).unwrap() };
                out.push((e.event.clone(), data));
            }
        })
        .unwrap();
    out
}

/// The text and the (id, name, arguments) of the call a translated stream carries, read the
/// way the client API's SDK accumulates it.
fn accumulate(client: ClientApi, body: &[u8], sse: bool) -> (String, Vec<(String, String, Value)>) {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let units: Vec<Value> = match (client, sse) {
        (ClientApi::Gemini, false) => serde_json::from_slice::<Vec<Value>>(body).unwrap(),
        _ => events(body).into_iter().map(|(_, d)| d).collect(),
    };
    for u in units {
        match client {
            ClientApi::OpenaiChat => {
                let Some(delta) = u.pointer("/choices/0/delta") else { continue };
                text += delta["content"].as_str().unwrap_or("");
                for c in delta["tool_calls"].as_array().into_iter().flatten() {
                    let i = c["index"].as_u64().unwrap() as usize;
                    if calls.len() <= i {
                        calls.push((c["id"].as_str().unwrap().into(), c["function"]["name"].as_str().unwrap().into(), String::new()));
                    }
                    calls[i].2 += c["function"]["arguments"].as_str().unwrap_or("");
                }
            }
            ClientApi::AnthropicMessages => match u["type"].as_str().unwrap() {
                "content_block_start" if u["content_block"]["type"] == "tool_use" => {
                    let b = &u["content_block"];
                    calls.push((b["id"].as_str().unwrap().into(), b["name"].as_str().unwrap().into(), String::new()));
                }
                "content_block_delta" => {
                    text += u["delta"]["text"].as_str().unwrap_or("");
                    if let Some(last) = calls.last_mut() {
                        last.2 += u["delta"]["partial_json"].as_str().unwrap_or("");
                    }
                }
                _ => {}
            },
            ClientApi::Gemini => {
                for p in u.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten() {
                    text += p["text"].as_str().unwrap_or("");
                    if let Some(f) = p.get("functionCall") {
                        calls.push((String::new(), f["name"].as_str().unwrap().into(), f["args"].to_string()));
                    }
                }
            }
            ClientApi::OpenaiResponses => {
                if u["type"] == "response.completed" {
                    for item in u["response"]["output"].as_array().unwrap() {
                        match item["type"].as_str().unwrap() {
                            "message" => text += item["content"][0]["text"].as_str().unwrap(),
                            _ => calls.push((item["call_id"].as_str().unwrap().into(), item["name"].as_str().unwrap().into(), item["arguments"].as_str().unwrap().into())),
                        }
                    }
                }
            }
            ClientApi::OpenaiEmbeddings => unreachable!("embeddings are never streamed"),
        }
    }
    (text, calls.into_iter().map(|(id, name, args)| (id, name, serde_json::from_str(&args).unwrap())).collect())
}

#[test]
fn streams_carry_text_and_tool_calls_for_every_pair() {
    for (upstream, client) in pairs() {
        for sse in [true, false] {
            if !sse && client != ClientApi::Gemini {
                continue;
            }
            let out = translate_stream(upstream, client, &[upstream_stream(upstream).as_bytes()], sse);
            let (text, calls) = accumulate(client, &out, sse);
            assert_eq!(text, TEXT, "{upstream:?} -> {client:?}");
            assert_eq!(calls.len(), 1, "{upstream:?} -> {client:?}");
            let (id, name, args) = &calls[0];
            assert_eq!((name.as_str(), args), ("weather", &json!({"city": "Zürich"})), "{upstream:?} -> {client:?}");
            // The provider's id is kept; Gemini's calls have none, so one is made up.
            let expected_id = match upstream {
                ClientApi::OpenaiChat => "call_a",
                ClientApi::AnthropicMessages => "toolu_a",
                _ => "call_0",
            };
            if client != ClientApi::Gemini {
                assert_eq!(id, expected_id, "{upstream:?} -> {client:?}");
            }
        }
    }
}

#[test]
fn stream_shapes_end_as_each_client_expects() {
    // OpenAI: the finish chunk, the usage chunk with no choices, then [DONE].
    let out = translate_stream(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, &[upstream_stream(ClientApi::AnthropicMessages).as_bytes()], true);
    let ev = events(&out);
    let n = ev.len();
    assert_eq!(ev[0].1["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(ev[0].1["model"], "client-model");
    assert_eq!(ev[0].1["id"], "chatcmpl-msg_1");
    assert_eq!(ev[n - 3].1["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev[n - 2].1["choices"], json!([]));
    assert_eq!(ev[n - 2].1["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert_eq!(ev[n - 1].1, "[DONE]");

    // Anthropic: message_start with the input count, blocks opened and closed in order,
    // message_delta with the stop reason and usage, message_stop.
    let out = translate_stream(ClientApi::Gemini, ClientApi::AnthropicMessages, &[upstream_stream(ClientApi::Gemini).as_bytes()], true);
    let names: Vec<String> = events(&out).iter().map(|(e, _)| e.clone().unwrap()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                       "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
    let ev = events(&out);
    assert_eq!(ev[0].1["message"]["usage"]["input_tokens"], 70);
    assert_eq!(ev[0].1["message"]["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(ev[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[8].1["usage"]["output_tokens"], 50);

    // Responses: created, items added and done, then completed with the whole output.
    let out = translate_stream(ClientApi::OpenaiChat, ClientApi::OpenaiResponses, &[upstream_stream(ClientApi::OpenaiChat).as_bytes()], true);
    let ev = events(&out);
    let kinds: Vec<&str> = ev.iter().map(|(_, d)| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(name.as_deref(), data["type"].as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert!(kinds.contains(&"response.function_call_arguments.done"));

    // Gemini without alt=sse: one JSON array.
    let out = translate_stream(ClientApi::AnthropicMessages, ClientApi::Gemini, &[upstream_stream(ClientApi::AnthropicMessages).as_bytes()], false);
    let array: Vec<Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(array.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    assert_eq!(translate_stream(ClientApi::OpenaiChat, ClientApi::Gemini, &[], false), b"[]");
}

#[test]
fn stream_without_usage_leaves_the_accounting_to_estimate() {
    // An OpenAI upstream asked without include_usage: no made-up zero usage downstream.
    let body = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    for client in [ClientApi::AnthropicMessages, ClientApi::Gemini, ClientApi::OpenaiResponses] {
        let out = translate_stream(ClientApi::OpenaiChat, client, &[body.as_bytes()], true);
        let r = report(client, Framing::Sse, &out);
        // Anthropic's message_start must carry a usage object (zeros): still an estimate.
        assert!(r.estimated && r.tokens.output == 1, "{client:?}: {r:?}");
    }
}

#[test]
fn stream_errors_reach_the_client_in_its_shape() {
    let body = "event: error\r\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\r\n\r\n";
    let out = translate_stream(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, &[body.as_bytes()], true);
    let ev = events(&out);
    assert_eq!(ev.len(), 1, "nothing made up after an error: {ev:?}");
    assert_eq!(ev[0].1["error"]["message"], "Overloaded");
    assert_eq!(ev[0].1["error"]["type"], "server_error");
    let out = translate_stream(ClientApi::Gemini, ClientApi::AnthropicMessages, &[b"data: {\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}\n\n"], true);
    let ev = events(&out);
    assert_eq!(ev[0].0.as_deref(), Some("error"));
    assert_eq!(ev[0].1["error"]["type"], "rate_limit_error");
    let out = translate_stream(ClientApi::OpenaiResponses, ClientApi::Gemini, &[b"data: {}\n\n"], true);
    assert_eq!(events(&out)[0].1["error"]["code"], 500);
}

#[test]
fn json_responses_keep_text_tools_and_stop_reasons() {
    let to = |u: ClientApi, c: ClientApi| -> Value { serde_json::from_slice(&response_json(u, c, &serde_json::to_vec(&upstream_json(u)).unwrap(), "m").unwrap()).unwrap() };
    let v = to(ClientApi::AnthropicMessages, ClientApi::OpenaiChat);
    assert_eq!(v["choices"][0]["message"]["content"], TEXT);
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "toolu_a");
    assert_eq!(serde_json::from_str::<Value>(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Zürich"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["model"], "m");
    let v = to(ClientApi::OpenaiChat, ClientApi::AnthropicMessages);
    assert_eq!(v["content"][1], json!({"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Zürich"}}));
    assert_eq!(v["stop_reason"], "tool_use");
    let v = to(ClientApi::Gemini, ClientApi::OpenaiChat);
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "call_0");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let v = to(ClientApi::OpenaiChat, ClientApi::Gemini);
    assert_eq!(v["candidates"][0]["content"]["parts"][1]["functionCall"]["args"]["city"], "Zürich");
    let v = to(ClientApi::Gemini, ClientApi::OpenaiResponses);
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["status"], "completed");
    let max = br#"{"content":[{"type":"text","text":"cut"}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let v: Value = serde_json::from_slice(&response_json(ClientApi::AnthropicMessages, ClientApi::Gemini, max, "m").unwrap()).unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    let bad = br#"{"content":[{"type":"server_tool_use","id":"x"}],"stop_reason":"end_turn"}"#;
    assert_eq!(response_json(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, bad, "m").unwrap_err().field, "content[0].type");
}

fn translate(client: ClientApi, upstream: ClientApi, body: Value) -> Result<(Value, String), Unmappable> {
    let t = request(client, upstream, &serde_json::to_vec(&body).unwrap(), true, "up-model", &OPTS)?;
    assert!(t.stream);
    Ok((serde_json::from_slice(&t.body).unwrap(), t.path))
}

fn openai_conversation() -> Value {
    json!({
        "model": "alias", "stream": true, "user": "u1", "stream_options": {"include_usage": false},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Bern\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false, "temperature": 0.5, "top_p": 0.9, "stop": "END",
    })
}

#[test]
fn openai_request_to_anthropic() {
    let (v, path) = translate(ClientApi::OpenaiChat, ClientApi::AnthropicMessages, openai_conversation()).unwrap();
    assert_eq!(path, "/v1/messages");
    assert_eq!(v["model"], "up-model");
    assert_eq!(v["max_tokens"], 1024, "the configured default");
    assert_eq!(v["system"], json!([{"type": "text", "text": "Be brief."}]));
    assert_eq!(v["messages"][0]["content"][1]["source"], json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}));
    assert_eq!(v["messages"][0]["content"][2]["source"], json!({"type": "url", "url": "https://example.com/a.jpg"}));
    assert_eq!(v["messages"][1]["content"][0], json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Bern"}}));
    // The tool result and the next user text share one user message.
    assert_eq!(v["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], "call_1");
    assert_eq!(v["messages"][2]["content"][1]["text"], "Thanks");
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    assert_eq!(v["tools"][0]["input_schema"]["properties"]["city"]["type"], "string");
    assert_eq!(v["tool_choice"], json!({"type": "tool", "name": "weather", "disable_parallel_tool_use": true}));
    assert_eq!(v["stop_sequences"], json!(["END"]));
    assert_eq!((v["temperature"].as_f64(), v["top_p"].as_f64(), v["stream"].as_bool()), (Some(0.5), Some(0.9), Some(true)));
    assert!(v.get("user").is_none() && v.get("stream_options").is_none());
}

#[test]
fn openai_request_to_gemini_answers_tools_by_name() {
    let mut body = openai_conversation();
    body.as_object_mut().unwrap().remove("parallel_tool_calls");
    let (v, path) = translate(ClientApi::OpenaiChat, ClientApi::Gemini, body).unwrap();
    assert_eq!(path, "/v1beta/models/up-model:streamGenerateContent?alt=sse");
    assert!(v.get("model").is_none());
    assert_eq!(v["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(v["contents"][0]["parts"][1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}));
    assert_eq!(v["contents"][0]["parts"][2], json!({"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}));
    assert_eq!(v["contents"][1], json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Bern"}}}]}));
    assert_eq!(v["contents"][2]["parts"][0], json!({"functionResponse": {"name": "weather", "response": {"temp": 21}}}));
    assert_eq!(v["generationConfig"]["stopSequences"], json!(["END"]));
    assert!(v["generationConfig"].get("maxOutputTokens").is_none());
    assert_eq!(v["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}));
    assert_eq!(v["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"], "object");
    let t = request(ClientApi::OpenaiChat, ClientApi::Gemini, br#"{"model":"m","messages":[]}"#, false, "g", &OPTS).unwrap();
    assert_eq!(t.path, "/v1beta/models/g:generateContent");
}

#[test]
fn anthropic_request_to_openai() {
    let body = json!({
        "model": "claude", "max_tokens": 300, "metadata": {"user_id": "x"},
        "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}, "stop_sequences": ["x", "y"], "top_k": 5,
    });
    let err = translate(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, body.clone()).unwrap_err();
    assert_eq!(err.field, "top_k");
    let mut body = body;
    body.as_object_mut().unwrap().remove("top_k");
    let (v, path) = translate(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, body).unwrap();
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["max_completion_tokens"], 300);
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "Sys"}));
    assert_eq!(m[1], json!({"role": "user", "content": "Hi"}));
    assert_eq!(m[2]["content"], "Let me check.");
    assert_eq!(m[2]["tool_calls"][0], json!({"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}));
    assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "42"}));
    assert_eq!(m[4]["content"][0]["image_url"]["url"], "data:image/gif;base64,R0lG");
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["stop"], json!(["x", "y"]));
}

#[test]
fn gemini_request_to_anthropic_synthesizes_call_ids() {
    let body = json!({
        "system_instruction": {"parts": [{"text": "S"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "g", "args": {"x": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {"ok": true}}}, {"functionResponse": {"name": "f", "response": {"r": 1}}}]},
        ],
        "generationConfig": {"maxOutputTokens": 77, "topK": 3, "stopSequences": ["z"]},
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    });
    let (v, _) = translate(ClientApi::Gemini, ClientApi::AnthropicMessages, body).unwrap();
    assert_eq!(v["max_tokens"], 77);
    assert_eq!(v["top_k"], 3);
    assert_eq!(v["system"][0]["text"], "S");
    assert_eq!(v["messages"][1]["content"][0]["id"], "call_0");
    assert_eq!(v["messages"][1]["content"][1]["id"], "call_1");
    assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], "call_1");
    assert_eq!(v["messages"][2]["content"][1]["tool_use_id"], "call_0");
    assert_eq!(v["messages"][2]["content"][1]["content"][0]["text"], "{\"r\":1}");
    assert_eq!(v["tools"][0]["input_schema"]["properties"]["x"]["type"], "integer");
    assert_eq!(v["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn responses_request_to_anthropic_and_gemini() {
    let body = json!({
        "model": "gpt", "instructions": "Be kind.", "max_output_tokens": 50, "store": false,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": "auto",
    });
    let (v, _) = translate(ClientApi::OpenaiResponses, ClientApi::AnthropicMessages, body.clone()).unwrap();
    assert_eq!(v["system"][0]["text"], "Be kind.");
    assert_eq!(v["max_tokens"], 50);
    assert_eq!(v["messages"][0]["content"][1]["source"]["media_type"], "image/jpeg");
    assert_eq!(v["messages"][1]["content"][0]["id"], "c1");
    assert_eq!(v["messages"][2]["content"][0]["content"][0]["text"], "done");
    let (v, _) = translate(ClientApi::OpenaiResponses, ClientApi::Gemini, body).unwrap();
    assert_eq!(v["contents"][2]["parts"][0]["functionResponse"], json!({"name": "f", "response": {"content": "done"}}));
    let (v, _) = translate(ClientApi::OpenaiResponses, ClientApi::OpenaiChat, json!({"model": "x", "input": "hello"})).unwrap();
    assert_eq!(v["messages"], json!([{"role": "user", "content": "hello"}]));
}

#[test]
fn unmappable_fields_are_refused_by_name() {
    let cases: Vec<(ClientApi, ClientApi, Value, &str)> = vec![
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [], "n": 2}), "n"),
        (ClientApi::OpenaiChat, ClientApi::Gemini, json!({"messages": [], "logprobs": true}), "logprobs"),
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [], "frequency_penalty": 1}), "frequency_penalty"),
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}), "messages[0].content[0].type"),
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [{"role": "user", "content": "x", "audio": {}}]}), "messages[0].audio"),
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [], "response_format": {"type": "json_object"}}), "response_format"),
        (ClientApi::OpenaiChat, ClientApi::Gemini, json!({"messages": [], "parallel_tool_calls": false}), "parallel_tool_calls"),
        (ClientApi::OpenaiChat, ClientApi::AnthropicMessages, json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}), "messages[0].content[0].image_url.url"),
        (ClientApi::OpenaiChat, ClientApi::Gemini, json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/img"}}]}]}), "image_url"),
        (ClientApi::OpenaiChat, ClientApi::Gemini, json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}), "messages[0].tool_call_id"),
        (ClientApi::AnthropicMessages, ClientApi::OpenaiChat, json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}), "messages[0].content[0].type"),
        (ClientApi::AnthropicMessages, ClientApi::OpenaiChat, json!({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 10}}), "thinking"),
        (ClientApi::AnthropicMessages, ClientApi::Gemini, json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}), "tools[0].type"),
        (ClientApi::Gemini, ClientApi::OpenaiChat, json!({"contents": [], "safetySettings": []}), "safetySettings"),
        (ClientApi::Gemini, ClientApi::OpenaiChat, json!({"contents": [], "generationConfig": {"candidateCount": 2}}), "generationConfig.candidateCount"),
        (ClientApi::Gemini, ClientApi::OpenaiChat, json!({"contents": [{"parts": [{"executableCode": {}}]}]}), "contents[0].parts[0].executableCode"),
        (ClientApi::Gemini, ClientApi::OpenaiChat, json!({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}), "contents[0].parts[0].functionResponse"),
        (ClientApi::Gemini, ClientApi::OpenaiChat, json!({"contents": [{"parts": [{"inlineData": {"mimeType": "application/pdf", "data": "x"}}]}]}), "contents[0].parts[0].inlineData.mimeType"),
        (ClientApi::OpenaiResponses, ClientApi::OpenaiChat, json!({"input": "x", "previous_response_id": "resp_1"}), "previous_response_id"),
        (ClientApi::OpenaiResponses, ClientApi::OpenaiChat, json!({"input": [{"type": "reasoning", "summary": []}]}), "input[0].type"),
        (ClientApi::OpenaiChat, ClientApi::OpenaiResponses, json!({"messages": []}), "api"),
    ];
    for (client, upstream, body, field) in cases {
        let err = translate(client, upstream, body.clone()).unwrap_err();
        assert_eq!(err.field, field, "{body}: {err:?}");
        let shaped: Value = serde_json::from_slice(&err.error_body(client)).unwrap();
        assert!(shaped.to_string().contains(field), "{shaped}");
    }
    assert_eq!(request(ClientApi::OpenaiChat, ClientApi::Gemini, b"[1]", false, "m", &OPTS).unwrap_err().field, "body");
}

#[test]
fn upstream_errors_keep_status_and_message_in_the_client_shape() {
    let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let v: Value = serde_json::from_slice(&error_body(ClientApi::AnthropicMessages, ClientApi::OpenaiChat, 529, anthropic)).unwrap();
    assert_eq!(v, json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}}));
    let v: Value = serde_json::from_slice(&error_body(ClientApi::AnthropicMessages, ClientApi::Gemini, 529, anthropic)).unwrap();
    assert_eq!(v, json!({"error": {"code": 529, "message": "Overloaded", "status": "UNAVAILABLE"}}));
    let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let v: Value = serde_json::from_slice(&error_body(ClientApi::OpenaiChat, ClientApi::AnthropicMessages, 429, openai)).unwrap();
    assert_eq!(v, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}));
    let v: Value = serde_json::from_slice(&error_body(ClientApi::Gemini, ClientApi::OpenaiResponses, 418, b"<html>teapot</html>")).unwrap();
    assert_eq!(v["error"]["message"], "<html>teapot</html>");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let v: Value = serde_json::from_slice(&error_body(ClientApi::Gemini, ClientApi::AnthropicMessages, 502, b"")).unwrap();
    assert_eq!(v["error"], json!({"type": "api_error", "message": "upstream error (HTTP 502)"}));
}

#[test]
fn a_responses_clients_stream_numbers_each_item_after_the_one_before() {
    // OpenAI upstream: text, then a tool call. The Responses client sees the message as
    // output 0 and the function call as output 1 (ids `msg_0`-like and `fc_1`), in every event.
    let body = upstream_stream(ClientApi::OpenaiChat);
    let out = translate_stream(ClientApi::OpenaiChat, ClientApi::OpenaiResponses, &[body.as_bytes()], true);
    let added: Vec<(u64, String)> = events(&out)
        .into_iter()
        .filter(|(name, _)| name.as_deref() == Some("response.output_item.added"))
        .map(|(_, d)| (d["output_index"].as_u64().unwrap(), d["item"]["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(added.len(), 2, "{added:?}");
    assert_eq!(added[0].0, 0);
    assert_eq!(added[1].0, 1);
    assert!(added[1].1.ends_with('1'), "{added:?}");
    let completed = events(&out).into_iter().find(|(n, _)| n.as_deref() == Some("response.completed")).unwrap().1;
    let ids: Vec<&str> = completed["response"]["output"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, added.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), "the final output names the same items");
}
