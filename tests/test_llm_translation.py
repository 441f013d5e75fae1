"""API translation end to end (issue 16): a client of one LLM API, with its real SDK, served by
a provider that speaks another, through the real Envoy 1.40 running envoy/llm-fallback.yaml
(tests/llm_fallback_helpers.py). The attempt role translates the request for the deployment's
provider and the answer back, JSON whole and SSE event by event.

  openai SDK        -> claude-sonnet-4-6 -> anthropic-c (Anthropic Messages)
  anthropic SDK     -> gpt-4o            -> openai-a    (OpenAI Chat)
  google-genai SDK  -> gpt-4o            -> openai-a    (OpenAI Chat)

Each conversation is a tool round trip: a prompt naming the tool makes the fake call it (the
SDK gets the call: id, name, JSON arguments), then the SDK sends the tool's result and the
fake's reply echoes it ("... tool result: <result>"). The fake validates requests the way the
real APIs do (it answers 400 otherwise), and every translated request it received is also
checked here field by field.

Accounting: the audit record's tokens and cost must be what the provider reported. The
provider's report is obtained independently of the gateway: the translated request the fake
recorded is sent again straight to the fake (which is deterministic) and its usage read.
"""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from llm_fallback_helpers import stack_fixture, trace
from test_llm import expected_cost

pytestmark = pytest.mark.timeout(90)

RESULT = "sunny and 21 degrees"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}
ARGS = {"city": "city-value", "days": 1}  # the fake's deterministic arguments for SCHEMA
PROMPT = "Please call get_weather for Paris"
SYSTEM = "You are a terse assistant."


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from stack_fixture("translation", tmp_path_factory)


@pytest.fixture(autouse=True)
def clean(stack, request):
    stack.reset()
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(stack.envoy.proc.log_tail(60))


# ---- the provider's own report -------------------------------------------------------


def sse_data(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                out.append(json.loads(data))
    return out


def provider_report(stack, provider: str, recorded: dict) -> dict:
    """Sends the request the fake recorded (the gateway's translation) straight to the fake
    again and returns the usage it reports, normalized like the record's tokens (input counts
    cache reads and writes; output counts reasoning)."""
    keep = ("authorization", "x-api-key", "anthropic-version")
    headers = {k: v for k, v in recorded["headers"].items() if k in keep}
    url = stack.fakes[provider] + recorded["path"] + (f"?{recorded['query']}" if recorded["query"] else "")
    r = httpx.post(url, json=recorded["body"], headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    stream = bool(recorded["body"].get("stream"))
    if recorded["path"] == "/v1/messages":
        if stream:
            usage: dict = {}
            for event in sse_data(r.text):
                if event["type"] == "message_start":
                    usage.update(event["message"]["usage"])
                elif event["type"] == "message_delta":
                    usage.update(event["usage"])
        else:
            usage = r.json()["usage"]
        cached, created = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
        return {"input": usage["input_tokens"] + cached + created, "output": usage["output_tokens"],
                "cached_input": cached, "cache_creation": created, "reasoning": 0}
    assert recorded["path"] == "/v1/chat/completions", recorded["path"]
    if stream:
        (usage,) = [c["usage"] for c in sse_data(r.text) if c.get("usage")]
    else:
        usage = r.json()["usage"]
    details = usage.get("prompt_tokens_details") or {}
    return {"input": usage["prompt_tokens"], "output": usage["completion_tokens"],
            "cached_input": details.get("cached_tokens") or 0, "cache_creation": details.get("cache_write_tokens") or 0,
            "reasoning": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0}


def assert_accounted(stack, trace_id: str, provider: str, upstream_model: str, stream: bool) -> dict:
    """The record of `trace_id` names the deployment that answered, and its tokens and cost are
    what that provider reports for the request it received. Returns the report."""
    recorded = stack.requests(provider)[-1]
    report = provider_report(stack, provider, recorded)
    rec = stack.record(trace_id)
    assert rec["status"] == 200 and rec["stream"] is stream, rec
    assert rec["provider"] == provider and rec["upstream_model"] == upstream_model, rec
    assert rec["deployment"] == f"{provider}/{upstream_model}", rec
    assert rec["estimated"] is False, rec
    assert {k: rec["tokens"][k] for k in report} == report, (rec["tokens"], report)
    assert rec["cost_micro_usd"] == expected_cost(report, stack.price(upstream_model)) > 0, rec
    return report


# ---- openai SDK -> Anthropic Messages provider -----------------------------------------

OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                  "parameters": SCHEMA}}]


