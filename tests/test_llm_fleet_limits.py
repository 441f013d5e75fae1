"""Fleet-wide LLM limits end to end (issue 15): real `openai` / `anthropic` SDKs (max_retries=0)
-> TWO real Envoy 1.40 processes with dist/tollgate_llm.wasm (the shipped envoy/llm-fleet.yaml,
plugin `limits` replaced per test) -> the fake providers; both Envoys count in ONE real
`tollgate-limits` (target/release, `make limits-service`) on ONE real `redis-server`
(`make redis`; appendonly yes, in a temporary directory, on a free port).

The reservation rule is the per-Envoy one (tests/test_llm_limits.py), now in the store:

  estimate = ceil(request bytes / 4) + max_tokens        (request bytes: the audit record's)

reserved at admission (all or nothing, atomically in Redis), settled to the real usage when the
request ends (Tollgate's `Settle`, sent by each Envoy's root context on a 100 ms tick: the tests
wait for the Redis counter to show it, never for a guessed time). Every number is derived, never
hard-coded. Each test has its own Redis and service, so counters start empty; the Redis keys are
`tollgate:tollgate|limit=llm.<id>.<requests|tokens|cost>|subject=<team/key>|window=<w>@<window id>`
(docs/limits-protocol.md), read through tests/limits_store.py.
"""
from __future__ import annotations

import calendar
import concurrent.futures
import datetime as dt
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

import harness
import limits_store
from llm_limits_helpers import BYTES_PER_TOKEN, assert_openai_refusal, chat, reserved_tokens, trace

pytestmark = pytest.mark.timeout(150)

ALICE = "tg-demo-alice"  # alice-key, team payments (shipped config)
BOB = "tg-demo-bob"  # bob-key, team research (shipped config)
CAROL = "tg-test-carol"  # carol-key, team payments (added here)
# 1000 micro-USD per token in and out: a handful of requests spends a small budget.
PRICES = [{"model": m, "input": 1000, "output": 1000} for m in ("gpt-4o*", "claude-*", "gemini-*")]


# ---- Redis and tollgate-limits (tests/limits_store.py) ------------------------------------


class Redis(limits_store.Redis):
    """The test's own redis-server (append-only, temporary directory), read by LLM counter names."""

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.start()

    def llm_keys(self, limit_id: str, dimension: str, subject: str | None = None) -> list[str]:
        return self.keys(f"tollgate:tollgate|limit=llm.{limit_id}.{dimension}|subject={subject or '*'}|*")

    def counter(self, limit_id: str, dimension: str, subject: str | None = None) -> int:
        """The one counter of a limit's dimension and subject (one window in these tests)."""
        keys = self.llm_keys(limit_id, dimension, subject)
        assert len(keys) <= 1, keys
        return (self.get(keys[0]) or 0) if keys else 0

    def wait_counter(self, limit_id: str, dimension: str, value: int, subject: str | None = None,
                     timeout: float = 5) -> None:
        """Settlements are sent on the Envoys' 100 ms tick: wait for the counter to show them."""
        try:
            harness.wait_until(lambda: self.counter(limit_id, dimension, subject) == value, timeout,
                               f"{limit_id}.{dimension} == {value}")
        except TimeoutError:
            raise AssertionError(f"{limit_id}.{dimension}: {self.counter(limit_id, dimension, subject)} != {value}")


class LimitsService(limits_store.LimitsService):
    """`tollgate-limits` on a fixed free port (Envoy's cluster points there across restarts)."""

    def __init__(self, workdir: Path, redis: Redis, start: bool = True):
        super().__init__(workdir, redis.url)
        if start:
            self.start()


@pytest.fixture
def redis(tmp_path, request):
    r = Redis(tmp_path)
    yield r
    r.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(r.proc.log_tail(40))


@pytest.fixture
def service_factory(tmp_path, redis, request):
    started: list[LimitsService] = []

    def make(start: bool = True) -> LimitsService:
        s = LimitsService(tmp_path, redis, start)
        started.append(s)
        return s

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for s in started:
        s.stop()
        if failed and s.proc is not None:
            print(s.proc.log_tail(40))


