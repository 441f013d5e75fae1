"""LLM filter end to end: real SDKs -> real Envoy 1.40 + dist/tollgate_llm.wasm -> fake providers.

One Envoy (the shipped envoy/llm.yaml, unchanged but for ports) and two fake providers
(`alpha` behind cluster llm_provider_a, `beta` behind llm_provider_b) serve the whole module.
Every request carries its own W3C traceparent, so its audit record (written by Envoy's access
log from filter state) is found by trace id.

Expected token counts are never hard-coded: they are what the SDK itself received from the
provider (through the gateway), normalized the way the filter documents:
  input  = every prompt token incl. cache reads/writes (Anthropic: input + cache_read + cache_creation)
  output = every generated token incl. reasoning (Gemini: candidates + thoughts)
Cost is recomputed here from those SDK-side counts and the price table in the shipped config.
"""
from __future__ import annotations

import json
import re
import secrets
import time

import anthropic
import httpx
import openai
import pytest

import harness

pytestmark = pytest.mark.timeout(60)

ALICE = "tg-demo-alice"  # team payments, any model
BOB = "tg-demo-bob"  # team research, models gpt-4o-mini, fast, claude-haiku-*
KEY_A = "sk-demo-provider-a"
KEY_B = "sk-demo-provider-b"


class Gateway:
    def __init__(self, envoy: harness.Envoy, fakes: dict[str, str]):
        self.envoy = envoy
        self.fakes = fakes  # name -> base url
        self.url = envoy.url
        self.config = harness.plugin_config(harness.load_envoy_config("llm.yaml"), "tollgate.llm")

    def requests(self, name: str) -> list[dict]:
        return httpx.get(f"{self.fakes[name]}/_fake/requests", timeout=5).json()

    def all_requests(self) -> list[dict]:
        return [r for name in self.fakes for r in self.requests(name)]

    def reset(self) -> None:
        for url in self.fakes.values():
            httpx.post(f"{url}/_fake/reset", timeout=5)

    def record(self, trace_id: str, timeout: float = 5) -> dict:
        return self.envoy.wait_audit(1, timeout, where=lambda r: r.get("trace_id") == trace_id)[-1]

    def openai(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)

    def anthropic(self, key: str = ALICE) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def price(self, model: str) -> dict:
        """The shipped price entry for `model` (exact first, then the first glob)."""
        prices = self.config["prices"]
        for p in prices:
            if p["model"] == model:
                return p
        for p in prices:
            if "*" in p["model"] and re.fullmatch(re.escape(p["model"]).replace(r"\*", ".*"), model):
                return p
        raise KeyError(model)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm")
    started: list[harness.Proc] = []
    try:
        fakes, ports = harness.start_fake_providers(workdir, started)
        envoy = harness.Envoy(harness.load_envoy_config("llm.yaml"), workdir, upstreams=ports)
        started.append(envoy.proc)
        yield Gateway(envoy, fakes)
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(autouse=True)
def clean(gw, request):
    gw.reset()
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(gw.envoy.proc.log_tail(60))


def trace() -> tuple[str, str, dict[str, str]]:
    """A fresh sampled traceparent: (trace id, caller span id, headers)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def expected_cost(tokens: dict, price: dict) -> int:
    """The documented formula (filters/llm/src/cost.rs), in integer micro-dollars."""
    per_m = lambda usd: round(usd * 1_000_000)  # noqa: E731 - dollars/1M tokens -> micro-dollars/1M
    p_in, p_out = per_m(price["input"]), per_m(price["output"])
    p_cached = per_m(price.get("cached_input", price["input"]))
    p_create = per_m(price.get("cache_creation", price["input"]))
    p_reason = per_m(price.get("reasoning", price["output"]))
    uncached = max(tokens["input"] - tokens["cached_input"] - tokens["cache_creation"], 0)
    visible = max(tokens["output"] - tokens["reasoning"], 0)
    total = (uncached * p_in + tokens["cached_input"] * p_cached + tokens["cache_creation"] * p_create
             + visible * p_out + tokens["reasoning"] * p_reason)
    return (total + 500_000) // 1_000_000


def tokens(input: int, output: int, cached_input: int = 0, cache_creation: int = 0, reasoning: int = 0) -> dict:
    return {"input": input, "output": output, "cached_input": cached_input, "cache_creation": cache_creation,
            "reasoning": reasoning, "total": input + output}


def assert_accounted(gw: Gateway, record: dict, expected: dict, upstream_model: str) -> None:
    assert record["tokens"] == expected, record
    assert record["estimated"] is False, record
    assert record["cost_micro_usd"] == expected_cost(expected, gw.price(upstream_model)), record
    assert record["cost_micro_usd"] > 0, record


def assert_provider_saw_only_its_credential(req: dict, provider_key: str) -> None:
    """The provider's key in exactly one credential header; no Tollgate key anywhere."""
    headers = req["headers"]
    assert not any("tg-demo" in v for v in headers.values()), headers
    assert "tg-demo" not in req["query"], req["query"]
    sent = [v for k, v in headers.items() if k in ("authorization", "x-api-key", "x-goog-api-key")]
    assert sent in ([provider_key], [f"Bearer {provider_key}"]), headers


