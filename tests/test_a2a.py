"""The A2A filter through the real Envoy 1.40, with the official a2a-sdk client and the demo
agent (examples/a2a_agent): session tagging in both dialects, trace stitching across turns and
hops, the delegation chain (hops, loops, depth), trust of the gateway-owned headers,
authorization, agent-card rewriting, audit records and metrics.

    /tmp/venvprobe/bin/python -m pytest tests/test_a2a.py -q

One Envoy and one set of agents serve the whole module (agent start-up dominates the run
time); every test picks its own records out of the shared audit log by ids it created.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import SendMessageRequest, StreamResponse
from a2a.types.a2a_pb2 import Role, TaskState

pytestmark = pytest.mark.timeout(60)

AGENT = "examples/a2a_agent/agent.py"
SIGNING_KEY = "test-signing-key-0123456789abcdef0123456789"
KEYS = {"svc-planner": "tg-demo-planner", "alice": "tg-demo-alice", "bob": "tg-demo-bob"}
MAX_HOPS = 3

# route prefix -> (agent identity, cluster). Chains: a -> b -> c -> d (d refused: depth),
# ping -> pong -> ping (refused: loop). (Beware YAML: an unquoted `y` or `n` is a boolean.) `d` and `signed` are served by the plain echo agent and a
# static file server.
AGENTS = {
    "echo": "echo", "a": "a", "b": "b", "c": "c", "d": "echo", "ping": "ping", "pong": "pong", "static": "static",
}  # fmt: skip


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


PLUGIN = {
    "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
        {"sha256": sha(key), "name": name, "principal": name} for name, key in KEYS.items()]}},
    "delegation": {"max_hops": MAX_HOPS, "signing_key": SIGNING_KEY,
                   "trusted_agents": [{"principal": "svc-planner", "agent": "planner"}]},
    "authz": {"rules": [{"id": "cancel-own", "methods": ["CancelTask"], "effect": "allow_originator"}]},
    "audit": {"log": False},
}  # fmt: skip


def envoy_config() -> dict:
    """envoy/a2a.yaml with this module's routes and clusters (listener, filter, stats tags kept)."""
    cfg = harness.load_envoy_config("a2a.yaml")
    vhost = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]
    template = copy.deepcopy(cfg["static_resources"]["clusters"][0])
    vhost["routes"] = [
        {
            "match": {"prefix": f"/agents/{prefix}/"},
            "route": {"cluster": f"agent_{cluster}", "prefix_rewrite": "/", "timeout": "0s"},
            "metadata": {"filter_metadata": {"tollgate": {"agent": prefix}}},
        }
        for prefix, cluster in AGENTS.items()
    ]
    clusters = []
    for cluster in sorted(set(AGENTS.values())):
        c = copy.deepcopy(template)
        c["name"] = c["load_assignment"]["cluster_name"] = f"agent_{cluster}"
        clusters.append(c)
    cfg["static_resources"]["clusters"] = clusters
    return cfg


def with_state_log(cfg: dict, path: Path) -> dict:
    """Adds an access log of the filter-state ids (what an operator's log format would use)."""
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fields = ["context_id", "task_id", "task_state", "hop", "target", "trace_id"]
    line = " ".join(f"%FILTER_STATE(wasm.tollgate.a2a.{f}:PLAIN)%" for f in fields)
    hcm["access_log"].append({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path), "log_format": {"text_format_source": {"inline_string": line + "\n"}}}})  # fmt: skip
    return cfg


