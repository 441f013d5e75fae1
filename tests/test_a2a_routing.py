"""Conversation routing, issue 19 item 3, through the real Envoy 1.40 with the shipped
envoy/a2a.yaml (its `echo` route hashes `x-tollgate-a2a-route-key`, cluster `agent_echo` is
RING_HASH) and two replicas of a real a2a-sdk agent (tests/a2a_test_agent.py, each naming its
replica in its answers):

- every request of one conversation (client-chosen contextId; GetTask naming only the task)
  reaches the same replica, and conversations spread over both replicas;
- the agent sees the gateway's route key (the contextId), never the caller's own value;
- first turns without a context carry no key and go to either replica (the stickiness is the
  key's doing, not the load balancer's).

    .venv/bin/python -m pytest tests/test_a2a_routing.py -q
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import GetTaskRequest, SendMessageRequest
from a2a.types.a2a_pb2 import Role

pytestmark = pytest.mark.timeout(120)

AGENT = "tests/a2a_test_agent.py"
ALICE = {"x-api-key": "tg-demo-alice"}
ROUTE_KEY = "x-tollgate-a2a-route-key"
CONTEXTS = 16


@dataclass
class Stack:
    envoy: harness.Envoy
    replicas: dict[str, str]  # replica id -> direct base URL

    @property
    def echo(self) -> str:
        return f"{self.envoy.url}/agents/echo/"

    def seen(self, replica: str) -> list[dict[str, Any]]:
        return httpx.get(self.replicas[replica] + "/_seen", timeout=5).json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("a2a-routing")
    started: list[harness.Proc] = []
    ports = {"r1": harness.free_port(), "r2": harness.free_port()}
    try:
        for replica, port in ports.items():
            started.append(harness.python_server(f"agent-{replica}", AGENT, ["--port", str(port), "--replica", replica], workdir,
                                                 f"http://127.0.0.1:{port}/.well-known/agent-card.json"))
        cfg = harness.load_envoy_config("a2a.yaml")
        [cluster] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "agent_echo"]
        # The shipped cluster and route as they are, with the two replicas as its endpoints.
        assert cluster["lb_policy"] == "RING_HASH"
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in ports.values()]}]
        upstreams = {"agent_planner": harness.free_port(), "agent_researcher": harness.free_port()}
        envoy = harness.Envoy(cfg, workdir, upstreams=upstreams)
        started.append(envoy.proc)
        yield Stack(envoy, {r: f"http://127.0.0.1:{p}" for r, p in ports.items()})
    finally:
        for proc in reversed(started):
            proc.stop()


def replica_of(task: Any) -> str:
    text = task.artifacts[0].parts[0].text
    assert text.startswith("[r"), text
    return text[1:3]


async def conversation(url: str, context_id: str | None, turns: int, headers: dict[str, str]) -> list[str]:
    """Sends `turns` messages in one conversation (then GetTask of the first task); returns the
    replica of each answer."""
    async with httpx.AsyncClient(headers=headers, timeout=20) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))
        try:
            seen: list[str] = []
            first_task = None
            for i in range(turns):
                message = new_text_message(f"turn {i}", role=Role.ROLE_USER)
                if context_id:
                    message.context_id = context_id
                events = [e async for e in client.send_message(SendMessageRequest(message=message))]
                task = events[-1].task
                first_task = first_task or task
                seen.append(replica_of(task))
            if context_id and first_task is not None:
                got = await client.get_task(GetTaskRequest(id=first_task.id))
                seen.append(replica_of(got))
            return seen
        finally:
            await client.close()


def test_one_context_sticks_to_one_replica_and_contexts_spread(stack: Stack) -> None:
    forged = {**ALICE, ROUTE_KEY: "always-the-same"}

    async def all_contexts() -> dict[str, list[str]]:
        contexts = [f"ctx-{uuid.uuid4()}" for _ in range(CONTEXTS)]
        results = await asyncio.gather(*(conversation(stack.echo, c, 3, forged) for c in contexts))
        return dict(zip(contexts, results))

    by_context = asyncio.run(all_contexts())
    for ctx, replicas in by_context.items():
        assert len(replicas) == 4 and len(set(replicas)) == 1, f"{ctx} reached {replicas}"
    used = {replicas[0] for replicas in by_context.values()}
    assert used == {"r1", "r2"}, f"all {CONTEXTS} contexts on {used}"
    # What the replicas received: the gateway's key (the context), never the caller's value.
    for replica in ("r1", "r2"):
        for request in stack.seen(replica):
            if request["method"] in ("SendMessage", "GetTask"):
                key = request["headers"].get(ROUTE_KEY)
                assert key in by_context and by_context[key][0] == replica, request


def test_first_turns_without_a_context_go_to_either_replica(stack: Stack) -> None:
    async def first_turns() -> list[str]:
        results = await asyncio.gather(*(conversation(stack.echo, None, 1, ALICE) for _ in range(CONTEXTS)))
        return [r[0] for r in results]

    assert set(asyncio.run(first_turns())) == {"r1", "r2"}