def assert_anthropic_request(req: dict, max_tokens: int, stream: bool) -> dict:
    """A valid Anthropic Messages request (the fake accepted it: status 200), as translated."""
    assert req["path"] == "/v1/messages" and req["status"] == 200, req
    body = req["body"]
    assert req["headers"]["x-api-key"] == "sk-demo-anthropic-c" and "authorization" not in req["headers"], req["headers"]
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert body["model"] == "claude-sonnet-4-6" and body["max_tokens"] == max_tokens, body
    assert bool(body.get("stream")) is stream, body
    system = body["system"]
    assert system == SYSTEM or system == [{"type": "text", "text": SYSTEM}], body
    assert all(m["role"] in ("user", "assistant") for m in body["messages"]), body
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city", "input_schema": SCHEMA}], body
    return body


def openai_turn(client: openai.OpenAI, messages: list, stream: bool, headers: dict):
    """One chat turn: (assistant message, finish reason, usage, number of argument deltas)."""
    kwargs = dict(model="claude-sonnet-4-6", messages=messages, tools=OPENAI_TOOLS, max_tokens=64,
                  extra_headers=headers)
    if not stream:
        r = client.chat.completions.create(**kwargs)
        return r.choices[0].message, r.choices[0].finish_reason, r.usage, 0
    deltas = 0
    with client.chat.completions.stream(stream_options={"include_usage": True}, **kwargs) as s:
        for event in s:
            if event.type == "tool_calls.function.arguments.delta":
                deltas += 1
        final = s.get_final_completion()
    return final.choices[0].message, final.choices[0].finish_reason, final.usage, deltas


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_sdk_reaches_the_anthropic_provider_with_a_tool_round_trip(stack, stream):
    stack.set("anthropic-c", cached_tokens=2)
    client = stack.openai()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]

    # Turn 1: the provider calls the tool.
    trace_id, headers = trace()
    message, finish, usage, deltas = openai_turn(client, messages, stream, headers)
    assert finish == "tool_calls", message
    (call,) = message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == ARGS
    if stream:
        assert deltas > 1, "the arguments arrive in several deltas"
    body = assert_anthropic_request(stack.requests("anthropic-c")[-1], 64, stream)
    assert body["messages"] == [{"role": "user", "content": PROMPT}] or \
        body["messages"] == [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}], body
    report = assert_accounted(stack, trace_id, "anthropic-c", "claude-sonnet-4-6", stream)
    assert (usage.prompt_tokens, usage.completion_tokens) == (report["input"], report["output"])
    assert usage.prompt_tokens_details.cached_tokens == 2

    # Turn 2: the tool's result goes back; the reply echoes it.
    messages += [message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}),
                 {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    trace_id, headers = trace()
    message, finish, usage, _ = openai_turn(client, messages, stream, headers)
    assert finish == "stop" and not message.tool_calls, message
    assert message.content == f"Hello from anthropic-c model claude-sonnet-4-6: tool result: {RESULT}"
    body = assert_anthropic_request(stack.requests("anthropic-c")[-1], 64, stream)
    user, assistant, result = body["messages"]
    assert assistant["role"] == "assistant" and result["role"] == "user", body
    (tool_use,) = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert tool_use == {"type": "tool_use", "id": call.id, "name": "get_weather", "input": ARGS}, assistant
    (tool_result,) = result["content"]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == call.id, result
    assert tool_result["content"] in (RESULT, [{"type": "text", "text": RESULT}]), result
    report = assert_accounted(stack, trace_id, "anthropic-c", "claude-sonnet-4-6", stream)
    assert (usage.prompt_tokens, usage.completion_tokens) == (report["input"], report["output"])


# ---- anthropic SDK -> OpenAI Chat provider ----------------------------------------------

ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": SCHEMA}]


def assert_openai_request(req: dict, stream: bool, max_tokens: int | None = None) -> dict:
    """A valid OpenAI Chat request (the fake accepted it: status 200), as translated."""
    assert req["path"] == "/v1/chat/completions" and req["status"] == 200, req
    assert req["headers"]["authorization"] == "Bearer sk-demo-openai-a", req["headers"]
    # The Anthropic SDK's own headers are not passed to a provider of another API.
    assert not any(k.startswith("anthropic-") for k in req["headers"]), req["headers"]
    assert "x-api-key" not in req["headers"] and "x-goog-api-key" not in req["headers"], req["headers"]
    body = req["body"]
    assert body["model"] == "gpt-4o", body
    if max_tokens is not None:
        assert max_tokens in (body.get("max_completion_tokens"), body.get("max_tokens")), body
    assert bool(body.get("stream")) is stream, body
    if stream:
        assert body["stream_options"] == {"include_usage": True}, body
    assert body["messages"][0] == {"role": "system", "content": SYSTEM} or \
        body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}, body
    (tool,) = body["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "get_weather", body
    assert tool["function"]["parameters"] == SCHEMA, body
    return body


def anthropic_turn(client: anthropic.Anthropic, messages: list, stream: bool, headers: dict):
    """One turn: (final message, number of input_json events)."""
    kwargs = dict(model="gpt-4o", max_tokens=64, system=SYSTEM, messages=messages, tools=ANTHROPIC_TOOLS,
                  extra_headers=headers)
    if not stream:
        return client.messages.create(**kwargs), 0
    deltas = 0
    with client.messages.stream(**kwargs) as s:
        for event in s:
            if event.type == "input_json":
                deltas += 1
        return s.get_final_message(), deltas


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_sdk_reaches_the_openai_provider_with_a_tool_round_trip(stack, stream):
    stack.set("openai-a", cached_tokens=2)
    client = stack.anthropic()
    messages: list = [{"role": "user", "content": PROMPT}]

    trace_id, headers = trace()
    reply, deltas = anthropic_turn(client, messages, stream, headers)
    assert reply.stop_reason == "tool_use" and reply.model == "gpt-4o", reply
    (tool_use,) = [b for b in reply.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather" and tool_use.input == ARGS and tool_use.id
    if stream:
        assert deltas > 1, "the arguments arrive in several input_json_delta events"
    body = assert_openai_request(stack.requests("openai-a")[-1], stream, 64)
    assert body["messages"][1:] in ([{"role": "user", "content": PROMPT}],
                                    [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]), body
    report = assert_accounted(stack, trace_id, "openai-a", "gpt-4o", stream)
    u = reply.usage
    assert u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0) == report["input"]
    assert u.cache_read_input_tokens == 2 and u.output_tokens == report["output"], u

    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": RESULT}]}]
    trace_id, headers = trace()
    reply, _ = anthropic_turn(client, messages, stream, headers)
    assert reply.stop_reason == "end_turn", reply
    assert [b.type for b in reply.content] == ["text"], reply
    assert reply.content[0].text == f"Hello from openai-a model gpt-4o: tool result: {RESULT}"
    body = assert_openai_request(stack.requests("openai-a")[-1], stream, 64)
    assistant, tool = body["messages"][2:]
    assert assistant["role"] == "assistant", body
    (call,) = assistant["tool_calls"]
    assert call["id"] == tool_use.id and call["type"] == "function", assistant
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == ARGS
    assert tool["role"] == "tool" and tool["tool_call_id"] == tool_use.id, tool
    assert tool["content"] in (RESULT, [{"type": "text", "text": RESULT}]), tool
    report = assert_accounted(stack, trace_id, "openai-a", "gpt-4o", stream)
    assert reply.usage.output_tokens == report["output"]


# Anthropic's usage has no reasoning field: the record takes the provider's own report, read
# by the attempt role before translation, so the breakdown is not lost.
def test_an_openai_providers_reasoning_tokens_are_recorded_for_an_anthropic_client(stack):
    stack.set("openai-a", reasoning_tokens=3)
    trace_id, headers = trace()
    reply = stack.anthropic().messages.create(model="gpt-4o", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                              extra_headers=headers)
    assert reply.usage.output_tokens == 6 + 3  # "Hello from openai-a model gpt-4o: hi" + reasoning
    assert_accounted(stack, trace_id, "openai-a", "gpt-4o", False)


# ---- google-genai SDK -> OpenAI Chat provider ---------------------------------------------


def gemini_config(headers: dict) -> gtypes.GenerateContentConfig:
    return gtypes.GenerateContentConfig(
        system_instruction=SYSTEM, max_output_tokens=64,
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(
            name="get_weather", description="Weather for a city", parameters_json_schema=SCHEMA)])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        http_options=gtypes.HttpOptions(headers=headers))