# ---- OpenAI Chat ---------------------------------------------------------------------


def test_openai_chat_json_accounting_identity_trace_and_credentials(gw):
    trace_id, span_id, headers = trace()
    extra = {**headers, "x-fake-cached-tokens": "3", "x-fake-reasoning-tokens": "2"}
    with gw.openai() as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", extra_headers=extra,
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the gateway"}])
    assert reply.choices[0].message.content.startswith("Hello from alpha model gpt-4o-mini")
    usage = reply.usage
    record = gw.record(trace_id)
    expected = tokens(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens,
                      0, usage.completion_tokens_details.reasoning_tokens)
    assert (expected["cached_input"], expected["reasoning"]) == (3, 2)
    assert_accounted(gw, record, expected, "gpt-4o-mini")
    assert record["schema"] == "tollgate.audit/v1" and record["layer"] == "llm"
    assert (record["api"], record["model"], record["upstream_model"], record["provider"]) == \
        ("openai_chat", "gpt-4o-mini", "gpt-4o-mini", "provider-a")
    assert (record["status"], record["decision"], record["stream"], record["completed"]) == (200, "allow", False, True)
    assert record["identity"] == {"principal": "alice", "team": "payments", "source": "api_key", "key_name": "alice-key"}
    assert record["team"] == "payments"
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]
    # The trace is continued: same trace id, the caller's span as parent, a new gateway span sent upstream.
    assert record["parent_span_id"] == span_id and record["span_id"] != span_id
    [req] = gw.requests("alpha")
    assert req["headers"]["traceparent"] == f"00-{trace_id}-{record['span_id']}-01"
    assert req["headers"]["authorization"] == f"Bearer {KEY_A}"
    assert_provider_saw_only_its_credential(req, KEY_A)
    assert req["headers"]["accept-encoding"] == "identity"  # the SDK asked for gzip; usage must stay readable
    assert "x-tollgate-provider" not in req["headers"]  # removed by the route once it chose the cluster
    assert gw.requests("beta") == []


def test_openai_chat_stream_with_include_usage(gw):
    trace_id, _, headers = trace()
    with gw.openai() as client:
        stream = client.chat.completions.create(
            model="gpt-4o", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "count the streamed tokens please"}],
            extra_headers={**headers, "x-fake-cached-tokens": "4", "x-fake-chunks": "6"})
        chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from alpha model gpt-4o")
    record = gw.record(trace_id)
    expected = tokens(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens)
    assert_accounted(gw, record, expected, "gpt-4o")
    assert record["stream"] is True and record["usage_injected"] is False
    assert record["ttft_ms"] is not None
    body = gw.requests("alpha")[0]["body"]
    assert body["stream_options"] == {"include_usage": True}


