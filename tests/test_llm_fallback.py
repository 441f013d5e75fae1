"""Virtual models end to end: weighted load balancing and fallback between deployments, run
by the real Envoy 1.40 (override_host load balancing + retries) with the LLM module as the
gateway filter and as the upstream (per-attempt) filter of the deployments cluster.

envoy/llm-fallback.yaml is used as shipped but for ports (tests/llm_fallback_helpers.py: three
fake providers `openai-a`, `openai-b`, `anthropic-c` behind the deployments cluster). A fourth
address with nothing listening stands in for a provider that refuses connections.
"""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from llm_fallback_helpers import ALICE, stack_fixture, start, stream_chat

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from stack_fixture("fallback", tmp_path_factory)


@pytest.fixture(autouse=True)
def clean(request):
    """Clears the fakes' switches and request lists (each test also waits out the cooldowns
    it started, so the next one starts with none)."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").reset()
    yield


def wait_cooldown_over(seconds: float) -> None:
    time.sleep(seconds + 0.3)


@pytest.mark.parametrize("failure", ["429", "503"])
def test_a_failing_deployment_is_skipped_for_its_retry_after_then_used_again(stack, failure):
    status = int(failure)
    stack.set("openai-a", status=status, retry_after=2)
    reply, trace_id = stack.chat("chat")
    assert reply.choices[0].message.content.startswith("Hello from openai-b model gpt-4o-mini")
    rec = stack.record(trace_id)
    assert rec["status"] == 200 and rec["deployment"] == "openai-b/gpt-4o-mini", rec
    assert [(a["deployment"], a.get("status")) for a in rec["attempts"]] == [
        ("openai-a/gpt-4o-mini", status), ("openai-b/gpt-4o-mini", 200)], rec
    assert rec["attempts"][0]["cooldown_ms"] == 2000, rec
    # The tokens and cost are the answering attempt's, as the provider reported them.
    assert rec["tokens"]["input"] == reply.usage.prompt_tokens and rec["tokens"]["output"] == reply.usage.completion_tokens
    assert rec["cost_micro_usd"] > 0 and rec["upstream_model"] == "gpt-4o-mini" and rec["provider"] == "openai-b"

    # During the cooldown, openai-a is not touched at all.
    stack.set("openai-a", status=0)
    for _ in range(3):
        reply, trace_id = stack.chat("chat")
        assert "openai-b" in reply.choices[0].message.content
        assert [a["deployment"] for a in stack.record(trace_id)["attempts"]] == ["openai-b/gpt-4o-mini"]
    assert len(stack.requests("openai-a")) == 1

    # Then openai-a, the first priority, again.
    wait_cooldown_over(2)
    reply, trace_id = stack.chat("chat")
    assert "openai-a" in reply.choices[0].message.content
    assert len(stack.requests("openai-a")) == 2
    stats = stack.envoy.stats()
    assert sum(v for k, v in stats.items() if k.startswith("wasmcustom.tollgate.llm.deployment_cooldowns.deployment.openai-a")) >= 1, [k for k in stats if "deployment" in k]


def test_a_stream_fails_over_before_its_first_byte(stack):
    stack.set("openai-a", status=503, retry_after=1)
    text, trace_id = stream_chat(stack, "chat")
    assert text.startswith("Hello from openai-b")
    rec = stack.record(trace_id)
    assert [a.get("status") for a in rec["attempts"]] == [503, 200] and rec["stream"] is True, rec
    assert rec["tokens"]["output"] > 0 and rec["estimated"] is False, rec
    stack.set("openai-a", status=0)
    wait_cooldown_over(1)


def test_a_stream_whose_provider_stalls_before_its_first_byte_fails_over(stack):
    # first_byte_timeout_ms is 2000 in the shipped config: openai-a answers after 5 s.
    stack.set("openai-a", response_delay_ms=5000)
    started = time.monotonic()
    text, trace_id = stream_chat(stack, "chat")
    assert text.startswith("Hello from openai-b")
    assert time.monotonic() - started < 4.5
    rec = stack.record(trace_id)
    assert rec["attempts"][0]["deployment"] == "openai-a/gpt-4o-mini" and "status" not in rec["attempts"][0], rec
    assert rec["attempts"][0]["error"] == "no_response" and rec["attempts"][1]["status"] == 200, rec
    assert rec["stream"] is True and rec["tokens"]["output"] > 0, rec
    stack.set("openai-a", response_delay_ms=0)
    wait_cooldown_over(5)


def test_when_every_deployment_fails_the_client_gets_the_last_error_in_its_shape(stack):
    stack.set("openai-a", status=503, retry_after=1)
    stack.set("openai-b", status=429, retry_after=1)
    with pytest.raises(openai.RateLimitError) as err:
        stack.chat("chat")
    assert err.value.response.status_code == 429
    stack.set("openai-a", status=0)
    stack.set("openai-b", status=0)
    wait_cooldown_over(1)


def test_weighted_balancing_follows_the_weights_over_1000_requests(stack):
    counts = {"openai-a": 0, "openai-b": 0}
    body = {"model": "balanced", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {ALICE}"}, timeout=10) as client:
        for _ in range(1000):
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            counts[r.headers["x-fake-provider-name"]] += 1
    # Weights 3:1 -> 750 / 250 (smooth weighted round robin: exact per worker).
    assert abs(counts["openai-a"] - 750) <= 25, counts
    assert counts["openai-a"] + counts["openai-b"] == 1000


def test_internal_headers_are_refused_from_clients_and_credentials_never_cross_providers(stack):
    stack.set("openai-a", status=429, retry_after=1)
    r = httpx.post(f"{stack.url}/v1/chat/completions", timeout=10,
                   headers={"authorization": f"Bearer {ALICE}", "x-tollgate-hosts": "127.0.0.1:1",
                            "x-tollgate-plan": "0;0;0;1;/v1/chat/completions"},
                   json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    # smart: anthropic-c first (x-api-key), then openai-a ... anthropic-c answered here.
    (req_c,) = stack.requests("anthropic-c")
    assert req_c["headers"].get("x-api-key") == "sk-demo-anthropic-c"
    assert "authorization" not in req_c["headers"], req_c["headers"]
    assert req_c["headers"].get("x-tollgate-hosts") != "127.0.0.1:1"
    stack.set("openai-a", status=0)
    wait_cooldown_over(1)


def test_a_provider_refusing_connections_fails_over_and_cools_down(tmp_path):
    started: list = []
    try:
        stack = start(tmp_path, started, dead_openai_a=True)
        reply, trace_id = stack.chat("chat")
        assert "openai-b" in reply.choices[0].message.content
        rec = stack.record(trace_id)
        assert [a["deployment"] for a in rec["attempts"]] == ["openai-a/gpt-4o-mini", "openai-b/gpt-4o-mini"], rec
        assert rec["attempts"][0]["error"] == "no_response" and rec["attempts"][0]["cooldown_ms"] == 5000, rec
        # Cooling down: the next request goes straight to openai-b.
        _, trace_id = stack.chat("chat")
        assert [a["deployment"] for a in stack.record(trace_id)["attempts"]] == ["openai-b/gpt-4o-mini"]
    finally:
        for proc in reversed(started):
            proc.stop()
