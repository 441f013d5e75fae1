"""LLM limits and budgets end to end: real `openai` / `anthropic` SDKs (max_retries=0) ->
real Envoy 1.40 + dist/tollgate_llm.wasm (the shipped envoy/llm.yaml, plugin `limits`
replaced per test) -> the fake provider.

What is proven here is admission with an estimate reserved up front and reconciled against
real usage at the end:

  estimate = ceil(request bytes / 4) + max_tokens        (request bytes: the audit record's)

Every number is derived, never hard-coded: request bytes from the audit record, real usage
from what the SDK received. Counters live in Envoy shared data, so each test starts its own
Envoy (fresh counters). Windows are 30 days, aligned to the epoch: a rollover during a test
is practically impossible.
"""
from __future__ import annotations

import hashlib
import re

import anthropic
import httpx
import openai
import pytest

import harness
from llm_limits_helpers import BYTES_PER_TOKEN, assert_openai_refusal, ceil_div, chat, reserved_tokens, trace

pytestmark = pytest.mark.timeout(90)

ALICE = "tg-demo-alice"  # team payments (shipped config)
BOB = "tg-demo-bob"  # team research (shipped config)
CAROL = "tg-test-carol"  # team payments (added here)
WINDOW = 2_592_000


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm-limits")
    started: list[harness.Proc] = []
    try:
        yield harness.start_fake_providers(workdir, started)
    finally:
        for proc in reversed(started):
            proc.stop()


class Gateway:
    def __init__(self, envoy: harness.Envoy, urls: dict[str, str]):
        self.envoy = envoy
        self.url = envoy.url
        self.urls = urls

    def requests(self, name: str = "alpha") -> list[dict]:
        return httpx.get(f"{self.urls[name]}/_fake/requests", timeout=5).json()

    def record(self, trace_id: str) -> dict:
        return self.envoy.wait_audit(1, 8, where=lambda r: r.get("trace_id") == trace_id)[-1]

    def openai(self, key: str = ALICE) -> openai.OpenAI:
        # A fresh client per call site: its own connection (with concurrency=2, either worker).
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)

    def anthropic(self, key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def prometheus(self, name: str) -> dict[frozenset, float]:
        out = {}
        for line in self.envoy.prometheus().splitlines():
            m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if m:
                out[frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(1)))] = float(m.group(2))
        return out


@pytest.fixture
def start(procs, fakes):
    urls, ports = fakes
    for url in urls.values():
        httpx.post(f"{url}/_fake/reset", timeout=5)

    def start(limits: list[dict], concurrency: int = 1, **overrides) -> Gateway:
        cfg = harness.plugin_config(harness.load_envoy_config("llm.yaml"), "tollgate.llm")
        cfg["identity"]["api_keys"]["keys"].append(
            {"name": "carol-key", "principal": "carol", "team": "payments",
             "sha256": hashlib.sha256(CAROL.encode()).hexdigest()})
        cfg["limits"] = limits
        cfg.update(overrides)
        assert cfg.get("estimate_bytes_per_token", BYTES_PER_TOKEN) == BYTES_PER_TOKEN
        envoy = procs.envoy("llm.yaml", concurrency=concurrency, upstreams=ports,
                            plugin_configs={"tollgate.llm": cfg})
        return Gateway(envoy, urls)

    return start


def assert_refused(gw: Gateway, error: openai.RateLimitError, trace_id: str, limit_id: str) -> dict:
    """A 429 in OpenAI's shape with Retry-After, its deny record naming the limit, nothing counted."""
    record = assert_openai_refusal(gw, error, trace_id, limit_id)
    assert record["tokens"]["total"] == 0 and "cost_micro_usd" not in record
    return record


# ---- (1) admission against reservations ----------------------------------------------