def gemini_turn(client: genai.Client, contents: list, stream: bool, headers: dict):
    """One turn: (the model's content, parts merged over chunks; last usage; finish reason)."""
    config = gemini_config(headers)
    if not stream:
        r = client.models.generate_content(model="gpt-4o", contents=contents, config=config)
        return r.candidates[0].content, r.usage_metadata, r.candidates[0].finish_reason
    parts, usage, finish = [], None, None
    for chunk in client.models.generate_content_stream(model="gpt-4o", contents=contents, config=config):
        if chunk.candidates:
            cand = chunk.candidates[0]
            if cand.content and cand.content.parts:
                parts.extend(cand.content.parts)
            finish = cand.finish_reason or finish
        usage = chunk.usage_metadata or usage
    texts = "".join(p.text for p in parts if p.text)
    merged = [p for p in parts if p.function_call] + ([gtypes.Part(text=texts)] if texts else [])
    return gtypes.Content(role="model", parts=merged), usage, finish


def assert_gemini_usage(usage: gtypes.GenerateContentResponseUsageMetadata, report: dict) -> None:
    """What the SDK got is the provider's report (output = candidates + thoughts)."""
    assert usage.prompt_token_count == report["input"], usage
    assert usage.candidates_token_count + (usage.thoughts_token_count or 0) == report["output"], usage
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (3, 2), usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_genai_sdk_reaches_the_openai_provider_with_a_function_round_trip(stack, stream):
    stack.set("openai-a", cached_tokens=2, reasoning_tokens=3)
    client = stack.genai()
    contents: list = [gtypes.Content(role="user", parts=[gtypes.Part(text=PROMPT)])]

    trace_id, headers = trace()
    content, usage, finish = gemini_turn(client, contents, stream, headers)
    (part,) = content.parts
    assert part.function_call.name == "get_weather" and part.function_call.args == ARGS, content
    assert finish == gtypes.FinishReason.STOP
    req = stack.requests("openai-a")[-1]
    body = assert_openai_request(req, stream, 64)
    assert body["messages"][1:] in ([{"role": "user", "content": PROMPT}],
                                    [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]), body
    report = assert_accounted(stack, trace_id, "openai-a", "gpt-4o", stream)
    assert_gemini_usage(usage, report)

    contents += [content, gtypes.Content(role="user", parts=[
        gtypes.Part.from_function_response(name="get_weather", response={"result": RESULT})])]
    trace_id, headers = trace()
    content, usage, finish = gemini_turn(client, contents, stream, headers)
    assert finish == gtypes.FinishReason.STOP
    # A Gemini function response is an object: the OpenAI tool message carries its JSON.
    sent = json.dumps({"result": RESULT}, separators=(",", ":"))
    assert [p.text for p in content.parts] == [f"Hello from openai-a model gpt-4o: tool result: {sent}"], content
    body = assert_openai_request(stack.requests("openai-a")[-1], stream, 64)
    assistant, tool = body["messages"][2:]
    (call,) = assistant["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == ARGS
    assert tool["role"] == "tool" and tool["tool_call_id"] == call["id"], body
    assert tool["content"] in (sent, [{"type": "text", "text": sent}]), tool
    report = assert_accounted(stack, trace_id, "openai-a", "gpt-4o", stream)
    assert_gemini_usage(usage, report)


# ---- errors ---------------------------------------------------------------------------------

# The fake's error messages for its status switch (examples/fake_llm/server.py ERROR_MESSAGES).
PROVIDER_MESSAGES = {400: "Fake error 400.", 429: "Rate limit reached (fake). Please try again in 1s.",
                     500: "The server had an error while processing your request (fake)."}


def assert_error_record(stack, trace_id: str, status: int, deployment: str | None) -> None:
    rec = stack.record(trace_id)
    assert rec["status"] == status, rec
    if deployment:
        assert [(a["deployment"], a.get("status")) for a in rec["attempts"]] == [(deployment, status)], rec


def assert_refused_by_gateway(stack, trace_id: str, deployment: str) -> None:
    """A request the attempt role could not translate: 400, the deployment named, the attempt
    listed as refused by the gateway (nothing reached the provider)."""
    rec = stack.record(trace_id)
    assert rec["status"] == 400 and rec["deployment"] == deployment, rec
    assert [(a["deployment"], a.get("status"), a.get("error")) for a in rec["attempts"]] == [
        (deployment, 400, "refused_by_gateway")], rec


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("status", [400, 429, 500])
def test_an_anthropic_provider_error_reaches_the_openai_sdk_as_its_exception(stack, status, stream):
    stack.set("anthropic-c", status=status, retry_after=1)
    expected = {400: openai.BadRequestError, 429: openai.RateLimitError, 500: openai.InternalServerError}[status]
    trace_id, headers = trace()
    with pytest.raises(expected) as err:
        reply = stack.openai().chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], stream=stream, extra_headers=headers)
        list(reply) if stream else None
    assert err.value.status_code == status
    assert PROVIDER_MESSAGES[status] in err.value.message, err.value.body
    assert isinstance(err.value.body, dict) and err.value.body["message"] == PROVIDER_MESSAGES[status], err.value.body
    assert_error_record(stack, trace_id, status, "anthropic-c/claude-sonnet-4-6")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("status", [400, 429, 500])
