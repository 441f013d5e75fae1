"""The shipped A2A policy (envoy/a2a.yaml, unchanged) through the real Envoy 1.40, with the
official a2a-sdk client (and httpx where the SDK cannot say it) against the demo agent:

- a task is its originator's: another caller, or an anonymous one, cannot get it, subscribe
  to it or read its push-notification configs, and `ListTasks` shows a caller only its own
  tasks (anonymous callers are refused) — the agent itself lists every task it holds;
- a task the gateway has no record of (never seen, or created by calling the agent directly)
  is answered as the agent answers an unknown task (-32001 TaskNotFoundError, REST 404),
  never forwarded;
- HTTP methods A2A does not use (PUT, PATCH) are refused on agent routes, never passed;
- a body that is not JSON (or empty) gets -32700 and an invalid request -32600, with the
  request's id when it can be read — the same codes and ids as the agent's own answers;
- an unbounded `delegation.context_ttl_secs` is refused at load, naming the field;
- the Istio examples (examples/istio) carry the same policy as envoy/a2a.yaml.

    .venv/bin/python -m pytest tests/test_a2a_enforcement.py -q
"""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import CancelTaskRequest, GetTaskRequest, ListTasksRequest, SendMessageRequest, SubscribeToTaskRequest
from a2a.types.a2a_pb2 import Role
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import TaskNotFoundError

pytestmark = pytest.mark.timeout(60)

AGENT = "examples/a2a_agent/agent.py"
# The demo keys of envoy/a2a.yaml.
ALICE = {"x-api-key": "tg-demo-alice"}
BOB = {"x-api-key": "tg-demo-bob"}
ANONYMOUS: dict[str, str] = {}


