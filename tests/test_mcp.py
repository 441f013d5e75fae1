"""MCP filter end to end: the real Envoy 1.40 with dist/tollgate_mcp.wasm in front of the real
`mcp` SDK server (examples/mcp_server, JSON and SSE response modes), driven by the real `mcp`
SDK client (legacy and 2026-07-28 modes), raw httpx, Envoy's own jwt_authn, and the MCP
Inspector CLI.

    /tmp/venvprobe/bin/python -m pytest tests/test_mcp.py -q

Whether a call reached the MCP server is read from the server's own per-tool counters
(GET /_calls), never inferred from the gateway's answer.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import gzip
import hashlib
import ipaddress
import json
import os
import shutil
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import harness
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.timeout(120)

ROOT_ID = "tollgate.mcp"
ALL_TOOLS = ["add", "echo", "query_db", "transfer", "delete_row", "admin_reset"]
KEYS = {"alice": "tg-demo-alice", "bob": "tg-demo-bob", "root": "tg-demo-root"}
# What each demo identity may use under the shipped policy (envoy/mcp.yaml).
VISIBLE = {
    "alice": ["add", "echo", "query_db"],
    "bob": ["add", "echo", "query_db", "transfer"],
    "root": ["add", "echo", "query_db", "delete_row", "admin_reset"],
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
MAX_BODY = 65536


# --- configuration ---------------------------------------------------------------------------

SHIPPED_ENVOY = harness.load_envoy_config("mcp.yaml")
SHIPPED_PLUGIN = harness.plugin_config(SHIPPED_ENVOY, ROOT_ID)


def gateway_plugin(**policy_changes: Any) -> dict:
    """The shipped plugin configuration, tightened for tests: the protocol methods need an
    identity, echo is denied on the `billing` server, bodies are capped at 64 KiB."""
    cfg = copy.deepcopy(SHIPPED_PLUGIN)
    cfg["max_body_bytes"] = MAX_BODY
    rules = cfg["policy"]["rules"]
    assert rules[0]["id"] == "protocol"
    for rule in rules:
        if rule["effect"] == "allow" and not {"principals", "groups", "teams"} & rule.keys():
            rule["principals"] = ["*"]  # protocol, public-data
    rules.append({"id": "billing-no-echo", "effect": "deny", "servers": ["billing"], "tools": ["echo"]})
    rules.append({"id": "no-secret-echo", "effect": "deny", "tools": ["echo"],
                  "arguments": [{"path": "$.text", "regex": "secret"}]})
    cfg["policy"].update(policy_changes)
    return cfg




def envoy_config(extra_filters: list[dict] | None = None) -> dict:
    """The shipped Envoy config plus a second route `/billing/mcp` (same upstream) whose route
    metadata names the MCP server `billing`."""
    cfg = copy.deepcopy(SHIPPED_ENVOY)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(0, {
        "match": {"prefix": "/billing/mcp"},
        "metadata": {"filter_metadata": {"tollgate": {"mcp_server": "billing"}}},
        "route": {"cluster": "mcp_demo", "timeout": "0s", "prefix_rewrite": "/mcp"},
    })
    if extra_filters:
        hcm["http_filters"][0:0] = extra_filters
    return cfg


# --- processes -------------------------------------------------------------------------------

STUB_UPSTREAM = r'''
"""A scripted MCP upstream for streaming tests: slow SSE, JSON with a cursor, a GET replay."""
import asyncio, json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

seen = []
LIST = {"tools": [{"name": "add", "inputSchema": {"type": "object"}},
                  {"name": "admin_reset", "inputSchema": {"type": "object"}}], "nextCursor": "page-2"}

def sse(obj, event_id=None):
    head = f"id: {event_id}\n" if event_id else ""
    return (head + "event: message\ndata: " + json.dumps(obj) + "\n\n").encode()

async def mcp(request):
    seen.append({"method": request.method, "headers": dict(request.headers)})
    if request.method == "GET":
        async def replay():
            yield sse({"jsonrpc": "2.0", "id": "replayed-99", "result": LIST}, "r1")
        return StreamingResponse(replay(), media_type="text/event-stream")
    body = json.loads(await request.body())
    mode = request.headers.get("x-stub-mode", "sse")
    if isinstance(body, list):
        # A server that takes one request's id for another's: the list goes to the first id.
        ids = [m["id"] for m in body if "id" in m]
        answers = [{"jsonrpc": "2.0", "id": ids[0], "result": LIST}]
        answers += [{"jsonrpc": "2.0", "id": i, "result": {}} for i in ids[1:]]
        if mode == "json":
            return Response(json.dumps(answers).encode(), media_type="application/json")
        async def each():
            for answer in answers:
                yield sse(answer)
        return StreamingResponse(each(), media_type="text/event-stream")
    if mode == "json":
        data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": LIST}).encode()
        return Response(data, media_type="application/json")
    async def slow():
        yield sse({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}})
        await asyncio.sleep(1.5)
        yield sse({"jsonrpc": "2.0", "id": body["id"], "result": LIST}, "e2")
    return StreamingResponse(slow(), media_type="text/event-stream")

async def get_seen(request):
    return JSONResponse(seen)

app = Starlette(routes=[Route("/mcp", mcp, methods=["GET", "POST"]), Route("/_seen", get_seen)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


class World:
    """Module-wide processes: MCP servers and Envoys, started on first use, always stopped."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[harness.Proc] = []
        self.servers: dict[str, int] = {}
        self.envoys: dict[str, harness.Envoy] = {}

    def server(self, mode: str) -> int:
        if mode not in self.servers:
            port = harness.free_port()
            if mode == "stub":
                script = self.workdir / "stub_upstream.py"
                script.write_text(STUB_UPSTREAM)
                proc = harness.Proc("stub-upstream", [sys.executable, str(script), str(port)], self.workdir)
                harness.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/_seen", timeout=1).status_code == 200,
                                   20, "stub upstream", proc)
            else:
                args = ["--host", "127.0.0.1", "--port", str(port)] + (["--json-response"] if mode == "json" else [])
                proc = harness.python_server(f"mcp-{mode}", "examples/mcp_server/server.py", args, self.workdir,
                                             f"http://127.0.0.1:{port}/_calls")
            self.procs.append(proc)
            self.servers[mode] = port
        return self.servers[mode]

    def envoy(self, name: str, upstream: str, plugin: dict, cfg: dict | None = None) -> harness.Envoy:
        if name not in self.envoys:
            envoy = harness.Envoy(cfg or envoy_config(), self.workdir, name=f"envoy-{name}",
                                  upstreams={"mcp_demo": self.server(upstream)}, plugin_configs={ROOT_ID: plugin})
            self.procs.append(envoy.proc)
            self.envoys[name] = envoy
        return self.envoys[name]

    def calls(self, mode: str) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.servers[mode]}/_calls", timeout=5).json()

    def reset_calls(self, mode: str) -> None:
        httpx.post(f"http://127.0.0.1:{self.servers[mode]}/_calls/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("mcp"))
    yield w
    w.stop()


@pytest.fixture(scope="module", params=["json", "sse"])
def server_mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def gw(world, server_mode) -> harness.Envoy:
    """Hide-style gateway in front of the demo server in `server_mode`."""
    return world.envoy(f"hide-{server_mode}", server_mode, gateway_plugin())


@pytest.fixture(scope="module")
def gw_json(world) -> harness.Envoy:
    return world.envoy("hide-json", "json", gateway_plugin())


@pytest.fixture(scope="module")
def gw_explain(world) -> harness.Envoy:
    plugin = gateway_plugin(deny_style="explain")
    plugin["resource_metadata"] = "https://gw.example/.well-known/oauth-protected-resource/mcp"
    return world.envoy("explain", "json", plugin)


@pytest.fixture(scope="module")
def gw_dry(world) -> harness.Envoy:
    plugin = gateway_plugin(dry_run=True)
    plugin["audit_arguments"] = True
    return world.envoy("dry", "json", plugin)


@pytest.fixture(scope="module")
def gw_stub(world) -> harness.Envoy:
    return world.envoy("stub", "stub", gateway_plugin())


# --- helpers ---------------------------------------------------------------------------------

async def sdk_session(url: str, mode: str, headers: dict[str, str], actions):
    async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            return await actions(client)


def run_sdk(url: str, mode: str, headers: dict[str, str], actions):
    return asyncio.run(sdk_session(url, mode, headers, actions))


def key(who: str) -> dict[str, str]:
    return {"x-api-key": KEYS[who]}


def post(envoy: harness.Envoy, body: Any, headers: dict[str, str] | None = None, *, path: str = "/mcp",
         raw: bytes | None = None, **kwargs) -> httpx.Response:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **key("alice")}
    h.update(headers or {})
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(envoy.url + path, content=content, headers=h, timeout=10, **kwargs)


