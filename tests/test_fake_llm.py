"""Tests for examples/fake_llm/server.py on its own (no Envoy).

The real `openai`, `anthropic` and `google-genai` SDKs act as clients, so every JSON and SSE
format the fake serves is proven parseable by the official parsers, and payloads read raw are
validated strictly against the SDKs' own model classes.
Token numbers are asserted exactly against the formula in the server's docstring:
input = words in all prompt messages + number of messages (system prompt counts as one),
output = words in "Hello from {NAME} model {MODEL}: <last user message>".
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

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


@pytest.fixture
def gemini(base_url):
    with genai.Client(api_key="g-test", http_options=genai_types.HttpOptions(base_url=base_url)) as client:
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


# ---- tool calls ----------------------------------------------------------------------
# A tool is called when the last user message names it; the arguments give each required
# property "<prop>-value" (strings), 1 (numbers), the first enum value; output tokens are
# words of the JSON arguments + 1.

WEATHER_SCHEMA = {"type": "object",
                  "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                 "note": {"type": "string"}},
                  "required": ["city", "days", "unit"]}
WEATHER_ARGS = {"city": "city-value", "days": 1, "unit": "celsius"}
WEATHER_JSON = json.dumps(WEATHER_ARGS)  # {"city": "city-value", "days": 1, "unit": "celsius"}
WEATHER_OUTPUT = 6 + 1  # six whitespace-separated words in the JSON, plus one
ASK = "use get_weather for Paris"  # 4 words: names get_weather, not get_time
ASK_INPUT = 4 + 1
OAI_TOOLS = [
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                      "parameters": WEATHER_SCHEMA}},
]
RESP_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather",
               "parameters": WEATHER_SCHEMA, "strict": False}]
CLAUDE_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}]


def test_openai_chat_tool_call_and_tool_result(oai):
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": ASK}],
                                             tools=OAI_TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert call.function.arguments == WEATHER_JSON
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (ASK_INPUT, WEATHER_OUTPUT)

    # The result goes back as a tool message; the reply shows it arrived.
    follow = oai.chat.completions.create(model="gpt-4o-mini", tools=OAI_TOOLS, messages=[
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and 20 degrees"}])
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == (
        f"Hello from {NAME} model gpt-4o-mini: tool result: sunny and 20 degrees")
    assert follow.usage.prompt_tokens == (4 + 0 + 4) + 3  # the call's arguments are not counted


def test_openai_chat_tool_call_stream(oai):
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": ASK}], tools=OAI_TOOLS, stream=True,
        stream_options={"include_usage": True}))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    [start] = first.tool_calls
    assert (start.index, start.type, start.function.name, start.function.arguments) == (
        0, "function", "get_weather", "")
    assert start.id.startswith("call_")
    fragments = [c.choices[0].delta.tool_calls for c in chunks[1:] if c.choices and c.choices[0].delta.tool_calls]
    assert len(fragments) == 5  # x-fake-chunks default: the arguments come in five pieces
    assert all(f[0].index == 0 and f[0].id is None and f[0].function.name is None for f in fragments)
    assert "".join(f[0].function.arguments for f in fragments) == WEATHER_JSON
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == WEATHER_OUTPUT

    # The SDK's stream helper accumulates the fragments into one call.
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=[{"role": "user", "content": ASK}],
                                     tools=OAI_TOOLS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls[0].function.arguments == WEATHER_JSON


def test_openai_chat_tool_choice(oai):
    def create(content: str, **kwargs):
        return oai.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                           tools=OAI_TOOLS, **kwargs).choices[0]

    assert create("hello there").message.content == f"Hello from {NAME} model m: hello there"  # none named
    assert create(ASK, tool_choice="none").message.tool_calls is None
    forced = create(ASK, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert forced.message.tool_calls[0].function.name == "get_time"
    assert forced.message.tool_calls[0].function.arguments == "{}"  # nothing required
    required = create("hello there", tool_choice="required")
    assert required.message.tool_calls[0].function.name == "get_time"  # the first tool


def test_openai_responses_tool_call_stream_and_result(oai):
    response = oai.responses.create(model="gpt-4.1", input=ASK, tools=RESP_TOOLS)
    [item] = response.output
    assert item.type == "function_call" and item.status == "completed"
    assert item.id.startswith("fc_") and item.call_id.startswith("call_")
    assert (item.name, item.arguments) == ("get_weather", WEATHER_JSON)
    assert response.status == "completed" and response.output_text == ""
    assert (response.usage.input_tokens, response.usage.output_tokens) == (ASK_INPUT, WEATHER_OUTPUT)

    with oai.responses.stream(model="gpt-4.1", input=ASK, tools=RESP_TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == (
        ["response.created", "response.in_progress", "response.output_item.added"]
        + ["response.function_call_arguments.delta"] * 5
        + ["response.function_call_arguments.done", "response.output_item.done", "response.completed"])
    assert events[2].item.type == "function_call" and events[2].item.arguments == ""
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == WEATHER_JSON
    assert events[-3].arguments == WEATHER_JSON
    assert {e.item_id for e in events[3:-2]} == {events[2].item.id}
    assert final.output[0].arguments == WEATHER_JSON
    assert final.usage.output_tokens == WEATHER_OUTPUT

    follow = oai.responses.create(model="gpt-4.1", tools=RESP_TOOLS, input=[
        {"role": "user", "content": ASK},
        {"type": "function_call", "call_id": item.call_id, "name": item.name, "arguments": item.arguments},
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}])
    assert follow.output_text == f"Hello from {NAME} model gpt-4.1: tool result: sunny"
    assert follow.usage.input_tokens == (4 + 0 + 1) + 3


def test_anthropic_tool_use_stream_and_result(claude, base_url):
    request = dict(model="claude-fake-1", max_tokens=100, tools=CLAUDE_TOOLS,
                   messages=[{"role": "user", "content": ASK}])
    message = claude.messages.create(**request)
    [block] = message.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", WEATHER_ARGS)
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (ASK_INPUT, WEATHER_OUTPUT)

    # The SDK's stream accumulator parses the partial_json fragments into the block's input.
    with claude.messages.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partial = [e for e in events if e.type == "input_json"]
    assert len(partial) == 5 and "".join(e.partial_json for e in partial) == WEATHER_JSON
    assert partial[-1].snapshot == WEATHER_ARGS
    assert final.content[0].input == WEATHER_ARGS and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == WEATHER_OUTPUT

    wire = parse_sse(httpx.post(f"{base_url}/v1/messages", json=dict(request, stream=True)).text)
    assert [name for name, _ in wire] == (["message_start", "content_block_start", "ping"]
                                          + ["content_block_delta"] * 5
                                          + ["content_block_stop", "message_delta", "message_stop"])
    start = json.loads(wire[1][1])["content_block"]
    assert (start["type"], start["name"], start["input"]) == ("tool_use", "get_weather", {})
    assert {json.loads(d)["delta"]["type"] for _, d in wire[3:8]} == {"input_json_delta"}

    follow = claude.messages.create(**dict(request, messages=[
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}]))
    assert follow.content[0].text == f"Hello from {NAME} model claude-fake-1: tool result: sunny"
    assert follow.stop_reason == "end_turn"
    assert follow.usage.input_tokens == (4 + 0 + 1) + 3


def test_anthropic_tool_choice(claude):
    def create(content: str, tool_choice: dict):
        return claude.messages.create(model="c", max_tokens=50, tools=CLAUDE_TOOLS, tool_choice=tool_choice,
                                      messages=[{"role": "user", "content": content}])

    assert create(ASK, {"type": "none"}).content[0].type == "text"
    assert create("hello", {"type": "any"}).content[0].name == "get_weather"
    assert create("hello", {"type": "tool", "name": "get_weather"}).stop_reason == "tool_use"
    assert create("hello", {"type": "auto"}).stop_reason == "end_turn"


GEMINI_TOOL = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
    name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA)])


def test_gemini_function_call_stream_and_response_with_sdk(gemini, base_url):
    config = genai_types.GenerateContentConfig(tools=[GEMINI_TOOL])
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents=ASK, config=config)
    [call] = response.function_calls
    assert (call.name, call.args) == ("get_weather", WEATHER_ARGS)
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (ASK_INPUT, WEATHER_OUTPUT)
    sent = recorded(base_url)[-1]
    assert re.fullmatch(rf"/v1(beta)?/models/{GEMINI_MODEL}:generateContent", sent["path"])  # SDK's API version
    assert sent["headers"]["x-goog-api-key"] == "g-test"
    assert sent["body"]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"

    chunks = list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents=ASK, config=config))
    assert len(chunks) == 1  # Gemini streams a function call whole
    assert chunks[0].function_calls[0].args == WEATHER_ARGS
    assert chunks[0].candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert recorded(base_url)[-1]["query_params"] == {"alt": "sse"}

    follow = gemini.models.generate_content(model=GEMINI_MODEL, config=config, contents=[
        genai_types.Content(role="user", parts=[genai_types.Part.from_text(text=ASK)]),
        response.candidates[0].content,
        genai_types.Content(role="user", parts=[
            genai_types.Part.from_function_response(name="get_weather", response={"output": "sunny"})])])
    assert follow.text == f"Hello from {NAME} model {GEMINI_MODEL}: tool result: sunny"
    assert follow.usage_metadata.prompt_token_count == (4 + 0 + 1) + 3

    # Text streams still parse with the SDK, chunk by chunk.
    text = "".join(c.text for c in gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="what is up"))
    assert text == GEMINI_REPLY


def test_gemini_openapi_schema_and_tool_config(base_url):
    url = f"{base_url}/v1beta/models/{GEMINI_MODEL}:generateContent"
    tools = [{"functionDeclarations": [
        {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {}}},
        {"name": "get_weather", "parameters": {"type": "OBJECT", "required": ["city", "days"], "properties": {
            "city": {"type": "STRING"}, "days": {"type": "INTEGER"}}}}]}]
    body = {"contents": [{"role": "user", "parts": [{"text": ASK}]}], "tools": tools}
    part = httpx.post(url, json=body).json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "city-value", "days": 1}}}
    none = dict(body, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    assert "text" in httpx.post(url, json=none).json()["candidates"][0]["content"]["parts"][0]
    forced = dict(body, contents=[{"role": "user", "parts": [{"text": "hi"}]}],
                  toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    assert httpx.post(url, json=forced).json()["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == (
        "get_weather")


def test_tool_call_payloads_validate_against_sdk_types(base_url):
    from anthropic.types import (Message, RawContentBlockDeltaEvent, RawContentBlockStartEvent,
                                 RawContentBlockStopEvent, RawMessageDeltaEvent, RawMessageStartEvent,
                                 RawMessageStopEvent)
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import (Response, ResponseCompletedEvent, ResponseCreatedEvent,
                                        ResponseFunctionCallArgumentsDeltaEvent,
                                        ResponseFunctionCallArgumentsDoneEvent, ResponseInProgressEvent,
                                        ResponseOutputItemAddedEvent, ResponseOutputItemDoneEvent)

    responses_events = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (
        ResponseCreatedEvent, ResponseInProgressEvent, ResponseOutputItemAddedEvent,
        ResponseFunctionCallArgumentsDeltaEvent, ResponseFunctionCallArgumentsDoneEvent,
        ResponseOutputItemDoneEvent, ResponseCompletedEvent)}
    anthropic_events = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (
        RawMessageStartEvent, RawContentBlockStartEvent, RawContentBlockDeltaEvent,
        RawContentBlockStopEvent, RawMessageDeltaEvent, RawMessageStopEvent)}

    def post(path: str, body: dict) -> httpx.Response:
        response = httpx.post(base_url + path, json=body)
        assert response.status_code == 200, response.text
        return response

    chat = {"model": "m", "messages": [{"role": "user", "content": ASK}], "tools": OAI_TOOLS}
    assert ChatCompletion.model_validate(post("/v1/chat/completions", chat).json()).choices[0].message.tool_calls
    wire = parse_sse(post("/v1/chat/completions", dict(chat, stream=True, stream_options={"include_usage": True})).text)
    for _, data in wire[:-1]:
        ChatCompletionChunk.model_validate_json(data)

    responses = {"model": "m", "input": ASK, "tools": RESP_TOOLS}
    assert Response.model_validate(post("/v1/responses", responses).json()).output[0].type == "function_call"
    for name, data in parse_sse(post("/v1/responses", dict(responses, stream=True)).text):
        responses_events[name].model_validate_json(data)

    claude = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": ASK}], "tools": CLAUDE_TOOLS}
    assert Message.model_validate(post("/v1/messages", claude).json()).content[0].type == "tool_use"
    for name, data in parse_sse(post("/v1/messages", dict(claude, stream=True)).text):
        if name != "ping":
            anthropic_events[name].model_validate_json(data)

    # google-genai's types forbid unknown fields, so this also catches a misspelt key.
    model_path = f"/v1beta/models/{GEMINI_MODEL}"
    for body in ({"contents": [{"role": "user", "parts": [{"text": ASK}]}],
                  "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": WEATHER_SCHEMA}]}]},
                 GEMINI_BODY):
        genai_types.GenerateContentResponse.model_validate(post(f"{model_path}:generateContent", body).json())
        for _, data in parse_sse(post(f"{model_path}:streamGenerateContent?alt=sse", body).text):
            genai_types.GenerateContentResponse.model_validate_json(data)


def test_parallel_tool_results_are_all_echoed(oai, claude):
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
             for i in (1, 2)]
    completion = oai.chat.completions.create(model="m", tools=OAI_TOOLS, messages=[
        {"role": "user", "content": ASK}, {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_2", "content": "snow"}])
    assert completion.choices[0].message.content == f"Hello from {NAME} model m: tool result: rain snow"

    uses = [{"type": "tool_use", "id": f"toolu_{i}", "name": "get_weather", "input": {}} for i in (1, 2)]
    message = claude.messages.create(model="c", max_tokens=50, tools=CLAUDE_TOOLS, messages=[
        {"role": "user", "content": ASK}, {"role": "assistant", "content": uses},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"},
                                     {"type": "tool_result", "tool_use_id": "toolu_2",
                                      "content": [{"type": "text", "text": "snow"}]}]}])
    assert message.content[0].text == f"Hello from {NAME} model c: tool result: rain snow"


# ---- request validation --------------------------------------------------------------

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
GEMINI_CALL = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]}
GEMINI_RESULT = {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "x"}}}]}


@pytest.mark.parametrize("path,body,field", [
    ("/v1/chat/completions", [{"role": "bot", "content": "x"}], "messages.[0].role"),
    ("/v1/chat/completions", [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}],
     "messages.[1].tool_call_id"),
    ("/v1/chat/completions", [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1",
                                                                 "content": "r"}], "messages.[1].role"),
    ("/v1/chat/completions", [{"role": "assistant", "tool_calls": [TOOL_CALL]},
                              {"role": "tool", "tool_call_id": "call_9", "content": "r"}], "messages.[1].tool_call_id"),
    ("/v1/chat/completions", [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [TOOL_CALL]},
                              {"role": "user", "content": "y"}], "messages.[1].role"),
    ("/v1/responses", [{"type": "function_call_output", "call_id": "call_9", "output": "r"}], "input"),
    ("/v1/responses", [{"type": "function_call_output", "output": "r"}], "input[0].call_id"),
], ids=["chat-role", "chat-tool-without-id", "chat-tool-without-call", "chat-tool-unknown-id",
        "chat-unanswered-calls", "responses-unknown-call", "responses-output-without-call-id"])
def test_openai_rejects_invalid_requests(oai, path, body, field):
    with pytest.raises(openai.BadRequestError) as caught:
        if path == "/v1/responses":
            oai.responses.create(model="m", input=body)
        else:
            oai.chat.completions.create(model="m", messages=body)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.param == field  # the SDK exposes OpenAI's error.param


@pytest.mark.parametrize("body,message", [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]},
     "top-level `system` parameter"),
    ({"max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"},
                                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                                                  "content": "r"}]}]},
     "messages.2.content.0: unexpected `tool_use_id`"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [TOOL_USE]},
                                    {"role": "user", "content": "no result"}]},
     "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
], ids=["missing-max-tokens", "system-role", "tool-role", "unknown-tool-use-id", "unanswered-tool-use"])
def test_anthropic_rejects_invalid_requests(base_url, body, message):
    response = httpx.post(f"{base_url}/v1/messages", json=dict(body, model="c"))
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert message in data["error"]["message"]


@pytest.mark.parametrize("body,message", [
    ({}, "contents is not specified"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "valid role: user, model"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}, GEMINI_RESULT]}, "contents[1]: Please ensure"),
], ids=["missing-contents", "assistant-role", "system-role", "response-without-call"])
def test_gemini_rejects_invalid_requests(base_url, body, message):
    response = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:generateContent", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_valid_tool_conversations_pass(base_url):
    chat = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"}, {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"].endswith(": thanks")
    gemini = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:generateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "x"}]}, GEMINI_CALL, GEMINI_RESULT]})
    assert gemini.status_code == 200
    assert gemini.json()["candidates"][0]["content"]["parts"][0]["text"].endswith(": tool result: x")
    # A Responses output may answer a call made in the previous response, which the fake does not keep.
    responses = httpx.post(f"{base_url}/v1/responses", json={"model": "m", "previous_response_id": "resp_1",
                                                             "input": [{"type": "function_call_output",
                                                                        "call_id": "call_1", "output": "r"}]})
    assert responses.status_code == 200


# ---- embeddings and token counts -----------------------------------------------------


def test_openai_embeddings(oai, base_url):
    from openai.types import CreateEmbeddingResponse

    texts = ["hello world", "one two three"]
    default = oai.embeddings.create(model="text-embedding-3-small", input=texts)
    # The SDK asks for base64 unless told otherwise, and decodes it back to floats.
    assert recorded(base_url)[-1]["body"]["encoding_format"] == "base64"
    floats = oai.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    vectors = [d.embedding for d in floats.data]
    assert [d.embedding for d in default.data] == vectors
    assert [d.index for d in floats.data] == [0, 1] and floats.data[0].object == "embedding"
    assert floats.object == "list" and floats.model == "text-embedding-3-small"
    assert len(vectors[0]) == 8 and vectors[0] != vectors[1]
    assert abs(sum(v * v for v in vectors[0]) - 1) < 1e-5  # unit length
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (5, 5)  # words, no overhead
    again = oai.embeddings.create(model="other-model", input="hello world", encoding_format="float")
    assert again.data[0].embedding == vectors[0]  # deterministic per text

    raw = httpx.post(f"{base_url}/v1/embeddings", json={"model": "e", "input": "hello world",
                                                        "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])  # little-endian float32s
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == vectors[0]
    # The SDK types the embedding as floats (it decodes base64 itself), so validate that form.
    CreateEmbeddingResponse.model_validate(httpx.post(f"{base_url}/v1/embeddings", json={
        "model": "e", "input": ["hello world"], "encoding_format": "float"}).json())
    short = oai.embeddings.create(model="e", input=[[11, 22, 33]], dimensions=4, encoding_format="float")
    assert len(short.data[0].embedding) == 4 and short.usage.prompt_tokens == 3  # a token array's length
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="e", input="", encoding_format="float")
    assert caught.value.param == "input"
    with pytest.raises(openai.RateLimitError):
        oai.embeddings.create(model="e", input="x", extra_headers={"x-fake-status": "429"})


def test_gemini_embeddings(gemini, base_url, oai):
    result = gemini.models.embed_content(model="gemini-embedding-001", contents=["hello world", "one two three"])
    assert recorded(base_url)[-1]["path"].endswith("/models/gemini-embedding-001:batchEmbedContents")
    openai_vectors = [d.embedding for d in oai.embeddings.create(
        model="e", input=["hello world", "one two three"], encoding_format="float").data]
    assert [e.values for e in result.embeddings] == openai_vectors  # same text, same vector

    single = httpx.post(f"{base_url}/v1beta/models/gemini-embedding-001:embedContent",
                        json={"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 4})
    assert single.status_code == 200
    embedding = genai_types.ContentEmbedding.model_validate(single.json()["embedding"])
    assert len(embedding.values) == 4
    bad = httpx.post(f"{base_url}/v1beta/models/gemini-embedding-001:embedContent", json={"content": {}})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_token_count_endpoints_match_the_usage_formula(claude, gemini, base_url):
    from anthropic.types import MessageTokensCount

    count = claude.messages.count_tokens(model="claude-fake-1", system="Be nice.",
                                         messages=CLAUDE_REQUEST["messages"])
    assert count.input_tokens == CLAUDE_INPUT  # what /v1/messages reports as input_tokens
    assert recorded(base_url)[-1]["path"] == "/v1/messages/count_tokens"
    raw = httpx.post(f"{base_url}/v1/messages/count_tokens", json={
        "model": "c", "tools": CLAUDE_TOOLS, "messages": [{"role": "system", "content": "x"}]})
    assert raw.status_code == 400  # validated like a Messages request (max_tokens not needed)
    MessageTokensCount.model_validate(httpx.post(f"{base_url}/v1/messages/count_tokens", json={
        "model": "c", "messages": [{"role": "user", "content": "a b"}]}).json())

    assert gemini.models.count_tokens(model=GEMINI_MODEL, contents="what is up").total_tokens == 3 + 1
    whole = httpx.post(f"{base_url}/v1beta/models/{GEMINI_MODEL}:countTokens",
                       json={"generateContentRequest": dict(GEMINI_BODY, model=f"models/{GEMINI_MODEL}")})
    assert whole.json() == {"totalTokens": GEMINI_INPUT,
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": GEMINI_INPUT}]}


# ---- failure switches for retry and fallback tests -----------------------------------


@pytest.mark.parametrize("seconds,expected", [
    ("0.25", "250ms"), ("5", "5s"), ("1.5", "1.5s"), ("90", "1m30s"), ("3600", "1h0m0s")])
def test_openai_ratelimit_reset_headers_use_go_durations(base_url, seconds, expected):
    response = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": CHAT_MESSAGES},
                          headers={"x-fake-status": "429", "x-fake-reset-requests": seconds})
    assert response.status_code == 429
    assert response.headers["x-ratelimit-reset-requests"] == expected
    assert response.headers["x-ratelimit-reset-tokens"] == "1s"  # 0: the retry-after value


def test_anthropic_ratelimit_reset_headers_are_rfc3339(claude):
    from datetime import datetime, timezone

    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(**CLAUDE_REQUEST, extra_headers={
            "x-fake-status": "429", "x-fake-retry-after": "7", "x-fake-reset-requests": "30",
            "x-fake-reset-tokens": "90"})
    headers = caught.value.response.headers
    assert headers["retry-after"] == "7"
    now = datetime.now(timezone.utc).timestamp()

    def seconds_until(header: str) -> float:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", headers[header]), headers[header]
        return datetime.fromisoformat(headers[header].replace("Z", "+00:00")).timestamp() - now

    assert 28 <= seconds_until("anthropic-ratelimit-requests-reset") <= 31
    for kind in ("tokens", "input-tokens", "output-tokens"):
        assert 88 <= seconds_until(f"anthropic-ratelimit-{kind}-reset") <= 91
        assert headers[f"anthropic-ratelimit-{kind}-remaining"] == "0"


def test_fail_first_fails_only_the_first_requests(base_url, oai):
    config = httpx.post(f"{base_url}/_fake/config", json={"status": 429, "fail_first": 2}).json()
    assert (config["status"], config["fail_first"]) == (429, 2)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            oai.chat.completions.create(model="m", messages=CHAT_MESSAGES)
    for _ in range(2):
        assert oai.chat.completions.create(model="m", messages=CHAT_MESSAGES).choices[0].message.content
    assert [r["status"] for r in recorded(base_url)] == [429, 429, 200, 200]

    # Changing the config starts the count again; a retrying client gets through.
    httpx.post(f"{base_url}/_fake/config", json={"fail_first": 1})
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=1) as retrying:
        assert retrying.chat.completions.create(model="m", messages=CHAT_MESSAGES).choices
    assert [r["status"] for r in recorded(base_url)][-2:] == [429, 200]

    # As headers too: the count is per process, since the last reset.
    httpx.post(f"{base_url}/_fake/reset")
    headers = {"x-fake-status": "503", "x-fake-fail-first": "1"}
    body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(f"{base_url}/v1/messages", json=body, headers=headers).status_code == 503
    assert httpx.post(f"{base_url}/v1/messages", json=body, headers=headers).status_code == 200


def test_moderations_answer_in_the_openai_shape():
    """POST /v1/moderations parses with the openai SDK's own type; a category word flags it."""
    import openai as _openai
    import harness as _harness
    from pathlib import Path as _Path
    import tempfile as _tempfile
    port = _harness.free_port()
    proc = _harness.python_server("fake-moderation", _harness.FAKE_LLM, ["--host", "127.0.0.1", "--port", str(port)],
                                  _Path(_tempfile.mkdtemp()), f"http://127.0.0.1:{port}/healthz")
    try:
        client = _openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        result = client.moderations.create(model="omni-moderation-latest", input=["hello", "pure violence here"])
        assert [r.flagged for r in result.results] == [False, True]
        assert result.results[1].categories.violence is True and result.results[1].categories.hate is False
    finally:
        proc.stop()