SIGNED_CARD = {
    "name": "signed", "url": "http://10.1.2.3:9000/", "protocolVersion": "0.3",
    "supportedInterfaces": [{"url": "http://10.1.2.3:9000/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
    "signatures": [{"protected": "eyJhbGciOiJFUzI1NiJ9", "signature": "c2lnbmF0dXJl"}],
}  # fmt: skip
LEGACY_CARD = {"name": "legacy", "url": "http://10.1.2.3:9000/a2a", "version": "0.2.5"}


@dataclass
class Stack:
    envoy: harness.Envoy
    agents: dict[str, str]  # cluster name -> direct base URL
    state_log: Path

    def url(self, prefix: str) -> str:
        return f"{self.envoy.url}/agents/{prefix}/"

    def seen(self, cluster: str) -> list[dict[str, Any]]:
        return httpx.get(self.agents[cluster] + "/_seen", timeout=5).json()

    def records(self, **match: Any) -> list[dict]:
        return [r for r in self.envoy.audit_records() if all(r.get(k) == v for k, v in match.items())]

    def wait(self, count: int = 1, **match: Any) -> list[dict]:
        return self.envoy.wait_audit(count, timeout=10, where=lambda r: all(r.get(k) == v for k, v in match.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("a2a")
    ports = {cluster: harness.free_port() for cluster in set(AGENTS.values())}
    started: list[harness.Proc] = []
    try:
        state_log = workdir / "filter-state.log"
        envoy = harness.Envoy(with_state_log(envoy_config(), state_log), workdir, upstreams={f"agent_{c}": p for c, p in ports.items()},
                              plugin_configs={"tollgate.a2a": PLUGIN})  # fmt: skip
        started.append(envoy.proc)
        gw = envoy.url
        delegate = {"a": "b", "b": "c", "c": "d", "ping": "pong", "pong": "ping"}
        for cluster, port in ports.items():
            if cluster == "static":
                www = workdir / "www" / ".well-known"
                www.mkdir(parents=True)
                (www / "agent-card.json").write_text(json.dumps(SIGNED_CARD))
                (www / "agent.json").write_text(json.dumps(LEGACY_CARD))
                cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(workdir / "www")]
                started.append(harness.Proc("static", cmd, workdir))
                continue
            args = ["--host", "127.0.0.1", "--port", str(port), "--name", cluster]
            if cluster in delegate:
                args += ["--delegate-to", f"{gw}/agents/{delegate[cluster]}/"]
            started.append(harness.Proc(f"agent-{cluster}", [sys.executable, str(harness.REPO / AGENT), *args], workdir))
        for cluster, port in ports.items():
            card = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
            harness.wait_until(lambda url=card: httpx.get(url, timeout=1).status_code == 200, 30, f"{cluster} ready")
        yield Stack(envoy, {c: f"http://127.0.0.1:{p}" for c, p in ports.items()}, state_log)
    finally:
        for proc in reversed(started):
            proc.stop()


# --- helpers -------------------------------------------------------------------------------


async def _send(url: str, text: str, streaming: bool, context_id: str | None = None) -> list[StreamResponse]:
    client = await create_client(url, client_config=ClientConfig(streaming=streaming))
    try:
        message = new_text_message(text, context_id=context_id, role=Role.ROLE_USER)
        return [event async for event in client.send_message(SendMessageRequest(message=message))]
    finally:
        await client.close()


def send(url: str, text: str, streaming: bool = False, context_id: str | None = None) -> list[StreamResponse]:
    return asyncio.run(_send(url, text, streaming, context_id))


def context_of(events: list[StreamResponse]) -> str:
    first = events[0]
    return getattr(first, first.WhichOneof("payload")).context_id


def rpc(url: str, method: str, params: dict, version: str | None = "1.0", headers: dict | None = None,
        rid: Any = 1) -> httpx.Response:  # fmt: skip
    h = {"A2A-Version": version} if version else {}
    h.update(headers or {})
    return httpx.post(url, json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, headers=h, timeout=20)


def message_1_0(text: str, **extra: Any) -> dict:
    return {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}], **extra}}


def message_0_3(text: str) -> dict:
    return {"message": {"kind": "message", "messageId": str(uuid.uuid4()), "role": "user", "parts": [{"kind": "text", "text": text}]}}


def reply_text(events: list[StreamResponse]) -> str:
    return "\n".join(get_stream_response_text(e) for e in events)