@pytest.fixture
def service(service_factory):
    return service_factory()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm-fleet")
    started: list[harness.Proc] = []
    try:
        yield harness.start_fake_providers(workdir, started)
    finally:
        for proc in reversed(started):
            proc.stop()


# ---- Envoys ------------------------------------------------------------------------------


class Gateway:
    """One Envoy of the fleet."""

    def __init__(self, envoy: harness.Envoy, urls: dict[str, str]):
        self.envoy = envoy
        self.url = envoy.url
        self.urls = urls

    def record(self, trace_id: str) -> dict:
        return self.envoy.wait_audit(1, 8, where=lambda r: r.get("trace_id") == trace_id)[-1]

    def openai(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)

    def anthropic(self, key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=30)

    def stop(self) -> None:
        self.envoy.stop()


class Fleet:
    """Starts Envoys from envoy/llm-fleet.yaml, all pointing at one tollgate-limits."""

    def __init__(self, procs, fakes, service: LimitsService):
        self.procs, self.service = procs, service
        self.urls, self.ports = fakes
        self.started = 0

    def provider_requests(self, name: str = "alpha") -> list[dict]:
        return httpx.get(f"{self.urls[name]}/_fake/requests", timeout=5).json()

    def start(self, limits: list[dict], store: dict | None = None, concurrency: int = 1, **overrides) -> Gateway:
        cfg = harness.plugin_config(harness.load_envoy_config("llm-fleet.yaml"), "tollgate.llm")
        assert cfg["store"]["cluster"] == "tollgate_limits"
        cfg["identity"]["api_keys"]["keys"].append(
            {"name": "carol-key", "principal": "carol", "team": "payments",
             "sha256": hashlib.sha256(CAROL.encode()).hexdigest()})
        cfg["limits"] = limits
        cfg["store"].update(store or {})
        cfg.update(overrides)
        assert cfg.get("estimate_bytes_per_token", BYTES_PER_TOKEN) == BYTES_PER_TOKEN
        self.started += 1
        envoy = self.procs.envoy("llm-fleet.yaml", name=f"envoy-{self.started}-", concurrency=concurrency,
                                 upstreams={**self.ports, "tollgate_limits": self.service.port},
                                 plugin_configs={"tollgate.llm": cfg})
        return Gateway(envoy, self.urls)


@pytest.fixture
def fleet(procs, fakes, service):
    for url in fakes[0].values():
        httpx.post(f"{url}/_fake/reset", timeout=5)
    return Fleet(procs, fakes, service)


# ---- (1) two Envoys, one team budget -------------------------------------------------------


