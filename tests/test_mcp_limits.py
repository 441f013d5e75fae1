"""MCP per-identity call rate limits end to end: the real Envoy 1.40 with two worker threads
(`--concurrency 2`) and dist/tollgate_mcp.wasm in front of the real `mcp` SDK server
(examples/mcp_server; stateless with JSON responses, so each call is one self-contained POST).
The counters live in Envoy shared data, so both workers' VMs must see one counter; every
request here opens its own connection so both workers serve some (checked from Envoy's
per-worker listener stats).

    .venv/bin/python -m pytest tests/test_mcp_limits.py -q

Whether a call reached the MCP server is read from the server's own per-tool counters
(GET /_calls), never inferred from the gateway's answer. The limits use fixed 60 s windows
aligned to the clock; a test that needs its calls in one window waits for a fresh one when
fewer than 15 s are left.
"""
from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import json
import time
from typing import Any

import httpx
import pytest

import harness
from test_mcp import ROOT_ID, SHIPPED_PLUGIN, audit_for, call, envoy_config, gateway_plugin

pytestmark = pytest.mark.timeout(180)

WINDOW = 60
LIMIT = {"id": "agent-burst", "principals": ["*"], "max_calls": 3, "window_secs": WINDOW, "per": "principal"}
# One principal per test, so the tests' counters never meet.
KEYS = {name: f"tg-limits-{name}" for name in ("alice", "bob", "carol", "dave", "erin")}
STAT = "wasmcustom.tollgate.mcp.calls.server.demo.tool.{tool}.caller.{caller}.decision.{decision}"


def plugin(**policy_changes: Any) -> dict:
    """The test gateway's plugin configuration (tests/test_mcp.py) with the shipped limit
    (120 tools/call per minute per principal) plus `agent-burst`: 3 calls per minute per
    principal, and one API key per test principal."""
    cfg = gateway_plugin(**policy_changes)
    assert cfg["rate_limits"] == SHIPPED_PLUGIN["rate_limits"]
    cfg["rate_limits"] = cfg["rate_limits"] + [copy.deepcopy(LIMIT)]
    keys = cfg["identity"]["api_keys"]["keys"]
    keys.extend({"sha256": hashlib.sha256(secret.encode()).hexdigest(), "name": f"{name}-limits", "principal": name}
                for name, secret in KEYS.items())
    return cfg


class Stack:
    def __init__(self, envoy: harness.Envoy, server_port: int):
        self.envoy = envoy
        self.server_port = server_port

    def calls(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.server_port}/_calls", timeout=5).json()

    def reset_calls(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.server_port}/_calls/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp-limits")
    procs: list[harness.Proc] = []
    try:
        port = harness.free_port()
        procs.append(harness.python_server(
            "mcp-json", "examples/mcp_server/server.py",
            ["--host", "127.0.0.1", "--port", str(port), "--json-response", "--stateless"], workdir, f"http://127.0.0.1:{port}/_calls"))
        envoy = harness.Envoy(envoy_config(), workdir, concurrency=2, name="envoy-limits",
                              upstreams={"mcp_demo": port}, plugin_configs={ROOT_ID: plugin()})
        procs.append(envoy.proc)
        yield Stack(envoy, port)
    finally:
        for proc in reversed(procs):
            proc.stop()


# --- helpers ---------------------------------------------------------------------------------

def fresh_window(need: float = 15.0) -> None:
    """Waits for the next fixed window when fewer than `need` seconds are left in this one."""
    left = WINDOW - time.time() % WINDOW
    if left < need:
        time.sleep(left + 0.3)


