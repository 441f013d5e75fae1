"""tools/tollgate-key (`make key`): the key it prints once, with the entry it prints pasted into
`identity.api_keys.keys` of each layer of the shipped stack config, authenticates that caller
through the real Envoy on all three layers (the LLM with the `openai`-shaped API, MCP with the
real `mcp` SDK client, A2A with a SendMessage to the demo agent); a key that was not pasted
does not. The demo keys are named tg-demo-<who> in every shipped config."""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys

import httpx
import httpx2
import pytest

import harness
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.timeout(120)

TOOL = harness.REPO / "tools" / "tollgate-key"


def run_tool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=30, input=stdin)


def printed(out: str) -> tuple[str, dict]:
    """(the key, the entry) as a person reads them off the tool's output."""
    (key,) = re.findall(r"^  (tg-\S+)$", out, re.M)
    (line,) = [l for l in out.splitlines() if l.startswith("  {")]
    return key, json.loads(line)


def test_the_tool_prints_a_new_key_once_and_its_entry():
    a, b = run_tool("carol", "--team", "payments", "--groups", "eng,ops"), run_tool("carol")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    key, entry = printed(a.stdout)
    assert printed(b.stdout)[0] != key  # random each time
    assert len(key) >= 32 and key.startswith("tg-")
    assert entry == {"name": "carol-key", "principal": "carol", "team": "payments", "groups": ["eng", "ops"],
                     "sha256": hashlib.sha256(key.encode()).hexdigest()}
    assert a.stdout.count(key) == 1  # shown once
    # The entry of an existing key, without printing the key.
    again = run_tool("alice", "--stdin", stdin="tg-demo-alice\n")
    assert "tg-demo-alice" not in again.stdout
    assert printed_entry(again.stdout)["sha256"] == hashlib.sha256(b"tg-demo-alice").hexdigest()
    bad = run_tool("no spaces please")
    assert bad.returncode == 2 and "NAME 'no spaces please'" in bad.stderr


def printed_entry(out: str) -> dict:
    (line,) = [l for l in out.splitlines() if l.startswith("  {")]
    return json.loads(line)


def test_shipped_configs_name_demo_keys_one_way():
    """Every demo key digest in envoy/*.yaml is the SHA-256 of a tg-demo-<who> key."""
    names = ["alice", "bob", "root", "planner", "researcher"]
    known = {hashlib.sha256(f"tg-demo-{n}".encode()).hexdigest() for n in names}
    for path in sorted((harness.REPO / "envoy").glob("*.yaml")):
        for digest in re.findall(r'"sha256":\s*"([0-9a-f]{64})"', path.read_text()):
            assert digest in known, f"{path.name}: {digest} is not the digest of a tg-demo-<who> key"
        assert not re.search(r"tg-[a-z]+-demo-key", path.read_text()), path.name


@pytest.fixture
def stack_with_carol(procs, fleet_store):
    out = run_tool("carol", "--team", "payments", "--groups", "eng")
    key, entry = printed(out.stdout)
    cfg = harness.load_envoy_config("stack.yaml")
    plugins = {}
    for layer in ("llm", "mcp", "a2a"):
        plugin = harness.plugin_config(cfg, f"tollgate.{layer}")
        plugin["identity"]["api_keys"]["keys"].append(entry)  # pasted as printed
        plugins[f"tollgate.{layer}"] = plugin
    ports = {n: harness.free_port() for n in ("llm_provider_a", "llm_provider_b", "mcp_demo", "agent_echo")}
    ports["tollgate_limits"] = fleet_store["tollgate_limits"]
    envoy = procs.envoy(cfg, upstreams=ports, plugin_configs=plugins)
    procs.python("provider-a", "examples/fake_llm/server.py", ["--port", str(ports["llm_provider_a"]), "--name", "provider-a"],
                 f"http://127.0.0.1:{ports['llm_provider_a']}/healthz")
    procs.python("mcp", "examples/mcp_server/server.py", ["--port", str(ports["mcp_demo"])],
                 f"http://127.0.0.1:{ports['mcp_demo']}/_calls")
    procs.python("echo", "examples/a2a_agent/agent.py",
                 ["--port", str(ports["agent_echo"]), "--name", "echo", "--public-url", f"http://127.0.0.1:{ports['agent_echo']}/"],
                 f"http://127.0.0.1:{ports['agent_echo']}/.well-known/agent-card.json")
    return envoy, key


def test_the_printed_entry_authenticates_the_printed_key_on_every_layer(stack_with_carol):
    envoy, key = stack_with_carol
    gw = envoy.url
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gw}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=chat, timeout=10)
    assert r.status_code == 200, r.text
    stranger = run_tool("mallory").stdout  # a key whose entry was not pasted
    r = httpx.post(f"{gw}/v1/chat/completions", headers={"authorization": f"Bearer {printed(stranger)[0]}"}, json=chat, timeout=10)
    assert r.status_code == 401, r.text

    async def mcp_tools() -> list[str]:
        async with httpx2.AsyncClient(headers={"x-api-key": key}, timeout=20) as http:
            async with Client(streamable_http_client(f"{gw}/mcp", http_client=http), mode="legacy") as client:
                return [t.name for t in (await client.list_tools()).tools]
    assert "query_db" in asyncio.run(mcp_tools())  # listed to a caller the policy knows

    sent = httpx.post(f"{gw}/agents/echo/", timeout=30, headers={"a2a-version": "1.0", "x-api-key": key},
                      json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                          "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}})
    assert sent.status_code == 200 and "[echo] echo: hi" in sent.text, sent.text

    llm = envoy.wait_audit(2, where=lambda r: r["layer"] == "llm")
    who = lambda r: (r.get("identity") or {}).get("principal")  # noqa: E731
    assert [(who(r), (r.get("identity") or {}).get("team"), r["status"]) for r in llm] == [("carol", "payments", 200), (None, None, 401)], llm
    mcp = envoy.wait_audit(1, where=lambda r: r["layer"] == "mcp" and r.get("method") == "tools/list")
    assert {who(r) for r in mcp} == {"carol"}, mcp
    a2a = envoy.wait_audit(1, where=lambda r: r["layer"] == "a2a" and r.get("method") == "SendMessage")
    assert {who(r) for r in a2a} == {"carol"}, a2a
