"""Many MCP servers behind one endpoint (issue 18 item 3): Tollgate's MCP filter in front of
Envoy 1.40's own `envoy.filters.http.mcp_router`, two real `mcp` SDK servers behind `/mcp`
(`envoy/mcp-router.yaml`): `alpha` answers in SSE, `beta` in JSON and also serves
`export_rows`. The real SDK client (and raw httpx where the exact answer matters) sees one
server whose names are prefixed with the backend (`alpha__add`); the filter judges, filters,
audits and counts each name on its backend. What reached each backend is read from the SDK
servers' own call counters (`/_calls`).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import httpx2
import pytest

import harness
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

KEYS = {"alice": "tg-demo-alice", "bob": "tg-demo-bob", "root": "tg-demo-root"}
SERVER = "examples/mcp_server/server.py"

# What each demo identity sees in the aggregated tools/list under envoy/mcp-router.yaml's
# policy, in the router's order (beta's tools, then alpha's: it lists backends as they answer,
# so compare as sets).
COMMON = {"alpha__add", "alpha__echo", "alpha__query_db", "beta__add", "beta__echo"}
VISIBLE = {
    "alice": COMMON,
    "bob": COMMON | {"beta__export_rows"},
    "root": COMMON | {"alpha__delete_row"},
}


class Backends:
    def __init__(self, workdir):
        self.procs: list[harness.Proc] = []
        self.ports: dict[str, int] = {}
        for name, extra in (("alpha", []), ("beta", ["--json-response", "--export-tool"])):
            port = harness.free_port()
            self.procs.append(harness.python_server(f"mcp-{name}", SERVER, ["--host", "127.0.0.1", "--port", str(port), *extra],
                                                    workdir, f"http://127.0.0.1:{port}/_calls"))
            self.ports[name] = port

    def calls(self, name: str) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.ports[name]}/_calls", timeout=5).json()

    def reset(self) -> None:
        for port in self.ports.values():
            httpx.post(f"http://127.0.0.1:{port}/_calls/reset", timeout=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp-router")
    backends = Backends(workdir)
    envoy = None
    try:
        envoy = harness.Envoy(harness.load_envoy_config("mcp-router.yaml"), workdir, name="envoy-router",
                              upstreams={"mcp_alpha": backends.ports["alpha"], "mcp_beta": backends.ports["beta"]})
        yield envoy, backends
    finally:
        if envoy is not None:
            envoy.stop()
        for p in backends.procs:
            p.stop()


@pytest.fixture
def gw(world) -> harness.Envoy:
    world[1].reset()
    return world[0]


@pytest.fixture
def backends(world) -> Backends:
    return world[1]


def run_sdk(url: str, who: str, actions):
    async def session():
        async with httpx2.AsyncClient(headers={"x-api-key": KEYS[who]}, timeout=20) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                return await actions(client)
    return asyncio.run(session())


class Raw:
    """A raw client session through the gateway: initialize, then one POST per message."""

    def __init__(self, envoy: harness.Envoy, who: str):
        self.url = envoy.url + "/mcp"
        self.headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                        "x-api-key": KEYS[who]}
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
        assert r.status_code == 200, r.text
        self.headers["mcp-session-id"] = r.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = r.json()["result"]["protocolVersion"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202

    def post(self, body: Any) -> httpx.Response:
        return httpx.post(self.url, content=json.dumps(body), headers=self.headers, timeout=10)

    def rpc(self, body: Any) -> dict:
        r = self.post(body)
        assert r.status_code == 200, (r.status_code, r.text)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return [json.loads(l[5:]) for l in r.text.splitlines() if l.startswith("data:")][-1]
        return r.json()


def call(name: str, arguments: dict, id: int = 1) -> dict:  # noqa: A002
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def audit_for(envoy: harness.Envoy, **match) -> dict:
    def where(r: dict) -> bool:
        return all(r.get(k) == v for k, v in match.items())
    return envoy.wait_audit(1, where=where)[-1]


# --- the SDK client through the router ------------------------------------------------------

@pytest.mark.parametrize("who", ["alice", "bob", "root"])
def test_each_identity_sees_its_allowed_tools_of_both_servers(gw, who):
    async def actions(client):
        return [t.name for t in (await client.list_tools()).tools]

    tools = run_sdk(gw.url + "/mcp", who, actions)

    assert len(tools) == len(set(tools))
    assert set(tools) == VISIBLE[who]
    hidden = 13 - len(VISIBLE[who])  # 6 alpha + 7 beta tools in all
    record = gw.wait_audit(1, where=lambda r: r.get("method") == "tools/list"
                           and (r.get("identity") or {}).get("principal") == who)[-1]
    assert record["server"] == "tools" and record["list_hidden"] == hidden and record["decision"] == "allow"


def test_a_call_reaches_the_server_its_prefix_names_and_no_other(gw, backends):
    async def actions(client):
        a = await client.call_tool("alpha__add", {"a": 2, "b": 3})
        b = await client.call_tool("beta__echo", {"text": "hi beta"})
        c = await client.call_tool("beta__add", {"a": 40, "b": 2})
        return a, b, c

    a, b, c = run_sdk(gw.url + "/mcp", "alice", actions)

    assert (a.structured_content, b.structured_content, c.structured_content) == (
        {"result": 5}, {"result": "hi beta"}, {"result": 42})
    assert not (a.is_error or b.is_error or c.is_error)
    assert backends.calls("alpha") == {"add": 1}
    assert backends.calls("beta") == {"echo": 1, "add": 1}
    record = audit_for(gw, method="tools/call", routed_as="beta__echo")
    assert (record["server"], record["tool"], record["decision"], record["rule_id"]) == ("beta", "echo", "allow", "everyday-tools")
    assert record["is_error"] is False
    record = audit_for(gw, method="tools/call", routed_as="alpha__add")
    assert (record["server"], record["tool"]) == ("alpha", "add")
    stats = gw.stats()
    assert stats.get("wasmcustom.tollgate.mcp.calls.server.alpha.tool.add.caller.alice.decision.allow", 0) >= 1
    assert stats.get("wasmcustom.tollgate.mcp.calls.server.beta.tool.echo.caller.alice.decision.allow", 0) >= 1


def test_a_tool_allowed_on_one_server_is_denied_on_the_other(gw, backends):
    """`delete_row` exists on both backends: root may use alpha's, nobody beta's."""
    async def actions(client):
        ok = await client.call_tool("alpha__delete_row", {"table": "t", "id": 7})
        with pytest.raises(MCPError) as denied:
            await client.call_tool("beta__delete_row", {"table": "t", "id": 7})
        return ok, denied.value

    ok, denied = run_sdk(gw.url + "/mcp", "root", actions)

    assert ok.structured_content == {"result": "deleted t#7"}
    # hide: answered as a tool that does not exist, under the name the client used.
    assert (denied.error.code, denied.error.message) == (-32602, "Unknown tool: beta__delete_row")
    assert backends.calls("alpha") == {"delete_row": 1}
    assert backends.calls("beta") == {}
    record = audit_for(gw, method="tools/call", routed_as="beta__delete_row")
    assert (record["server"], record["tool"], record["decision"], record["rule_id"], record["reason"]) == (
        "beta", "delete_row", "deny", "never-delete-on-beta", "denied by rule")
    assert audit_for(gw, method="tools/call", routed_as="alpha__delete_row")["rule_id"] == "admins-delete-on-alpha"
    assert gw.stat("wasmcustom.tollgate.mcp.calls.server.beta.tool.delete_row.caller.root.decision.deny") >= 1


def test_argument_rules_hold_per_server(gw, backends):
    """`query_db` is allowed on alpha (for some tables) and on no other server."""
    s = Raw(gw, "alice")
    ok = s.rpc(call("alpha__query_db", {"table": "orders", "sql": "select 1"}))
    wrong_table = s.post(call("alpha__query_db", {"table": "users", "sql": "select 1"}, id=2))
    other_server = s.rpc(call("beta__query_db", {"table": "orders", "sql": "select 1"}, id=3))

    assert ok["result"]["isError"] is False
    # Listed to alice on alpha (for some tables): refused for its arguments, not "unknown".
    assert (wrong_table.status_code, wrong_table.json()) == (403, {"jsonrpc": "2.0", "id": 2, "error": {
        "code": -31403, "message": "Not allowed: tools/call alpha__query_db with these arguments", "data": {"reason": "denied by policy"}}})
    assert other_server == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Unknown tool: beta__query_db"}}
    assert backends.calls("alpha") == {"query_db": 1}
    assert backends.calls("beta") == {}
    assert audit_for(gw, routed_as="beta__query_db")["reason"] == "no rule allows"


@pytest.mark.parametrize("name", ["gamma__add", "add", "alpha_add", "Alpha__add"])
def test_a_name_without_a_known_server_prefix_is_refused(gw, backends, name):
    """Fail closed: even where a rule allows the bare tool (`add`), a name the router cannot
    place is refused by the gateway, in MCP's shape, and recorded; it reaches no server."""
    s = Raw(gw, "alice")
    answer = s.rpc(call(name, {"a": 1, "b": 2}, id=9))

    assert answer == {"jsonrpc": "2.0", "id": 9, "error": {"code": -32602, "message": f"Unknown tool: {name}"}}
    assert backends.calls("alpha") == {} and backends.calls("beta") == {}
    record = audit_for(gw, method="tools/call", tool=name)
    assert (record["decision"], record["reason"], record["server"], record.get("rule_id")) == (
        "deny", "names no server behind the router", "tools", None)
    assert "routed_as" not in record