def test_two_envoys_share_one_team_budget_and_stop_at_the_cap(fleet, redis):
    budget = 150_000  # micro-USD
    limits = [{"id": "team-budget", "scope": "team", "cost_micro_usd_per_window": budget, "window": "month",
               "on_store_failure": "fail_closed"}]
    a = fleet.start(limits, prices=PRICES)
    b = fleet.start(limits, prices=PRICES)

    # A Gemini stream, its key in the query: after the store's answer the filter still
    # rewrites the path (key removed), sets the provider's credential and routes it.
    tid, h = trace()
    r = httpx.post(f"{b.url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={CAROL}", headers=h,
                   json={"contents": [{"parts": [{"text": "hello fleet"}]}], "generationConfig": {"maxOutputTokens": 20}},
                   timeout=20)
    assert r.status_code == 200 and r.text.startswith("data: "), r.text
    [seen] = fleet.provider_requests("beta")
    assert (seen["path"], seen["query"]) == ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", "alt=sse"), seen
    assert seen["headers"].get("x-goog-api-key") == "sk-demo-provider-b", seen["headers"]
    record = b.record(tid)
    assert (record["decision"], record["api"], record["stream"]) == ("allow", "gemini", True), record
    assert record["reserved"]["cost_micro_usd"] == reserved_tokens(record, 20) * 1000
    spent = record["cost_micro_usd"]
    assert 0 < spent < record["reserved"]["cost_micro_usd"]
    redis.wait_counter("team-budget", "cost", spent, "payments")

    # alice on A and carol on B (both payments) take turns; each request's estimate is
    # reserved in the one store, and settled to its real cost there when it ends.
    admitted, refused = 0, None
    turn = [(a, ALICE), (b, CAROL)]
    for i in range(40):
        gw, key = turn[i % 2]
        tid, h = trace()
        try:
            with gw.openai(key) as client:
                _, reply = chat(client, 20, text="what does the shared budget say", headers=h)
        except openai.RateLimitError as error:
            refused = (gw, assert_openai_refusal(gw, error, tid, "team-budget"))
            assert error.body["type"] == "cost"
            break
        record = gw.record(tid)
        est = reserved_tokens(record, 20) * 1000
        assert record["reserved"]["cost_micro_usd"] == est
        assert spent + est <= budget, "admitted only while the estimate fits the fleet-wide spend"
        assert record["cost_micro_usd"] == reply.usage.total_tokens * 1000
        assert record.get("limits_degraded") is not True
        spent += record["cost_micro_usd"]
        admitted += 1
        # The unused part of the reservation comes back through Settle.
        redis.wait_counter("team-budget", "cost", spent, "payments")
    assert refused is not None and admitted >= 4, admitted
    gw_refused, record = refused
    assert (record["limit"]["dimension"], record["limit"]["used"]) == ("cost_micro_usd", spent)
    assert spent + record["limit"]["requested"] > budget >= spent
    assert record["limit"]["requested"] <= budget, "refused because the budget is spent, not because it is too big"
    per_envoy = [len([r for r in gw.envoy.audit_records() if r.get("decision") == "allow"]) for gw in (a, b)]
    assert min(per_envoy) >= 2, f"both Envoys admitted requests: {per_envoy}"
    assert len(fleet.provider_requests("alpha")) == admitted

    # Both Envoys refuse now, in each client API's shape, with Retry-After until the month ends
    # (the Anthropic request asks more output than the OpenAI one that no longer fit).
    now = dt.datetime.now(dt.timezone.utc)
    next_month = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    until_month_end = (next_month - now).total_seconds()
    other = b if gw_refused is a else a
    tid, h = trace()
    with other.anthropic(CAROL if other is b else ALICE) as claude, pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=60, extra_headers=h,
                               messages=[{"role": "user", "content": "and me?"}])
    assert e.value.status_code == 429 and e.value.body["error"]["type"] == "rate_limit_error", e.value.body
    assert abs(int(e.value.response.headers["retry-after"]) - until_month_end) <= 5, e.value.response.headers
    record = other.record(tid)
    assert (record["decision"], record["rule_id"], record["limit"]["used"]) == ("deny", "team-budget", spent)
    assert spent + record["limit"]["requested"] > budget
    tid, h = trace()
    with other.openai(ALICE if other is a else CAROL) as client, pytest.raises(openai.RateLimitError) as e:
        chat(client, 20, text="what does the shared budget say", headers=h)
    assert_openai_refusal(other, e.value, tid, "team-budget")
    assert abs(int(e.value.response.headers["retry-after"]) - until_month_end) <= 5

    # Nothing refused reached a provider; the counter is the spend, refusals counted nothing.
    assert len(fleet.provider_requests("alpha")) == admitted
    assert len(fleet.provider_requests("beta")) == 1, "only the Gemini stream"
    assert redis.counter("team-budget", "cost", "payments") == spent
    [key] = redis.llm_keys("team-budget", "cost", "payments")
    assert key == f"tollgate:tollgate|limit=llm.team-budget.cost|subject=payments|window=month@{now:%Y-%m}", key
    # bob's team is counted apart.
    with a.openai(BOB) as client:
        chat(client, 20)


# ---- (2) restarts keep the spend -----------------------------------------------------------