# --- session tagging -------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["SendMessage", "SendStreamingMessage"])
def test_1_0_sdk_calls_are_tagged_with_server_ids_and_final_state(stack: Stack, streaming: bool) -> None:
    events = send(stack.url("echo"), "tag me", streaming=streaming)

    first = events[0]
    task = first.task
    assert task.id and task.context_id
    method = "SendStreamingMessage" if streaming else "SendMessage"
    [record] = stack.wait(method=method, context_id=task.context_id)
    assert record["layer"] == "a2a" and record["schema"] == "tollgate.audit/v1"
    assert record["task_id"] == task.id
    assert record["task_state"] == "completed"
    assert record["dialect"] == "1.0" and record["binding"] == "jsonrpc"
    assert record["target"] == "echo" and record["hop"] == 1 and record["chain"] == ["echo"]
    assert record["status"] == 200 and record["decision"] == "allow"
    assert record["message_id"], "the request's messageId is recorded"
    assert record["streaming"] is streaming
    assert record["events"] == (4 if streaming else 1)
    assert isinstance(record["ttfe_ms"], int) and isinstance(record["duration_ms"], int)
    assert "tag me" not in json.dumps(record), "message parts are not logged by default"
    # The same ids as filter state, for access logs.
    expected = f"{task.context_id} {task.id} completed 1 echo {record['trace_id']}"
    harness.wait_until(lambda: expected in stack.state_log.read_text().splitlines(), 5, "filter state in the access log")
    if streaming:
        assert [e.WhichOneof("payload") for e in events] == ["task", "status_update", "artifact_update", "status_update"]
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


@pytest.mark.parametrize("method", ["message/send", "message/stream"])
def test_0_3_calls_are_tagged(stack: Stack, method: str) -> None:
    stream = method == "message/stream"
    headers = {"Accept": "text/event-stream"} if stream else {}
    response = rpc(stack.url("echo"), method, message_0_3("old dialect"), version=None, headers=headers)

    assert response.status_code == 200
    if stream:
        results = [json.loads(line[5:])["result"] for line in response.text.splitlines() if line.startswith("data:")]
        context_id, task_id = results[0]["contextId"], results[0]["id"]
        assert results[-1]["final"] is True
    else:
        result = response.json()["result"]
        context_id, task_id = result["contextId"], result["id"]
    [record] = stack.wait(jsonrpc_method=method, context_id=context_id)
    assert record["dialect"] == "0.3"
    assert record["method"] == ("SendStreamingMessage" if stream else "SendMessage")
    assert record["task_id"] == task_id
    assert record["task_state"] == "completed"