def test_prompts_and_resources_are_filtered_per_server(gw):
    s = Raw(gw, "alice")
    prompts = [p["name"] for p in s.rpc({"jsonrpc": "2.0", "id": 1, "method": "prompts/list"})["result"]["prompts"]]
    resources = [r["uri"] for r in s.rpc({"jsonrpc": "2.0", "id": 2, "method": "resources/list"})["result"]["resources"]]
    greeting = s.rpc({"jsonrpc": "2.0", "id": 3, "method": "prompts/get",
                      "params": {"name": "beta__greeting", "arguments": {"name": "Ann"}}})
    secret = s.rpc({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "beta+file:///secret/keys.txt"}})
    readme = s.rpc({"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": "beta+file:///data/readme.txt"}})

    assert sorted(prompts) == ["alpha__greeting", "beta__greeting"]
    assert sorted(resources) == ["alpha+file:///data/readme.txt", "beta+file:///data/readme.txt"]
    assert greeting["result"]["messages"][0]["content"]["text"] == "Please greet Ann warmly."
    assert secret["error"]["code"] == -32602 and secret["error"]["data"] == {"uri": "beta+file:///secret/keys.txt"}
    assert readme["result"]["contents"][0]["text"].startswith("Tollgate demo data")
    record = audit_for(gw, method="resources/read", routed_as="beta+file:///secret/keys.txt")
    assert (record["server"], record["resource_uri"], record["rule_id"]) == ("beta", "file:///secret/keys.txt", "no-secrets")
    assert audit_for(gw, method="resources/list", server="tools")["list_hidden"] == 2