def test_include_usage_is_injected_and_missing_usage_is_estimated(gw):
    trace_id, _, headers = trace()
    with gw.openai() as client:
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", stream=True, extra_headers=headers,
            messages=[{"role": "user", "content": "no stream options here"}]))
    # The provider got include_usage although the client did not ask; the SDK copes with
    # the extra usage-only chunk.
    [req] = gw.requests("alpha")
    assert req["body"]["stream_options"] == {"include_usage": True}
    assert req["body"]["messages"] == [{"role": "user", "content": "no stream options here"}]
    usage = chunks[-1].usage
    assert usage is not None
    record = gw.record(trace_id)
    assert record["usage_injected"] is True
    assert_accounted(gw, record, tokens(usage.prompt_tokens, usage.completion_tokens), "gpt-4o-mini")

    # Provider omits usage: streamed and JSON both get an estimate, marked as such.
    for stream in (True, False):
        trace_id, _, headers = trace()
        with gw.openai() as client:
            result = client.chat.completions.create(
                model="gpt-4o-mini", stream=stream, extra_headers={**headers, "x-fake-omit-usage": "1"},
                messages=[{"role": "user", "content": "estimate me " * 20}])
            if stream:
                chunks = list(result)
                assert all(c.usage is None for c in chunks)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                assert result.usage is None
                text = result.choices[0].message.content
        record = gw.record(trace_id)
        assert record["estimated"] is True, record
        assert record["tokens"]["output"] == -(-len(text.encode()) // 4), (record, text)
        assert record["tokens"]["input"] == -(-record["request_bytes"] // 4)
        assert record["request_bytes"] > 240
        assert record["cost_micro_usd"] == expected_cost(record["tokens"], gw.price("gpt-4o-mini"))


# ---- OpenAI Responses ----------------------------------------------------------------


def test_openai_responses_json_and_stream(gw):
    switches = {"x-fake-cached-tokens": "5", "x-fake-cache-creation-tokens": "2", "x-fake-reasoning-tokens": "3"}
    trace_id, _, headers = trace()
    with gw.openai() as client:
        reply = client.responses.create(model="gpt-4.1", input="write one line", instructions="be terse",
                                        extra_headers={**headers, **switches})
    u = reply.usage
    expected = tokens(u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens,
                      u.input_tokens_details.cache_write_tokens, u.output_tokens_details.reasoning_tokens)
    assert (expected["cached_input"], expected["cache_creation"], expected["reasoning"]) == (5, 2, 3)
    record = gw.record(trace_id)
    assert record["api"] == "openai_responses" and record["stream"] is False
    assert_accounted(gw, record, expected, "gpt-4.1")

    trace_id, _, headers = trace()
    with gw.openai() as client:
        events = list(client.responses.create(model="gpt-4.1", input="stream one line", stream=True,
                                              max_output_tokens=50, extra_headers={**headers, **switches}))
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    u = completed[0].response.usage
    record = gw.record(trace_id)
    assert record["stream"] is True and record["max_output_tokens"] == 50
    assert_accounted(gw, record, tokens(u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens,
                                        u.input_tokens_details.cache_write_tokens,
                                        u.output_tokens_details.reasoning_tokens), "gpt-4.1")


# ---- Anthropic Messages --------------------------------------------------------------


def anthropic_tokens(input_tokens, output_tokens, cache_read, cache_creation) -> dict:
    cache_read, cache_creation = cache_read or 0, cache_creation or 0
    return tokens(input_tokens + cache_read + cache_creation, output_tokens, cache_read, cache_creation)


def test_anthropic_messages_json_and_stream(gw):
    switches = {"x-fake-cached-tokens": "7", "x-fake-cache-creation-tokens": "4"}
    trace_id, _, headers = trace()
    with gw.anthropic() as client:
        msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=100, system="be kind",
                                     messages=[{"role": "user", "content": "hello claude via tollgate"}],
                                     extra_headers={**headers, **switches})
    assert msg.content[0].text.startswith("Hello from beta model claude-sonnet-4-6")
    u = msg.usage
    expected = anthropic_tokens(u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens)
    assert (expected["cached_input"], expected["cache_creation"]) == (7, 4)
    record = gw.record(trace_id)
    assert (record["api"], record["provider"], record["max_output_tokens"]) == ("anthropic_messages", "provider-b", 100)
    assert_accounted(gw, record, expected, "claude-sonnet-4-6")
    [req] = gw.requests("beta")
    assert req["headers"]["x-api-key"] == KEY_B and "authorization" not in req["headers"]
    assert req["headers"]["x-tollgate-gateway"] == "tollgate"  # the provider's configured extra header
    assert_provider_saw_only_its_credential(req, KEY_B)

    trace_id, _, headers = trace()
    with gw.anthropic() as client:
        events = list(client.messages.create(model="claude-sonnet-4-6", max_tokens=100, stream=True,
                                             messages=[{"role": "user", "content": "stream it"}],
                                             extra_headers={**headers, **switches, "x-fake-chunks": "4"}))
    start = next(e for e in events if e.type == "message_start").message.usage
    delta = [e for e in events if e.type == "message_delta"][-1].usage
    # message_delta totals are cumulative and replace message_start's.
    expected = anthropic_tokens(delta.input_tokens if delta.input_tokens is not None else start.input_tokens,
                                delta.output_tokens,
                                delta.cache_read_input_tokens if delta.cache_read_input_tokens is not None else start.cache_read_input_tokens,
                                delta.cache_creation_input_tokens if delta.cache_creation_input_tokens is not None else start.cache_creation_input_tokens)
    assert start.output_tokens != delta.output_tokens
    record = gw.record(trace_id)
    assert record["stream"] is True
    assert_accounted(gw, record, expected, "claude-sonnet-4-6")


# ---- Gemini --------------------------------------------------------------------------


def gemini_tokens(meta: dict) -> dict:
    thoughts = meta.get("thoughtsTokenCount", 0)
    return tokens(meta["promptTokenCount"], meta["candidatesTokenCount"] + thoughts,
                  meta.get("cachedContentTokenCount", 0), 0, thoughts)


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello gemini through the gateway"}]}],
               "systemInstruction": {"parts": [{"text": "be short"}]}}


