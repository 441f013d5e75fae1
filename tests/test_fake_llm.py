"""Tests for examples/fake_llm/server.py on its own (no Envoy).

The real `openai` and `anthropic` SDKs act as clients, so every JSON and SSE format the fake
serves is proven parseable by the official parsers; Gemini (no SDK here) is read with httpx.
Token numbers are asserted exactly against the formula in the server's docstring:
input = words in all prompt messages + number of messages (system prompt counts as one),
output = words in "Hello from {NAME} model {MODEL}: <last user message>".
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

pytestmark = pytest.mark.timeout(60)

SERVER = Path(__file__).resolve().parent.parent / "examples" / "fake_llm" / "server.py"
NAME = "alpha"


def start_server(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """Starts the fake on a free port (--port 0) and returns (process, base URL)."""
    with open(tmp_path / "fake_llm.stderr", "w") as log:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()  # the readiness line, printed once the socket listens
    match = re.search(r"url=(http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"fake-llm did not start: {line!r} {(tmp_path / 'fake_llm.stderr').read_text()}")
    return proc, match.group(1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # by PID, only the process this test started
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("fake_llm"), "--name", NAME)
    yield url
    stop_server(proc)


@pytest.fixture(autouse=True)
def clean_state(base_url):
    httpx.post(f"{base_url}/_fake/reset")
    yield


@pytest.fixture
def oai(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(base_url):
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def recorded(base_url: str) -> list[dict]:
    return httpx.get(f"{base_url}/_fake/requests").json()


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Returns (event name, data) per SSE event; tolerates LF or CRLF line ends."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        if not block.strip():
            continue
        event, data = None, []
        for line in re.split(r"\r?\n", block):
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        events.append((event, "\n".join(data)))
    return events


CHAT_MESSAGES = [
    {"role": "system", "content": "You are terse."},  # 3 words
    {"role": "user", "content": "say hi to me"},  # 4 words
]
CHAT_INPUT = 3 + 4 + 2  # words + messages
CHAT_REPLY = f"Hello from {NAME} model gpt-4o-mini: say hi to me"
CHAT_OUTPUT = 9


# ---- helpers, recording, keep-alive --------------------------------------------------


def test_healthz_and_request_recording(base_url, oai):
    health = httpx.get(f"{base_url}/healthz")
    assert (health.status_code, health.text) == (200, "ok")

    oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES,
                                extra_headers={"X-Custom-Header": "Yes"})
    httpx.post(f"{base_url}/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
               content=b"not json", headers={"x-fake-status": "503"})

    first, second = recorded(base_url)
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["headers"]["x-custom-header"] == "Yes"
    assert first["headers"]["authorization"] == "Bearer sk-test"
    assert first["body"]["messages"] == CHAT_MESSAGES
    assert second["query"] == "alt=sse" and second["query_params"] == {"alt": "sse"}
    assert second["body"] == "not json"

    assert httpx.post(f"{base_url}/_fake/reset").status_code == 200
    assert recorded(base_url) == []


def test_keep_alive_and_chunked_request_body(base_url):
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = {"model": "m", "messages": [{"role": "user", "content": "one two"}]}
    for stream in (True, False, True):
        conn.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=stream)),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
        assert text.rstrip().endswith("data: [DONE]") if stream else json.loads(text)["choices"]
    socket_before = conn.sock
    # A request body sent with Transfer-Encoding: chunked (as Envoy does after a rewrite).
    conn.request("POST", "/v1/chat/completions", body=iter([json.dumps(body).encode()]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["usage"]["prompt_tokens"] == 3
    assert conn.sock is socket_before  # one TCP connection served all four requests
    conn.close()
    assert recorded(base_url)[-1]["headers"]["transfer-encoding"] == "chunked"
    assert recorded(base_url)[-1]["body"] == body


def test_default_name_is_fake_provider(tmp_path):
    proc, url = start_server(tmp_path)
    try:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-fake-provider-name"] == "fake-openai"
        assert raw.parse().choices[0].message.content == "Hello from fake-openai model m: x"
        gemini = httpx.post(f"{url}/v1beta/models/g:generateContent",
                            json={"contents": [{"parts": [{"text": "x"}]}]})
        assert gemini.headers["x-fake-provider-name"] == "fake-gemini"
    finally:
        stop_server(proc)


def test_cli_flags_and_env_set_defaults_headers_override(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_CHUNKS", "2")
    proc, url = start_server(tmp_path, "--status", "429", "--omit-usage")
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True,
                "stream_options": {"include_usage": True}}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 429
        response = httpx.post(f"{url}/v1/chat/completions", json=body,
                              headers={"x-fake-status": "0", "x-fake-omit-usage": "0"})
        data = [json.loads(d) for _, d in parse_sse(response.text)[:-1]]
        assert sum(1 for d in data if d["choices"] and d["choices"][0]["delta"].get("content")) == 2
        assert data[-1]["usage"]["prompt_tokens"] == 2
        assert httpx.get(f"{url}/_fake/config").json()["chunks"] == 2
    finally:
        stop_server(proc)


def test_runtime_config_sets_defaults_until_reset(base_url, oai):
    config = httpx.post(f"{base_url}/_fake/config", json={"status": 503, "chunks": 2}).json()
    assert config["status"] == 503 and config["chunks"] == 2
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=CHAT_MESSAGES)
    assert httpx.post(f"{base_url}/_fake/config", json={"bogus": 1}).status_code == 400
    httpx.post(f"{base_url}/_fake/reset")
    assert httpx.get(f"{base_url}/_fake/config").json()["status"] == 0
    assert oai.chat.completions.create(model="m", messages=CHAT_MESSAGES).choices


# ---- OpenAI Chat ---------------------------------------------------------------------


def test_openai_chat_json(oai):
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT_MESSAGES)
    assert raw.headers["x-fake-provider-name"] == NAME
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == CHAT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        CHAT_INPUT, CHAT_OUTPUT, CHAT_INPUT + CHAT_OUTPUT)
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_chat_json_cached_reasoning_and_max_tokens(oai):
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, max_completion_tokens=3,
        extra_headers={"x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "6"})
    assert completion.choices[0].message.content == f"Hello from {NAME}"
    assert completion.choices[0].finish_reason == "length"
    usage = completion.usage
    assert usage.prompt_tokens == CHAT_INPUT
    assert usage.completion_tokens == 3 + 6  # reasoning is part of completion tokens
    assert usage.total_tokens == CHAT_INPUT + 9
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details.reasoning_tokens == 6


def test_openai_chat_stream_with_usage(oai):
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == 5  # default x-fake-chunks
    assert "".join(contents) == CHAT_REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        CHAT_INPUT, CHAT_OUTPUT, CHAT_INPUT + CHAT_OUTPUT)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_chat_stream_without_include_usage_and_chunk_count(oai):
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, stream=True,
                                              extra_headers={"x-fake-chunks": "3"}))
    assert all(c.choices and c.usage is None for c in chunks)
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(contents) == 3 and "".join(contents) == CHAT_REPLY


def test_openai_chat_more_chunks_than_words_pads_reply(oai):
    chunks = list(oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-fake-chunks": "12"}))
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == 12
    assert "".join(contents) == f"Hello from {NAME} model m: hi" + " lorem" * 6
    assert chunks[-1].usage.completion_tokens == 12


def test_openai_chat_stream_omit_usage(oai):
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-fake-omit-usage": "1"}))
    assert all(c.choices and c.usage is None for c in chunks)
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES,
                                             extra_headers={"x-fake-omit-usage": "1"})
    assert completion.usage is None


# ---- OpenAI Responses ----------------------------------------------------------------

RESP_INPUT = (2 + 1) + (4 + 1)  # instructions "Be brief." + input "tell me a joke"
RESP_REPLY = f"Hello from {NAME} model gpt-4.1: tell me a joke"
RESP_OUTPUT = 9


def test_openai_responses_json(oai):
    response = oai.responses.create(model="gpt-4.1", instructions="Be brief.", input="tell me a joke",
                                    extra_headers={"x-fake-cached-tokens": "2",
                                                   "x-fake-reasoning-tokens": "5",
                                                   "x-fake-cache-creation-tokens": "3"})
    assert response.object == "response" and response.status == "completed"
    assert response.model == "gpt-4.1"
    assert response.output_text == RESP_REPLY
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        RESP_INPUT, RESP_OUTPUT + 5, RESP_INPUT + RESP_OUTPUT + 5)
    assert usage.input_tokens_details.cached_tokens == 2
    assert usage.input_tokens_details.cache_write_tokens == 3
    assert usage.output_tokens_details.reasoning_tokens == 5


def test_openai_responses_json_item_input_and_max_output_tokens(oai):
    response = oai.responses.create(
        model="gpt-4.1", max_output_tokens=4,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
               {"role": "assistant", "content": "an answer"},
               {"role": "user", "content": "second one please"}])
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == f"Hello from {NAME} model"
    assert response.usage.input_tokens == (2 + 2 + 3) + 3
    assert response.usage.output_tokens == 4


def test_openai_responses_stream_sdk_helper(oai):
    with oai.responses.stream(model="gpt-4.1", instructions="Be brief.", input="tell me a joke") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types == (["response.created", "response.in_progress", "response.output_item.added",
                      "response.content_part.added"] + ["response.output_text.delta"] * 5
                     + ["response.output_text.done", "response.content_part.done",
                        "response.output_item.done", "response.completed"])
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == RESP_REPLY
    assert events[-2].item.content[0].text == RESP_REPLY
    assert final.output_text == RESP_REPLY
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
        RESP_INPUT, RESP_OUTPUT, RESP_INPUT + RESP_OUTPUT)
    assert final.usage.input_tokens_details.cached_tokens == 0
    assert final.usage.output_tokens_details.reasoning_tokens == 0


def test_openai_responses_stream_raw_sse(base_url, oai):
    events = list(oai.responses.create(model="gpt-4.1", input="tell me a joke", stream=True))
    assert events[0].type == "response.created" and events[0].response.usage is None
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.input_tokens == 4 + 1

    # On the wire each event has `event:` equal to data.type, as raw SSE parsers expect.
    body = httpx.post(f"{base_url}/v1/responses", json={"model": "gpt-4.1", "input": "hi", "stream": True},
                      headers={"x-fake-omit-usage": "1"})
    assert body.headers["content-type"].startswith("text/event-stream")
    wire = parse_sse(body.text)
    for name, data in wire:
        assert name == json.loads(data)["type"]
    assert json.loads(wire[-1][1])["response"]["usage"] is None


# ---- Anthropic -----------------------------------------------------------------------

CLAUDE_INPUT = (2 + 1) + (3 + 1)  # system "Be nice." + user "hello there friend"
CLAUDE_REPLY = f"Hello from {NAME} model claude-fake-1: hello there friend"
CLAUDE_OUTPUT = 8
CLAUDE_REQUEST = dict(model="claude-fake-1", max_tokens=100, system="Be nice.",
                      messages=[{"role": "user", "content": "hello there friend"}])


def test_anthropic_messages_json(claude):
    message = claude.messages.create(**CLAUDE_REQUEST, extra_headers={
        "x-fake-cached-tokens": "11", "x-fake-cache-creation-tokens": "7"})
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-fake-1"
    assert message.content[0].type == "text" and message.content[0].text == CLAUDE_REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == CLAUDE_INPUT
    assert message.usage.output_tokens == CLAUDE_OUTPUT
    assert message.usage.cache_read_input_tokens == 11
    assert message.usage.cache_creation_input_tokens == 7


def test_anthropic_messages_block_content_and_max_tokens(claude):
    message = claude.messages.create(
        model="claude-haiku", max_tokens=2, system=[{"type": "text", "text": "Sys prompt here"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "a b"}]},
                  {"role": "assistant", "content": [  # the tool_use block the result answers
                      {"type": "text", "text": "c"},
                      {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                "content": [{"type": "text", "text": "d e f"}]}]}])
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Hello from"
    assert message.usage.input_tokens == (3 + 2 + 1 + 3) + 4
    assert message.usage.output_tokens == 2


def test_anthropic_messages_stream_sdk_helper(claude):
    with claude.messages.stream(**CLAUDE_REQUEST, extra_headers={"x-fake-reasoning-tokens": "3"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == CLAUDE_REPLY
    assert final.content[0].text == CLAUDE_REPLY
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == CLAUDE_INPUT
    assert final.usage.output_tokens == CLAUDE_OUTPUT + 3  # thinking is billed as output


def test_anthropic_stream_wire_format(base_url):
    response = httpx.post(f"{base_url}/v1/messages", json=dict(CLAUDE_REQUEST, stream=True),
                          headers={"x-fake-cached-tokens": "5", "x-fake-chunks": "2"})
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == n for n, d in zip(names, data))
    start_usage = data[0]["message"]["usage"]
    assert start_usage["input_tokens"] == CLAUDE_INPUT
    assert start_usage["cache_read_input_tokens"] == 5
    assert start_usage["cache_creation_input_tokens"] == 0
    assert start_usage["output_tokens"] == 1  # like the real API; message_delta has the total
    assert data[3]["delta"] == {"type": "text_delta", "text": "Hello from alpha model"}
    assert data[6]["usage"]["output_tokens"] == CLAUDE_OUTPUT
    assert data[6]["delta"]["stop_reason"] == "end_turn"


def test_anthropic_requires_max_tokens(base_url):
    response = httpx.post(f"{base_url}/v1/messages",
                          json={"model": "c", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


# ---- Gemini --------------------------------------------------------------------------

GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_BODY = {"systemInstruction": {"parts": [{"text": "Answer well."}]},
               "contents": [{"role": "user", "parts": [{"text": "what is up"}]}]}
GEMINI_INPUT = (2 + 1) + (3 + 1)
GEMINI_REPLY = f"Hello from {NAME} model {GEMINI_MODEL}: what is up"
GEMINI_OUTPUT = 8


def test_gemini_generate_content_json(base_url):
    response = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:generateContent", json=GEMINI_BODY)
    assert response.status_code == 200
    data = response.json()
    candidate = data["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": GEMINI_REPLY}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert data["modelVersion"] == GEMINI_MODEL
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == GEMINI_INPUT
    assert usage["candidatesTokenCount"] == GEMINI_OUTPUT
    assert usage["totalTokenCount"] == GEMINI_INPUT + GEMINI_OUTPUT
    assert "cachedContentTokenCount" not in usage and "thoughtsTokenCount" not in usage  # zero: omitted


def test_gemini_cached_thoughts_and_max_tokens(base_url):
    body = dict(GEMINI_BODY, generationConfig={"maxOutputTokens": 3})
    data = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:generateContent", json=body,
                      headers={"x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "10"}).json()
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["candidates"][0]["content"]["parts"][0]["text"] == f"Hello from {NAME}"
    assert data["usageMetadata"] == {
        "promptTokenCount": GEMINI_INPUT, "candidatesTokenCount": 3,
        "totalTokenCount": GEMINI_INPUT + 3 + 10, "cachedContentTokenCount": 4,
        "thoughtsTokenCount": 10,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": GEMINI_INPUT}]}


def test_gemini_stream_sse_cumulative_usage(base_url):
    response = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse",
                          json=GEMINI_BODY)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("}\r\n\r\n")
    events = parse_sse(response.text)
    assert all(name is None for name, _ in events)  # Gemini sends bare `data:` lines
    chunks = [json.loads(d) for _, d in events]
    assert len(chunks) == 5
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == GEMINI_REPLY
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in chunks] == [2, 4, 6, 7, 8]
    assert all(c["usageMetadata"]["promptTokenCount"] == GEMINI_INPUT for c in chunks)
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == GEMINI_INPUT + GEMINI_OUTPUT
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None] * 4 + ["STOP"]


def test_gemini_stream_json_array_and_omit_usage(base_url):
    response = httpx.post(f"{base_url}/v1/models/{GEMINI_MODEL}:streamGenerateContent",
                          json=GEMINI_BODY, headers={"x-fake-omit-usage": "1", "x-fake-chunks": "3"})
    chunks = response.json()  # without alt=sse the stream is one JSON array
    assert len(chunks) == 3
    assert all("usageMetadata" not in c for c in chunks)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == GEMINI_REPLY


# ---- strict schema check against the SDK types ----------------------------------------
# The SDKs build their models without validation, so parsing alone would not catch a missing
# required field; here every wire payload is validated strictly against the SDK's own types.


def test_every_payload_validates_against_sdk_types(base_url):
    from anthropic.types import (Message, RawContentBlockDeltaEvent, RawContentBlockStartEvent,
                                 RawContentBlockStopEvent, RawMessageDeltaEvent, RawMessageStartEvent,
                                 RawMessageStopEvent)
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import (Response, ResponseCompletedEvent, ResponseContentPartAddedEvent,
                                        ResponseContentPartDoneEvent, ResponseCreatedEvent,
                                        ResponseIncompleteEvent, ResponseInProgressEvent,
                                        ResponseOutputItemAddedEvent, ResponseOutputItemDoneEvent,
                                        ResponseTextDeltaEvent, ResponseTextDoneEvent)

    responses_events = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (
        ResponseCreatedEvent, ResponseInProgressEvent, ResponseOutputItemAddedEvent,
        ResponseContentPartAddedEvent, ResponseTextDeltaEvent, ResponseTextDoneEvent,
        ResponseContentPartDoneEvent, ResponseOutputItemDoneEvent, ResponseCompletedEvent,
        ResponseIncompleteEvent)}
    anthropic_events = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (
        RawMessageStartEvent, RawContentBlockStartEvent, RawContentBlockDeltaEvent,
        RawContentBlockStopEvent, RawMessageDeltaEvent, RawMessageStopEvent)}
    headers = {"x-fake-cached-tokens": "1", "x-fake-reasoning-tokens": "1",
               "x-fake-cache-creation-tokens": "1"}

    def post(path: str, body: dict) -> httpx.Response:
        response = httpx.post(base_url + path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    chat = {"model": "m", "messages": CHAT_MESSAGES}
    ChatCompletion.model_validate(post("/v1/chat/completions", chat).json())
    wire = parse_sse(post("/v1/chat/completions", dict(chat, stream=True,
                                                        stream_options={"include_usage": True})).text)
    assert wire[-1] == (None, "[DONE]")
    for _, data in wire[:-1]:
        ChatCompletionChunk.model_validate_json(data)

    for max_output_tokens in (None, 2):  # completed and incomplete
        body = {"model": "m", "input": "hi there", "max_output_tokens": max_output_tokens}
        Response.model_validate(post("/v1/responses", body).json())
        for name, data in parse_sse(post("/v1/responses", dict(body, stream=True)).text):
            responses_events[name].model_validate_json(data)

    Message.model_validate(post("/v1/messages", CLAUDE_REQUEST).json())
    for name, data in parse_sse(post("/v1/messages", dict(CLAUDE_REQUEST, stream=True)).text):
        if name != "ping":
            anthropic_events[name].model_validate_json(data)


# ---- error switches ------------------------------------------------------------------


def test_openai_429_rate_limit(oai):
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="m", messages=CHAT_MESSAGES,
                                    extra_headers={"x-fake-status": "429", "x-fake-retry-after": "7"})
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-tokens" in error.response.headers
    assert set(error.body) == {"message", "type", "param", "code"}  # SDK unwraps {"error": ...}
    assert error.code == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [500, 503])
def test_openai_5xx_on_stream_and_responses(oai, status):
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="m", messages=CHAT_MESSAGES, stream=True,
                                    extra_headers={"x-fake-status": str(status)})
    assert caught.value.status_code == status
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="m", input="x", extra_headers={"x-fake-status": str(status)})


def test_anthropic_529_overloaded_and_429(claude):
    with pytest.raises(anthropic.OverloadedError) as caught:
        claude.messages.create(**CLAUDE_REQUEST, extra_headers={"x-fake-status": "529"})
    assert caught.value.status_code == 529
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "overloaded_error"

    with pytest.raises(anthropic.RateLimitError) as caught:
        with claude.messages.stream(**CLAUDE_REQUEST, extra_headers={"x-fake-status": "429"}) as stream:
            stream.get_final_message()
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "1"


def test_gemini_errors(base_url):
    url = f"{base_url}/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse"
    response = httpx.post(url, json=GEMINI_BODY, headers={"x-fake-status": "429"})
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["retryDelay"] == "1s"
    response = httpx.post(url, json=GEMINI_BODY, headers={"x-fake-status": "503"})
    assert response.json()["error"]["status"] == "UNAVAILABLE"


def test_bad_switch_value_is_400_in_provider_shape(base_url, oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="m", messages=CHAT_MESSAGES,
                                    extra_headers={"x-fake-chunks": "many"})
    assert "x-fake-chunks" in caught.value.message


# ---- timing --------------------------------------------------------------------------


def test_chunk_delay_spaces_out_flushed_chunks(base_url):
    arrivals = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions",
                      json={"model": "m", "messages": CHAT_MESSAGES, "stream": True},
                      headers={"x-fake-chunk-delay-ms": "150", "x-fake-chunks": "4"}) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Each chunk is flushed on its own, so the client sees the delay between chunks.
    assert all(gap >= 0.12 for gap in gaps), gaps


def test_response_delay(oai):
    started = time.monotonic()
    oai.chat.completions.create(model="m", messages=CHAT_MESSAGES,
                                extra_headers={"x-fake-response-delay-ms": "200"})
    assert time.monotonic() - started >= 0.2
