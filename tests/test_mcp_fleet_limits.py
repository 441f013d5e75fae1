"""MCP rate limits counted fleet-wide (issue 15, the MCP half): TWO Envoy 1.40 processes with the
shipped envoy/mcp.yaml and dist/tollgate_mcp.wasm, both pointed at one real `tollgate-limits` on
one real `redis-server` (tests/limits_store.py), in front of one real `mcp` SDK server
(examples/mcp_server), driven by the real `mcp` SDK client.

    make build limits-service redis
    .venv/bin/python -m pytest tests/test_mcp_fleet_limits.py -q

The plugin config adds `store` and two fleet limits per principal: `fleet-burst` (add, 4 calls,
`fail_closed`) and `fleet-open` (echo, 3 calls, `fail_open_local`); the shipped
`tools-per-principal` limit stays on this Envoy's counters (`counters: local`). Whether a call
reached the MCP server is read from the server's own per-tool counters (GET /_calls); the store's
count from Redis itself. Each test uses its own principal, so counters never meet. Windows are
fixed 600 s windows aligned to the clock; a test waits for a fresh one when fewer than 45 s are
left.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import harness
import limits_store
from test_mcp import ROOT_ID, SHIPPED_PLUGIN, audit_for

pytestmark = pytest.mark.timeout(240)

WINDOW = 600
BURST = {"id": "fleet-burst", "principals": ["*"], "tools": ["add"], "max_calls": 4, "window_secs": WINDOW,
         "per": "principal", "counters": "fleet", "on_store_failure": "fail_closed"}
OPEN = {"id": "fleet-open", "principals": ["*"], "tools": ["echo"], "max_calls": 3, "window_secs": WINDOW,
        "per": "principal", "counters": "fleet", "on_store_failure": "fail_open_local"}
RATE_LIMITED = -31429
PRINCIPALS = ("spread", "burst", "restart", "survivor", "closed", "open", "nocluster")
KEYS = {name: f"tg-fleet-{name}" for name in PRINCIPALS}


def plugin(store: bool = True) -> dict:
    cfg = copy.deepcopy(SHIPPED_PLUGIN)
    cfg["rate_limits"] = [dict(limit, counters="local") for limit in cfg["rate_limits"]] + [
        copy.deepcopy(BURST), copy.deepcopy(OPEN)]
    if store:
        cfg["store"] = {"cluster": limits_store.CLUSTER, "timeout_ms": 200}
    cfg["identity"]["api_keys"]["keys"].extend(
        {"sha256": hashlib.sha256(secret.encode()).hexdigest(), "name": f"{name}-fleet", "principal": name}
        for name, secret in KEYS.items())
    return cfg


class Fleet:
    """The store, the MCP server and two Envoys (A and B) sharing both."""

    def __init__(self, workdir, store: limits_store.LimitsStore, server_port: int):
        self.workdir = workdir
        self.store = store
        self.server_port = server_port
        self.config = limits_store.add_store_cluster(harness.load_envoy_config("mcp.yaml"), store.port)
        self.envoys: dict[str, harness.Envoy] = {}
        self.started = 0

    def start_envoy(self, which: str) -> harness.Envoy:
        self.started += 1
        envoy = harness.Envoy(self.config, self.workdir, name=f"envoy-{which}-{self.started}",
                              upstreams={"mcp_demo": self.server_port}, plugin_configs={ROOT_ID: plugin()})
        self.envoys[which] = envoy
        return envoy

    def restart_envoy(self, which: str) -> harness.Envoy:
        self.envoys.pop(which).stop()
        return self.start_envoy(which)

    @property
    def a(self) -> harness.Envoy:
        return self.envoys["a"]

    @property
    def b(self) -> harness.Envoy:
        return self.envoys["b"]

    def calls(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.server_port}/_calls", timeout=5).json()

    def reset_calls(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.server_port}/_calls/reset", timeout=5).raise_for_status()

    def counted(self, limit: str, who: str) -> int:
        """The store's count (Redis) of `limit` for principal `who`."""
        return self.store.total(domain="tollgate", limit=f"mcp.{limit}", subject=f"{limit}.{who}")

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp-fleet")
    store = limits_store.LimitsStore(workdir)
    server = None
    fleet = None
    try:
        store.start()
        port = harness.free_port()
        server = harness.python_server("mcp-json", "examples/mcp_server/server.py",
                                       ["--host", "127.0.0.1", "--port", str(port), "--json-response"],
                                       workdir, f"http://127.0.0.1:{port}/_calls")
        fleet = Fleet(workdir, store, port)
        fleet.start_envoy("a")
        fleet.start_envoy("b")
        yield fleet
    finally:
        if fleet is not None:
            fleet.stop()
        if server is not None:
            server.stop()
        store.stop()


