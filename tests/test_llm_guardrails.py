"""LLM guardrails end to end: real `openai` / `anthropic` SDKs -> the real Envoy 1.40 with
envoy/llm.yaml plus a `guardrails` section -> the fake providers. External moderation is
the fake provider's OpenAI moderations API behind its own Envoy cluster (an input naming a
category, e.g. "violence", is flagged).
"""
from __future__ import annotations

import json
import secrets
import time

import anthropic
import httpx
import openai
import pytest

import harness

pytestmark = pytest.mark.timeout(60)

ALICE = "tg-demo-alice"


def moderation_cluster(port: int) -> dict:
    return {"name": "moderation", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "moderation", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def start(workdir, started: list, moderation: dict | None, moderation_port: int | None, policies: list | None = None):
    fakes, ports = harness.start_fake_providers(workdir, started)
    cfg = harness.load_envoy_config("llm.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.llm")
    plugin["guardrails"] = {"policies": policies or []}
    if moderation:
        plugin["guardrails"]["moderation"] = moderation
    target = moderation_port if moderation_port is not None else int(fakes["alpha"].rsplit(":", 1)[1])
    cfg["static_resources"]["clusters"].append(moderation_cluster(target))
    envoy = harness.Envoy(cfg, workdir, upstreams=ports, plugin_configs={"tollgate.llm": plugin})
    started.append(envoy.proc)
    return envoy, fakes


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    started: list = []
    try:
        yield start(tmp_path_factory.mktemp("guard"), started,
                    {"cluster": "moderation", "model": "omni-moderation-latest", "timeout_ms": 2000}, None)
    finally:
        for proc in reversed(started):
            proc.stop()


def traced() -> tuple[str, dict]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def provider_calls(url: str, path: str) -> list[dict]:
    return [r for r in httpx.get(f"{url}/_fake/requests", timeout=5).json() if r["path"] == path]


def test_flagged_content_is_refused_before_the_provider_and_clean_content_passes(gw):
    envoy, fakes = gw
    httpx.post(f"{fakes['alpha']}/_fake/reset", timeout=5)
    client = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key=ALICE, max_retries=0, timeout=20)
    trace_id, headers = traced()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", extra_headers=headers,
                                       messages=[{"role": "user", "content": "describe violence in detail"}])
    assert err.value.body["code"] == "content_policy_violation", err.value.body
    assert "violence" in err.value.body["message"]
    assert provider_calls(fakes["alpha"], "/v1/chat/completions") == [], "the provider never saw it"
    (call,) = provider_calls(fakes["alpha"], "/v1/moderations")
    assert call["body"] == {"model": "omni-moderation-latest", "input": ["describe violence in detail"]}
    rec = envoy.wait_audit(1, 5, where=lambda r: r.get("trace_id") == trace_id)[-1]
    assert rec["decision"] == "deny" and rec["error_type"] == "moderation_flagged", rec
    assert rec["moderation"]["decision"] == "flagged" and "violence" in rec["moderation"]["categories"], rec
    assert rec["moderation"]["latency_ms"] >= 0

    trace_id, headers = traced()
    reply = client.chat.completions.create(model="gpt-4o-mini", extra_headers=headers,
                                           messages=[{"role": "user", "content": "say hello"}])
    assert reply.choices[0].message.content.startswith("Hello from alpha")
    rec = envoy.wait_audit(1, 5, where=lambda r: r.get("trace_id") == trace_id)[-1]
    assert rec["status"] == 200 and rec["moderation"]["decision"] == "clean", rec


def test_the_anthropic_sdk_gets_the_refusal_in_its_shape(gw):
    envoy, _ = gw
    client = anthropic.Anthropic(base_url=envoy.url, api_key=ALICE, max_retries=0, timeout=20)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="claude-haiku-4-5", max_tokens=32, system="you like hate",
                               messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert "hate" in err.value.body["error"]["message"]


@pytest.mark.parametrize("on_failure, status", [("fail_closed", 503), ("fail_open", 200)])
def test_a_moderation_service_that_is_down_follows_the_failure_mode(tmp_path, on_failure, status):
    started: list = []
    try:
        envoy, _ = start(tmp_path, started, {"cluster": "moderation", "timeout_ms": 500, "on_failure": on_failure},
                         harness.free_port())  # nothing listens there
        trace_id, headers = traced()
        r = httpx.post(f"{envoy.url}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {ALICE}", **headers},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == status, r.text
        rec = envoy.wait_audit(1, 5, where=lambda x: x.get("trace_id") == trace_id)[-1]
        assert rec["moderation"]["decision"] == "failed", rec
    finally:
        for proc in reversed(started):
            proc.stop()


# ---- detector policies -----------------------------------------------------------------

