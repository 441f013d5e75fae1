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

#[test]
fn a_stream_has_ended_only_at_its_terminal_event() {
    // (api, the stream up to its last event, the terminal event)
    let cases: [(ClientApi, &str, &str); 3] = [
        (ClientApi::OpenaiChat, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n", "data: [DONE]\n\n"),
        (ClientApi::OpenaiResponses, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
         "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n"),
        (ClientApi::AnthropicMessages, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n",
         "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
    ];
    for (api, before, last) in cases {
        let mut t = UsageTracker::new(api, Framing::Sse, 1 << 16);
        t.feed(before.as_bytes());
        assert!(!t.ended(), "{api:?}: final usage is not the end of the stream");
        t.feed(last.as_bytes());
        assert!(t.ended(), "{api:?}");
    }
    // Gemini and JSON bodies have no terminal event: only the body's end completes them.
    let mut gemini = UsageTracker::new(ClientApi::Gemini, Framing::Sse, 1 << 16);
    gemini.feed(b"data: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1}}\n\n");
    let mut json = UsageTracker::new(ClientApi::OpenaiChat, Framing::Json, 1 << 16);
    json.feed(b"{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}");
    assert!(!gemini.ended() && !json.ended());
}