def call_as(envoy: harness.Envoy, who: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """One POST on its own connection (httpx.post opens a new one each time)."""
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", "x-api-key": KEYS[who]}
    h.update(headers or {})
    return httpx.post(envoy.url + "/mcp", content=json.dumps(body).encode(), headers=h, timeout=10)


def worker_connections(envoy: harness.Envoy) -> dict[str, int]:
    """Connections accepted per worker thread on the listener (`listener.<addr>.worker_<n>.*`)."""
    suffix = ".downstream_cx_total"
    return {name.split(".")[-2]: value for name, value in envoy.stats().items()
            if name.startswith(f"listener.127.0.0.1_{envoy.port}.worker_") and name.endswith(suffix)}


def per_worker_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {w: after.get(w, 0) - before.get(w, 0) for w in sorted(set(before) | set(after))}


def assert_limited(response: httpx.Response, id: Any) -> int:  # noqa: A002
    """A 429 answered by the gateway for the `agent-burst` limit; returns Retry-After."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == id
    assert body["error"]["code"] == -31429
    assert body["error"]["data"] == {"limit_id": "agent-burst", "retry_after_secs": retry_after}
    return retry_after


# --- tests -----------------------------------------------------------------------------------

def test_fourth_call_gets_429_never_reaches_the_server_and_other_principals_are_unaffected(stack):
    envoy = stack.envoy
    fresh_window()
    stack.reset_calls()
    limited_before = envoy.stat(STAT.format(tool="add", caller="alice", decision="rate_limited"))
    workers_before = worker_connections(envoy)

    admitted = [call_as(envoy, "alice", call("add", {"a": 1, "b": i}, id=i)) for i in range(1, 4)]
    left_in_window = WINDOW - time.time() % WINDOW
    fourth = call_as(envoy, "alice", call("add", {"a": 1, "b": 4}, id="fourth"))
    more = [call_as(envoy, "alice", call("add", {"a": 1, "b": 1}, id=i)) for i in range(20)]

    assert [r.status_code for r in admitted] == [200, 200, 200]
    assert [r.json()["result"]["structuredContent"] for r in admitted] == [{"result": 2}, {"result": 3}, {"result": 4}]
    retry_after = assert_limited(fourth, "fourth")
    assert abs(retry_after - left_in_window) <= 2, (retry_after, left_in_window)
    for i, r in enumerate(more):
        assert_limited(r, i)
    assert stack.calls() == {"add": 3}
    # Both workers served alice: with a counter per worker, the second would have admitted more.
    alice_workers = per_worker_delta(workers_before, worker_connections(envoy))
    assert len(alice_workers) == 2 and all(n > 0 for n in alice_workers.values()), alice_workers

    # Another principal has its own counter.
    bob = [call_as(envoy, "bob", call("echo", {"text": f"hi {i}"}, id=i)) for i in range(3)]
    assert [r.status_code for r in bob] == [200, 200, 200]
    assert assert_limited(call_as(envoy, "bob", call("echo", {"text": "again"}, id=9)), 9) >= 1
    assert stack.calls() == {"add": 3, "echo": 3}

    record = audit_for(envoy, tool="add", jsonrpc_id="fourth")
    assert (record["decision"], record["enforced"], record["status"]) == ("deny", True, 429)
    assert (record["rule_id"], record["reason"]) == ("agent-burst", "rate_limited")
    assert record["identity"]["principal"] == "alice"
    assert envoy.stat(STAT.format(tool="add", caller="alice", decision="rate_limited")) - limited_before == 21
    assert 'tollgate_mcp_calls{mcp_server="demo",mcp_tool="add",mcp_caller="alice",mcp_decision="rate_limited"}' in envoy.prometheus()


def test_concurrent_burst_on_both_workers_admits_exactly_the_limit(stack):
    envoy = stack.envoy
    fresh_window()
    stack.reset_calls()
    workers_before = worker_connections(envoy)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: call_as(envoy, "carol", call("add", {"a": i, "b": 0}, id=i)), range(16)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [429] * 13, [(r.status_code, r.text[:200]) for r in responses]
    for r in responses:
        if r.status_code == 429:
            assert_limited(r, r.json()["id"])
    assert stack.calls() == {"add": 3}
    burst_workers = per_worker_delta(workers_before, worker_connections(envoy))
    assert len(burst_workers) == 2 and all(n > 0 for n in burst_workers.values()), burst_workers


def test_batch_over_the_limit_is_refused_whole_and_consumes_nothing(stack):
    envoy = stack.envoy
    fresh_window()
    stack.reset_calls()
    legacy = {"mcp-protocol-version": "2025-03-26"}

    first = [call_as(envoy, "dave", call("add", {"a": 1, "b": 1}, id=i)) for i in range(2)]
    batch = call_as(envoy, "dave", [call("add", {"a": 2, "b": 2}, id="b1"), call("echo", {"text": "x"}, id="b2")], legacy)
    third = call_as(envoy, "dave", call("add", {"a": 3, "b": 3}, id="third"))
    fourth = call_as(envoy, "dave", call("add", {"a": 4, "b": 4}, id="fourth"))

    assert [r.status_code for r in first] == [200, 200]
    # b1 alone would fit (3rd call), b2 would not: the batch is refused whole, nothing
    # forwarded, and b1's count given back, so the next single call is still admitted.
    assert batch.status_code == 429
    assert batch.headers["retry-after"]
    errors = batch.json()
    assert [(e["id"], e["error"]["code"], e["error"]["message"]) for e in errors] == [
        ("b1", -31429, "Rate limited: batch rejected"),
        ("b2", -31429, "Rate limited: tools/call echo (limit agent-burst)"),
    ]
    assert all(e["error"]["data"]["limit_id"] == "agent-burst" for e in errors)
    assert third.status_code == 200, third.text
    assert_limited(fourth, "fourth")
    assert stack.calls() == {"add": 3}
    line = [json.loads(l) for l in envoy.audit_log.read_text().splitlines() if l.startswith("[")]
    line = [a for a in line if [r.get("jsonrpc_id") for r in a] == ["b1", "b2"]][-1]
    assert [(r["decision"], r.get("rule_id"), r["reason"], r["status"]) for r in line] == [
        ("deny", "everyday-tools", "another message in the batch was rate limited", 429),
        ("deny", "agent-burst", "rate_limited", 429),
    ]


def test_dry_run_records_rate_limited_calls_but_forwards_them(stack, procs):
    envoy = procs.envoy(envoy_config(), concurrency=2, name="envoy-limits-dry", upstreams={"mcp_demo": stack.server_port},
                        plugin_configs={ROOT_ID: plugin(dry_run=True)})
    fresh_window()
    stack.reset_calls()

    responses = [call_as(envoy, "erin", call("add", {"a": 1, "b": 1}, id=i)) for i in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert stack.calls() == {"add": 5}
    record = audit_for(envoy, tool="add", jsonrpc_id=3)
    assert (record["decision"], record["enforced"], record["rule_id"], record["reason"]) == (
        "deny", False, "agent-burst", "rate_limited")
    assert audit_for(envoy, tool="add", jsonrpc_id=2)["decision"] == "allow"
    assert envoy.stat(STAT.format(tool="add", caller="erin", decision="dryrun_rate_limited")) == 2


def test_bad_rate_limit_is_refused_at_load_with_the_field_named(workdir):
    cfg = plugin()
    cfg["rate_limits"][1]["window_secs"] = 0

    log = harness.run_envoy_expect_failure(envoy_config(), workdir, plugin_configs={ROOT_ID: cfg})

    expected = "rate_limits[1].window_secs: must be between 1 and 86400 (limit `agent-burst`)"
    assert f"tollgate-mcp: invalid plugin configuration: {expected}" in log, log[-3000:]
