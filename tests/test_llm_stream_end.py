"""A stream the client read to its last event is a completed stream (issue 21 item 9).

The `openai` SDK closes the response as soon as it reads `data: [DONE]`, without reading the
body's end. When that close reaches Envoy before the provider's end of stream reaches the
filter, the filter only gets `on_log`: before the fix it recorded such a stream
`completed: false, error_type: "incomplete"` and counted it in `errors{error_type="incomplete"}`
(what made `test_llm_limits.py::test_stream_is_reconciled_at_the_end_of_the_stream` flaky).

Here the race is made deterministic: the fake provider waits `x-fake-end-delay-ms` after its
last event before ending the body, so the SDK's close always comes first. Real `openai` SDK ->
real Envoy 1.40 + dist/tollgate_llm.wasm (shipped envoy/llm.yaml) -> the fake provider.
"""
from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

import harness
from llm_limits_helpers import trace

pytestmark = pytest.mark.timeout(60)

ALICE = "tg-demo-alice"  # team payments (shipped config)
END_DELAY_MS = 4000


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm-stream-end")
    started: list[harness.Proc] = []
    try:
        yield harness.start_fake_providers(workdir, started)
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def gateway(procs, fakes):
    urls, ports = fakes
    for url in urls.values():
        httpx.post(f"{url}/_fake/reset", timeout=5)
    return procs.envoy("llm.yaml", upstreams=ports)


def incomplete_errors(envoy: harness.Envoy) -> float:
    total = 0.0
    for line in envoy.prometheus().splitlines():
        m = re.match(r'^tollgate_llm_errors\{(.*)\} (\S+)$', line)
        if m and 'error_type="incomplete"' in m.group(1):
            total += float(m.group(2))
    return total


def test_a_stream_read_to_done_is_completed_although_the_client_closes_before_its_end(gateway):
    trace_id, headers = trace()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=ALICE, max_retries=0, timeout=20)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "stream to me"}],
        extra_headers={**headers, "x-fake-chunks": "3", "x-fake-end-delay-ms": str(END_DELAY_MS)})
    chunks = list(stream)  # the SDK stops at [DONE] and closes the response
    read_secs = time.monotonic() - started
    client.close()
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None, "the usage chunk the gateway asked for arrived"
    assert read_secs < END_DELAY_MS / 1000, "the client closed before the provider ended the body"

    record = gateway.wait_audit(1, 8, where=lambda r: r.get("trace_id") == trace_id)[-1]
    # Written when the client's close reached Envoy (on_log), well before the provider's end.
    assert record["duration_ms"] < END_DELAY_MS, record
    assert record["completed"] is True, record
    assert "error_type" not in record and "error" not in record, record
    assert record["estimated"] is False and record["tokens"]["total"] == usage.total_tokens, record
    assert incomplete_errors(gateway) == 0


def test_a_stream_cut_before_done_is_still_incomplete(gateway):
    """The control: usage alone is not the end; a client gone before `[DONE]` is incomplete."""
    trace_id, headers = trace()
    seen = b""
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=20,
                      json={"model": "gpt-4o-mini", "stream": True,
                            "messages": [{"role": "user", "content": "stream to me"}]},
                      headers={**headers, "authorization": f"Bearer {ALICE}",
                               "x-fake-chunks": "3", "x-fake-chunk-delay-ms": "1500"}) as r:
        for raw in r.iter_raw():
            seen += raw
            if b'"content"' in seen:
                break
    record = gateway.wait_audit(1, 8, where=lambda r: r.get("trace_id") == trace_id)[-1]
    assert (record["completed"], record["error_type"]) == (False, "incomplete"), record
    harness.wait_until(lambda: incomplete_errors(gateway) == 1, 5, "the incomplete stream counted")