def test_restarting_an_envoy_the_service_or_redis_keeps_the_spend(fleet, redis, service):
    cap = 100_000  # tokens
    limits = [{"id": "alice-tokens", "scope": "key", "tokens_per_window": cap, "window": "month"}]
    spent = 0

    def request(gw: Gateway) -> None:
        """One request; the remaining tokens it is told count everything spent before it."""
        nonlocal spent
        tid, h = trace()
        with gw.openai() as client:
            raw, reply = chat(client, 50, headers=h)
        est = reserved_tokens(gw.record(tid), 50)
        assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == cap - spent - est, (spent, est)
        spent += reply.usage.total_tokens
        redis.wait_counter("alice-tokens", "tokens", spent)

    def admitted_again(gw: Gateway) -> bool:
        # While the store cannot answer, fail_closed refuses (429 "cannot be checked").
        try:
            request(gw)
            return True
        except openai.RateLimitError as error:
            assert "cannot be checked" in error.body["message"], error.body
            return False

    a = fleet.start(limits)
    request(a)
    request(a)
    # An Envoy restart (stop, then a new process): the spend is still there.
    a.stop()
    a = fleet.start(limits)
    request(a)
    # A second Envoy sees the same spend.
    b = fleet.start(limits)
    request(b)
    # tollgate-limits restarted (same port): stateless, nothing lost.
    service.stop()
    service.start()
    harness.wait_until(lambda: admitted_again(b), 15, "admitted after the service restart")
    # Redis restarted: the append-only file brings the counters back; the service reconnects.
    before = redis.counter("alice-tokens", "tokens")
    redis.stop()
    redis.start()
    assert redis.counter("alice-tokens", "tokens") == before == spent
    harness.wait_until(lambda: admitted_again(a), 15, "admitted after the Redis restart")
    request(b)
    assert len(fleet.provider_requests("alpha")) == 7


# ---- (3) concurrency: all or nothing, then reconciliation ----------------------------------


def test_parallel_streams_admit_exactly_what_fits_and_return_the_unused_part(fleet, redis):
    n = 8
    per_request = 1000
    cap = (n - 2) * per_request  # tokens: fits exactly n - 2 estimates of per_request
    limits = [{"id": "team-tpm", "scope": "team", "tokens_per_window": cap, "window": "month"}]
    # Two workers each: every worker's VM queues and flushes its own settlements.
    a = fleet.start(limits, concurrency=2)
    b = fleet.start(limits, concurrency=2)
    text = "stream to me, all of you"

    # Calibrate with bob (team research: his own counter): the input estimate of this exact
    # body; any 3-digit max_tokens gives the same request bytes.
    tid, h = trace()
    with a.openai(BOB) as client:
        list(client.chat.completions.create(model="gpt-4o-mini", max_tokens=100, stream=True, extra_headers=h,
                                            messages=[{"role": "user", "content": text}]))
    input_est = reserved_tokens(a.record(tid), 100) - 100
    max_tokens = per_request - input_est
    assert 100 <= max_tokens <= 999, max_tokens

    # n streams at once, spread over both Envoys; each admitted one stays open ~3 s, so every
    # admission is decided while the admitted hold their reservations.
    slow = {"x-fake-chunks": "6", "x-fake-chunk-delay-ms": "500"}
    barrier = threading.Barrier(n)
    results: list[dict] = [{} for _ in range(n)]

    def one(i: int) -> None:
        gw = (a, b)[i % 2]
        tid, h = trace()
        results[i]["gw"], results[i]["trace"] = gw, tid
        client = gw.openai(ALICE if i % 2 == 0 else CAROL)
        try:
            barrier.wait(timeout=10)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", max_tokens=max_tokens, stream=True, extra_headers={**h, **slow},
                messages=[{"role": "user", "content": text}])
            chunks = list(stream)
            results[i]["usage"] = chunks[-1].usage.total_tokens
            results[i]["ended"] = time.monotonic()
        except openai.RateLimitError as error:
            results[i]["refused"] = error
            results[i]["refused_at"] = time.monotonic()
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        # While the admitted streams run, their reservations fill the cap exactly.
        harness.wait_until(lambda: sum("refused" in r for r in results) == 2 and redis.counter("team-tpm", "tokens", "payments") == cap,
                           10, "2 refusals and the cap reserved")
        assert not any("ended" in r for r in results), "every admission was decided while the others streamed"
        for f in futures:
            f.result()

    admitted = [r for r in results if "usage" in r]
    refused = [r for r in results if "refused" in r]
    assert (len(admitted), len(refused)) == (n - 2, 2)
    assert max(r["refused_at"] for r in refused) < min(r["ended"] for r in admitted)
    for r in refused:
        record = assert_openai_refusal(r["gw"], r["refused"], r["trace"], "team-tpm")
        assert record["limit"]["requested"] == per_request
        assert record["limit"]["used"] == cap, "the admitted hold every token of the cap"
    for r in admitted:
        record = r["gw"].record(r["trace"])
        assert reserved_tokens(record, max_tokens) == per_request
        assert record["tokens"]["total"] == r["usage"] and record["estimated"] is False
        assert record["usage_injected"] is True, "the body rewrite after the store's answer reached the provider"
    assert len([p for p in fleet.provider_requests("alpha") if p["body"]["max_tokens"] == max_tokens]) == n - 2

    # Reconciliation returned the unused part of every reservation: the counter is the real usage.
    used = sum(r["usage"] for r in admitted)
    assert used < cap // 10
    redis.wait_counter("team-tpm", "tokens", used, "payments")
    # ...so the same request fits again, and is told what is left.
    tid, h = trace()
    with b.openai(CAROL) as client:
        raw, _ = chat(client, max_tokens, text=text, headers=h)
    assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == cap - used - reserved_tokens(b.record(tid), max_tokens)


