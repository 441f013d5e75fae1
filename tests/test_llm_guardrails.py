"""LLM guardrails end to end: real `openai` / `anthropic` SDKs -> the real Envoy 1.40 with
envoy/llm.yaml plus a `guardrails` section -> the fake providers. External moderation is
the fake provider's OpenAI moderations API behind its own Envoy cluster (an input naming a
category, e.g. "violence", is flagged).
"""
from __future__ import annotations

import secrets

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


def start(workdir, started: list, moderation: dict, moderation_port: int | None):
    fakes, ports = harness.start_fake_providers(workdir, started)
    cfg = harness.load_envoy_config("llm.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.llm")
    plugin["guardrails"] = {"moderation": moderation}
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