@pytest.fixture
def healthy_store(fleet):
    """Whatever a test did to the store, the next test finds it running and SERVING."""
    yield fleet.store
    for part in (fleet.store.redis, fleet.store.service):
        if not part.running:
            part.start()
    fleet.store.service.wait_serving()


# --- helpers ---------------------------------------------------------------------------------

def fresh_window(need: float = 45.0) -> None:
    left = WINDOW - time.time() % WINDOW
    if left < need:
        time.sleep(left + 0.3)


async def sessions(urls: list[str], who: str, actions, mode: str = "legacy"):
    """One real SDK client session per URL (one per Envoy), all open at once; `actions` gets them."""
    async with httpx2.AsyncClient(headers={"x-api-key": KEYS[who]}, timeout=20) as http:
        clients = [Client(streamable_http_client(url, http_client=http), mode=mode) for url in urls]
        entered = []
        try:
            for c in clients:
                entered.append(await c.__aenter__())
            return await actions(*entered)
        finally:
            for c in reversed(entered):
                await c.__aexit__(None, None, None)


def through(envoys: list[harness.Envoy], who: str, actions, mode: str = "legacy"):
    return asyncio.run(sessions([e.url + "/mcp" for e in envoys], who, actions, mode))


async def attempt(client, tool: str, arguments: dict) -> Any:
    """The call's result, or the MCPError it raised."""
    try:
        return await client.call_tool(tool, arguments)
    except MCPError as e:
        return e


def admitted(outcome: Any) -> bool:
    return not isinstance(outcome, MCPError) and not outcome.is_error


def assert_refused(outcome: Any, limit_id: str, max_retry: int = WINDOW) -> int:
    """The SDK raised the gateway's JSON-RPC rate-limit error naming `limit_id`; returns its
    retry_after_secs."""
    assert isinstance(outcome, MCPError), outcome
    assert outcome.code == RATE_LIMITED, (outcome.code, outcome.message)
    assert outcome.data["limit_id"] == limit_id, outcome.data
    retry = outcome.data["retry_after_secs"]
    assert 1 <= retry <= max_retry, retry
    return retry


def records_of(envoy: harness.Envoy, who: str, tool: str) -> list[dict]:
    return [r for r in envoy.audit_records()
            if r.get("tool") == tool and (r.get("identity") or {}).get("principal") == who]


# --- tests -----------------------------------------------------------------------------------