@dataclass
class Stack:
    envoy: harness.Envoy
    agent: str  # the echo agent's direct base URL

    @property
    def echo(self) -> str:
        return f"{self.envoy.url}/agents/echo/"

    def seen(self) -> list[dict[str, Any]]:
        return httpx.get(self.agent + "/_seen", timeout=5).json()

    def reset(self) -> None:
        httpx.post(self.agent + "/_seen/reset", timeout=5).raise_for_status()

    def wait(self, count: int = 1, **match: Any) -> list[dict]:
        return self.envoy.wait_audit(count, timeout=10, where=lambda r: all(r.get(k) == v for k, v in match.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("a2a-enforcement")
    port = harness.free_port()
    started: list[harness.Proc] = []
    try:
        agent = harness.python_server("agent-echo", AGENT, ["--host", "127.0.0.1", "--port", str(port), "--name", "echo"],
                                      workdir, f"http://127.0.0.1:{port}/.well-known/agent-card.json")  # fmt: skip
        started.append(agent)
        # The shipped configuration as it is: only ports and paths are rendered.
        upstreams = {"agent_echo": port, "agent_planner": harness.free_port(), "agent_researcher": harness.free_port()}
        envoy = harness.Envoy(harness.load_envoy_config("a2a.yaml"), workdir, upstreams=upstreams)
        started.append(envoy.proc)
        yield Stack(envoy, f"http://127.0.0.1:{port}")
    finally:
        for proc in reversed(started):
            proc.stop()


# --- helpers -------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_client(url: str, headers: dict[str, str], use: Any, streaming: bool = False) -> Any:
    """Runs `use(client)` with an a2a-sdk client built from the (gateway-rewritten) card,
    every request carrying `headers` (the caller's credential)."""
    async with httpx.AsyncClient(headers=headers, timeout=20) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
        try:
            return await use(client)
        finally:
            await client.close()


def create_task(stack: Stack, headers: dict[str, str], text: str) -> str:
    """Sends a message with the SDK client as the caller `headers` name; returns the task id."""

    async def use(client: Any) -> str:
        message = new_text_message(text, role=Role.ROLE_USER)
        events = [e async for e in client.send_message(SendMessageRequest(message=message))]
        return events[0].task.id

    task_id = run(_with_client(stack.echo, headers, use))
    assert task_id
    return task_id


def get_task(stack: Stack, headers: dict[str, str], task_id: str, url: str | None = None) -> Any:
    return run(_with_client(url or stack.echo, headers, lambda c: c.get_task(GetTaskRequest(id=task_id))))


def cancel_task(stack: Stack, headers: dict[str, str], task_id: str, url: str | None = None) -> Any:
    return run(_with_client(url or stack.echo, headers, lambda c: c.cancel_task(CancelTaskRequest(id=task_id))))


def list_tasks(stack: Stack, headers: dict[str, str]) -> Any:
    return run(_with_client(stack.echo, headers, lambda c: c.list_tasks(ListTasksRequest())))


def subscribe(stack: Stack, headers: dict[str, str], task_id: str, url: str | None = None) -> list[Any]:
    async def use(client: Any) -> list[Any]:
        return [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]

    return run(_with_client(url or stack.echo, headers, use, streaming=True))


def rpc(url: str, method: str, params: dict, headers: dict[str, str], version: str | None = "1.0") -> httpx.Response:
    h = {"A2A-Version": version} if version else {}
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    return httpx.post(url, json=body, headers={**h, **headers}, timeout=20)


def refused_as_not_originator(call: Any) -> None:
    with pytest.raises(Exception) as raised:
        call()
    assert "-32052" in str(raised.value) and "created the task" in str(raised.value), repr(raised.value)


# --- the originator's tasks --------------------------------------------------------------


def test_only_the_originator_may_get_or_subscribe_to_a_task(stack: Stack) -> None:
    secret = f"alice-secret-{uuid.uuid4()}"
    task_id = create_task(stack, ALICE, secret)
    stack.reset()

    # Bob and an anonymous caller, with the a2a-sdk client: refused before the agent.
    for who in (BOB, ANONYMOUS):
        refused_as_not_originator(lambda: get_task(stack, who, task_id))
        with pytest.raises(Exception):
            subscribe(stack, who, task_id)
    # The same in the 0.3 dialect (tasks/get, tasks/resubscribe), push-notification configs
    # and the HTTP+JSON binding, with httpx.
    for who in (BOB, ANONYMOUS):
        for method, params, version in [
            ("tasks/get", {"id": task_id}, None),
            ("tasks/resubscribe", {"id": task_id}, None),
            ("tasks/pushNotificationConfig/list", {"id": task_id}, None),
            ("ListTaskPushNotificationConfigs", {"taskId": task_id}, "1.0"),
            ("GetTaskPushNotificationConfig", {"taskId": task_id, "id": "cfg"}, "1.0"),
        ]:
            response = rpc(stack.echo, method, params, who, version=version)
            assert response.status_code == 200, response.text
            error = response.json()["error"]
            info = error["data"] if version is None else error["data"][0]
            assert (error["code"], info["reason"]) == (-32052, "A2A_NOT_TASK_ORIGINATOR"), (method, response.text)
            assert secret not in response.text
        rest = httpx.get(stack.echo + f"tasks/{task_id}", headers={"A2A-Version": "1.0", **who}, timeout=5)
        assert rest.status_code == 403 and rest.json()["error"]["details"][0]["reason"] == "A2A_NOT_TASK_ORIGINATOR"
    assert stack.seen() == [], "no refused read reached the agent"

    # Alice may: her GetTask returns her task, her subscription reaches the agent.
    task = get_task(stack, ALICE, task_id)
    assert task.id == task_id and secret in str(task.history)
    try:
        subscribe(stack, ALICE, task_id)
    except Exception:  # noqa: BLE001 - the agent itself refuses to stream a finished task
        pass
    assert [s["method"] for s in stack.seen()] == ["GetTask", "SubscribeToTask"]

    records = stack.wait(2, method="GetTask", task_id=task_id, decision="deny")
    assert {(r.get("identity") or {}).get("principal") for r in records} == {"bob", None}
    assert all(r["rule_id"] == "read-own-tasks" and r["reason"] == "A2A_NOT_TASK_ORIGINATOR" for r in records)
    [allowed] = stack.wait(method="GetTask", task_id=task_id, decision="allow")
    assert allowed["identity"]["principal"] == "alice"


def test_list_tasks_shows_each_caller_only_its_own_tasks(stack: Stack) -> None:
    alice_text, bob_text, anon_text = (f"{who} {uuid.uuid4()}" for who in ("alice", "bob", "anonymous"))
    alice_task = create_task(stack, ALICE, alice_text)
    bob_task = create_task(stack, BOB, bob_text)
    anon_task = create_task(stack, ANONYMOUS, anon_text)

    # The agent itself lists every task it holds, other callers' messages included.
    direct = rpc(stack.agent + "/", "ListTasks", {}, {}).json()["result"]
    assert {alice_task, bob_task, anon_task} <= {t["id"] for t in direct["tasks"]}

    alices = list_tasks(stack, ALICE)
    alice_ids = {t.id for t in alices.tasks}
    assert alice_task in alice_ids and not alice_ids & {bob_task, anon_task}
    assert bob_text not in str(alices) and anon_text not in str(alices)
    assert alices.total_size == len(alices.tasks), "other callers' tasks are not even counted"

    bobs = list_tasks(stack, BOB)
    assert bob_task in {t.id for t in bobs.tasks} and not {t.id for t in bobs.tasks} & {alice_task, anon_task}
    assert alice_text not in str(bobs)

    # Anonymous: refused (anonymous callers own no task), with the SDK client and over REST.
    refused_as_not_originator(lambda: list_tasks(stack, ANONYMOUS))
    rest = httpx.get(stack.echo + "tasks", headers={"A2A-Version": "1.0"}, timeout=5)
    assert rest.status_code == 403 and rest.json()["error"]["details"][0]["reason"] == "A2A_NOT_TASK_ORIGINATOR"
    # A task created anonymously is nobody's to read back, not even anonymously.
    refused_as_not_originator(lambda: get_task(stack, ANONYMOUS, anon_task))

    records = stack.wait(2, method="ListTasks", decision="allow")
    by_caller = {r["identity"]["principal"]: r for r in records}
    assert by_caller["alice"]["tasks_withheld"] >= 2 and by_caller["bob"]["tasks_withheld"] >= 2


# --- tasks the gateway has no record of ----------------------------------------------------


def not_found_by_the_sdk(call: Any) -> None:
    """The a2a-sdk client raises A2A's TaskNotFoundError (it read -32001)."""
    with pytest.raises(TaskNotFoundError):
        call()


def test_an_unknown_task_is_not_found_through_the_gateway_as_at_the_agent(stack: Stack) -> None:
    """Issue 13 (TCK): GetTask / CancelTask on a task nobody created answer -32001, as the agent
    does, not the gateway's -32052 (which would claim the task exists and is someone else's)."""
    unknown = f"no-such-task-{uuid.uuid4()}"
    # The agent itself, with the a2a-sdk client: TaskNotFoundError; with httpx, both dialects.
    for call in (get_task, cancel_task, subscribe):
        not_found_by_the_sdk(lambda: call(stack, ANONYMOUS, unknown, url=stack.agent))
    calls = [("GetTask", "1.0"), ("CancelTask", "1.0"), ("tasks/get", None), ("tasks/cancel", None)]
    direct = {m: rpc(stack.agent + "/", m, {"id": unknown}, {}, version=v).json() for m, v in calls}
    assert all(d["error"]["code"] == -32001 for d in direct.values()), direct
    stack.reset()
    # Through the gateway, under the shipped policy, for every caller: the same.
    for who in (ALICE, BOB, ANONYMOUS):
        for call in (get_task, cancel_task, subscribe):
            not_found_by_the_sdk(lambda: call(stack, who, unknown))
    # The same error object as the agent's (httpx: the SDK client speaks 1.0 only).
    for method, version in calls:
        via = rpc(stack.echo, method, {"id": unknown}, ALICE, version=version).json()
        assert (via["id"], via["error"]) == (direct[method]["id"], direct[method]["error"]), (method, via, direct[method])
    # REST: the a2a-sdk's own HTTP+JSON answer for TaskNotFoundError.
    rest = httpx.get(stack.echo + f"tasks/{unknown}", headers={"A2A-Version": "1.0", **ALICE}, timeout=5)
    assert rest.status_code == 404
    assert rest.json() == build_rest_error_payload(TaskNotFoundError()), rest.text
    assert stack.seen() == [], "answered by the gateway: nothing reached the agent"

    records = stack.wait(3, method="CancelTask", task_id=unknown)
    assert all(r["decision"] == "deny" and r["reason"] == "A2A_TASK_NOT_FOUND" and r["rule_id"] == "cancel-own-tasks"
               and r["rpc_error_code"] == -32001 for r in records)  # fmt: skip


def test_a_task_created_around_the_gateway_is_invisible_through_it(stack: Stack) -> None:
    """A task created by calling the agent directly (or through another Envoy, or whose record
    expired) has no originator the gateway knows: nobody reads or cancels it through the gateway,
    and nothing tells it apart from a task that does not exist."""
    secret = f"created directly {uuid.uuid4()}"

    async def direct(client: Any) -> str:
        message = new_text_message(secret, role=Role.ROLE_USER)
        return [e async for e in client.send_message(SendMessageRequest(message=message))][0].task.id

    task_id = run(_with_client(stack.agent, {}, direct))
    assert get_task(stack, ANONYMOUS, task_id, url=stack.agent).id == task_id, "the agent has it"
    stack.reset()
    for who in (ALICE, BOB, ANONYMOUS):
        not_found_by_the_sdk(lambda: get_task(stack, who, task_id))
        not_found_by_the_sdk(lambda: cancel_task(stack, who, task_id))
        response = rpc(stack.echo, "tasks/get", {"id": task_id}, who, version=None)
        assert response.json()["error"]["code"] == -32001 and secret not in response.text
    assert stack.seen() == [], "no call on a foreign task reached the agent"


# --- HTTP methods A2A does not use -----------------------------------------------------------


@pytest.mark.parametrize("http_method", ["PUT", "PATCH"])
def test_put_and_patch_are_refused_and_never_reach_the_agent(stack: Stack, http_method: str) -> None:
    text = f"sent with {http_method} {uuid.uuid4()}"
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "SendMessage", "params": {
        "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}}})  # fmt: skip
    headers = {"Content-Type": "application/json", "A2A-Version": "1.0"}
    # The agent would see such a request (its recorder does), so the gateway must not pass it.
    stack.reset()
    httpx.request(http_method, stack.agent + "/", content=body, headers=headers, timeout=10)
    assert [s["http_method"] for s in stack.seen()] == [http_method]
    stack.reset()

    for who in (ANONYMOUS, ALICE):
        response = httpx.request(http_method, stack.echo, content=body, headers={**headers, **who}, timeout=10)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "GET, POST, DELETE"
        error = response.json()["error"]
        assert error["code"] == -32600 and error["data"][0]["reason"] == "A2A_INVALID_REQUEST"
    rest = httpx.request(http_method, stack.echo + "tasks/t-1", content="{}",
                         headers={"Content-Type": "application/a2a+json", "A2A-Version": "1.0"}, timeout=10)  # fmt: skip
    assert rest.status_code == 405 and rest.json()["error"]["status"] == "UNIMPLEMENTED"
    assert stack.seen() == [], "nothing reached the agent"

    records = stack.wait(3, http_method=http_method, target="echo")
    assert all(r["decision"] == "error" and r["reason"] == "A2A_INVALID_REQUEST" and r["status"] == 405 for r in records)
    assert text not in json.dumps(records)


# --- JSON-RPC errors for what is not a request ----------------------------------------------

# (body, code): each is answered by the agent itself with that code; the gateway must agree
# (code and id) and keep its own reason. Ids: the agent echoes a string or integer id it could
# read, else null.
MALFORMED = [
    ("{nope", -32700),
    ("", -32700),
    ("   ", -32700),
    ('{"jsonrpc":"2.0","id":"r-1","method":"GetTask"', -32700),
    ('{"jsonrpc":"1.0","id":"r-2","method":"SendMessage","params":{}}', -32600),
    ('{"jsonrpc":"2.0","id":3,"params":{}}', -32600),
    ('{"jsonrpc":"2.0","id":4,"method":7}', -32600),
    ('{"jsonrpc":"2.0","id":5,"result":{}}', -32600),
    ('{"jsonrpc":"2.0","id":true,"method":"GetTask","params":{"id":"t"}}', -32600),
    ('{"jsonrpc":"2.0","id":{"a":1},"method":"GetTask","params":{"id":"t"}}', -32600),
    ('[{"jsonrpc":"2.0","id":6,"method":"GetTask","params":{"id":"t"}}]', -32600),
    ("42", -32600),
]


@pytest.mark.parametrize("version", ["1.0", None])
@pytest.mark.parametrize(("body", "code"), MALFORMED)
def test_malformed_json_rpc_gets_the_agents_code_and_id(stack: Stack, body: str, code: int, version: str | None) -> None:
    headers = {"Content-Type": "application/json", **({"A2A-Version": version} if version else {})}
    direct = httpx.post(stack.agent + "/", content=body, headers=headers, timeout=10)
    assert direct.json()["error"]["code"] == code, direct.text
    stack.reset()

    for who in (ANONYMOUS, ALICE):
        via = httpx.post(stack.echo, content=body, headers={**headers, **who}, timeout=10)
        assert via.status_code == direct.status_code == 200, via.text
        answer = via.json()
        assert (answer["error"]["code"], answer["id"]) == (code, direct.json()["id"]), (body, via.text, direct.text)
        info = answer["error"]["data"][0] if version else answer["error"]["data"]
        assert (info["reason"], info["domain"]) == ("A2A_INVALID_REQUEST", "tollgate")
    assert stack.seen() == [], "refused by the gateway, never passed"


# --- configuration ---------------------------------------------------------------------------


def test_an_unbounded_signed_context_lifetime_is_refused_at_load(tmp_path: Path) -> None:
    cfg = harness.load_envoy_config("a2a.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.a2a")
    plugin["delegation"]["context_ttl_secs"] = 18446744073709551615
    log = harness.run_envoy_expect_failure(cfg, tmp_path, plugin_configs={"tollgate.a2a": plugin})
    assert "delegation.context_ttl_secs" in log, log[-2000:]


def _istio_a2a_configs() -> list[tuple[str, dict]]:
    """(file, plugin JSON) of every A2A filter configured in examples/istio."""
    import yaml

    out = []
    for path in sorted((harness.REPO / "examples" / "istio").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "WasmPlugin" and doc["spec"]["pluginName"] == "tollgate.a2a":
                out.append((path.name, doc["spec"]["pluginConfig"]))
            elif doc["kind"] == "EnvoyFilter":
                for patch in doc["spec"]["configPatches"]:
                    cfg = patch["patch"]["value"]["typed_config"]["config"]
                    if cfg["root_id"] == "tollgate.a2a":
                        out.append((path.name, json.loads(cfg["configuration"]["value"])))
    return out


def test_the_istio_examples_carry_the_shipped_policy() -> None:
    shipped = harness.plugin_config(harness.load_envoy_config("a2a.yaml"), "tollgate.a2a")
    examples = _istio_a2a_configs()
    assert {name for name, _ in examples} == {"wasmplugin-a2a.yaml", "envoyfilter-tollgate.yaml"}
    for name, example in examples:
        # The same rules in the same order (callers are named by agent, whatever the identity source).
        assert example["authz"] == shipped["authz"], name
        for section in ("conversations", "limits", "log_message_parts", "forward_credentials"):
            assert example[section] == shipped[section], (name, section)
        assert example["delegation"]["max_hops"] == shipped["delegation"]["max_hops"], name
        assert example["delegation"]["context_ttl_secs"] == shipped["delegation"]["context_ttl_secs"], name
        assert {t["agent"] for t in example["delegation"]["trusted_agents"]} == {
            t["agent"] for t in shipped["delegation"]["trusted_agents"]}, name  # fmt: skip