def call(tool: str, arguments: dict, id: Any = 1) -> dict:  # noqa: A002
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


def rpc(response: httpx.Response) -> Any:
    """The JSON-RPC message(s) of a JSON or SSE response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        return messages[-1]
    return response.json()


def audit_for(envoy: harness.Envoy, **match) -> dict:
    """The latest audit record whose fields equal `match` (waits for it)."""
    def where(r: dict) -> bool:
        return all(r.get(k) == v for k, v in match.items())
    return envoy.wait_audit(1, where=where)[-1]


def audit_array(envoy: harness.Envoy, where) -> list[dict]:
    """The latest audit line that is a JSON array (a batch) satisfying `where` (waits for it)."""
    found: list = []

    def check() -> bool:
        found[:] = [json.loads(l) for l in envoy.audit_log.read_text().splitlines() if l.startswith("[")]
        found[:] = [a for a in found if where(a)]
        return bool(found)

    harness.wait_until(check, 5, "a batch audit record")
    return found[-1]


def canonical_sha256(arguments: dict) -> str:
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- the real SDK client and server ----------------------------------------------------------

@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
def test_sdk_client_sees_only_allowed_tools_and_denied_calls_never_reach_the_server(
        world, gw, server_mode, client_mode):
    world.reset_calls(server_mode)

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        added = await client.call_tool("add", {"a": 2, "b": 3})
        with pytest.raises(MCPError) as denied:
            await client.call_tool("admin_reset", {})
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        readme = (await client.read_resource("file:///data/readme.txt")).contents[0].text
        with pytest.raises(MCPError) as secret:
            await client.read_resource("file:///secret/keys.txt")
        return client.protocol_version, tools, added, denied.value, prompts, resources, readme, secret.value

    version, tools, added, denied, prompts, resources, readme, secret = run_sdk(
        gw.url + "/mcp", client_mode, key("alice"), actions)

    assert version == ("2026-07-28" if client_mode == "2026-07-28" else "2025-11-25")
    assert tools == VISIBLE["alice"]
    assert added.structured_content == {"result": 5} and not added.is_error
    assert (denied.code, denied.message) == (-32602, "Unknown tool: admin_reset")
    assert prompts == ["greeting"]
    assert resources == ["file:///data/readme.txt"]
    assert "Tollgate demo data" in readme
    assert (secret.code, secret.message) == (-32602, "Unknown resource: file:///secret/keys.txt")
    assert world.calls(server_mode) == {"add": 1}
    record = audit_for(gw, tool="admin_reset", revision="2026-07-28" if client_mode == "2026-07-28" else "2025-11-25")
    assert (record["decision"], record["enforced"], record["reason"]) == ("deny", True, "no rule allows")
    listed = audit_for(gw, method="tools/list", revision=record["revision"])
    assert listed["list_hidden"] == 3


@pytest.mark.parametrize("who", ["bob", "root"])
def test_each_identity_lists_exactly_what_it_may_call(world, gw, who):
    async def actions(client):
        return [t.name for t in (await client.list_tools()).tools]

    assert run_sdk(gw.url + "/mcp", "legacy", key(who), actions) == VISIBLE[who]


def test_route_metadata_names_the_server_for_policy_and_audit(world, gw_json):
    async def actions(client):
        return [t.name for t in (await client.list_tools()).tools]

    billing = run_sdk(gw_json.url + "/billing/mcp", "legacy", key("alice"), actions)
    demo = run_sdk(gw_json.url + "/mcp", "legacy", key("alice"), actions)

    assert billing == ["add", "query_db"]  # billing-no-echo applies to server `billing` only
    assert demo == VISIBLE["alice"]
    assert audit_for(gw_json, method="tools/list", server="billing")["list_hidden"] == 4
    world.reset_calls("json")
    response = post(gw_json, call("echo", {"text": "x"}), path="/billing/mcp")
    assert rpc(response)["error"]["message"] == "Unknown tool: echo"
    assert audit_for(gw_json, tool="echo", server="billing")["rule_id"] == "billing-no-echo"
    assert world.calls("json") == {}


# --- argument rules --------------------------------------------------------------------------

@pytest.mark.parametrize(("tool", "arguments", "allowed"), [
    ("query_db", {"table": "orders", "sql": "select 1"}, True),
    ("query_db", {"table": "products", "sql": "select 1"}, True),
    ("query_db", {"table": "customers", "sql": "select 1"}, False),
    ("query_db", {"table": "Orders", "sql": "select 1"}, False),
    ("transfer", {"amount": 1000, "to": "acct-1"}, True),
    ("transfer", {"amount": 999.99, "to": "acct-1"}, True),
    ("transfer", {"amount": 1000.01, "to": "acct-1"}, False),
    ("transfer", {"amount": 1001, "to": "acct-1"}, False),
])
def test_argument_rules_at_the_boundary(world, gw, server_mode, tool, arguments, allowed):
    world.reset_calls(server_mode)

    async def actions(client):
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as e:
            return e

    result = run_sdk(gw.url + "/mcp", "legacy", key("bob"), actions)

    if allowed:
        assert not isinstance(result, MCPError) and not result.is_error, result
        assert world.calls(server_mode) == {tool: 1}
    else:
        # The tool is in bob's tools/list: refused for its arguments, not "unknown".
        assert isinstance(result, MCPError) and (result.code, result.message) == (-31403, f"Not allowed: tools/call {tool} with these arguments")
        assert world.calls(server_mode) == {}
    record = audit_for(gw, tool=tool, arguments_sha256=canonical_sha256(arguments))
    assert record["decision"] == ("allow" if allowed else "deny")
    expected_rule = {"query_db": "db-read-some-tables", "transfer": "finance-small-transfers"}[tool]
    assert record.get("rule_id") == (expected_rule if allowed else None)


# --- explain style ---------------------------------------------------------------------------

def test_explain_style_answers_403_with_the_rule(world, gw_explain):
    world.reset_calls("json")

    response = post(gw_explain, {"jsonrpc": "2.0", "id": "r1", "method": "resources/read",
                                 "params": {"uri": "file:///secret/keys.txt"}}, key("root"))

    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert 'resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp"' in challenge
    body = response.json()
    assert body["id"] == "r1"
    assert body["error"]["code"] == -31403
    assert body["error"]["data"] == {"rule_id": "no-secrets", "reason": "denied by policy rule"}

    async def actions(client):
        with pytest.raises(MCPError) as denied:
            await client.call_tool("transfer", {"amount": 5, "to": "x"})
        return denied.value

    denied = run_sdk(gw_explain.url + "/mcp", "legacy", key("alice"), actions)
    assert denied.code == -31403
    assert denied.data == {"rule_id": None, "reason": "no policy rule allows this request"}
    assert world.calls("json") == {}


# --- identity from Envoy's jwt_authn ---------------------------------------------------------

def b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def jwt_env(world):
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = signing_key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1", "n": b64u(numbers.n), "e": b64u(numbers.e)}]}
    jwt_filter = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"test": {
                "issuer": "https://issuer.test", "audiences": ["tollgate-mcp"],
                "local_jwks": {"inline_string": json.dumps(jwks)},
                "payload_in_metadata": "payload", "forward": False,
            }},
            "rules": [{"match": {"prefix": "/"},
                       "requires": {"requires_any": {"requirements": [{"provider_name": "test"}, {"allow_missing": {}}]}}}],
        },
    }
    plugin = gateway_plugin()
    plugin["identity"]["jwt"] = {"payload_key": "payload", "team_claim": "team"}
    plugin["policy"]["rules"].append(
        {"id": "payments-team-deletes", "effect": "allow", "teams": ["payments"], "tools": ["delete_row"]})
    envoy = world.envoy("jwt", "sse", plugin, envoy_config([jwt_filter]))

    def token(sub: str, groups: list[str], team: str | None = None, key=signing_key) -> str:
        claims = {"iss": "https://issuer.test", "aud": "tollgate-mcp", "sub": sub, "groups": groups,
                  "exp": int(time.time()) + 600}
        if team:
            claims["team"] = team
        return pyjwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    return envoy, token


def test_jwt_groups_and_team_claims_drive_the_policy(world, jwt_env):
    envoy, token = jwt_env
    world.reset_calls("sse")

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        try:
            result = await client.call_tool("transfer", {"amount": 10, "to": "acct"})
        except MCPError as e:
            result = e
        return tools, result

    carol_tools, carol_transfer = run_sdk(envoy.url + "/mcp", "legacy",
                                          {"authorization": f"Bearer {token('carol', ['finance', 'eng'])}"}, actions)
    dave_tools, dave_transfer = run_sdk(envoy.url + "/mcp", "2026-07-28",
                                        {"authorization": f"Bearer {token('dave', ['eng'], team='payments')}"}, actions)

    assert carol_tools == VISIBLE["bob"]
    assert not isinstance(carol_transfer, MCPError) and carol_transfer.content[0].text == "transferred 10.00 to acct"
    assert dave_tools == ["add", "echo", "query_db", "delete_row"]
    assert isinstance(dave_transfer, MCPError) and dave_transfer.message == "Unknown tool: transfer"
    assert world.calls("sse") == {"transfer": 1}
    record = audit_for(envoy, tool="transfer", decision="deny")
    assert record["identity"] == {"principal": "dave", "team": "payments", "groups": ["eng"], "source": "jwt"}


def test_jwt_that_does_not_verify_never_reaches_the_filter_or_server(world, jwt_env):
    envoy, token = jwt_env
    world.reset_calls("sse")
    forged = token("mallory", ["admins"], key=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    response = post(envoy, call("admin_reset", {}), {"authorization": f"Bearer {forged}", "x-api-key": ""})

    assert response.status_code == 401
    assert world.calls("sse") == {}


def test_without_credentials_the_protocol_itself_is_denied(world, jwt_env):
    envoy, _ = jwt_env
    response = post(envoy, INIT, {"x-api-key": ""})
    # As the SDK server answers a method it does not have: the method as `data`.
    assert rpc(response)["error"] == {"code": -32601, "message": "Method not found", "data": "initialize"}


# --- identity from the mTLS peer -------------------------------------------------------------

def make_cert(cn: str, key, issuer_key, issuer: x509.Name | None, sans: list, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(obj) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def mtls_envoy_config(server: x509.Certificate, server_key, ca: x509.Certificate) -> dict:
    """envoy/mcp.yaml with its listener on TLS that requires a client certificate `ca` issued."""
    cfg = envoy_config()
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"inline_string": pem(server)},
                                      "private_key": {"inline_string": pem(server_key)}}],
                "validation_context": {"trusted_ca": {"inline_string": pem(ca)}},
            },
        },
    }
    return cfg


def test_mtls_peer_spiffe_id_is_the_identity(world, tmp_path):
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = make_cert("tollgate-test-ca", ca_key, ca_key, None, [], ca=True)
    server = make_cert("localhost", server_key, ca_key, ca.subject,
                       [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    spiffe = "spiffe://cluster.local/ns/agents/sa/planner"
    client = make_cert("planner", client_key, ca_key, ca.subject, [x509.UniformResourceIdentifier(spiffe)])
    cfg = mtls_envoy_config(server, server_key, ca)
    plugin = gateway_plugin()
    plugin["identity"]["mtls"] = True
    plugin["policy"]["rules"].append({"id": "agents-team-deletes", "effect": "allow", "teams": ["agents"], "tools": ["delete_row"]})
    envoy = world.envoy("mtls", "json", plugin, cfg)
    for name, obj in [("ca.pem", ca), ("client.pem", client), ("client.key", client_key)]:
        (tmp_path / name).write_text(pem(obj))
    tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    tls.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    world.reset_calls("json")

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        deleted = await client.call_tool("delete_row", {"table": "orders", "id": 7})
        return tools, deleted

    async def session():
        async with httpx2.AsyncClient(verify=tls, timeout=20) as http:
            url = f"https://127.0.0.1:{envoy.port}/mcp"
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
                return await actions(c)

    tools, deleted = asyncio.run(session())

    assert tools == ["add", "echo", "query_db", "delete_row"]
    assert deleted.content[0].text == "deleted orders#7"
    assert world.calls("json") == {"delete_row": 1}
    record = audit_for(envoy, tool="delete_row")
    assert record["identity"] == {"principal": spiffe, "team": "agents", "source": "mtls"}
    assert record["rule_id"] == "agents-team-deletes"


def test_a_gateway_credential_needs_a_peer_certificate_of_the_trust_domain_when_told_to(world, tmp_path):
    """`identity.gateway.require_peer_certificate` + `trust_domain`, through the real Envoy's
    TLS: the researcher's credential is accepted over mTLS with its own SPIFFE id, refused
    with a certificate of another trust domain naming the same workload, and refused on a
    plain connection (no certificate to bind it to). Nothing refused reaches the server."""
    from test_identity_layers import CREDENTIAL, sign_credential, traceparent
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("tollgate-test-ca", ca_key, ca_key, None, [], ca=True)
    server = make_cert("localhost", server_key, ca_key, ca.subject,
                       [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (tmp_path / "ca.pem").write_text(pem(ca))

    def client_tls(name: str, spiffe: str) -> ssl.SSLContext:
        k = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / f"{name}.pem").write_text(pem(make_cert(name, k, ca_key, ca.subject, [x509.UniformResourceIdentifier(spiffe)])))
        (tmp_path / f"{name}.key").write_text(pem(k))
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        ctx.load_cert_chain(str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
        return ctx

    plugin = gateway_plugin()
    plugin["identity"]["gateway"] = {"signing_key": "CHANGE-ME-a-random-secret-of-32-bytes-or-more",
                                     "require_peer_certificate": True, "trust_domain": "cluster.local"}
    tls_envoy = world.envoy("gateway-peer-tls", "json", plugin, mtls_envoy_config(server, server_key, ca))
    plain_envoy = world.envoy("gateway-peer-plain", "json", plugin)
    world.reset_calls("json")

    def attempt(url: str, verify, trace_id: str) -> httpx.Response:
        """initialize, then tools/call `add` in that session, all with the credential."""
        credential = sign_credential(expiry=int(time.time()) + 600, trace_id=trace_id, agent="researcher", on_behalf_of="alice")
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   CREDENTIAL: credential, "traceparent": traceparent(trace_id)}
        with httpx.Client(verify=verify, timeout=10, headers=headers) as http:
            init = http.post(url, json=INIT)
            if init.status_code != 200:
                return init
            session = {"mcp-session-id": init.headers["mcp-session-id"]}
            http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
            return http.post(url, json=call("add", {"a": 2, "b": 3}), headers=session)

    tls_url = f"https://127.0.0.1:{tls_envoy.port}/mcp"
    own = attempt(tls_url, client_tls("researcher", "spiffe://cluster.local/ns/agents/sa/researcher"), secrets.token_hex(16))
    assert own.status_code == 200 and rpc(own)["result"]["content"][0]["text"] == "5", own.text
    assert world.calls("json") == {"add": 1}
    accepted = audit_for(tls_envoy, tool="add", decision="allow")
    assert accepted["identity"]["source"] == "gateway" and accepted["identity"]["principal"] == "researcher", accepted

    for url, verify, label, reason in [
        (tls_url, client_tls("foreign", "spiffe://other.example/ns/agents/sa/researcher"), "peer_mismatch",
         "gateway credential held by another peer than its agent"),
        (plain_envoy.url + "/mcp", True, "no_peer", "gateway credential without a peer certificate to bind it to"),
    ]:
        trace_id = secrets.token_hex(16)
        refused = attempt(url, verify, trace_id)
        assert refused.status_code == 401, (label, refused.text)
        assert refused.json()["error"] == {"code": refused.json()["error"]["code"], "message": f"Unauthorized: {reason}",
                                           "data": {"reason": label}}, refused.text
    assert world.calls("json") == {"add": 1}, "no refused call reached the server"
    assert tls_envoy.stats().get("wasmcustom.tollgate.mcp.gateway_credentials.result.peer_mismatch") == 1
    assert plain_envoy.stats().get("wasmcustom.tollgate.mcp.gateway_credentials.result.no_peer") == 1


# --- fail closed -----------------------------------------------------------------------------

def gzipped(obj: Any) -> bytes:
    return gzip.compress(json.dumps(obj).encode())


def chunks(data: bytes, size: int = 8192):
    for i in range(0, len(data), size):
        yield data[i:i + size]


ADD = call("add", {"a": 1, "b": 2})
FAIL_CLOSED = {
    # name: (request kwargs for post(), expected status, expected JSON-RPC code or None)
    "body-over-limit": (dict(body=call("echo", {"text": "x" * MAX_BODY})), 413, -32600),
    "chunked-body-over-limit": (dict(body=None, raw=None, content=chunks(json.dumps(call("echo", {"text": "x" * (2 * MAX_BODY)})).encode())), 413, -32600),
    "not-json": (dict(body=None, raw=b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"'), 400, -32700),
    "empty-body": (dict(body=None, raw=b""), 400, -32700),
    "duplicate-top-level-key": (dict(body=None, raw=b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'), 400, -32600),
    "duplicate-argument-key": (dict(body=None, raw=b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2,"a":3}}}'), 400, -32600),
    "duplicate-tool-name": (dict(body=None, raw=b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","name":"admin_reset"}}'), 400, -32600),
    "gzip-content-encoding": (dict(body=None, raw=gzipped(ADD), headers={"content-encoding": "gzip"}), 415, -32600),
    "text-plain": (dict(body=ADD, headers={"content-type": "text/plain"}), 415, -32600),
    "no-content-type": (dict(body=ADD, headers={"content-type": ""}), 415, -32600),
    "form-encoded": (dict(body=None, raw=b"jsonrpc=2.0&method=tools/call", headers={"content-type": "application/x-www-form-urlencoded"}), 415, -32600),
    "not-an-object": (dict(body=[1, 2], headers={"mcp-protocol-version": "2025-03-26"}), 400, -32600),
    "jsonrpc-1.0": (dict(body={**ADD, "jsonrpc": "1.0"}), 400, -32600),
    "tools-call-without-name": (dict(body={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {"a": 1, "b": 2}}}), 400, -32602),
    "arguments-not-an-object": (dict(body={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": [1, 2]}}), 400, -32602),
    "batch-in-2025-06-18": (dict(body=[ADD, ADD], headers={"mcp-protocol-version": "2025-06-18"}), 400, -32600),
    "batch-in-2026-07-28": (dict(body=[ADD], headers={"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "add"}), 400, -32600),
    "unknown-protocol-version": (dict(body=ADD, headers={"mcp-protocol-version": "1999-01-01"}), 400, -32022),
    "2026-method-header-mismatch": (dict(body=ADD, headers={"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list", "mcp-name": "add"}), 400, -32020),
    "2026-method-header-missing": (dict(body=ADD, headers={"mcp-protocol-version": "2026-07-28", "mcp-name": "add"}), 400, -32020),
    "2026-name-header-mismatch": (dict(body=ADD, headers={"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}), 400, -32020),
    "2026-name-header-bad-base64": (dict(body=ADD, headers={"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "=?base64?YWRk=?="}), 400, -32020),
    "unknown-api-key": (dict(body=ADD, headers={"x-api-key": "tg-not-a-key"}), 401, -31401),
    "null-request-id": (dict(body={"jsonrpc": "2.0", "id": None, "method": "tools/call",
                                   "params": {"name": "admin_reset", "arguments": {}}}), 400, -32600),
    "null-request-id-in-batch": (dict(body=[ADD, {**call("admin_reset", {}), "id": None}],
                                      headers={"mcp-protocol-version": "2025-03-26"}), 400, -32600),
    "batch-duplicate-ids": (dict(body=[call("add", {"a": 1, "b": 2}, id=1), call("echo", {"text": "x"}, id=1)],
                                 headers={"mcp-protocol-version": "2025-03-26"}), 400, -32600),
    "batch-equivalent-numeric-ids": (dict(body=None, raw=b'[' + json.dumps(call("add", {"a": 1, "b": 2}, id=1)).encode()
                                          + b',' + json.dumps(call("echo", {"text": "x"})).replace('"id": 1', '"id": 1e0').encode()
                                          + b']', headers={"mcp-protocol-version": "2025-03-26"}), 400, -32600),
}


@pytest.mark.parametrize("case", list(FAIL_CLOSED))
def test_fail_closed_never_reaches_the_server(world, gw_json, case):
    kwargs, status, code = FAIL_CLOSED[case]
    kwargs = dict(kwargs)
    world.reset_calls("json")

    def refused_here(r: dict) -> bool:
        return r.get("status") == status and r.get("decision") in ("error", "deny") and bool(r.get("error"))

    before = len([r for r in gw_json.audit_records() if refused_here(r)])
    if "content" in kwargs:
        h = {"content-type": "application/json", **key("alice")}
        response = httpx.post(gw_json.url + "/mcp", content=kwargs["content"], headers=h, timeout=10)
    else:
        response = post(gw_json, kwargs.get("body"), kwargs.get("headers"), raw=kwargs.get("raw"))

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code, body
    assert world.calls("json") == {}
    # The filter's own record of the refusal (not the MCP server's answer).
    record = gw_json.wait_audit(before + 1, where=refused_here)[-1]
    assert record["server"] == "demo" and "tool" not in record


def test_batch_ids_that_differ_only_as_written_are_refused_before_the_server(world, gw_stub):
    # [ping id 1, tools/list id 1]: a server answering both under id 1 could have the list
    # pass as the ping's answer. Refused whole; the upstream never sees it.
    seen = lambda: len(httpx.get(f"http://127.0.0.1:{world.servers['stub']}/_seen", timeout=5).json())  # noqa: E731
    before = seen()
    for ids in [(b"1", b"1"), (b"1", b"1.0"), (b"1e0", b"10e-1")]:
        raw = (b'[{"jsonrpc":"2.0","id":%s,"method":"ping"},{"jsonrpc":"2.0","id":%s,"method":"tools/list"}]' % ids)
        response = post(gw_stub, None, {"mcp-protocol-version": "2025-03-26"}, raw=raw)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == -32600
        assert "admin_reset" not in response.text
    assert seen() == before
    # A string id is not a number: "1" and 1 are different requests (forwarded).
    raw = b'[{"jsonrpc":"2.0","id":"1","method":"ping"},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]'
    response = post(gw_stub, None, {"mcp-protocol-version": "2025-03-26", "x-stub-mode": "json"}, raw=raw)
    assert response.status_code == 200 and seen() == before + 1


@pytest.mark.parametrize("stub_mode", ["json", "sse"])
def test_list_answered_under_another_requests_id_is_still_filtered(world, gw_stub, stub_mode):
    # The stub answers the tools list under the ping's id: the gateway filters it by shape.
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]

    response = post(gw_stub, batch, {"mcp-protocol-version": "2025-03-26", "x-stub-mode": stub_mode})

    assert response.status_code == 200
    if stub_mode == "json":
        answers = response.json()
    else:
        answers = [json.loads(l[5:]) for l in response.text.splitlines() if l.startswith("data:")]
    assert answers[0]["id"] == 1
    assert [t["name"] for t in answers[0]["result"]["tools"]] == ["add"]
    assert answers[0]["result"]["nextCursor"] == "page-2"
    assert "admin_reset" not in response.text
    line = audit_array(gw_stub, lambda a: [r.get("method") for r in a] == ["ping", "tools/list"]
                       and a[0].get("list_hidden") == 1)
    assert line[0]["decision"] == "allow"


def test_deny_rule_matches_arguments_of_an_unexpected_type(world, gw_json):
    # `no-secret-echo` denies echo when $.text matches /secret/: an array holding a match, or
    # a value the regex cannot read, is denied too (fail closed).
    world.reset_calls("json")
    for text in [["secret"], ["fine", "top secret"], {"t": "secret"}, 5]:
        response = post(gw_json, call("echo", {"text": text}))
        assert rpc(response)["error"]["message"] == "Not allowed: tools/call echo with these arguments", (text, response.text)
        record = audit_for(gw_json, tool="echo", arguments_sha256=canonical_sha256({"text": text}))
        assert (record["decision"], record["rule_id"]) == ("deny", "no-secret-echo")
    assert world.calls("json") == {}

    async def actions(client):
        return await client.call_tool("echo", {"text": "fine"})

    assert not run_sdk(gw_json.url + "/mcp", "legacy", key("alice"), actions).is_error
    assert world.calls("json") == {"echo": 1}


def test_2026_base64_name_header_that_matches_passes(world, gw_json):
    world.reset_calls("json")
    name = base64.b64encode(b"add").decode()
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": f"=?base64?{name}?="}
    body = {**ADD, "params": {**ADD["params"], "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}

    response = post(gw_json, body, headers)

    assert response.status_code == 200, response.text
    assert rpc(response)["result"]["structuredContent"] == {"result": 3}
    assert world.calls("json") == {"add": 1}


def test_batch_with_one_denied_element_is_denied_whole(world, gw_json):
    world.reset_calls("json")
    batch = [call("add", {"a": 1, "b": 1}, id=1), call("admin_reset", {}, id=2),
             {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}]

    response = post(gw_json, batch, {"mcp-protocol-version": "2025-03-26"})

    assert response.status_code == 200
    assert response.json() == [
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Batch rejected"}},
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "Unknown tool: admin_reset"}},
    ]
    assert world.calls("json") == {}
    line = audit_array(gw_json, lambda a: a[0].get("tool") == "add" and a[1].get("tool") == "admin_reset")
    assert [(r["batch_index"], r["kind"], r["decision"]) for r in line] == [
        (0, "request", "deny"), (1, "request", "deny"), (2, "notification", "allow")]
    assert line[0]["reason"] == "another message in the batch was denied"


def test_batch_of_allowed_messages_is_forwarded_in_2025_03_26(world, gw_json):
    world.reset_calls("json")
    batch = [call("add", {"a": 1, "b": 1}, id=1), call("echo", {"text": "hi"}, id=2)]

    response = post(gw_json, batch, {"mcp-protocol-version": "2025-03-26"})

    # Whatever the SDK server makes of a batch, the gateway forwarded it (audit: allowed,
    # one record per message, as an array).
    assert response.status_code < 500
    line = audit_array(gw_json, lambda a: [r.get("tool") for r in a] == ["add", "echo"])
    assert [(r["tool"], r["decision"], r["status"]) for r in line] == [
        ("add", "allow", response.status_code), ("echo", "allow", response.status_code)]


def test_client_posted_notifications_and_responses_pass(world, gw_json):
    init = post(gw_json, INIT)
    session = init.headers["mcp-session-id"]
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}

    notified = post(gw_json, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
    answered = post(gw_json, {"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}}, headers)

    assert (notified.status_code, answered.status_code) == (202, 202)
    # Records name the server's own id (the client holds it with the gateway's binding tag).
    server_session = session.rsplit(".", 1)[0]
    assert audit_for(gw_json, kind="notification", session_id=server_session)["decision"] == "allow"
    assert audit_for(gw_json, kind="response", session_id=server_session)["decision"] == "allow"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_pass_for_legacy_revisions_and_allowed_identities(world, gw_json, gw_explain, method):
    init = post(gw_json, INIT)
    session = init.headers["mcp-session-id"]
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18",
               "accept": "text/event-stream", **key("alice")}

    with httpx.stream(method, gw_json.url + "/mcp", headers=headers, timeout=10) as allowed:
        assert allowed.status_code == 200, allowed.read()  # answered by the MCP server
    modern = httpx.request(method, gw_json.url + "/mcp", timeout=10,
                           headers={**headers, "mcp-protocol-version": "2026-07-28"})
    assert modern.status_code == 405
    assert modern.headers["allow"] == "POST"
    # Without Alice's session id (anonymous presenting it gets 404: tests/test_mcp_sessions.py).
    anonymous = {k: v for k, v in headers.items() if k not in ("x-api-key", "mcp-session-id")}
    hidden = httpx.request(method, gw_json.url + "/mcp", headers=anonymous, timeout=10)
    explained = httpx.request(method, gw_explain.url + "/mcp", headers=anonymous, timeout=10)
    assert hidden.status_code == 405
    assert explained.status_code == 403
    assert explained.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert audit_for(gw_explain, http_method=method, status=403)["decision"] == "deny"


def test_other_http_methods_are_refused(gw_json):
    response = httpx.put(gw_json.url + "/mcp", content=json.dumps(ADD), headers=key("alice"), timeout=10)
    assert response.status_code == 405


# --- dry run ---------------------------------------------------------------------------------

def test_dry_run_records_denials_but_blocks_nothing(world, gw_dry):
    world.reset_calls("json")
    dry_before = gw_dry.stat("wasmcustom.tollgate.mcp.calls.server.demo.tool.admin_reset.caller.alice.decision.dryrun_deny")

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        reset = await client.call_tool("admin_reset", {})
        return tools, reset

    tools, reset = run_sdk(gw_dry.url + "/mcp", "legacy", key("alice"), actions)

    assert tools == ALL_TOOLS
    assert reset.content[0].text == "reset done"
    assert world.calls("json") == {"admin_reset": 1}
    record = audit_for(gw_dry, tool="admin_reset")
    assert (record["decision"], record["enforced"]) == ("deny", False)
    assert record["arguments"] == {}  # audit_arguments: true
    assert audit_for(gw_dry, method="tools/list")["list_hidden"] == 3
    assert gw_dry.stat("wasmcustom.tollgate.mcp.calls.server.demo.tool.admin_reset.caller.alice.decision.dryrun_deny") == dry_before + 1


# --- audit, trace, metrics -------------------------------------------------------------------

def test_audit_records_identity_digest_session_trace_and_is_error(world, gw, server_mode):
    arguments = {"b": 2, "a": "not a number", "nested": {"z": [1, 2], "é": True}}

    async def actions(client):
        ok = await client.call_tool("echo", {"text": "hello"})
        bad = await client.call_tool("add", arguments)
        return ok, bad

    headers = {**key("alice"), "traceparent": TRACEPARENT}
    ok, bad = run_sdk(gw.url + "/mcp", "legacy", headers, actions)

    assert not ok.is_error and bad.is_error
    record = audit_for(gw, tool="add", arguments_sha256=canonical_sha256(arguments))
    assert record["is_error"] is True
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["parent_span_id"] == "00f067aa0ba902b7"
    assert record["identity"] == {"principal": "alice", "groups": ["eng"], "source": "api_key", "key_name": "alice-demo"}
    assert record["session_id"] and record["revision"] == "2025-11-25"
    assert record["status"] == 200 and record["duration_ms"] >= 0
    assert "arguments" not in record  # only the digest unless audit_arguments
    echo = audit_for(gw, tool="echo", session_id=record["session_id"])
    assert echo["is_error"] is False and echo["rule_id"] == "everyday-tools"


def test_metrics_by_server_tool_and_decision(world, gw_json):
    # The gateway is shared by the module: compare before and after, never absolute values.
    series = {
        "add_allow": 'tollgate_mcp_calls{mcp_server="demo",mcp_tool="add",mcp_caller="alice",mcp_decision="allow"}',
        "reset_deny": 'tollgate_mcp_calls{mcp_server="demo",mcp_tool="admin_reset",mcp_caller="alice",mcp_decision="deny"}',
        "call_allow": 'tollgate_mcp_messages{mcp_server="demo",mcp_method="tools_call",mcp_decision="allow"}',
        "call_deny": 'tollgate_mcp_messages{mcp_server="demo",mcp_method="tools_call",mcp_decision="deny"}',
        "list_allow": 'tollgate_mcp_messages{mcp_server="demo",mcp_method="tools_list",mcp_decision="allow"}',
    }

    def values() -> dict[str, float]:
        text = gw_json.prometheus()
        out = {}
        for name, line_start in series.items():
            line = next((l for l in text.splitlines() if l.startswith(line_start + " ")), None)
            out[name] = float(line.rsplit(" ", 1)[1]) if line else 0.0
        out["requests"] = gw_json.stat("wasmcustom.tollgate.mcp.requests")
        return out

    before = values()
    post(gw_json, call("add", {"a": 1, "b": 1}))
    post(gw_json, call("admin_reset", {}))
    post(gw_json, call("add", {"a": 2, "b": 2}))
    after = values()

    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"add_allow": 2, "reset_deny": 1, "call_allow": 2, "call_deny": 1, "list_allow": 0, "requests": 3}


# --- streaming and list rewriting against a scripted upstream --------------------------------

def test_sse_list_is_rewritten_event_by_event_without_holding_the_stream(world, gw_stub):
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "traceparent": TRACEPARENT, **key("alice")}
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream("POST", gw_stub.url + "/mcp", headers=headers, timeout=10,
                      content=json.dumps({"jsonrpc": "2.0", "id": 41, "method": "tools/list"})) as response:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private"
        assert "content-length" not in response.headers
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    stream = b"".join(c for _, c in arrivals).decode()

    first_event_at = next(t for t, c in arrivals if b"notifications/message" in c)
    assert first_event_at < 1.0, arrivals  # the upstream waits 1.5 s before the list
    assert arrivals[-1][0] >= 1.4
    events = [e for e in stream.split("\n\n") if e.strip()]
    assert len(events) == 2
    assert events[0] == ('event: message\ndata: {"jsonrpc": "2.0", "method": "notifications/message", '
                         '"params": {"level": "info", "data": "working"}}')  # untouched, byte for byte
    assert events[1].startswith("id: e2\nevent: message\ndata: ")
    listed = json.loads(events[1].split("data: ", 1)[1])
    assert [t["name"] for t in listed["result"]["tools"]] == ["add"]
    assert listed["result"]["nextCursor"] == "page-2" and listed["id"] == 41
    seen = httpx.get(f"http://127.0.0.1:{world.servers['stub']}/_seen", timeout=5).json()[-1]["headers"]
    assert seen["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert seen["traceparent"] != TRACEPARENT  # the gateway's span is the new parent
    assert "x-api-key" not in seen and "authorization" not in seen  # credentials not forwarded
    assert "accept-encoding" not in seen


def test_json_list_keeps_cursor_and_fixes_length(world, gw_stub):
    response = post(gw_stub, {"jsonrpc": "2.0", "id": "p2", "method": "tools/list", "params": {"cursor": "page-1"}},
                    {"x-stub-mode": "json"})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "private"
    assert response.headers.get("content-length") in (None, str(len(response.content)))
    assert response.json() == {"jsonrpc": "2.0", "id": "p2", "result": {
        "tools": [{"name": "add", "inputSchema": {"type": "object"}}], "nextCursor": "page-2"}}


def test_list_replayed_on_a_get_stream_is_filtered_by_its_shape(world, gw_stub):
    headers = {"accept": "text/event-stream", "mcp-protocol-version": "2025-06-18", **key("alice")}
    response = httpx.get(gw_stub.url + "/mcp", headers=headers, timeout=10)

    data = json.loads(next(l for l in response.text.splitlines() if l.startswith("data: "))[6:])
    assert data["id"] == "replayed-99"
    assert [t["name"] for t in data["result"]["tools"]] == ["add"]


# --- configuration refused at load -----------------------------------------------------------

@pytest.mark.parametrize(("argument", "expected"), [
    ({"path": "$.items[?(@.x)]", "exists": True}, "policy.rules[7].arguments[0].path: invalid JSONPath"),
    ({"path": "$.sql", "regex": "(select"}, "policy.rules[7].arguments[0].regex: invalid regex"),
])
def test_bad_rule_is_refused_at_load_with_the_rule_named(workdir, argument, expected):
    plugin = gateway_plugin()
    plugin["policy"]["rules"].insert(7, {"id": "broken-rule", "effect": "allow", "tools": ["x"], "arguments": [argument]})

    log = harness.run_envoy_expect_failure(envoy_config(), workdir, plugin_configs={ROOT_ID: plugin})

    assert f"tollgate-mcp: invalid plugin configuration: {expected}" in log, log[-3000:]
    assert "(rule `broken-rule`)" in log


def test_shipped_config_validates():
    result = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(harness.REPO / "envoy" / "mcp.yaml"),
                             "-l", "error", "--use-dynamic-base-id"], capture_output=True, text=True, timeout=60,
                            cwd=str(harness.REPO))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the MCP Inspector CLI -------------------------------------------------------------------

INSPECTOR = harness.REPO / "tests" / "node_modules" / ".bin" / "mcp-inspector"


@pytest.mark.skipif(not INSPECTOR.exists() and not os.environ.get("CI"),
                    reason="MCP Inspector not installed: run `npm ci` in tests/")
def test_inspector_cli_lists_the_filtered_tools(world, gw):
    assert INSPECTOR.exists(), "run `npm ci` in tests/ (the MCP Inspector CLI is pinned in tests/package.json)"
    result = subprocess.run(
        [shutil.which("npx") or "npx", "--no-install", "@modelcontextprotocol/inspector", "--cli", gw.url + "/mcp",
         "--transport", "http", "--method", "tools/list", "--header", f"x-api-key: {KEYS['alice']}"],
        capture_output=True, text=True, timeout=60, cwd=str(harness.REPO / "tests"))

    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout[result.stdout.index("{"):])
    assert [t["name"] for t in listed["tools"]] == VISIBLE["alice"]


# --- answers that depend on the revision, compared with the SDK server's own ----------------
#
# Each request is sent to the real SDK server directly and through the gateway; where the
# filter has no reason to differ, both answers must agree (status and body).

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def gw_open(world) -> harness.Envoy:
    """A gateway whose policy allows everything, in front of the JSON-mode demo server."""
    plugin = copy.deepcopy(SHIPPED_PLUGIN)
    plugin["policy"]["rules"] = [{"id": "allow-all", "effect": "allow"}]
    return world.envoy("open", "json", plugin)


def modern_request(method: str, params: dict, id: Any = 7, version: str = MODERN) -> tuple[dict, dict]:  # noqa: A002
    """A 2026-07-28 request (body with `_meta`, routing headers) at `version`."""
    meta = {**META, "io.modelcontextprotocol/protocolVersion": version}
    headers = {"mcp-protocol-version": version, "mcp-method": method}
    if "name" in params or "uri" in params:
        headers["mcp-name"] = params.get("name") or params["uri"]
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {**params, "_meta": meta}}, headers


def direct(world, body: dict, headers: dict[str, str]) -> httpx.Response:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
    return httpx.post(f"http://127.0.0.1:{world.server('json')}/mcp", content=json.dumps(body).encode(), headers=h, timeout=10)


def legacy_session(world) -> dict[str, str]:
    """A 2025-11-25 session opened directly at the JSON-mode server (the gateway forwards its id)."""
    init = {**INIT, "params": {**INIT["params"], "protocolVersion": "2025-11-25"}}
    r = direct(world, init, {})
    headers = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    assert direct(world, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers).status_code == 202
    return headers


def gateway_session(gw) -> dict[str, str]:
    """A 2025-11-25 session opened through the gateway: the id it gives the client."""
    init = {**INIT, "params": {**INIT["params"], "protocolVersion": "2025-11-25"}}
    r = post(gw, init)
    headers = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    assert post(gw, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers).status_code == 202
    return headers


def answer(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, rpc(response)


@pytest.mark.parametrize("kind", ["request", "notification"])
def test_unsupported_protocol_version_is_answered_in_the_servers_shape(world, gw_open, kind):
    world.reset_calls("json")
    body, headers = modern_request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, id="v-1", version="v999.0.0")
    if kind == "notification":
        body = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        headers = {"mcp-protocol-version": "v999.0.0"}

    status, server = answer(direct(world, body, headers))
    gw_status, gateway = answer(post(gw_open, body, headers))

    assert status == 400 and server["error"]["code"] == -32022, server
    assert gw_status == status
    # The same answer, except that the gateway names the revisions it can judge (all it knows).
    assert {**gateway, "error": {**gateway["error"], "data": None}} == {**server, "error": {**server["error"], "data": None}}
    assert gateway["id"] == ("v-1" if kind == "request" else None)
    assert gateway["error"]["data"]["requested"] == server["error"]["data"]["requested"] == "v999.0.0"
    assert set(server["error"]["data"]["supported"]) <= set(gateway["error"]["data"]["supported"])
    # What the SDK client does with it: validates the data and retries at the newest mutual version.
    from mcp_types import UnsupportedProtocolVersionErrorData
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS
    supported = UnsupportedProtocolVersionErrorData.model_validate(gateway["error"]["data"]).supported
    assert [v for v in MODERN_PROTOCOL_VERSIONS if v in supported] == [MODERN]
    # Never forwarded: the filter cannot judge a request at a revision it does not know.
    assert world.calls("json") == {}
    record = audit_for(gw_open, revision="v999.0.0")
    assert record["decision"] == "error" and record["status"] == 400


@pytest.mark.parametrize("method", ["resources/subscribe", "resources/unsubscribe"])
@pytest.mark.parametrize("params, via", [({}, "open"), ({"uri": "file:///data/readme.txt"}, "open"),
                                         ({"uri": "file:///secret/keys.txt"}, "hide")])
def test_methods_removed_in_2026_are_not_found_as_at_the_server(world, gw_open, gw_json, method, params, via):
    body, headers = modern_request(method, params)
    gateway = gw_open if via == "open" else gw_json

    server = answer(direct(world, body, headers))
    through = answer(post(gateway, body, headers))

    assert server == (404, {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "Method not found", "data": method}})
    assert through == server


@pytest.mark.parametrize("revision", ["2025-11-25", MODERN])
def test_hidden_denials_answer_as_the_server_does_for_what_does_not_exist(world, gw_json, revision):
    session = legacy_session(world) if revision != MODERN else {}
    # Through the gateway, a session the gateway issued (bound to alice and the server): a
    # session opened directly at the server is refused there (tests/test_mcp_sessions.py).
    bound = gateway_session(gw_json) if revision != MODERN else {}

    def ask(method: str, params: dict) -> tuple[dict, dict]:
        if revision == MODERN:
            return modern_request(method, params)
        return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, dict(session)

    def post(gw, body, headers):  # noqa: F811 - the module's `post`, with the gateway's session
        return globals()["post"](gw, body, {**headers, **bound})

    # A resource alice may not read answers as a URI the server does not have.
    missing, denied = "file:///secret/missing.txt", "file:///secret/keys.txt"
    server = answer(direct(world, *ask("resources/read", {"uri": missing})))
    through = answer(post(gw_json, *ask("resources/read", {"uri": denied})))
    assert server[1]["error"]["code"] == -32602 and server[1]["error"]["data"] == {"uri": missing}, server
    assert through == (server[0], json.loads(json.dumps(server[1]).replace(missing, denied)))
    invalid_params_status = server[0]

    # A method no rule allows answers as a method the server does not have.
    server = answer(direct(world, *ask("tollgate/not-allowed", {})))
    through = answer(post(gw_json, *ask("tollgate/not-allowed", {})))
    assert server[1]["error"]["code"] == -32601, server
    assert through == server

    # Tools and prompts: the spec's -32602 ("Unknown tool: X"), with the status the server
    # gives -32602 at this revision (the SDK's MCPServer itself answers an unknown tool with
    # an isError result: see filters/mcp/README.md).
    for method, params, message in [("tools/call", {"name": "admin_reset", "arguments": {}}, "Unknown tool: admin_reset"),
                                    ("prompts/get", {"name": "internal"}, "Unknown prompt: internal")]:
        status, body = answer(post(gw_json, *ask(method, params)))
        assert (status, body["error"]) == (invalid_params_status, {"code": -32602, "message": message}), body
    assert world.calls("json").get("admin_reset") is None