# ---- (4) store down: fail_closed refuses, fail_open_local counts locally -------------------


def test_store_down_fail_closed_refuses_and_fail_open_local_counts_locally(fleet, redis, service):
    local_cap = 3  # requests per window, while counted locally
    limits = [
        {"id": "gpt-budget", "scope": "team", "models": ["gpt-*"], "tokens_per_window": 100_000,
         "window": "month", "on_store_failure": "fail_closed"},
        {"id": "claude-rpm", "scope": "key", "models": ["claude-*"], "requests_per_window": local_cap,
         "window": "month", "on_store_failure": "fail_open_local"},
    ]
    a = fleet.start(limits)

    def claude(key: str = ALICE) -> tuple[str, object]:
        tid, h = trace()
        with a.anthropic(key) as client:
            reply = client.messages.create(model="claude-haiku-4-5", max_tokens=20, extra_headers=h,
                                           messages=[{"role": "user", "content": "hello"}])
        return tid, reply

    # With the store up: both counted there.
    tid, _ = claude()
    assert a.record(tid).get("limits_degraded") is not True
    with a.openai() as client:
        chat(client, 20)
    redis.wait_counter("claude-rpm", "requests", 1, "alice-key")
    assert redis.counter("gpt-budget", "requests") == 0 and redis.counter("gpt-budget", "tokens") > 0

    service.stop()
    alpha_before = len(fleet.provider_requests("alpha"))
    # fail_closed: refused in OpenAI's shape and in Anthropic's, nothing forwarded.
    tid, h = trace()
    with a.openai() as client, pytest.raises(openai.RateLimitError) as e:
        chat(client, 20, headers=h)
    record = assert_openai_refusal(a, e.value, tid, "gpt-budget")
    assert "cannot be checked" in e.value.body["message"]
    assert record["limit"]["unavailable"] is True
    assert len(fleet.provider_requests("alpha")) == alpha_before

    # fail_open_local: the Claude limit keeps working on this Envoy's counters (which start at
    # 0: the store's count is not known here), and every such record says so.
    beta_before = len(fleet.provider_requests("beta"))
    for _ in range(local_cap):
        tid, reply = claude()
        record = a.record(tid)
        assert (record["decision"], record["status"], record["limits_degraded"]) == ("allow", 200, True), record
        assert reply.usage.output_tokens > 0
    tid, h = trace()
    with a.anthropic(ALICE) as client, pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="claude-haiku-4-5", max_tokens=20, extra_headers=h,
                               messages=[{"role": "user", "content": "one more"}])
    assert e.value.status_code == 429 and e.value.body["error"]["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    record = a.record(tid)
    assert (record["rule_id"], record["limit"]["used"], record["limits_degraded"]) == ("claude-rpm", local_cap, True), record
    assert len(fleet.provider_requests("beta")) == beta_before + local_cap
    # bob's key has its own local counter.
    tid, _ = claude(BOB)
    assert a.record(tid)["limits_degraded"] is True
    # The store never heard of the degraded requests.
    assert redis.counter("claude-rpm", "requests", "alice-key") == 1

    # The store is back: counted there again, not degraded.
    service.start()
    tid, _ = claude()
    assert a.record(tid).get("limits_degraded") is not True
    redis.wait_counter("claude-rpm", "requests", 2, "alice-key")


# ---- (5) a slow store: timeout_ms, then the failure policy ----------------------------------


def test_slow_store_times_out_into_the_failure_policy(fleet, redis, service):
    timeout_ms = 300
    limits = [
        {"id": "gpt-budget", "scope": "team", "models": ["gpt-*"], "tokens_per_window": 100_000,
         "window": "month", "on_store_failure": "fail_closed"},
        {"id": "claude-rpm", "scope": "key", "models": ["claude-*"], "requests_per_window": 100,
         "window": "month", "on_store_failure": "fail_open_local"},
    ]
    a = fleet.start(limits, store={"timeout_ms": timeout_ms})
    with a.openai() as client:
        chat(client, 20)  # the store answers; Envoy's HTTP/2 connection to it is open
    alpha_before = len(fleet.provider_requests("alpha"))

    # The service hangs (SIGSTOP): its connection stays open, nothing answers.
    os.kill(service.proc.pid, signal.SIGSTOP)
    try:
        tid, h = trace()
        started = time.monotonic()
        with a.openai() as client, pytest.raises(openai.RateLimitError) as e:
            chat(client, 20, headers=h)
        waited = time.monotonic() - started
        assert timeout_ms / 1000 <= waited < timeout_ms / 1000 + 3, waited
        assert_openai_refusal(a, e.value, tid, "gpt-budget")
        assert "cannot be checked" in e.value.body["message"]
        assert len(fleet.provider_requests("alpha")) == alpha_before, "nothing forwarded"

        tid, h = trace()
        started = time.monotonic()
        with a.anthropic(ALICE) as client:
            client.messages.create(model="claude-haiku-4-5", max_tokens=20, extra_headers=h,
                                   messages=[{"role": "user", "content": "hello"}])
        assert time.monotonic() - started >= timeout_ms / 1000
        record = a.record(tid)
        assert (record["decision"], record["limits_degraded"]) == ("allow", True), record
    finally:
        os.kill(service.proc.pid, signal.SIGCONT)


# ---- (6) a month budget resets at the first second of the month ---------------------------


def next_month_start_ms(now_ms: int) -> int:
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc)
    nxt = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return calendar.timegm(nxt.timetuple()) * 1000