def test_token_limit_admits_while_reservations_fit_and_refuses_overshoot_before_the_provider(start):
    limit = 1000
    gw = start([{"id": "alice-tpm", "scope": "principal", "models": ["gpt-4o*"],
                 "tokens_per_window": limit, "window_secs": WINDOW}], concurrency=2)

    # A: a slow stream holds its reservation (max_tokens 400) while it runs.
    trace_a, h_a = trace()
    stream_client = gw.openai()
    stream = stream_client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=400, stream=True, messages=[{"role": "user", "content": "tell me a story"}],
        extra_headers={**h_a, "x-fake-chunks": "6", "x-fake-chunk-delay-ms": "500"})
    chunks = iter(stream)
    next(chunks)  # the stream is under way

    # B (another connection): its reservation fits next to A's. The response tells the client
    # what is left: the limit minus both reservations (A is still in flight).
    trace_b, h_b = trace()
    with gw.openai() as client:
        raw_b, reply_b = chat(client, 400, headers=h_b)
    record_b = gw.record(trace_b)
    est_b = reserved_tokens(record_b, 400)
    real_b = reply_b.usage.total_tokens
    assert record_b["tokens"]["total"] == real_b and real_b < 30
    # A's reservation as seen from B's response (A's request bytes are in A's provisional record
    # only after A ends; the header gives it now).
    held_by_a = limit - est_b - int(raw_b.headers["x-tollgate-ratelimit-remaining-tokens"])
    assert raw_b.headers["x-tollgate-ratelimit-limit-tokens"] == str(limit)

    # C: max_tokens 600 no longer fits next to A's reservation and B's real usage, although
    # the real usage so far (B's few tokens and A's first chunk) is far below the limit.
    # Refused with 429 before anything reaches the provider.
    trace_c, h_c = trace()
    with gw.openai() as client, pytest.raises(openai.RateLimitError) as e:
        chat(client, 600, headers=h_c)
    record_c = assert_refused(gw, e.value, trace_c, "alice-tpm")
    assert e.value.body["type"] == "tokens"
    est_c = reserved_tokens(record_c, 600)
    assert record_c["limit"]["used"] == held_by_a + real_b, record_c  # B already reconciled
    assert record_c["limit"]["requested"] == est_c
    assert held_by_a + real_b + est_c > limit
    assert real_b + 50 + est_c <= limit, "only the reservation (not usage so far) refuses C"
    assert int(e.value.response.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - held_by_a - real_b
    # A request that could never fit is refused as what it is (400, no Retry-After), saying so.
    with gw.openai() as client, pytest.raises(openai.BadRequestError) as e:
        chat(client, 2000)
    assert f"more than the {limit} tokens allowed" in e.value.body["message"]
    assert "retry-after" not in e.value.response.headers

    alpha = gw.requests("alpha")
    assert [r["body"]["max_tokens"] for r in alpha] == [400, 400], "C and D never reached the provider"

    # A ends: its reservation is replaced by its real usage, and C now fits.
    rest = list(chunks)
    stream_client.close()
    usage_a = rest[-1].usage
    record_a = gw.record(trace_a)
    assert reserved_tokens(record_a, 400) == held_by_a
    assert record_a["tokens"]["total"] == usage_a.total_tokens and record_a["estimated"] is False
    trace_c2, h_c2 = trace()
    with gw.openai() as client:
        raw_c2, _ = chat(client, 600, headers=h_c2)
    est_c2 = reserved_tokens(gw.record(trace_c2), 600)
    assert int(raw_c2.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - usage_a.total_tokens - real_b - est_c2


# ---- (2) reconciliation frees capacity -------------------------------------------------


def test_reconciliation_frees_the_unused_reservation_for_the_next_request(start):
    limit = 1000
    gw = start([{"id": "alice-tpm", "scope": "principal", "tokens_per_window": limit, "window_secs": WINDOW}])
    with gw.openai() as client:
        # r1 reserves almost everything; it really uses a handful of tokens.
        t1, h1 = trace()
        raw1, reply1 = chat(client, 900, headers=h1)
        record1 = gw.record(t1)
        est = reserved_tokens(record1, 900)
        u1 = reply1.usage.total_tokens
        assert int(raw1.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - est
        assert est + est > limit, "without reconciliation the same request again would not fit"

        # r2, the same request: admitted because r1's reservation became its real usage.
        t2, h2 = trace()
        raw2, reply2 = chat(client, 900, headers=h2)
        assert reserved_tokens(gw.record(t2), 900) == est
        assert int(raw2.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - u1 - est
        u2 = reply2.usage.total_tokens

        # Exactly what is left: the same message with a 3-digit max_tokens has the same bytes.
        room = limit - u1 - u2
        input_est = ceil_div(record1["request_bytes"], BYTES_PER_TOKEN)
        fits = room - input_est
        assert 100 <= fits <= 999, fits
        t3, h3 = trace()
        with pytest.raises(openai.RateLimitError) as e:
            chat(client, fits + 1, headers=h3)
        record3 = assert_refused(gw, e.value, t3, "alice-tpm")
        assert record3["request_bytes"] == record1["request_bytes"]
        assert (record3["limit"]["used"], record3["limit"]["requested"]) == (u1 + u2, room + 1)
        t4, h4 = trace()
        raw4, _ = chat(client, fits, headers=h4)
        assert reserved_tokens(gw.record(t4), fits) == room
        assert raw4.headers["x-tollgate-ratelimit-remaining-tokens"] == "0"
    assert [r["body"]["max_tokens"] for r in gw.requests("alpha")] == [900, 900, fits]


# ---- (3) money budget per team ---------------------------------------------------------


def test_team_cost_budget_refuses_once_spent(start):
    budget = 100_000  # micro-USD: $0.10
    # 1000 micro-USD per token, in and out, so a handful of requests spends the budget.
    prices = [{"model": m, "input": 1000, "output": 1000} for m in ("gpt-4o*", "claude-*", "gemini-*")]
    gw = start([{"id": "payments-budget", "scope": "team", "cost_micro_usd_per_window": budget, "window_secs": WINDOW}],
               prices=prices)

    def refusals() -> float:
        return gw.prometheus("tollgate_llm_limit_refusals").get(
            frozenset({("limit", "payments-budget"), ("team", "payments")}), 0)

    spent, admitted, refused = 0, 0, None
    with gw.openai(ALICE) as client:
        for _ in range(30):
            tid, h = trace()
            try:
                _, reply = chat(client, 20, text="what does the budget say", headers=h)
            except openai.RateLimitError as error:
                refused = assert_refused(gw, error, tid, "payments-budget")
                assert error.body["type"] == "cost"
                break
            record = gw.record(tid)
            est = reserved_tokens(record, 20) * 1000
            assert record["reserved"]["cost_micro_usd"] == est
            assert spent + est <= budget, "admitted only while the estimate fits"
            assert record["cost_micro_usd"] == reply.usage.total_tokens * 1000
            spent += record["cost_micro_usd"]
            admitted += 1
    assert refused is not None and admitted >= 2, admitted
    assert (refused["limit"]["dimension"], refused["limit"]["used"]) == ("cost_micro_usd", spent)
    assert spent + refused["limit"]["requested"] > budget >= spent
    assert refused["limit"]["requested"] <= budget, "refused because the budget is spent, not because it is too big"

    # The team's budget is shared: carol (payments) is refused in each client API's shape...
    tid, h = trace()
    with gw.anthropic(CAROL) as claude, pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=40, extra_headers=h,
                               messages=[{"role": "user", "content": "and me?"}])
    assert e.value.status_code == 429 and e.value.body["error"]["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    record = gw.record(tid)
    assert (record["decision"], record["rule_id"], record["identity"]["principal"]) == ("deny", "payments-budget", "carol")
    r = httpx.post(f"{gw.url}/v1beta/models/gemini-2.0-flash:generateContent", headers={"x-goog-api-key": CAROL},
                   json={"contents": [{"parts": [{"text": "me?"}]}], "generationConfig": {"maxOutputTokens": 40}})
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED", r.text
    assert int(r.headers["retry-after"]) >= 1
    # ...while bob's team (research) is untouched.
    with gw.openai(BOB) as client:
        chat(client, 20)
    assert len(gw.requests("alpha")) == admitted + 1
    assert gw.requests("beta") == []
    harness.wait_until(lambda: refusals() == 3, 5, "limit_refusals{limit,team}")
    errors = gw.prometheus("tollgate_llm_errors")
    assert errors.get(frozenset({("team", "payments"), ("model", "gpt-4o-mini"), ("provider", "provider-a"),
                                 ("error_type", "rate_limited")})) == 1


def test_a_request_over_a_cap_by_itself_is_a_400_and_the_gateways_headers_are_its_own(start):
    """Issue 21 item 7: a request whose estimate alone exceeds a cap can never be admitted, in
    any window: 400 in the client API's shape naming the limit, no `Retry-After`, nothing
    counted or forwarded. The gateway's headers (`x-tollgate-ratelimit-*`) never overwrite or
    mix with the provider's `x-ratelimit-*`."""
    limit = 500
    gw = start([{"id": "alice-tpm", "scope": "principal", "tokens_per_window": limit, "window_secs": WINDOW},
                {"id": "payments-rpm", "scope": "team", "requests_per_window": 100, "window_secs": WINDOW}])
    never = f"more than the {limit} tokens allowed"

    tid, h = trace()
    with gw.openai() as client, pytest.raises(openai.BadRequestError) as e:
        chat(client, 1000, headers=h)
    assert e.value.status_code == 400 and "retry-after" not in e.value.response.headers
    assert (e.value.body["type"], e.value.body["code"]) == ("invalid_request_error", "request_exceeds_limit"), e.value.body
    assert "`alice-tpm`" in e.value.body["message"] and never in e.value.body["message"]
    assert "retrying will not help" in e.value.body["message"]
    assert e.value.response.headers["x-tollgate-ratelimit-limit-tokens"] == str(limit)
    record = gw.record(tid)
    assert (record["status"], record["decision"], record["rule_id"], record["error_type"]) == \
        (400, "deny", "alice-tpm", "exceeds_limit"), record
    assert record["limit"]["requested"] == reserved_tokens(record, 1000) > limit

    tid, h = trace()
    with gw.anthropic(ALICE) as claude, pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=1000, extra_headers=h,
                               messages=[{"role": "user", "content": "too much"}])
    assert e.value.body["error"]["type"] == "invalid_request_error" and never in e.value.body["error"]["message"]
    assert "retry-after" not in e.value.response.headers
    assert gw.record(tid)["error_type"] == "exceeds_limit"
    r = httpx.post(f"{gw.url}/v1beta/models/gemini-2.0-flash:generateContent", headers={"x-goog-api-key": ALICE},
                   json={"contents": [{"parts": [{"text": "too much"}]}], "generationConfig": {"maxOutputTokens": 1000}})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", r.text
    assert never in r.json()["error"]["message"] and "retry-after" not in r.headers
    assert all(gw.requests(name) == [] for name in gw.urls), "nothing reached a provider"

    # Nothing was counted: the whole cap is left for a request that fits.
    tid, h = trace()
    with gw.openai() as client:
        raw, reply = chat(client, 100, headers=h)
    est = reserved_tokens(gw.record(tid), 100)
    # The gateway's own limits, under its own names...
    assert raw.headers["x-tollgate-ratelimit-limit-tokens"] == str(limit)
    assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - est
    assert raw.headers["x-tollgate-ratelimit-limit-requests"] == "100"
    assert raw.headers["x-tollgate-ratelimit-remaining-requests"] == "99"
    # ...and the provider's, exactly as the (fake) provider sent them.
    sent = {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "1999800"}
    assert {k: raw.headers.get(k) for k in sent} == sent
    errors = gw.prometheus("tollgate_llm_errors")
    assert errors.get(frozenset({("team", "payments"), ("model", "gpt-4o-mini"), ("provider", "provider-a"),
                                 ("error_type", "exceeds_limit")})) == 1


# ---- (4) streams ------------------------------------------------------------------------


def test_stream_is_reconciled_at_the_end_of_the_stream(start):
    limit = 1000
    gw = start([{"id": "alice-tpm", "scope": "principal", "tokens_per_window": limit, "window_secs": WINDOW}])
    body = {"model": "gpt-4o-mini", "max_tokens": 900, "stream": True,
            "messages": [{"role": "user", "content": "stream to me"}]}
    slow = {"x-fake-chunks": "5", "x-fake-chunk-delay-ms": "400"}

    # The stream reserves ~its max_tokens; include_usage is injected by the gateway.
    ts, hs = trace()
    client = gw.openai()
    stream = client.chat.completions.create(**body, extra_headers={**hs, **slow})
    chunks = iter(stream)
    next(chunks)
    held = limit - int(stream.response.headers["x-tollgate-ratelimit-remaining-tokens"])

    # While it runs, a small request does not fit next to it.
    tq, hq = trace()
    with gw.openai() as other, pytest.raises(openai.RateLimitError) as e:
        chat(other, 100, headers=hq)
    record_q = assert_refused(gw, e.value, tq, "alice-tpm")
    assert record_q["limit"]["used"] == held

    # The stream ends: the usage chunk the gateway asked for carries the real numbers, and the
    # reservation becomes them.
    rest = list(chunks)
    client.close()
    usage = rest[-1].usage
    assert rest[-1].choices == [] and usage is not None
    record_s = gw.record(ts)
    assert reserved_tokens(record_s, 900) == held
    assert record_s["usage_injected"] is True and record_s["estimated"] is False
    assert record_s["tokens"]["total"] == usage.total_tokens
    used = usage.total_tokens
    tq2, hq2 = trace()
    with gw.openai() as other:
        raw, _ = chat(other, 100, headers=hq2)
    est_q = reserved_tokens(gw.record(tq2), 100)
    assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - used - est_q
    used += raw.parse().usage.total_tokens

    # A client that leaves mid-stream: on_log reconciles with the estimate its record shows.
    def incomplete() -> float:
        return gw.prometheus("tollgate_llm_errors").get(frozenset({
            ("team", "payments"), ("model", "gpt-4o-mini"), ("provider", "provider-a"), ("error_type", "incomplete")}), 0)

    ta, ha = trace()
    seen = b""
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=20,
                      headers={**ha, **slow, "authorization": f"Bearer {ALICE}"}) as r:
        for raw_bytes in r.iter_raw():
            seen += raw_bytes
            if b'"content":"Hello' in seen:
                break
    harness.wait_until(lambda: incomplete() == 1, 8, "abandoned stream finished (on_log)")
    record_a = gw.record(ta)
    assert record_a["completed"] is False and record_a["estimated"] is True, record_a
    assert reserved_tokens(record_a, 900) > 900
    tq3, hq3 = trace()
    with gw.openai() as other:
        raw, _ = chat(other, 100, headers=hq3)
    est_q3 = reserved_tokens(gw.record(tq3), 100)
    assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == limit - used - record_a["tokens"]["total"] - est_q3
    assert [r["body"]["max_tokens"] for r in gw.requests("alpha")] == [900, 100, 900, 100]


# ---- unpriced models under a money budget (issue 15 item 5) ------------------------------


def test_unpriced_models_are_refused_or_recorded_as_unpriced(start):
    budget = [{"id": "payments-budget", "scope": "team", "cost_micro_usd_per_window": 10**9, "window_secs": WINDOW}]
    # The shipped config says `"unpriced": "deny"`: claude-3-opus routes (claude-*) but has no price.
    gw = start(budget)
    tid, h = trace()
    with gw.anthropic(ALICE) as claude, pytest.raises(anthropic.PermissionDeniedError) as e:
        claude.messages.create(model="claude-3-opus", max_tokens=10, extra_headers=h,
                               messages=[{"role": "user", "content": "free?"}])
    assert e.value.status_code == 403 and "no price" in e.value.body["error"]["message"]
    record = gw.record(tid)
    assert (record["decision"], record["error_type"], record.get("priced")) == ("deny", "model_not_priced", None)
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {ALICE}"},
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 200, r.text  # priced (gpt-4.1*)
    assert gw.requests("beta") == []
    gw.envoy.stop()

    # `zero`: forwarded, costs nothing against the budget, and the record says it was unpriced.
    gw = start(budget, unpriced="zero")
    tid, h = trace()
    with gw.anthropic(ALICE) as claude:
        msg = claude.messages.create(model="claude-3-opus", max_tokens=10, extra_headers=h,
                                     messages=[{"role": "user", "content": "free?"}])
    record = gw.record(tid)
    assert record["tokens"]["output"] == msg.usage.output_tokens > 0
    assert record["priced"] is False and "cost_micro_usd" not in record, record
    assert record["reserved"].get("cost_micro_usd") is None, record
    tid, h = trace()
    with gw.openai(ALICE) as client:
        chat(client, 5, headers=h)
    assert gw.record(tid)["priced"] is True
