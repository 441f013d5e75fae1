//! LLM API translation (filters/llm/src/translate/) from any client API to any provider API.
//! Asserts, for arbitrary bodies and streams:
//! - a translated request is a JSON object whose path is the target API's, and a refusal
//!   names a field; a translated JSON answer and every error body are JSON objects (the
//!   client's error shape carries `error`);
//! - a translated stream does not depend on how the upstream bytes are cut into chunks
//!   (byte for byte the same output fed whole, cut at the input's positions, or one byte at
//!   a time), and every OpenAI-shaped `data:` line the translator writes is JSON or `[DONE]`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{chunks, Input};
use tollgate_llm::api::ClientApi;
use tollgate_llm::translate::{self, RequestOptions, StreamTranslator};

const CLIENTS: [ClientApi; 4] = [ClientApi::OpenaiChat, ClientApi::OpenaiResponses, ClientApi::AnthropicMessages, ClientApi::Gemini];
const UPSTREAMS: [ClientApi; 3] = [ClientApi::OpenaiChat, ClientApi::AnthropicMessages, ClientApi::Gemini];

fn is_object(bytes: &[u8]) -> bool {
    matches!(serde_json::from_slice::<serde_json::Value>(bytes), Ok(serde_json::Value::Object(_)))
}

fn stream(upstream: ClientApi, client: ClientApi, sse: bool, pieces: &[&[u8]]) -> Vec<u8> {
    let mut t = StreamTranslator::new(upstream, client, "m", sse);
    let mut out = Vec::new();
    for p in pieces {
        out.extend(t.feed(p));
    }
    out.extend(t.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let cut = input.byte();
    let client = CLIENTS[usize::from(selector & 3)];
    let upstream = UPSTREAMS[usize::from(selector >> 2) % 3];
    let streamed = selector & 0x40 != 0;
    let body = input.part();
    let answer = input.rest();
    if client == upstream {
        return;
    }

    let options = RequestOptions { default_max_tokens: 1024, include_usage: true };
    match translate::request(client, upstream, body, streamed, "m", &options) {
        Ok(t) => {
            assert!(is_object(&t.body), "request body is not a JSON object");
            assert!(t.path.starts_with("/v1"), "path {}", t.path);
        }
        // The field may be a member literally named "" (then the path is empty); the message
        // always says what is wrong.
        Err(u) => assert!(!u.message.is_empty(), "a refusal says nothing"),
    }
    if let Ok(out) = translate::response_json(upstream, client, answer, "m") {
        assert!(is_object(&out), "translated answer is not a JSON object");
    }
    let error = translate::error_body(upstream, client, 400 + u16::from(cut), answer);
    assert!(is_object(&error), "error body is not a JSON object");

    let sse = cut & 1 == 0;
    let whole = stream(upstream, client, sse, &[answer]);
    assert_eq!(whole, stream(upstream, client, sse, &chunks(answer, cut)), "output depends on the cuts");
    if answer.len() <= 512 {
        let bytes: Vec<&[u8]> = answer.chunks(1).collect();
        assert_eq!(whole, stream(upstream, client, sse, &bytes), "output depends on one-byte feeding");
    }
    if matches!(client, ClientApi::OpenaiChat) {
        for line in whole.split(|&b| b == b'\n') {
            if let Some(data) = line.strip_prefix(b"data: ") {
                assert!(data == b"[DONE]" || is_object(data), "data line is not JSON: {:?}", String::from_utf8_lossy(data));
            }
        }
    }
});