def test_ids_known_before_forwarding_go_upstream_and_a2a_headers_are_untouched(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    context_id = f"ctx-{uuid.uuid4()}"
    params = message_1_0("with my own context", contextId=context_id)
    response = rpc(stack.url("echo"), "SendMessage", params, headers={"A2A-Extensions": "https://example.com/ext/v1"})

    assert response.json()["result"]["task"]["contextId"] == context_id
    [seen] = stack.seen("echo")
    h = seen["headers"]
    assert h["a2a-version"] == "1.0" and h["a2a-extensions"] == "https://example.com/ext/v1"
    assert h["x-tollgate-a2a-context-id"] == context_id
    assert h["x-tollgate-a2a-message-id"] == params["message"]["messageId"]
    [record] = stack.wait(context_id=context_id)
    assert h["traceparent"] == f"00-{record['trace_id']}-{record['span_id']}-03"


# --- trace stitching -------------------------------------------------------------------------


def test_second_turn_joins_the_first_turns_trace_without_traceparent(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    first = send(stack.url("echo"), "turn one")
    context_id = context_of(first)
    second = send(stack.url("echo"), "turn two", context_id=context_id)

    assert context_of(second) == context_id
    seen = [s for s in stack.seen("echo") if s["method"] == "SendMessage"]
    assert len(seen) == 2
    records = stack.wait(2, method="SendMessage", context_id=context_id)
    turn1, turn2 = sorted(records, key=lambda r: r["timestamp_ms"])
    assert turn1["trace_source"] == "new" and "parent_span_id" not in turn1, "the SDK client sends no traceparent"
    assert turn2["trace_source"] == "conversation"
    assert turn2["trace_id"] == turn1["trace_id"]
    assert turn2["parent_span_id"] == turn1["span_id"]
    assert turn2["span_id"] != turn1["span_id"]
    # The agent received the gateway's span as parent on both turns.
    assert [s["headers"]["traceparent"].split("-")[1:3] for s in seen] == [
        [turn1["trace_id"], turn1["span_id"]],
        [turn2["trace_id"], turn2["span_id"]],
    ]


def test_valid_traceparent_is_continued_and_invalid_one_replaced(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    rpc(stack.url("echo"), "SendMessage", message_1_0("traced"), headers={"traceparent": inbound, "tracestate": "vendor=1"})
    invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"  # uppercase: invalid
    rpc(stack.url("echo"), "SendMessage", message_1_0("badly traced"), headers={"traceparent": invalid, "tracestate": "vendor=1"})

    continued, replaced = (s["headers"] for s in stack.seen("echo"))
    version, trace_id, parent, flags = continued["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent != "00f067aa0ba902b7"
    assert continued["tracestate"] == "vendor=1"
    [record] = stack.wait(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    assert record["parent_span_id"] == "00f067aa0ba902b7" and record["span_id"] == parent
    assert "4bf92f35" not in replaced["traceparent"].lower()
    assert "tracestate" not in replaced, "a new trace drops tracestate"


def test_a_later_call_referencing_a_task_joins_its_trace(stack: Stack) -> None:
    """A downstream hop of the same conversation (referenceTaskIds, no traceparent)."""
    created = rpc(stack.url("echo"), "SendMessage", message_1_0("first")).json()["result"]["task"]
    follow = message_1_0("follow-up", referenceTaskIds=[created["id"]])
    context_id = rpc(stack.url("d"), "SendMessage", follow).json()["result"]["task"]["contextId"]

    [origin] = stack.wait(task_id=created["id"], method="SendMessage")
    [later] = stack.wait(context_id=context_id, method="SendMessage")
    assert later["target"] == "d" and later["reference_task_ids"] == [created["id"]]
    assert later["trace_id"] == origin["trace_id"] and later["parent_span_id"] == origin["span_id"]
    assert later["trace_source"] == "conversation"


# --- delegation chain ------------------------------------------------------------------------


def test_chain_of_three_agents_is_one_trace_and_the_fourth_hop_exceeds_max_depth(stack: Stack) -> None:
    for cluster in ("a", "b", "c", "echo"):
        httpx.post(stack.agents[cluster] + "/_seen/reset").raise_for_status()

    events = send(stack.url("a"), "relay")

    lines = reply_text(events).splitlines()
    assert lines[:3] == ["[a] echo: relay", "delegate: [b] echo: relay", "delegate: [c] echo: relay"]
    assert lines[3] == "delegate: error: A2AClientError: JSON-RPC Error -32051: delegation chain too deep: the maximum number of hops is reached"
    hop1 = stack.wait(method="SendMessage", target="a", context_id=context_of(events))[0]
    trace_id = hop1["trace_id"]
    hops = {r["hop"]: r for r in stack.wait(4, trace_id=trace_id, method="SendMessage")}
    assert sorted(hops) == [1, 2, 3, 4]
    assert [hops[h]["target"] for h in (1, 2, 3, 4)] == ["a", "b", "c", "d"]
    assert [hops[h]["chain"] for h in (1, 2, 3)] == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert [hops[h]["caller"] for h in (1, 2, 3, 4)] == ["anonymous", "a", "b", "c"]
    assert [hops[h]["caller_trust"] for h in (2, 3, 4)] == ["signature"] * 3
    # Each hop's parent is the previous hop's gateway span.
    assert "parent_span_id" not in hops[1]
    for h in (2, 3, 4):
        assert hops[h]["parent_span_id"] == hops[h - 1]["span_id"], h
    assert all(hops[h]["decision"] == "allow" and hops[h]["task_state"] == "completed" for h in (1, 2, 3))
    refused = hops[4]
    assert refused["decision"] == "deny" and refused["reason"] == "A2A_MAX_DEPTH"
    assert refused["rpc_error_code"] == -32051
    # What each agent received from the gateway.
    [at_b] = [s["headers"] for s in stack.seen("b") if s["method"] == "SendMessage"]
    assert (at_b["x-tollgate-a2a-hop"], at_b["x-tollgate-a2a-chain"], at_b["x-tollgate-a2a-caller"]) == ("2", "a,b", "a")
    assert at_b["traceparent"] == f"00-{trace_id}-{hops[2]['span_id']}-03"
    assert not [s for s in stack.seen("echo") if s["method"] == "SendMessage"], "the refused hop never reached d"


def test_delegation_loop_is_refused(stack: Stack) -> None:
    httpx.post(stack.agents["ping"] + "/_seen/reset").raise_for_status()

    events = send(stack.url("ping"), "hello")

    lines = reply_text(events).splitlines()
    assert lines[:2] == ["[ping] echo: hello", "delegate: [pong] echo: hello"]
    assert lines[2].startswith("delegate: error: A2AClientError: JSON-RPC Error -32050: delegation loop"), lines
    hop1 = stack.wait(method="SendMessage", target="ping", context_id=context_of(events))[0]
    records = stack.wait(3, trace_id=hop1["trace_id"], method="SendMessage")
    refused = [r for r in records if r["decision"] == "deny"]
    assert len(refused) == 1
    [loop] = refused
    assert (loop["hop"], loop["target"], loop["caller"]) == (3, "ping", "pong")
    assert loop["reason"] == "A2A_DELEGATION_LOOP" and loop["rpc_error_code"] == -32050
    assert [s["method"] for s in stack.seen("ping")].count("SendMessage") == 1, "ping saw only the user's call"


def test_loop_refusal_is_a_json_rpc_error_with_error_info(stack: Stack) -> None:
    """The refusal as a caller sees it, in both dialects (a trusted agent replays a chain)."""
    planner = {"x-api-key": KEYS["svc-planner"], "x-tollgate-a2a-chain": "planner,echo", "x-tollgate-a2a-hop": "1"}
    v10 = rpc(stack.url("echo"), "SendMessage", message_1_0("again"), headers=planner, rid="req-7")
    v03 = rpc(stack.url("echo"), "message/send", message_0_3("again"), version=None, headers=planner, rid=8)

    assert v10.status_code == 200 and v03.status_code == 200
    body = v10.json()
    assert body["id"] == "req-7"
    assert body["error"]["code"] == -32050
    [info] = body["error"]["data"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "A2A_DELEGATION_LOOP"
    assert v03.json()["error"]["data"]["reason"] == "A2A_DELEGATION_LOOP", "0.3: one ErrorInfo object"


def test_context_from_untrusted_callers_is_replaced(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    forged = {"x-tollgate-a2a-hop": "2", "x-tollgate-a2a-chain": "a,echo", "x-tollgate-a2a-on-behalf-of": "ceo",
              "x-tollgate-a2a-sig": "v1.99999999999.deadbeef", "x-tollgate-a2a-caller": "root"}  # fmt: skip
    response = rpc(stack.url("echo"), "SendMessage", message_1_0("forged"), headers=forged)

    assert "result" in response.json(), "not a loop: the forged chain was discarded"
    [seen] = stack.seen("echo")
    h = seen["headers"]
    assert (h["x-tollgate-a2a-hop"], h["x-tollgate-a2a-chain"], h["x-tollgate-a2a-caller"]) == ("1", "echo", "anonymous")
    assert "x-tollgate-a2a-on-behalf-of" not in h
    assert h["x-tollgate-a2a-sig"] != forged["x-tollgate-a2a-sig"]


def test_trusted_agent_identity_continues_its_chain(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    headers = {"x-api-key": KEYS["svc-planner"], "x-tollgate-a2a-hop": "1", "x-tollgate-a2a-chain": "planner",
               "x-tollgate-a2a-on-behalf-of": "alice"}  # fmt: skip
    response = rpc(stack.url("echo"), "SendMessage", message_1_0("from the planner"), headers=headers)

    context_id = response.json()["result"]["task"]["contextId"]
    h = stack.seen("echo")[0]["headers"]
    assert (h["x-tollgate-a2a-hop"], h["x-tollgate-a2a-chain"]) == ("2", "planner,echo")
    assert (h["x-tollgate-a2a-caller"], h["x-tollgate-a2a-on-behalf-of"]) == ("planner", "alice")
    [record] = stack.wait(context_id=context_id)
    assert (record["caller"], record["caller_trust"], record["on_behalf_of"]) == ("planner", "identity", "alice")
    assert record["identity"]["principal"] == "svc-planner" and record["identity"]["source"] == "api_key"


# --- authorization ---------------------------------------------------------------------------


def test_only_the_originator_may_cancel_a_task(stack: Stack) -> None:
    alice, bob = {"x-api-key": KEYS["alice"]}, {"x-api-key": KEYS["bob"]}
    created = rpc(stack.url("echo"), "SendMessage", message_1_0("alice's task"), headers=alice).json()
    task_id = created["result"]["task"]["id"]
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()

    by_bob = rpc(stack.url("echo"), "CancelTask", {"id": task_id}, headers=bob, rid=41)
    by_alice = rpc(stack.url("echo"), "CancelTask", {"id": task_id}, headers=alice, rid=42)

    assert by_bob.status_code == 200
    error = by_bob.json()["error"]
    assert error["code"] == -32052 and error["data"][0]["reason"] == "A2A_NOT_TASK_ORIGINATOR"
    # Alice's cancel reached the agent (which answers for a finished task itself).
    assert by_alice.json()["error"]["code"] == -32002, by_alice.text  # TaskNotCancelable, from the agent
    assert [s["method"] for s in stack.seen("echo")] == ["CancelTask"]
    records = stack.wait(2, method="CancelTask", task_id=task_id)
    by_decision = {r["decision"]: r for r in records}
    assert by_decision["deny"]["identity"]["principal"] == "bob" and by_decision["deny"]["rule_id"] == "cancel-own"
    assert by_decision["allow"]["rpc_error_code"] == -32002


def test_unknown_api_key_is_refused(stack: Stack) -> None:
    response = rpc(stack.url("echo"), "SendMessage", message_1_0("who am i"), headers={"x-api-key": "stolen"})
    assert response.status_code == 401
    assert response.json()["error"]["data"][0]["reason"] == "A2A_UNAUTHENTICATED"


# --- agent cards -----------------------------------------------------------------------------


def test_card_advertises_the_gateway_and_the_sdk_client_stays_on_it(stack: Stack) -> None:
    card = httpx.get(stack.url("echo") + ".well-known/agent-card.json", timeout=5)
    gateway = stack.url("echo")

    assert card.status_code == 200
    assert int(card.headers["content-length"]) == len(card.content)
    body = card.json()
    assert body["url"] == gateway
    assert [i["url"] for i in body["supportedInterfaces"]] == [gateway, gateway]
    direct = httpx.get(stack.agents["echo"] + "/.well-known/agent-card.json").json()
    assert direct["url"] == stack.agents["echo"] + "/", "the agent itself advertises its internal address"

    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    events = send(stack.envoy.url + "/agents/echo", "via the card")  # the SDK resolves the card itself
    [seen] = stack.seen("echo")
    assert seen["headers"]["x-envoy-original-path"] == "/agents/echo/"
    assert seen["headers"]["x-request-id"]
    stack.wait(method="SendMessage", context_id=context_of(events))
    cards = stack.wait(method="AgentCard", target="echo")
    assert cards[-1]["card"]["result"] == "rewritten" and cards[-1]["card"]["urls_rewritten"] == 3


def test_card_public_base_follows_x_forwarded_proto(stack: Stack) -> None:
    headers = {"X-Forwarded-Proto": "https", "Host": "agents.example.com"}
    card = httpx.get(stack.url("echo") + ".well-known/agent-card.json", headers=headers, timeout=5).json()
    assert card["url"] == "https://agents.example.com/agents/echo/"


def test_signed_card_is_left_intact_and_legacy_card_is_rewritten(stack: Stack) -> None:
    signed = httpx.get(stack.url("static") + ".well-known/agent-card.json", timeout=5)
    legacy = httpx.get(stack.url("static") + ".well-known/agent.json", timeout=5)

    assert signed.json() == SIGNED_CARD, "a signed card is never rewritten under its signature"
    assert legacy.json()["url"] == stack.url("static") + "a2a"
    records = stack.wait(2, method="AgentCard", target="static")
    assert {r["card"]["result"] for r in records} == {"signed_kept", "rewritten"}


# --- classification and metrics --------------------------------------------------------------


FORGED = {"x-tollgate-a2a-hop": "9", "x-tollgate-a2a-chain": "x,y", "x-tollgate-a2a-on-behalf-of": "ceo",
          "x-tollgate-a2a-caller": "root", "x-tollgate-a2a-sig": "v1.99999999999.deadbeef"}  # fmt: skip


def test_forged_headers_never_reach_the_agent_and_other_json_rpc_is_recorded(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    before = len(stack.records(jsonrpc_method="tools/call"))
    headers = {**FORGED, "traceparent": "not-a-traceparent", "x-api-key": KEYS["alice"]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}
    response = httpx.post(stack.url("echo"), json=body, headers=headers, timeout=5)

    assert response.json()["error"]["code"] == -32601, response.text  # the agent's own answer
    [seen] = stack.seen("echo")
    h = seen["headers"]
    assert (h["x-tollgate-a2a-hop"], h["x-tollgate-a2a-chain"], h["x-tollgate-a2a-caller"]) == ("1", "echo", "alice")
    assert h["x-tollgate-a2a-on-behalf-of"] == "alice" and h["x-tollgate-a2a-sig"] != FORGED["x-tollgate-a2a-sig"]
    assert h["traceparent"] != "not-a-traceparent"
    [record] = stack.wait(before + 1, jsonrpc_method="tools/call")[before:]
    assert (record["method"], record["decision"], record["hop"]) == ("tools/call", "allow", 1)
    assert record["identity"]["principal"] == "alice"
    refused = rpc(stack.url("echo"), "tools/call", {}, headers={"x-api-key": "stolen"})
    assert refused.status_code == 401 and refused.json()["error"]["data"][0]["reason"] == "A2A_UNAUTHENTICATED"


def test_non_json_post_is_refused_although_the_agent_would_run_it(stack: Stack) -> None:
    """a2a-sdk ignores the Content-Type: a text/plain JSON-RPC body is executed."""
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "SendMessage", "params": message_1_0("plain")})
    plain = {"Content-Type": "text/plain", "A2A-Version": "1.0"}
    direct = httpx.post(stack.agents["echo"] + "/", content=body, headers=plain, timeout=20)
    assert "result" in direct.json(), "the demo agent runs it: the gateway must not pass it on"
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    before = len(stack.records(reason="A2A_INVALID_REQUEST", target="echo"))

    stolen = httpx.post(stack.url("echo"), content=body, headers={**plain, **FORGED, "x-api-key": "stolen"}, timeout=5)
    anonymous = httpx.post(stack.url("echo"), content=body, headers={**plain, **FORGED}, timeout=5)
    no_type = httpx.post(stack.url("echo"), content=body, headers={"A2A-Version": "1.0", "Content-Type": ""}, timeout=5)

    assert stolen.status_code == 401 and stolen.json()["error"]["data"][0]["reason"] == "A2A_UNAUTHENTICATED"
    for response in (anonymous, no_type):
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error["code"] == -32600 and error["data"][0]["reason"] == "A2A_INVALID_REQUEST"
    assert stack.seen("echo") == [], "nothing reached the agent"
    records = stack.wait(before + 2, reason="A2A_INVALID_REQUEST", target="echo")
    assert all(r["decision"] == "error" for r in records)


def test_json_rpc_batch_is_refused(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    batch = [{"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": message_1_0("batched")} for i in (1, 2)]
    response = httpx.post(stack.url("echo"), json=batch, headers={"A2A-Version": "1.0", "x-api-key": "stolen", **FORGED}, timeout=5)
    assert response.status_code == 401, "an unknown key is refused whatever the body"
    response = httpx.post(stack.url("echo"), json=batch, headers={"A2A-Version": "1.0", **FORGED}, timeout=5)

    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32600 and error["data"][0]["reason"] == "A2A_INVALID_REQUEST"
    assert "batch" in error["message"]
    assert stack.seen("echo") == []


def test_percent_encoded_rest_cancel_is_still_the_originators_alone(stack: Stack) -> None:
    alice, bob = {"x-api-key": KEYS["alice"]}, {"x-api-key": KEYS["bob"]}
    task_id = rpc(stack.url("echo"), "SendMessage", message_1_0("alice's"), headers=alice).json()["result"]["task"]["id"]
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    encoded = stack.url("echo") + f"tasks/{task_id}%3Acancel"

    by_bob = httpx.post(encoded, headers={"A2A-Version": "1.0", **bob}, timeout=5)
    slashed = httpx.post(stack.url("echo") + f"tasks%2F{task_id}%3Acancel", headers={"A2A-Version": "1.0", **alice}, timeout=5)
    assert stack.seen("echo") == []
    by_alice = httpx.post(encoded, headers={"A2A-Version": "1.0", **alice}, timeout=5)

    assert by_bob.status_code == 403, by_bob.text
    assert by_bob.json()["error"]["details"][0]["reason"] == "A2A_NOT_TASK_ORIGINATOR"
    assert slashed.status_code == 400 and slashed.json()["error"]["details"][0]["reason"] == "A2A_INVALID_REQUEST"
    # Alice's reached the agent, which decoded the path itself (the demo agent has no REST routes: 404).
    assert by_alice.status_code == 404
    assert [s["path"] for s in stack.seen("echo")] == [f"/tasks/{task_id}:cancel"]
    records = stack.wait(2, method="CancelTask", binding="rest", task_id=task_id)
    assert {r["decision"] for r in records} == {"deny", "allow"}


def test_caller_credentials_never_reach_the_agent(stack: Stack) -> None:
    httpx.post(stack.agents["echo"] + "/_seen/reset").raise_for_status()
    for headers in ({"x-api-key": KEYS["alice"], "Authorization": "Bearer some-token"},
                    {"x-api-key": KEYS["svc-planner"], "x-goog-api-key": "g"}):  # fmt: skip
        response = rpc(stack.url("echo"), "SendMessage", message_1_0("no keys upstream"), headers=headers)
        assert "result" in response.json(), response.text

    seen = stack.seen("echo")
    assert len(seen) == 2
    for s in seen:
        assert not {"authorization", "x-api-key", "x-goog-api-key"} & set(s["headers"]), s["headers"]
    assert [s["headers"]["x-tollgate-a2a-caller"] for s in seen] == ["alice", "planner"], "identities were still read"


def test_rest_binding_is_classified(stack: Stack) -> None:
    response = httpx.get(stack.url("echo") + "acme/tasks/t-rest-1", headers={"A2A-Version": "1.0"}, timeout=5)
    assert response.status_code == 404  # the demo agent serves JSON-RPC only
    [record] = stack.wait(binding="rest", task_id="t-rest-1")
    assert record["method"] == "GetTask" and record["hop"] == 1 and record["status"] == 404


def test_metrics_by_target_method_and_state(stack: Stack) -> None:
    names = {
        "requests": "wasmcustom.tollgate.a2a.requests",
        "completed": "wasmcustom.tollgate.a2a.calls.target.echo.method.SendMessage.state.completed",
        "denied": "wasmcustom.tollgate.a2a.calls.target.static.method.SendMessage.state.denied",
        "unauthenticated": "wasmcustom.tollgate.a2a.denied.target.static.reason.A2A_UNAUTHENTICATED",
        "cards": "wasmcustom.tollgate.a2a.cards.target.echo.result.rewritten",
    }
    before = stack.envoy.stats()

    send(stack.url("echo"), "count me")  # card + SendMessage
    rpc(stack.url("static"), "SendMessage", message_1_0("refused"), headers={"x-api-key": "wrong"})

    def delta() -> dict[str, int]:
        after = stack.envoy.stats()
        return {k: after.get(n, 0) - before.get(n, 0) for k, n in names.items()}

    expected = {"requests": 3, "completed": 1, "denied": 1, "unauthenticated": 1, "cards": 1}
    harness.wait_until(lambda: delta() == expected, 5, f"metric deltas {expected}")
    prometheus = stack.envoy.prometheus()
    assert 'tollgate_a2a_calls{a2a_target="echo",a2a_method="SendMessage",a2a_state="completed"}' in prometheus
    assert 'tollgate_a2a_calls{a2a_target="static",a2a_method="SendMessage",a2a_state="denied"}' in prometheus
    assert 'tollgate_a2a_denied{a2a_target="static",a2a_reason="A2A_UNAUTHENTICATED"}' in prometheus
    assert 'tollgate_a2a_cards{a2a_target="echo",a2a_card_result="rewritten"}' in prometheus