def test_gemini_json_sse_and_streamed_array(gw):
    switches = {"x-fake-cached-tokens": "2", "x-fake-reasoning-tokens": "5"}
    base = f"{gw.url}/v1beta/models/gemini-2.0-flash"
    trace_id, _, headers = trace()
    r = httpx.post(f"{base}:generateContent", json=GEMINI_BODY, timeout=20,
                   headers={**headers, **switches, "x-goog-api-key": ALICE})
    assert r.status_code == 200, r.text
    expected = gemini_tokens(r.json()["usageMetadata"])
    assert (expected["cached_input"], expected["reasoning"]) == (2, 5)
    record = gw.record(trace_id)
    assert (record["api"], record["model"], record["stream"]) == ("gemini", "gemini-2.0-flash", False)
    assert_accounted(gw, record, expected, "gemini-2.0-flash")

    # SSE, with the Tollgate key in the `key` query parameter (it must not travel on).
    trace_id, _, headers = trace()
    metas = []
    with httpx.stream("POST", f"{base}:streamGenerateContent?alt=sse&key={ALICE}", json=GEMINI_BODY, timeout=20,
                      headers={**headers, **switches}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                metas.append(json.loads(line[6:])["usageMetadata"])
    assert len(metas) > 1
    record = gw.record(trace_id)
    assert record["stream"] is True
    assert_accounted(gw, record, gemini_tokens(metas[-1]), "gemini-2.0-flash")

    # Without alt=sse Gemini streams one JSON array.
    trace_id, _, headers = trace()
    r = httpx.post(f"{base}:streamGenerateContent", json=GEMINI_BODY, timeout=20,
                   headers={**headers, **switches, "x-goog-api-key": ALICE})
    elements = r.json()
    assert isinstance(elements, list) and len(elements) > 1
    assert_accounted(gw, gw.record(trace_id), gemini_tokens(elements[-1]["usageMetadata"]), "gemini-2.0-flash")

    reqs = gw.requests("beta")
    assert len(reqs) == 3
    for req in reqs:
        assert req["headers"]["x-goog-api-key"] == KEY_B
        assert_provider_saw_only_its_credential(req, KEY_B)
    assert reqs[1]["query"] == "alt=sse"


# ---- streaming is not buffered -------------------------------------------------------


def test_streams_are_not_buffered(gw):
    delay = {"x-fake-chunk-delay-ms": "300", "x-fake-chunks": "5"}  # last content >= 1.2 s after the first
    trace_id, _, headers = trace()
    with gw.openai() as client:
        start = time.monotonic()
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True, extra_headers={**headers, **delay},
                                                messages=[{"role": "user", "content": "slowly"}])
        arrivals = [time.monotonic() - start for c in stream if c.choices and c.choices[0].delta.content]
    assert len(arrivals) == 5
    assert arrivals[-1] >= 1.15, arrivals
    assert arrivals[0] < arrivals[-1] - 0.9, arrivals  # the first chunk did not wait for the last
    record = gw.record(trace_id)
    assert record["ttft_ms"] < record["duration_ms"] - 900, record
    assert record["estimated"] is False

    trace_id, _, headers = trace()
    with gw.anthropic() as client:
        start = time.monotonic()
        arrivals = [time.monotonic() - start for e in client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, stream=True, extra_headers={**headers, **delay},
            messages=[{"role": "user", "content": "slowly"}]) if e.type == "content_block_delta"]
    assert len(arrivals) == 5 and arrivals[0] < arrivals[-1] - 0.9, arrivals
    assert gw.record(trace_id)["estimated"] is False


