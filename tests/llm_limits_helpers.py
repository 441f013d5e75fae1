"""What the LLM limit tests share (tests/test_llm_limits.py: per-Envoy counters;
tests/test_llm_fleet_limits.py: the fleet-wide store): a trace to find a request's record, the
documented admission estimate, a chat call with its raw response, and a refusal's checks."""
from __future__ import annotations

import secrets

import openai

BYTES_PER_TOKEN = 4


def trace() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def reserved_tokens(record: dict, max_tokens: int) -> int:
    """The documented estimate, from the record's own request bytes; checked against it."""
    expected = ceil_div(record["request_bytes"], BYTES_PER_TOKEN) + max_tokens
    assert record["reserved"]["tokens"] == expected, record
    return expected


def chat(client: openai.OpenAI, max_tokens: int, text: str = "hi", headers: dict | None = None, **kw):
    """A chat completion with its raw response (headers) and parsed body."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=max_tokens, messages=[{"role": "user", "content": text}],
        extra_headers=headers or {}, **kw)
    return raw, raw.parse()


def assert_openai_refusal(gw, error: openai.RateLimitError, trace_id: str, limit_id: str) -> dict:
    """A 429 in OpenAI's shape with Retry-After, and its deny record (`gw.record`) naming the limit."""
    assert error.status_code == 429
    assert error.body["code"] == "rate_limit_exceeded", error.body
    assert int(error.response.headers["retry-after"]) >= 1
    record = gw.record(trace_id)
    assert (record["status"], record["decision"], record["rule_id"], record["error_type"]) == \
        (429, "deny", limit_id, "rate_limited"), record
    assert record["limit"]["id"] == limit_id
    return record
