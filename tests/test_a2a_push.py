"""Push-notification webhooks (SSRF), issue 19 item 4, through the real Envoy 1.40 with the
shipped envoy/a2a.yaml policy plus `push_notifications`, the real a2a-sdk client and server
(tests/a2a_test_agent.py: the SDK's push config store and push sender):

- a webhook at the cloud metadata address (and at loopback / private addresses in odd
  spellings, in 1.0 and 0.3 JSON-RPC, HTTP+JSON, and inside SendMessage's configuration) is
  refused with JSON-RPC -32602 / HTTP 400, never reaches the agent, and is audited and counted;
- a public webhook passes (the agent stores it), and an allow-listed host is admitted: the
  agent really delivers the task's push notifications to it.

    .venv/bin/python -m pytest tests/test_a2a_push.py -q
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import GetTaskPushNotificationConfigRequest, SendMessageRequest
from a2a.types.a2a_pb2 import Role, SendMessageConfiguration, TaskPushNotificationConfig

pytestmark = pytest.mark.timeout(90)

AGENT = "tests/a2a_test_agent.py"
ALICE = {"x-api-key": "tg-demo-alice"}
METADATA_URL = "http://169.254.169.254/latest/meta-data/"


class Webhook:
    """Our own receiver for the agent's push notifications (not A2A: a plain POST sink)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class Stack:
    envoy: harness.Envoy
    agent: str
    webhook: Webhook

    @property
    def echo(self) -> str:
        return f"{self.envoy.url}/agents/echo/"

    def seen(self, method: str | None = None) -> list[dict[str, Any]]:
        return [s for s in httpx.get(self.agent + "/_seen", timeout=5).json() if method is None or s["method"] == method]

    def wait(self, count: int = 1, **match: Any) -> list[dict]:
        return self.envoy.wait_audit(count, timeout=10, where=lambda r: all(r.get(k) == v for k, v in match.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("a2a-push")
    port = harness.free_port()
    webhook = Webhook()
    started: list[harness.Proc] = []
    try:
        agent = harness.python_server("agent-echo", AGENT, ["--port", str(port)], workdir,
                                      f"http://127.0.0.1:{port}/.well-known/agent-card.json")
        started.append(agent)
        cfg = harness.load_envoy_config("a2a.yaml")
        plugin = harness.plugin_config(cfg, "tollgate.a2a")
        # The shipped policy; the allow-list admits the test's own webhook receiver on loopback.
        plugin["push_notifications"] = {"allowed_hosts": ["127.0.0.1"], "refused_hosts": ["*.corp.example.com"]}
        upstreams = {"agent_echo": port, "agent_planner": harness.free_port(), "agent_researcher": harness.free_port()}
        envoy = harness.Envoy(cfg, workdir, upstreams=upstreams, plugin_configs={"tollgate.a2a": plugin})
        started.append(envoy.proc)
        yield Stack(envoy, f"http://127.0.0.1:{port}", webhook)
    finally:
        for proc in reversed(started):
            proc.stop()
        webhook.stop()


async def _client(url: str, streaming: bool = False) -> Any:
    http = httpx.AsyncClient(headers=ALICE, timeout=20)
    client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
    return client, http


def create_task(stack: Stack, text: str = "hi") -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        client, http = await _client(stack.echo)
        try:
            events = [e async for e in client.send_message(SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER)))]
            return events[0].task.id, events[0].task.context_id
        finally:
            await client.close()
            await http.aclose()

    return asyncio.run(go())


def rpc(stack: Stack, method: str, params: dict, version: str | None = "1.0") -> httpx.Response:
    headers = {**ALICE, "content-type": "application/json"}
    if version:
        headers["a2a-version"] = version
    body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}
    return httpx.post(stack.echo, json=body, headers=headers, timeout=10)


def assert_refused(stack: Stack, response: httpx.Response, rpc_id: Any = None) -> None:
    assert response.status_code == 200, response.text
    error = response.json()["error"]
    assert error["code"] == -32602, error
    assert "push-notification URL refused" in error["message"]


def test_metadata_webhook_is_refused_with_the_sdk_client(stack: Stack) -> None:
    task_id, _ = create_task(stack)
    before = stack.envoy.stat("wasmcustom.tollgate.a2a.denied.target.echo.reason.A2A_PUSH_URL_REFUSED")

    async def go() -> Exception | None:
        client, http = await _client(stack.echo)
        try:
            await client.create_task_push_notification_config(TaskPushNotificationConfig(task_id=task_id, url=METADATA_URL))
        except Exception as exc:  # noqa: BLE001 - the SDK's error for -32602 is what we check
            return exc
        finally:
            await client.close()
            await http.aclose()
        return None

    error = asyncio.run(go())
    assert error is not None, "the metadata webhook was accepted"
    assert "push-notification URL refused" in str(error), repr(error)
    assert stack.seen("CreateTaskPushNotificationConfig") == []
    [record] = stack.wait(1, method="CreateTaskPushNotificationConfig", task_id=task_id)
    assert record["decision"] == "deny"
    assert record["reason"] == "A2A_PUSH_URL_REFUSED"
    assert record["push_url_refused"] == "metadata"
    assert record["caller"] == "alice"
    assert record["rpc_error_code"] == -32602
    harness.wait_until(
        lambda: stack.envoy.stat("wasmcustom.tollgate.a2a.denied.target.echo.reason.A2A_PUSH_URL_REFUSED") == before + 1,
        5, "denied metric")