def test_client_going_away_mid_stream_records_an_estimate(gw):
    def incomplete_errors() -> float:
        samples = prometheus_samples(gw.envoy.prometheus(), "tollgate_llm_errors")
        return samples.get(frozenset({("team", "payments"), ("model", "gpt-4o-mini"), ("provider", "provider-a"),
                                      ("error_type", "incomplete")}), 0)

    before = incomplete_errors()
    trace_id, _, headers = trace()
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long story"}]}
    seen = b""
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=20,
                      headers={**headers, "authorization": f"Bearer {ALICE}", "x-fake-chunk-delay-ms": "400",
                               "x-fake-chunks": "6"}) as r:
        for raw in r.iter_raw():
            seen += raw
            if b'"content":"Hello' in seen:
                break  # got the first token, hang up while the provider is still streaming
    # The access log (written when Envoy tears the stream down) shows the last provisional
    # record: the estimate up to the first token, marked incomplete.
    record = gw.record(trace_id, timeout=8)
    assert record["completed"] is False and record["estimated"] is True, record
    assert record["error_type"] == "incomplete" and record["status"] == 200
    assert record["tokens"]["input"] == -(-record["request_bytes"] // 4)
    assert record["tokens"]["output"] >= 1
    assert record["ttft_ms"] is not None
    # on_log still ran for the abandoned stream: the error is counted.
    harness.wait_until(lambda: incomplete_errors() == before + 1, 5, "incomplete error counted")


# ---- routing -------------------------------------------------------------------------


def test_models_route_to_two_clusters_and_alias_rewrites_the_model(gw):
    with gw.openai() as oai, gw.anthropic() as claude:
        # A client cannot pick the provider itself.
        a = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        extra_headers={"x-tollgate-provider": "provider-b"})
        b = claude.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
        trace_id, _, headers = trace()
        alias = oai.chat.completions.create(model="fast", messages=[{"role": "user", "content": "alias please"}],
                                            extra_headers=headers)
        trace_id2, _, headers2 = trace()
        smart = claude.messages.create(model="smart", max_tokens=32, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers=headers2)
    assert a.choices[0].message.content.startswith("Hello from alpha")
    assert b.content[0].text.startswith("Hello from beta")
    assert alias.choices[0].message.content.startswith("Hello from alpha model gpt-4o-mini")
    assert smart.content[0].text.startswith("Hello from beta model claude-sonnet-4-6")
    alpha, beta = gw.requests("alpha"), gw.requests("beta")
    assert [r["body"]["model"] for r in alpha] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert [r["body"]["model"] for r in beta] == ["claude-haiku-4-5", "claude-sonnet-4-6"]
    # The rewritten body arrived whole (the fake reads exactly content-length bytes and parsed
    # them as JSON) with its other members intact.
    assert alpha[1]["body"]["messages"] == [{"role": "user", "content": "alias please"}]
    assert "content-length" in alpha[1]["headers"] and "transfer-encoding" not in alpha[1]["headers"]
    record = gw.record(trace_id)
    assert (record["model"], record["upstream_model"], record["provider"]) == ("fast", "gpt-4o-mini", "provider-a")
    assert record["cost_micro_usd"] == expected_cost(record["tokens"], gw.price("gpt-4o-mini"))
    assert gw.record(trace_id2)["upstream_model"] == "claude-sonnet-4-6"