def test_an_openai_provider_error_reaches_the_anthropic_sdk_as_its_exception(stack, status, stream):
    stack.set("openai-a", status=status, retry_after=1)
    expected = {400: anthropic.BadRequestError, 429: anthropic.RateLimitError, 500: anthropic.InternalServerError}[status]
    error_type = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error"}[status]
    trace_id, headers = trace()
    client = stack.anthropic()
    kwargs = dict(model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    with pytest.raises(expected) as err:
        if stream:
            with client.messages.stream(**kwargs) as s:
                s.get_final_message()
        else:
            client.messages.create(**kwargs)
    assert err.value.status_code == status
    assert err.value.body["type"] == "error", err.value.body
    assert err.value.body["error"] == {"type": error_type, "message": PROVIDER_MESSAGES[status]}, err.value.body
    assert_error_record(stack, trace_id, status, "openai-a/gpt-4o")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("status", [400, 429, 500])
def test_an_openai_provider_error_reaches_the_genai_sdk_as_its_exception(stack, status, stream):
    stack.set("openai-a", status=status, retry_after=1)
    expected = genai.errors.ServerError if status >= 500 else genai.errors.ClientError
    grpc_status = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}[status]
    trace_id, headers = trace()
    client = stack.genai()
    config = gtypes.GenerateContentConfig(http_options=gtypes.HttpOptions(headers=headers))
    with pytest.raises(expected) as err:
        if stream:
            list(client.models.generate_content_stream(model="gpt-4o", contents="hi", config=config))
        else:
            client.models.generate_content(model="gpt-4o", contents="hi", config=config)
    assert err.value.code == status and err.value.status == grpc_status, err.value.details
    assert err.value.message == PROVIDER_MESSAGES[status], err.value.details
    assert_error_record(stack, trace_id, status, "openai-a/gpt-4o")