def test_the_router_session_is_what_the_client_gets_and_get_delete_are_the_routers(gw):
    """What the router gives the client: its own initialize answer (2025-06-18) and a session
    id of its own; GET is 405 and DELETE 400 from the router (after the filter allowed them)."""
    s = Raw(gw, "alice")
    assert s.headers["mcp-protocol-version"] == "2025-06-18"
    sid = s.headers["mcp-session-id"]
    tools = s.rpc({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert tools["result"]["tools"]
    get = httpx.get(s.url, headers=s.headers, timeout=5)
    delete = httpx.delete(s.url, headers=s.headers, timeout=5)
    assert (get.status_code, delete.status_code) == (405, 400)
    # The router's session id (its backends' ids, base64) is longer than the 128 bytes an
    # audit record keeps of it.
    assert len(sid) > 128
    assert audit_for(gw, http_method="GET", session_id=sid[:128])["decision"] == "allow"
    assert audit_for(gw, http_method="DELETE", session_id=sid[:128])["status"] == 400


@pytest.mark.parametrize("routers, message", [
    ({"tools": {"servers": ["alpha"]}}, "server.routers.tools.servers: needs at least two servers"),
    ({"tools": {"servers": ["alpha", "be__ta"]}}, "server.routers.tools.servers[1]: `be__ta` cannot be read back"),
    ({"tools": {"servers": ["alpha", "beta"], "separator": "__"}}, "server.routers.tools.separator: unknown field `separator`"),
])
def test_a_bad_router_configuration_is_refused_at_load_naming_the_field(tmp_path, routers, message):
    cfg = harness.load_envoy_config("mcp-router.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.mcp")
    plugin["server"] = {"routers": routers}
    log = harness.run_envoy_expect_failure(cfg, tmp_path, plugin_configs={"tollgate.mcp": plugin})
    assert f"tollgate-mcp: invalid plugin configuration: {message}" in log, log[-3000:]
