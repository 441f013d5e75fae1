"""The A2A filter's cheap settings through the real Envoy 1.40 with the a2a-sdk client and the
demo agent (issue 22): `filter_state_tags: false` publishes no filter-state tags, and
everything else an exchange does (upstream context headers, signed delegation context, audit
record with the ids the response revealed, conversation table) is unchanged.

    .venv/bin/python -m pytest tests/test_a2a_perf.py -q -p no:cacheprovider
"""
from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

import harness
from test_a2a import AGENT, AGENTS, KEYS, PLUGIN, envoy_config, message_1_0, rpc, with_state_log

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.Envoy, str, object]]:
    workdir = tmp_path_factory.mktemp("a2a-perf")
    ports = {cluster: harness.free_port() for cluster in set(AGENTS.values())}
    started: list[harness.Proc] = []
    try:
        state_log = workdir / "filter-state.log"
        plugin = {**PLUGIN, "filter_state_tags": False}
        envoy = harness.Envoy(with_state_log(envoy_config(), state_log), workdir,
                              upstreams={f"agent_{c}": p for c, p in ports.items()},
                              plugin_configs={"tollgate.a2a": plugin})  # fmt: skip
        started.append(envoy.proc)
        port = ports["echo"]
        args = ["--host", "127.0.0.1", "--port", str(port), "--name", "echo"]
        started.append(harness.Proc("agent-echo", [sys.executable, str(harness.REPO / AGENT), *args], workdir))
        card = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
        harness.wait_until(lambda: httpx.get(card, timeout=1).status_code == 200, 30, "echo ready")
        yield envoy, f"http://127.0.0.1:{port}", state_log
    finally:
        for proc in reversed(started):
            proc.stop()


def test_without_filter_state_tags_the_exchange_is_otherwise_unchanged(lean) -> None:
    envoy, agent, state_log = lean
    httpx.post(agent + "/_seen/reset").raise_for_status()
    context_id = f"ctx-{uuid.uuid4()}"
    response = rpc(f"{envoy.url}/agents/echo/", "SendMessage", message_1_0("lean", contextId=context_id),
                   headers={"x-api-key": KEYS["alice"]})

    assert response.status_code == 200
    task = response.json()["result"]["task"]
    assert task["contextId"] == context_id
    # The agent got the gateway's context as always: ids, hop, caller, signed context.
    [seen] = httpx.get(agent + "/_seen", timeout=5).json()
    h = seen["headers"]
    assert h["x-tollgate-a2a-context-id"] == context_id
    assert h["x-tollgate-a2a-hop"] == "1" and h["x-tollgate-a2a-caller"] == "alice"
    assert h["x-tollgate-a2a-sig"]
    # The audit record has every id, the response's included.
    [record] = envoy.wait_audit(1, timeout=10, where=lambda r: r.get("context_id") == context_id)
    assert record["task_id"] == task["id"] and record["task_state"] == "completed"
    assert record["target"] == "echo" and record["hop"] == 1 and record["decision"] == "allow"
    # No filter-state tags: the operator's access log reads none of them.
    harness.wait_until(lambda: state_log.exists() and state_log.read_text().strip(), 5, "the access log line")
    lines = state_log.read_text().splitlines()
    assert lines and all(line == "- - - - - -" for line in lines), lines
    # The conversation table still knows the context: a turn without a traceparent joins it.
    again = rpc(f"{envoy.url}/agents/echo/", "SendMessage", message_1_0("again", contextId=context_id),
                headers={"x-api-key": KEYS["alice"]})
    assert again.status_code == 200
    records = envoy.wait_audit(2, timeout=10, where=lambda r: r.get("context_id") == context_id)
    assert {r["trace_id"] for r in records} == {record["trace_id"]}
    assert sorted(r.get("trace_source") for r in records) == ["conversation", "new"]