def test_an_untranslatable_openai_field_is_a_400_naming_it(stack):
    trace_id, headers = trace()
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai().chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], n=2, extra_headers=headers)
    assert err.value.status_code == 400
    assert "`n`" in err.value.body["message"], err.value.body
    assert err.value.body["type"] == "invalid_request_error", err.value.body
    assert stack.requests("anthropic-c") == []
    assert_refused_by_gateway(stack, trace_id, "anthropic-c/claude-sonnet-4-6")


def test_an_untranslatable_anthropic_field_is_a_400_naming_it(stack):
    trace_id, headers = trace()
    with pytest.raises(anthropic.BadRequestError) as err:
        stack.anthropic().messages.create(
            model="gpt-4o", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": 1024}, extra_headers=headers)
    assert err.value.status_code == 400
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error", err.value.body
    assert "`thinking`" in err.value.body["error"]["message"], err.value.body
    assert stack.requests("openai-a") == []
    assert_refused_by_gateway(stack, trace_id, "openai-a/gpt-4o")


def test_an_untranslatable_gemini_field_is_a_400_naming_it(stack):
    trace_id, headers = trace()
    client = stack.genai()  # kept: the client closes its connection pool when collected
    with pytest.raises(genai.errors.ClientError) as err:
        client.models.generate_content(
            model="gpt-4o", contents="hi",
            config=gtypes.GenerateContentConfig(candidate_count=2, http_options=gtypes.HttpOptions(headers=headers)))
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT", err.value.details
    assert "`generationConfig.candidateCount`" in err.value.message, err.value.details
    assert stack.requests("openai-a") == []
    assert_refused_by_gateway(stack, trace_id, "openai-a/gpt-4o")


# ---- fallback across APIs ------------------------------------------------------------------
# `smart`: anthropic-c first, then openai-a. The failing attempts set cooldowns of 1 s
# (Retry-After): each test waits them out afterwards, so the next plan is the configured one.


@pytest.fixture
def cooldowns():
    yield
    time.sleep(1.3)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_anthropic_client_falls_back_from_its_own_api_to_a_translated_one(stack, cooldowns, stream):
    stack.set("anthropic-c", status=529, retry_after=1)
    trace_id, headers = trace()
    client = stack.anthropic()
    kwargs = dict(model="smart", max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": "hi there"}],
                  extra_headers=headers)
    if stream:
        with client.messages.stream(**kwargs) as s:
            reply = s.get_final_message()
    else:
        reply = client.messages.create(**kwargs)
    # The model is the one that answered (as in a same-API fallback).
    assert reply.content[0].text == "Hello from openai-a model gpt-4o: hi there" and reply.model == "gpt-4o", reply
    # Attempt 1 got the client's own body (Anthropic), attempt 2 its translation (not attempt 1's).
    (first,) = stack.requests("anthropic-c")
    assert first["path"] == "/v1/messages" and first["body"]["model"] == "claude-sonnet-4-6" and first["status"] == 529
    (second,) = stack.requests("openai-a")
    assert second["path"] == "/v1/chat/completions" and second["status"] == 200, second
    assert second["body"]["messages"][0] in ({"role": "system", "content": SYSTEM},
                                             {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}), second
    assert "x-api-key" not in second["headers"], second["headers"]
    rec = stack.record(trace_id)
    assert [(a["deployment"], a.get("status")) for a in rec["attempts"]] == [
        ("anthropic-c/claude-sonnet-4-6", 529), ("openai-a/gpt-4o", 200)], rec
    assert_accounted(stack, trace_id, "openai-a", "gpt-4o", stream)


def test_an_openai_client_falls_back_from_a_translated_api_to_its_own(stack, cooldowns):
    stack.set("anthropic-c", status=429, retry_after=1)
    trace_id, headers = trace()
    reply = stack.openai().chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi there"}], extra_headers=headers, n=1)
    assert reply.choices[0].message.content == "Hello from openai-a model gpt-4o: hi there"
    (first,) = stack.requests("anthropic-c")
    assert first["path"] == "/v1/messages" and first["status"] == 429 and first["body"]["max_tokens"] > 0, first
    (second,) = stack.requests("openai-a")
    # The client's own body, model rewritten: nothing of the Anthropic translation.
    assert second["body"] == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}], "n": 1}, second
    assert_accounted(stack, trace_id, "openai-a", "gpt-4o", False)


def test_when_every_deployment_fails_an_anthropic_client_gets_the_last_error_in_its_shape(stack, cooldowns):
    stack.set("anthropic-c", status=529, retry_after=1)
    stack.set("openai-a", status=429, retry_after=1)
    trace_id, headers = trace()
    with pytest.raises(anthropic.RateLimitError) as err:
        stack.anthropic().messages.create(model="smart", max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                                          extra_headers=headers)
    assert err.value.body["error"] == {"type": "rate_limit_error", "message": PROVIDER_MESSAGES[429]}, err.value.body
    rec = stack.record(trace_id)
    assert [a.get("status") for a in rec["attempts"]] == [529, 429] and rec["status"] == 429, rec