BOB = "tg-demo-bob"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
POLICIES = [
    {"id": "alice-no-cards", "keys": ["alice-key"], "on": ["request"], "action": "block", "detectors": {"builtin": ["card"]}},
    {"id": "bob-redact-cards", "keys": ["bob-key"], "on": ["request"], "action": "redact", "detectors": {"builtin": ["card"]}},
    {"id": "alice-redact-keys-out", "keys": ["alice-key"], "on": ["response"], "action": "redact",
     "detectors": {"builtin": ["aws_key"]}},
    {"id": "bob-block-keys-out", "keys": ["bob-key"], "on": ["response"], "action": "block", "detectors": {"builtin": ["aws_key"]}},
]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    started: list = []
    try:
        yield start(tmp_path_factory.mktemp("policies"), started, None, None, POLICIES)
    finally:
        for proc in reversed(started):
            proc.stop()


def chat_requests(url: str) -> list[dict]:
    return provider_calls(url, "/v1/chat/completions")


def test_a_card_number_in_a_prompt_is_blocked_before_the_provider(guarded):
    envoy, fakes = guarded
    httpx.post(f"{fakes['alpha']}/_fake/reset", timeout=5)
    client = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key=ALICE, max_retries=0, timeout=20)
    trace_id, headers = traced()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", extra_headers=headers,
                                       messages=[{"role": "user", "content": f"charge {CARD} please"}])
    assert err.value.body["code"] == "content_policy_violation" and "card" in err.value.body["message"], err.value.body
    assert CARD not in str(err.value.body)
    assert chat_requests(fakes["alpha"]) == []
    rec = envoy.wait_audit(1, 5, where=lambda r: r.get("trace_id") == trace_id)[-1]
    assert rec["decision"] == "deny" and rec["error_type"] == "guardrail_blocked", rec
    assert rec["guardrails"] == [{"policy": "alice-no-cards", "action": "block", "where": "request",
                                  "message_index": 0, "detector": "card", "count": 1}], rec
    assert CARD not in json.dumps(rec)


def test_a_card_number_is_redacted_before_the_provider_sees_it(guarded):
    envoy, fakes = guarded
    httpx.post(f"{fakes['alpha']}/_fake/reset", timeout=5)
    client = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key=BOB, max_retries=0, timeout=20)
    reply = client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": f"charge {CARD} please"}])
    (seen,) = chat_requests(fakes["alpha"])
    assert seen["body"]["messages"][0]["content"] == "charge [REDACTED:card] please", seen["body"]
    assert CARD not in json.dumps(seen)
    assert "[REDACTED:card]" in reply.choices[0].message.content  # the fake echoes what it received


def sse_events(envoy, key: str, prompt: str, chunk_delay_ms: int) -> tuple[list[tuple[float, str]], float]:
    """(seconds since the request, data line) of every SSE event, and the total time."""
    started = time.monotonic()
    events = []
    with httpx.stream("POST", f"{envoy.url}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", "x-fake-chunk-chars": "6",
                               "x-fake-chunk-delay-ms": str(chunk_delay_ms)},
                      json={"model": "gpt-4o-mini", "stream": True,
                            "messages": [{"role": "user", "content": prompt}]}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic() - started, line[6:]))
    return events, time.monotonic() - started


def streamed_text(events) -> str:
    out = ""
    for _, data in events:
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        for choice in chunk.get("choices", []):
            out += choice.get("delta", {}).get("content") or ""
    return out


def test_a_key_spelled_across_stream_deltas_is_redacted_without_holding_the_stream(guarded):
    envoy, _ = guarded
    events, total = sse_events(envoy, ALICE, f"my key is {AWS_KEY} ok", 100)
    # The fake sends 6 characters per delta: the key spans several deltas.
    text = streamed_text(events)
    assert AWS_KEY not in text and "[REDACTED:aws_key]" in text, text
    assert text.endswith("ok"), text
    # Not buffered: the first events reached the client long before the provider finished.
    first_content = next(t for t, d in events if d != "[DONE]" and "content" in d)
    assert first_content < total / 2, (first_content, total)


def test_a_key_in_a_streamed_answer_ends_the_stream_with_the_apis_error_event(guarded):
    envoy, _ = guarded
    events, _ = sse_events(envoy, BOB, f"my key is {AWS_KEY} ok", 20)
    text = streamed_text([e for e in events if '"error"' not in e[1]])
    assert AWS_KEY[:8] not in text, text
    assert text.startswith("Hello from alpha"), "what came before the key was streamed"
    errors = [json.loads(d) for _, d in events if d != "[DONE]" and "error" in json.loads(d)]
    assert errors and errors[0]["error"]["code"] == "content_filter", events[-3:]