def test_month_budget_resets_at_the_first_second_of_the_month(fleet, redis, service_factory):
    # The Envoys start first (they count nothing by themselves), then the service with its
    # clock 4 s before the next UTC month starts.
    limits = [{"id": "month-requests", "scope": "team", "requests_per_window": 1, "window": "month"}]
    fleet.service = service = service_factory(start=False)
    a = fleet.start(limits)
    b = fleet.start(limits)
    boundary = next_month_start_ms(int(time.time() * 1000))
    offset = service.clock_offset_ms = boundary - 4000 - int(time.time() * 1000)
    service.start()

    def store_now_ms() -> int:
        return int(time.time() * 1000) + offset

    with a.openai() as client:
        chat(client, 20)
    tid, h = trace()
    with b.openai(CAROL) as client, pytest.raises(openai.RateLimitError) as e:
        chat(client, 20, headers=h)
    refused_at = store_now_ms()
    assert refused_at < boundary, "the test machine was too slow for the 4 s before the month ends"
    assert_openai_refusal(b, e.value, tid, "month-requests")
    retry_after = int(e.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 5 and abs(retry_after - (boundary - refused_at) / 1000) <= 1.5, retry_after

    # The first second of the new month: admitted again.
    harness.wait_until(lambda: store_now_ms() >= boundary + 100, 10, "the service clock passes the month boundary")
    tid, h = trace()
    with b.openai(CAROL) as client:
        chat(client, 20, headers=h)
    assert b.record(tid)["decision"] == "allow"
    # One counter per month, each at the cap of 1.
    old = dt.datetime.fromtimestamp((boundary - 1) / 1000, dt.timezone.utc)
    new = dt.datetime.fromtimestamp(boundary / 1000, dt.timezone.utc)
    prefix = "tollgate:tollgate|limit=llm.month-requests.requests|subject=payments|window=month@"
    assert redis.llm_keys("month-requests", "requests") == [f"{prefix}{old:%Y-%m}", f"{prefix}{new:%Y-%m}"]
    assert [redis.command("GET", k) for k in redis.llm_keys("month-requests", "requests")] == ["1", "1"]


# ---- (7) a plain rate-limit service: counting, no refunds ----------------------------------


def test_envoy_rls_protocol_counts_without_refunds(fleet, redis):
    cap = 100_000
    limits = [{"id": "rls-tokens", "scope": "key", "tokens_per_window": cap, "window": "month"}]
    a = fleet.start(limits, store={"protocol": "envoy_rls"})
    reserved = 0
    for _ in range(2):
        tid, h = trace()
        with a.openai() as client:
            raw, reply = chat(client, 300, headers=h)
        record = a.record(tid)
        est = reserved_tokens(record, 300)
        assert record["tokens"]["total"] == reply.usage.total_tokens < est
        assert int(raw.headers["x-tollgate-ratelimit-remaining-tokens"]) == cap - reserved - est, "no refund of the first"
        reserved += est
    # A refund would arrive within a few 100 ms ticks; none is ever sent with envoy_rls.
    time.sleep(0.5)
    assert redis.counter("rls-tokens", "tokens") == reserved
    assert redis.counter("rls-tokens", "requests") == 0


# ---- (8) usage above the estimate: settled over the cap, reported as an overshoot ---------


def test_usage_above_the_estimate_is_settled_over_the_cap_and_reported(fleet, redis):
    # No max_tokens and a default of 5 output tokens: the estimate is ~the input; the fake
    # provider writes 60 words, so the real usage is well above the estimate.
    overrides = {"default_max_output_tokens": 5}
    words = {"x-fake-chunks": "60"}
    text = "estimate me low"

    def ask(gw: Gateway, key: str = ALICE) -> tuple[dict, int, dict]:
        tid, h = trace()
        with gw.openai(key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}], extra_headers={**h, **words})
        reply = raw.parse()
        record = gw.record(tid)
        return record, reply.usage.total_tokens, raw.headers

    # Calibration with bob (team research, his own counter): this body's estimate and real usage.
    limits = [{"id": "team-tokens", "scope": "team", "tokens_per_window": 1_000_000, "window": "month"}]
    a = fleet.start(limits, **overrides)
    record, real, _ = ask(a, BOB)
    est = reserved_tokens(record, 5)
    assert real > est, (real, est)
    a.stop()

    # The cap fits the first request's real usage plus the second's estimate, exactly (a cap
    # change keeps the counter: the cap is not part of its identity).
    cap = real + est
    a = fleet.start([{**limits[0], "tokens_per_window": cap}], **overrides)
    record1, real1, _ = ask(a)
    assert (record1["reserved"]["tokens"], record1["tokens"]["total"], real1) == (est, real, real)
    assert record1.get("limits_overshot") in (None, []), record1
    redis.wait_counter("team-tokens", "tokens", real, "payments")  # the overage was added

    record2, real2, headers2 = ask(a)
    assert headers2["x-tollgate-ratelimit-remaining-tokens"] == "0", "admitted exactly at the cap"
    assert record2["limits_overshot"] == ["team-tokens"], record2
    redis.wait_counter("team-tokens", "tokens", real + real2, "payments")  # over the cap: it happened
    overshoots = [line for line in a.envoy.prometheus().splitlines()
                  if line.startswith("tollgate_llm_limit_overshoots{") and 'limit="team-tokens"' in line]
    assert overshoots and overshoots[0].endswith(" 1"), overshoots

    tid, h = trace()
    with a.openai(CAROL) as client, pytest.raises(openai.RateLimitError) as e:
        chat(client, 5, text=text, headers=h)
    record3 = assert_openai_refusal(a, e.value, tid, "team-tokens")
    # The store reports what is left (never below 0), so a counter over its cap reads as full.
    assert record3["limit"]["used"] == cap < real + real2