# ---- refusals ------------------------------------------------------------------------


def refusal_record(gw: Gateway, trace_id: str, status: int, decision: str, error_type: str) -> dict:
    record = gw.record(trace_id)
    assert (record["status"], record["decision"], record["error_type"]) == (status, decision, error_type), record
    assert record["tokens"]["total"] == 0 and "cost_micro_usd" not in record
    return record


def test_refusals_in_each_api_shape_never_reach_a_provider(gw):
    # 401 unknown key: each SDK's own exception with its API's error body.
    tid, _, h = trace()
    with gw.openai("tg-wrong") as client, pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    refusal_record(gw, tid, 401, "deny", "unknown_key")
    tid, _, h = trace()
    with gw.anthropic("tg-wrong") as client, pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               extra_headers=h)
    assert e.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "invalid API key"}}
    refusal_record(gw, tid, 401, "deny", "unknown_key")
    r = httpx.post(f"{gw.url}/v1beta/models/gemini-2.0-flash:generateContent", json=GEMINI_BODY,
                   headers={"x-goog-api-key": "tg-wrong"})
    assert r.status_code == 401 and r.json() == {"error": {"code": 401, "message": "invalid API key", "status": "UNAUTHENTICATED"}}

    # 401 without any key (keys are configured, so identity is required).
    tid, _, h = trace()
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}, headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    refusal_record(gw, tid, 401, "deny", "missing_key")

    # 403 model not allowed for bob's key.
    tid, _, h = trace()
    with gw.openai(BOB) as client, pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert e.value.body["code"] == "model_not_allowed"
    record = refusal_record(gw, tid, 403, "deny", "model_not_allowed")
    assert record["identity"]["principal"] == "bob" and record["team"] == "research"
    with gw.anthropic(BOB) as client, pytest.raises(anthropic.PermissionDeniedError) as e:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "permission_error"

    # 404 unknown model.
    tid, _, h = trace()
    with gw.openai() as client, pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert e.value.body["code"] == "model_not_found"
    refusal_record(gw, tid, 404, "error", "unknown_model")
    with gw.anthropic() as client, pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    r = httpx.post(f"{gw.url}/v1beta/models/no-such-model:generateContent", json=GEMINI_BODY,
                   headers={"x-goog-api-key": ALICE})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    # A model whose provider does not speak the client's API is unknown there too.
    with gw.openai() as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])

    # 400 malformed JSON / no model, in each shape.
    tid, _, h = trace()
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=b'{"model": "gpt-4o-mini", "messages": [',
                   headers={**h, "authorization": f"Bearer {ALICE}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    refusal_record(gw, tid, 400, "error", "invalid_request")
    with gw.openai() as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(f"{gw.url}/v1/messages", content=b"not json", headers={"x-api-key": ALICE})
    assert r.status_code == 400 and r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{gw.url}/v1beta/models/gemini-2.0-flash:generateContent", content=b"{oops",
                   headers={"x-goog-api-key": ALICE})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"

    # 413 over max_request_bytes (1 MiB in the shipped config).
    tid, _, h = trace()
    big = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    with gw.anthropic() as client, pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(**big, extra_headers=h)
    assert e.value.status_code == 413 and e.value.body["error"]["type"] == "request_too_large"
    refusal_record(gw, tid, 413, "error", "request_too_large")
    # Without a content-length (chunked upload) the limit holds on the buffered body.
    chunks = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"y" * 65536 for _ in range(20))
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=chunks,
                   headers={"authorization": f"Bearer {ALICE}", "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text

    # Unknown path: 404 in the OpenAI shape; nothing is passed through blindly
    # (tests/test_llm_endpoints.py: the other shapes, and the gateway's own /v1/models).
    r = httpx.get(f"{gw.url}/v1/files", headers={"authorization": f"Bearer {ALICE}"})
    assert r.status_code == 404 and "error" in r.json()

    assert gw.all_requests() == []


# ---- upstream errors -----------------------------------------------------------------


def test_upstream_errors_pass_through_unchanged_and_are_recorded(gw):
    tid, _, h = trace()
    with gw.openai() as client, pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={**h, "x-fake-status": "429"})
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.response.headers["x-fake-provider-name"] == "alpha"
    message = e.value.body["message"]
    record = gw.record(tid)
    assert (record["status"], record["decision"], record["error_type"], record["error"]) == (429, "allow", "http_429", message)
    assert record["tokens"]["total"] == 0 and record["estimated"] is False

    tid, _, h = trace()
    with gw.anthropic() as client, pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               extra_headers={**h, "x-fake-status": "529"})
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"
    assert e.value.body["request_id"] == e.value.response.headers["request-id"]  # the provider's body, untouched
    record = gw.record(tid)
    assert (record["status"], record["error"]) == (529, e.value.body["error"]["message"])