@pytest.mark.parametrize("url,why", [
    # 127.0.0.2 (127.0.0.1 is allow-listed here, in every spelling)
    ("http://2130706434:8080/", "loopback"),
    ("http://0177.0.0.2/", "loopback"),
    ("http://0x7f.2/", "loopback"),
    ("http://localhost:8080/", "refused_name"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "refused_name"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.10/hook", "private"),
    ("http://[fe80::1]/", "link_local"),
    ("http://hooks.corp.example.com/", "refused_name"),
    ("file:///etc/passwd", "scheme"),
])
def test_internal_webhooks_are_refused_in_every_spelling(stack: Stack, url: str, why: str) -> None:
    task_id, _ = create_task(stack)
    response = rpc(stack, "CreateTaskPushNotificationConfig", {"taskId": task_id, "url": url})
    assert_refused(stack, response)
    [record] = stack.wait(1, method="CreateTaskPushNotificationConfig", task_id=task_id)
    assert record["push_url_refused"] == why
    assert stack.seen("CreateTaskPushNotificationConfig") == []


def test_v03_set_and_rest_create_are_checked(stack: Stack) -> None:
    task_id, _ = create_task(stack)
    response = rpc(stack, "tasks/pushNotificationConfig/set",
                   {"taskId": task_id, "pushNotificationConfig": {"url": METADATA_URL}}, version=None)
    assert_refused(stack, response)
    assert stack.seen("tasks/pushNotificationConfig/set") == []
    rest = httpx.post(f"{stack.echo}rest/tasks/{task_id}/pushNotificationConfigs",
                      json={"taskId": task_id, "url": "http://127.2:2375/"},
                      headers={**ALICE, "content-type": "application/a2a+json", "a2a-version": "1.0"}, timeout=10)
    assert rest.status_code == 400, rest.text
    assert rest.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert rest.json()["error"]["details"][0]["reason"] == "A2A_PUSH_URL_REFUSED"
    assert not [s for s in stack.seen() if s["path"].endswith("/pushNotificationConfigs")]


def test_push_config_inside_send_message_is_checked(stack: Stack) -> None:
    async def go() -> Exception | None:
        client, http = await _client(stack.echo)
        try:
            config = SendMessageConfiguration(task_push_notification_config=TaskPushNotificationConfig(url=METADATA_URL))
            request = SendMessageRequest(message=new_text_message("ssrf", role=Role.ROLE_USER), configuration=config)
            [e async for e in client.send_message(request)]
        except Exception as exc:  # noqa: BLE001
            return exc
        finally:
            await client.close()
            await http.aclose()
        return None

    error = asyncio.run(go())
    assert error is not None and "push-notification URL refused" in str(error), repr(error)
    assert not [s for s in stack.seen("SendMessage") if "ssrf" in json.dumps(s["body"])]


def test_public_webhook_passes_and_is_stored(stack: Stack) -> None:
    task_id, _ = create_task(stack)
    url = "https://hooks.example.com/a2a/" + task_id

    async def go() -> Any:
        client, http = await _client(stack.echo)
        try:
            created = await client.create_task_push_notification_config(TaskPushNotificationConfig(task_id=task_id, url=url))
            got = await client.get_task_push_notification_config(GetTaskPushNotificationConfigRequest(task_id=task_id, id=created.id))
            return got
        finally:
            await client.close()
            await http.aclose()

    got = asyncio.run(go())
    assert got.url == url
    [seen] = stack.seen("CreateTaskPushNotificationConfig")[-1:]
    assert seen["body"]["params"]["url"] == url
    [record] = stack.wait(1, method="CreateTaskPushNotificationConfig", task_id=task_id, decision="allow")
    assert "push_url_refused" not in record


def test_allow_listed_webhook_receives_the_agents_notifications(stack: Stack) -> None:
    hook = f"http://127.0.0.1:{stack.webhook.port}/hook/{uuid.uuid4()}"

    async def go() -> str:
        client, http = await _client(stack.echo)
        try:
            config = SendMessageConfiguration(task_push_notification_config=TaskPushNotificationConfig(url=hook, token="t0k"))
            request = SendMessageRequest(message=new_text_message("notify me", role=Role.ROLE_USER), configuration=config)
            events = [e async for e in client.send_message(request)]
            return events[0].task.id
        finally:
            await client.close()
            await http.aclose()

    task_id = asyncio.run(go())
    path = hook.split(str(stack.webhook.port), 1)[1]
    harness.wait_until(lambda: any(r["path"] == path for r in stack.webhook.received), 10, "push notification delivered")
    assert any(task_id in json.dumps(r["body"]) for r in stack.webhook.received if r["path"] == path)