def test_calls_spread_across_two_envoys_stop_at_the_fleet_limit(fleet):
    """3 calls through A, then B admits only the 4th: B saw A's count. The 5th and later, on
    either Envoy, get -31429 naming the limit and never reach the server; Redis holds 4."""
    fresh_window()
    fleet.reset_calls()

    async def actions(a, b):
        first = [await attempt(a, "add", {"a": 1, "b": i}) for i in range(3)]
        fourth = await attempt(b, "add", {"a": 1, "b": 3})
        left = WINDOW - time.time() % WINDOW
        over = [await attempt(b, "add", {"a": 9, "b": 9}), await attempt(a, "add", {"a": 9, "b": 9}),
                await attempt(b, "add", {"a": 9, "b": 9})]
        other_tool = await attempt(a, "echo", {"text": "still fine"})
        return first, fourth, left, over, other_tool

    first, fourth, left, over, other_tool = through([fleet.a, fleet.b], "spread", actions)

    assert [r.structured_content for r in first] == [{"result": 1}, {"result": 2}, {"result": 3}]
    assert admitted(fourth) and fourth.structured_content == {"result": 4}
    for outcome in over:
        retry = assert_refused(outcome, "fleet-burst")
        assert abs(retry - left) <= 3, (retry, left)
    assert over[0].message == "Rate limited: tools/call add (limit fleet-burst)"
    assert admitted(other_tool), "another limit's counter is its own"
    assert fleet.calls() == {"add": 4, "echo": 1}, "nothing refused was forwarded"
    assert fleet.counted("fleet-burst", "spread") == 4
    [counter] = fleet.store.counters(limit="mcp.fleet-burst", subject="fleet-burst.spread")
    assert counter.entries["window"] == f"{WINDOW}s"
    assert counter.window_id == str(int(time.time()) // WINDOW)

    refused = audit_for(fleet.b, tool="add", decision="deny")
    assert (refused["reason"], refused["rule_id"], refused["status"], refused["enforced"]) == (
        "rate_limited", "fleet-burst", 429, True)
    assert refused["identity"]["principal"] == "spread"
    assert "limits_degraded" not in refused
    # Envoy flushes its access log every 50 ms: wait for A's four records.
    harness.wait_until(lambda: len(records_of(fleet.a, "spread", "add")) >= 4, 5, "A's four records")
    a_records = records_of(fleet.a, "spread", "add")
    assert [r["decision"] for r in a_records] == ["allow", "allow", "allow", "deny"]
    assert not any("limits_degraded" in r for r in a_records)


def test_concurrent_calls_on_both_envoys_admit_exactly_the_limit(fleet):
    """16 calls at once, 8 per Envoy, each Envoy's sessions sending them concurrently: the
    store's reservations are atomic, so exactly 4 run."""
    fresh_window()
    fleet.reset_calls()

    async def actions(a, b):
        calls = [attempt(c, "add", {"a": i, "b": 0}) for i in range(8) for c in (a, b)]
        return await asyncio.gather(*calls)

    outcomes = through([fleet.a, fleet.b], "burst", actions)

    ok = [o for o in outcomes if admitted(o)]
    assert len(ok) == 4, outcomes
    for o in outcomes:
        if not admitted(o):
            assert_refused(o, "fleet-burst")
    assert fleet.calls() == {"add": 4}
    assert fleet.counted("fleet-burst", "burst") == 4
    # Both Envoys took part in the burst (their access logs are flushed every 50 ms: wait).
    harness.wait_until(lambda: len(records_of(fleet.a, "burst", "add")) + len(records_of(fleet.b, "burst", "add")) >= 16,
                       5, "the burst's 16 records")
    assert records_of(fleet.a, "burst", "add") and records_of(fleet.b, "burst", "add")


def test_restarting_an_envoy_the_service_or_redis_keeps_the_count(fleet, healthy_store):
    """The count lives in Redis: a restarted Envoy (a new process, empty shared data), a
    restarted tollgate-limits and a restarted Redis (append-only file) all keep it."""
    fresh_window(90)
    fleet.reset_calls()

    async def three(a, b):
        return [await attempt(a, "add", {"a": 1, "b": 1}), await attempt(b, "add", {"a": 1, "b": 1}),
                await attempt(a, "add", {"a": 1, "b": 1})]

    for who in ("restart", "survivor"):
        assert all(admitted(o) for o in through([fleet.a, fleet.b], who, three))
    assert fleet.counted("fleet-burst", "restart") == 3

    fleet.restart_envoy("a")

    async def fourth_and_fifth(a, b):
        return await attempt(a, "add", {"a": 4, "b": 0}), await attempt(a, "add", {"a": 5, "b": 0}), \
            await attempt(b, "add", {"a": 5, "b": 0})

    fourth, fifth, on_b = through([fleet.a, fleet.b], "restart", fourth_and_fifth)
    assert admitted(fourth), fourth
    assert_refused(fifth, "fleet-burst")
    assert_refused(on_b, "fleet-burst")
    assert fleet.counted("fleet-burst", "restart") == 4

    # The service and then Redis restarted (a clean shutdown flushes the append-only file).
    fleet.store.service.restart()
    fleet.store.service.wait_serving()
    fleet.store.redis.restart()
    fleet.store.service.wait_serving()
    assert fleet.counted("fleet-burst", "survivor") == 3

    # `survivor` had 3: one more is admitted (the store answered: a store failure would refuse
    # this fail_closed limit), the next is not (the 3 were kept).
    fourth, fifth, on_b = through([fleet.a, fleet.b], "survivor", fourth_and_fifth)
    assert admitted(fourth), fourth
    assert_refused(fifth, "fleet-burst")
    assert_refused(on_b, "fleet-burst")
    assert fleet.counted("fleet-burst", "survivor") == 4
    assert fleet.calls() == {"add": 3 + 3 + 1 + 1}


@pytest.mark.parametrize("down", ["service", "redis"])
def test_store_down_fail_closed_refuses_and_fail_open_local_counts_on_this_envoy(fleet, healthy_store, down):
    """tollgate-limits stopped (Envoy cannot connect), or Redis stopped (the service answers
    UNAVAILABLE): the `fail_closed` limit refuses and nothing is forwarded; the
    `fail_open_local` limit keeps working on this Envoy's own counters (its cap per Envoy) and
    every record it admitted or refused says `limits_degraded: true`."""
    fresh_window()
    fleet.reset_calls()
    who = "closed" if down == "service" else "open"
    getattr(fleet.store, down).stop()
    try:
        async def actions(a, b):
            closed = [await attempt(c, "add", {"a": 1, "b": 1}) for c in (a, b)]
            opened = [await attempt(a, "echo", {"text": f"degraded {i}"}) for i in range(4)]
            opened_b = [await attempt(b, "echo", {"text": f"degraded b {i}"}) for i in range(3)]
            return closed, opened, opened_b

        started = time.monotonic()
        closed, opened, opened_b = through([fleet.a, fleet.b], who, actions)
        elapsed = time.monotonic() - started
    finally:
        getattr(fleet.store, down).start()
        fleet.store.service.wait_serving()

    for outcome in closed:
        assert_refused(outcome, "fleet-burst")
    # fail_open_local: this Envoy's counter, cap 3 per Envoy.
    assert [admitted(o) for o in opened] == [True, True, True, False]
    assert_refused(opened[3], "fleet-open")
    assert all(admitted(o) for o in opened_b), "B counts on its own"
    assert fleet.calls() == {"echo": 6}, "the refused calls were not forwarded"
    assert fleet.counted("fleet-open", who) == 0 and fleet.counted("fleet-burst", who) == 0
    # Each call waited at most about the store's timeout (200 ms), never the service's own.
    assert elapsed < 10 * 1.5, elapsed

    closed_record = audit_for(fleet.a, tool="add", decision="deny")
    assert (closed_record["identity"]["principal"], closed_record["rule_id"], closed_record["status"]) == (who, "fleet-burst", 429)
    assert "limits_degraded" not in closed_record, "a refusal counted nothing locally"
    # Envoy flushes its access log every 50 ms: wait for the records before reading them.
    harness.wait_until(lambda: len(records_of(fleet.a, who, "echo")) >= 4 and len(records_of(fleet.b, who, "echo")) >= 3,
                       5, "the echo calls' records on A and B")
    echo = records_of(fleet.a, who, "echo")
    assert [(r["decision"], r.get("limits_degraded")) for r in echo] == [
        ("allow", True), ("allow", True), ("allow", True), ("deny", True)]
    assert echo[3]["reason"] == "rate_limited" and echo[3]["rule_id"] == "fleet-open"
    assert [r.get("limits_degraded") for r in records_of(fleet.b, who, "echo")] == [True] * 3

    # The store is back: the fleet counts again (fail_closed admits, nothing degraded).
    async def after(a, b):
        return await attempt(b, "add", {"a": 2, "b": 2})

    back = through([fleet.a, fleet.b], who, after)
    assert admitted(back), back
    assert fleet.counted("fleet-burst", who) == 1


def test_a_store_cluster_envoy_does_not_know_counts_locally_and_says_degraded(fleet, procs):
    """`store.cluster` names no cluster of this Envoy: the call cannot even be sent. The
    fail_open_local limit counts locally and the record says so; fail_closed refuses."""
    envoy = procs.envoy(harness.load_envoy_config("mcp.yaml"), name="envoy-nocluster",
                        upstreams={"mcp_demo": fleet.server_port}, plugin_configs={ROOT_ID: plugin()})
    fresh_window()
    fleet.reset_calls()

    async def actions(a):
        return await attempt(a, "echo", {"text": "x"}), await attempt(a, "add", {"a": 1, "b": 2})

    echo, add = through([envoy], "nocluster", actions)

    assert admitted(echo), echo
    assert_refused(add, "fleet-burst")
    assert fleet.calls() == {"echo": 1}
    record = audit_for(envoy, tool="echo")
    assert (record["decision"], record.get("limits_degraded")) == ("allow", True)
