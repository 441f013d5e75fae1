"""The exact-match response cache end to end: real `openai` and `anthropic` SDKs -> the real
Envoy 1.40 with envoy/llm.yaml (plus a `cache` section) -> the fake providers.

A second identical `temperature: 0` request is answered by the gateway (the provider saw one
request), streamed and not; another team misses; Cache-Control is honoured; the record says
`cache: hit` and what the answer cost the first time.
"""
from __future__ import annotations

import secrets

import anthropic
import httpx
import openai
import pytest

import harness

pytestmark = pytest.mark.timeout(60)

ALICE = "tg-demo-alice"  # team payments
BOB = "tg-demo-bob"  # team research (gpt-4o-mini, fast, claude-haiku-*)


class Gateway:
    def __init__(self, envoy: harness.Envoy, fakes: dict[str, str]):
        self.envoy, self.fakes, self.url = envoy, fakes, envoy.url

    def requests(self, name: str) -> list[dict]:
        return httpx.get(f"{self.fakes[name]}/_fake/requests", timeout=5).json()

    def reset(self) -> None:
        for url in self.fakes.values():
            httpx.post(f"{url}/_fake/reset", timeout=5)

    def record(self, trace_id: str) -> dict:
        return self.envoy.wait_audit(1, 5, where=lambda r: r.get("trace_id") == trace_id)[-1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm-cache")
    started: list = []
    try:
        fakes, ports = harness.start_fake_providers(workdir, started)
        cfg = harness.load_envoy_config("llm.yaml")
        plugin = harness.plugin_config(cfg, "tollgate.llm")
        plugin["cache"] = {"scope": "team", "ttl_secs": 60}
        envoy = harness.Envoy(cfg, workdir, upstreams=ports, plugin_configs={"tollgate.llm": plugin})
        started.append(envoy.proc)
        yield Gateway(envoy, fakes)
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(autouse=True)
def clean(gw):
    gw.reset()
    yield


def traced() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def openai_call(gw: Gateway, key: str, stream: bool, prompt: str, headers: dict | None = None):
    """(text, raw response headers, trace id) of one chat completion with temperature 0."""
    trace_id, trace_headers = traced()
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=20)
    kwargs = dict(model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": prompt}],
                  extra_headers={**trace_headers, **(headers or {})})
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, **kwargs)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        text = raw.parse().choices[0].message.content
    return text, raw.headers, trace_id


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_second_identical_request_is_served_from_the_cache(gw, stream):
    prompt = f"cache me {secrets.token_hex(4)}"
    first, headers, trace_id = openai_call(gw, ALICE, stream, prompt)
    assert headers.get("x-tollgate-cache") == "miss"
    rec = gw.record(trace_id)
    assert rec["cache"] == "miss" and rec["cost_micro_usd"] > 0, rec
    cost = rec["cost_micro_usd"]

    second, headers, trace_id = openai_call(gw, ALICE, stream, prompt)
    assert second == first
    assert headers.get("x-tollgate-cache") == "hit"
    assert len(gw.requests("alpha")) == 1, "the provider saw one request"
    rec = gw.record(trace_id)
    assert rec["cache"] == "hit" and rec["cache_saved_micro_usd"] == cost, rec
    assert rec["tokens"]["total"] == 0 and rec.get("cost_micro_usd") in (None, 0), rec

    # Another team does not see payments' answers.
    _, headers, trace_id = openai_call(gw, BOB, stream, prompt)
    assert headers.get("x-tollgate-cache") == "miss"
    assert len(gw.requests("alpha")) == 2


def test_cache_control_no_cache_goes_to_the_provider_and_no_store_is_not_cached(gw):
    prompt = f"fresh {secrets.token_hex(4)}"
    openai_call(gw, ALICE, False, prompt)
    _, headers, _ = openai_call(gw, ALICE, False, prompt, {"cache-control": "no-cache"})
    assert headers.get("x-tollgate-cache") == "bypass"
    assert len(gw.requests("alpha")) == 2
    _, headers, _ = openai_call(gw, ALICE, False, prompt)
    assert headers.get("x-tollgate-cache") == "hit"

    other = f"never stored {secrets.token_hex(4)}"
    openai_call(gw, ALICE, False, other, {"cache-control": "no-store"})
    _, headers, _ = openai_call(gw, ALICE, False, other)
    assert headers.get("x-tollgate-cache") == "miss"


def test_a_warm_sampled_request_is_not_cached_unless_it_opts_in(gw):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=ALICE, max_retries=0, timeout=20)
    prompt = f"warm {secrets.token_hex(4)}"
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0.8, messages=[{"role": "user", "content": prompt}])
        assert "x-tollgate-cache" not in raw.headers
    assert len(gw.requests("alpha")) == 2
    for expected in ("miss", "hit"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0.8, messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-tollgate-cache": "on"})
        assert raw.headers.get("x-tollgate-cache") == expected
    assert len(gw.requests("alpha")) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_second_identical_request_is_served_from_the_cache(gw, stream):
    client = anthropic.Anthropic(base_url=gw.url, api_key=ALICE, max_retries=0, timeout=20)
    prompt = f"cache me too {secrets.token_hex(4)}"
    texts = []
    for expected in ("miss", "hit"):
        # temperature through extra_body: this SDK version's typed signature lacks it.
        kwargs = dict(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}],
                      extra_body={"temperature": 0})
        if stream:
            with client.messages.stream(**kwargs) as s:
                texts.append("".join(s.text_stream))
                assert s.response.headers.get("x-tollgate-cache") == expected
        else:
            raw = client.messages.with_raw_response.create(**kwargs)
            texts.append(raw.parse().content[0].text)
            assert raw.headers.get("x-tollgate-cache") == expected
    assert texts[0] == texts[1] and texts[0]
    assert len(gw.requests("beta")) == 1