# ---- metrics -------------------------------------------------------------------------


def prometheus_samples(text: str, name: str) -> dict[frozenset, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[labels] = float(m.group(2))
    return out


def test_prometheus_shows_token_and_cost_series_by_team_and_model(gw):
    # Bob's team (research) is used only here, so its series equal this test's records.
    records = []
    with gw.openai(BOB) as client:
        for model in ("gpt-4o-mini", "fast"):
            tid, _, h = trace()
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "metrics " * 5}],
                                           extra_headers={**h, "x-fake-cached-tokens": "2"})
            records.append(gw.record(tid))

    def label(model, **extra):
        return frozenset({("team", "research"), ("model", model), ("provider", "provider-a"), *extra.items()})

    def check() -> bool:
        text = gw.envoy.prometheus()
        usage = prometheus_samples(text, "tollgate_llm_gen_ai_client_token_usage")
        cost = prometheus_samples(text, "tollgate_llm_cost_micro_usd")
        reqs = prometheus_samples(text, "tollgate_llm_gen_ai_client_requests")
        for record in records:
            model = record["model"]
            # Cost and tokens also name the served model (the alias `fast` is gpt-4o-mini), the key and the agent.
            spend = {"upstream_model": record["upstream_model"], "key": "bob-key", "agent": "bob"}
            assert record["upstream_model"] == "gpt-4o-mini"
            for kind in ("input", "output", "cached_input"):
                assert usage.get(label(model, token_type=kind, **spend)) == record["tokens"][kind], (kind, usage)
            assert cost.get(label(model, **spend)) == record["cost_micro_usd"], cost
            assert reqs.get(label(model)) == 1
        return True

    harness.wait_until(check, 5, "prometheus series")
    text = gw.envoy.prometheus()
    assert "# TYPE tollgate_llm_gen_ai_client_token_usage counter" in text
    # Unlabelled total kept for the foundation test.
    assert gw.envoy.stat("wasmcustom.tollgate.llm.requests") >= 2
    # Refusals show up as errors by type (this label set is also used by the refusal test).
    errors = lambda: prometheus_samples(gw.envoy.prometheus(), "tollgate_llm_errors").get(  # noqa: E731
        label("gpt-4o", error_type="model_not_allowed"), 0)
    before = errors()
    with gw.openai(BOB) as client, pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    harness.wait_until(lambda: errors() == before + 1, 5, "error series")


# ---- configuration -------------------------------------------------------------------


def test_bad_configuration_is_refused_at_load_naming_the_field(workdir):
    cfg = harness.load_envoy_config("llm.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.llm")
    plugin["models"][3]["provider"] = "provider-z"
    log = harness.run_envoy_expect_failure(cfg, workdir, plugin_configs={"tollgate.llm": plugin})
    assert "tollgate-llm: invalid plugin configuration: models[3].provider: unknown provider `provider-z`" in log, log[-3000:]

    # Credentials come from the VM's environment (vm_config.environment_variables): a missing
    # variable refuses the plugin instead of sending unauthenticated requests.
    for node in harness._walk(cfg):
        if "environment_variables" in node:
            node["environment_variables"]["key_values"].pop("PROVIDER_B_KEY")
    log = harness.run_envoy_expect_failure(cfg, workdir)
    assert "providers[1].credential.env: environment variable `PROVIDER_B_KEY` is not set" in log, log[-3000:]
