"""The MCP gateway as an OAuth 2.1 resource server, and per-user upstream credentials by token
exchange (issue 18 items 4 and 7), through the real Envoy 1.40 with the shipped
envoy/mcp-oauth.yaml (jwt_authn + dist/tollgate_mcp.wasm), a real authorization server built
with Authlib (tests/oauth_as.py), a real `mcp` SDK server that records the Authorization header
it receives (tests/mcp_token_server.py), and the `mcp` SDK client's own OAuth flow.

    .venv/bin/python -m pytest tests/test_mcp_oauth.py -q

- the metadata document (RFC 9728) is served by the filter at the path-inserted and bare
  well-known paths without a token; a request without a token gets the filter's 401 naming it;
- the SDK client discovers it through the gateway, gets a token from the AS (authorization
  code + PKCE, the AS auto-approving the test user), and lists and calls tools;
- a token for another audience, an expired or forged one is refused with 401 invalid_token,
  and never reaches the MCP server;
- the MCP server receives only the exchanged token (aud = demo-mcp, sub = the caller), never
  the caller's; a second call does not hit the token endpoint again; two users get different
  tokens; token endpoint down: refused with 503, nothing reaches the server.

What reached the server is read from the server's own record (GET /_seen), what the AS did
from its own counters (GET /_stats).
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import httpx2
import jwt as pyjwt
import pytest
import yaml

import harness
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
REDIRECT = "http://127.0.0.1:1/callback"
WELL_KNOWN = "/.well-known/oauth-protected-resource"
# The ports written in the shipped config, replaced by the test's.
SHIPPED_GATEWAY, SHIPPED_AS = "127.0.0.1:10000", "127.0.0.1:9000"


class FixedPortEnvoy(harness.Envoy):
    """harness.Envoy whose listener port is chosen beforehand: the resource id (in the plugin
    and jwt_authn config) must name the port clients connect to."""

    def __init__(self, cfg: dict, workdir: Path, port: int, name: str, **render_args):
        original = harness.render

        def render(c, **kw):
            out, _, admin = original(c, **kw)
            out["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
            return out, {"main": port}, admin

        harness.render = render
        try:
            super().__init__(cfg, workdir, name=name, **render_args)
        finally:
            harness.render = original


def gateway_config(gateway_port: int, as_port: int, token_cluster: str = "oauth_as") -> dict:
    text = (REPO / "envoy" / "mcp-oauth.yaml").read_text()
    text = text.replace(SHIPPED_GATEWAY, f"127.0.0.1:{gateway_port}").replace(SHIPPED_AS, f"127.0.0.1:{as_port}")
    cfg = yaml.safe_load(text)
    if token_cluster != "oauth_as":
        plugin = harness.plugin_config(cfg, "tollgate.mcp")
        plugin["token_exchange"]["cluster"] = token_cluster
        for c in harness.wasm_filters(cfg):
            c["configuration"]["value"] = json.dumps(plugin)
        dead = json.loads(json.dumps(cfg["static_resources"]["clusters"][1]).replace("oauth_as", token_cluster))
        cfg["static_resources"]["clusters"].append(dead)
    return cfg


class World:
    def __init__(self, workdir: Path):
        self.procs: list[harness.Proc] = []
        self.port = harness.free_port()
        self.as_port = harness.free_port()
        self.mcp_port = harness.free_port()
        self.resource = f"http://127.0.0.1:{self.port}/mcp"
        self.issuer = f"http://127.0.0.1:{self.as_port}"
        self.procs.append(harness.python_server(
            "oauth-as", "tests/oauth_as.py",
            ["--port", str(self.as_port), "--resource", self.resource, "--redirect-uri", REDIRECT],
            workdir, f"{self.issuer}/jwks"))
        self.procs.append(harness.python_server(
            "mcp-token-server", "tests/mcp_token_server.py", [str(self.mcp_port)], workdir,
            f"http://127.0.0.1:{self.mcp_port}/_seen"))
        self.envoy = FixedPortEnvoy(gateway_config(self.port, self.as_port), workdir, self.port, "envoy-oauth",
                                    upstreams={"mcp_demo": self.mcp_port, "oauth_as": self.as_port})
        self.procs.append(self.envoy.proc)
        # A second gateway whose token endpoint is down (a cluster nothing listens on).
        self.down_port = harness.free_port()
        self.down = FixedPortEnvoy(gateway_config(self.down_port, self.as_port, "oauth_as_down"), workdir,
                                   self.down_port, "envoy-oauth-down",
                                   upstreams={"mcp_demo": self.mcp_port, "oauth_as": self.as_port,
                                              "oauth_as_down": harness.free_port()})
        self.procs.append(self.down.proc)

    def seen(self) -> list[str | None]:
        return httpx.get(f"http://127.0.0.1:{self.mcp_port}/_seen", timeout=5).json()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.mcp_port}/_seen/reset", timeout=5).raise_for_status()
        httpx.post(f"{self.issuer}/_stats/reset", timeout=5).raise_for_status()

    def as_stats(self) -> dict:
        return httpx.get(f"{self.issuer}/_stats", timeout=5).json()

    def mint(self, sub: str, aud: str, exp_in: int = 600) -> str:
        params = {"sub": sub, "aud": aud, "exp_in": str(exp_in)}
        return httpx.get(f"{self.issuer}/_token", params=params, timeout=5).json()["access_token"]

    def claims(self, token: str) -> dict:
        jwks = httpx.get(f"{self.issuer}/jwks", timeout=5).json()
        key = pyjwt.PyJWK(jwks["keys"][0]).key
        return pyjwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False}, issuer=self.issuer)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("mcp-oauth"))
    try:
        yield w
    finally:
        w.stop()


class MemoryStorage:
    """The SDK's token storage, with the test client pre-registered at the AS."""

    def __init__(self):
        self.tokens = None
        self.client_info = OAuthClientInformationFull(
            client_id="mcp-test-client", redirect_uris=[REDIRECT], token_endpoint_auth_method="none",
            grant_types=["authorization_code"], response_types=["code"])

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def oauth_session(url: str, user: str, actions):
    """The SDK client with its OAuth provider; the browser step is httpx following the
    authorization URL (the AS auto-approves `user`) and reading the redirect."""
    redirect: dict = {}
    visited: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        visited.append(authorization_url)
        async with httpx.AsyncClient() as browser:
            answer = await browser.get(f"{authorization_url}&login_hint={user}", follow_redirects=False)
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlparse(answer.headers["location"]).query)
        redirect.update({k: v[0] for k, v in query.items()})

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(redirect_uris=[REDIRECT], grant_types=["authorization_code"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    async with httpx2.AsyncClient(auth=provider, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            result = await actions(client)
    return result, storage.tokens, visited


def run_oauth(world: World, user: str, actions):
    return asyncio.run(oauth_session(world.resource, user, actions))


async def list_and_add(client):
    tools = [t.name for t in (await client.list_tools()).tools]
    first = await client.call_tool("add", {"a": 1, "b": 2})
    second = await client.call_tool("add", {"a": 2, "b": 3})
    return tools, first.content[0].text, second.content[0].text


def post(url: str, body: dict, token: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(url, content=json.dumps(body).encode(), headers=headers, timeout=10)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
CALL = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 1}}}


# --- protected-resource metadata ---------------------------------------------------------------

def test_metadata_is_served_by_the_filter_without_a_token(world):
    expected = {"resource": world.resource, "authorization_servers": [world.issuer], "scopes_supported": ["mcp:tools"],
                "bearer_methods_supported": ["header"], "resource_name": "Tollgate MCP gateway"}
    for path in [f"{WELL_KNOWN}/mcp", WELL_KNOWN]:
        answer = httpx.get(world.envoy.url + path, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert "max-age" in answer.headers["cache-control"]
        assert answer.json() == expected
    assert httpx.post(world.envoy.url + f"{WELL_KNOWN}/mcp", timeout=5).status_code == 405
    # Another path under the prefix is not the document: an MCP request like any other (401).
    assert httpx.get(world.envoy.url + f"{WELL_KNOWN}/other", timeout=5).status_code == 401


def test_without_a_token_the_filter_answers_401_naming_the_metadata(world):
    world.reset()
    answer = post(world.envoy.url + "/mcp", CALL)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == f'Bearer resource_metadata="{world.envoy.url}{WELL_KNOWN}/mcp"'
    assert answer.json()["error"]["code"] == -31401
    assert world.seen() == []


@pytest.mark.parametrize("case", ["other-audience", "expired", "forged"])
def test_a_token_that_does_not_verify_is_refused_with_invalid_token(world, case):
    world.reset()
    if case == "other-audience":
        token = world.mint("alice", "http://127.0.0.1:1/mcp")
    elif case == "expired":
        token = world.mint("alice", world.resource, exp_in=-300)
    else:
        from cryptography.hazmat.primitives.asymmetric import rsa
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = pyjwt.encode({"iss": world.issuer, "sub": "mallory", "aud": world.resource, "exp": 2**31},
                             other, algorithm="RS256", headers={"kid": "as-1"})

    answer = post(world.envoy.url + "/mcp", CALL, token)

    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge == f'Bearer error="invalid_token", resource_metadata="{world.envoy.url}{WELL_KNOWN}/mcp"'
    assert world.seen() == []
    assert world.as_stats()["token_exchange"] == 0
    record = world.envoy.wait_audit(1, where=lambda r: r.get("error", "").startswith("bearer token did not verify"))[-1]
    assert record["decision"] == "deny"


# --- the SDK client's OAuth flow, and token exchange -----------------------------------------

def test_sdk_client_discovers_the_metadata_through_the_gateway_and_its_calls_carry_exchanged_tokens(world):
    world.reset()
    served_before = metadata_served(world.envoy)

    (tools, first, second), tokens, visited = run_oauth(world, "alice", list_and_add)

    assert tools == ["add", "echo"]
    assert (first, second) == ("3", "5")
    # Discovery went through the gateway's metadata document, then to the AS.
    assert metadata_served(world.envoy) > served_before
    assert visited and visited[0].startswith(f"{world.issuer}/authorize?")
    caller = world.claims(tokens.access_token)
    assert (caller["sub"], caller["aud"]) == ("alice", world.resource)
    # What the MCP server received: only exchanged tokens for its own audience, never alice's.
    seen = world.seen()
    assert seen, "nothing reached the MCP server"
    assert all(h is not None and h.startswith("Bearer ") for h in seen), seen
    received = {h.removeprefix("Bearer ") for h in seen}
    assert tokens.access_token not in received
    assert len(received) == 1
    exchanged = world.claims(received.pop())
    assert (exchanged["sub"], exchanged["aud"]) == ("alice", "demo-mcp")
    # One exchange for the whole session: every later request used the cached token.
    stats = world.as_stats()
    assert stats["token_exchange"] == 1
    assert len(seen) >= 4
    records = world.envoy.wait_audit(1, where=lambda r: r.get("tool") == "add" and (r.get("identity") or {}).get("principal") == "alice")
    assert records[-1]["decision"] == "allow"


def test_two_users_get_different_tokens_and_a_repeat_call_hits_the_cache(world):
    world.reset()
    alice = world.mint("alice", world.resource)
    bob = world.mint("bob", world.resource)

    for token in (alice, alice, bob, bob):
        answer = post(world.envoy.url + "/mcp", INIT, token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["serverInfo"]["name"] == "tollgate-token-recorder"

    seen = [h.removeprefix("Bearer ") for h in world.seen()]
    assert len(seen) == 4
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[0] != seen[2]
    assert [world.claims(t)["sub"] for t in (seen[0], seen[2])] == ["alice", "bob"]
    assert alice not in seen and bob not in seen
    assert world.as_stats()["token_exchange"] == 2


def test_token_endpoint_down_refuses_and_nothing_reaches_the_server(world):
    world.reset()
    token = world.mint("alice", f"http://127.0.0.1:{world.down_port}/mcp")

    answer = post(world.down.url + "/mcp", CALL, token)

    assert answer.status_code == 503
    assert answer.json() == {"jsonrpc": "2.0", "id": 9, "error": {
        "code": -32603, "message": "Gateway could not obtain a credential for this MCP server"}}
    assert world.seen() == []
    record = world.down.wait_audit(1, where=lambda r: r.get("tool") == "add")[-1]
    assert record["decision"] == "error"
    assert record["error"].startswith("upstream credential: ")
    assert any("token_exchange" in k and "failed" in k and v >= 1 for k, v in world.down.stats().items())


def test_a_subject_token_the_authorization_server_refuses_gets_401_invalid_token(world):
    world.reset()
    # Verifies at the gateway (issuer, signature, audience), but the AS refuses to exchange it.
    token = world.mint("revoked-user", world.resource)

    answer = post(world.envoy.url + "/mcp", CALL, token)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{world.envoy.url}{WELL_KNOWN}/mcp"')
    assert answer.json()["id"] == 9 and answer.json()["error"]["code"] == -31401
    assert world.seen() == []
    assert world.as_stats()["token_exchange"] == 0
    record = world.envoy.wait_audit(1, where=lambda r: (r.get("identity") or {}).get("principal") == "revoked-user")[-1]
    assert (record["decision"], record["tool"]) == ("deny", "add")
    assert "invalid_request" in record["error"]


def metadata_served(envoy: harness.Envoy) -> int:
    return sum(v for k, v in envoy.stats().items() if "oauth_metadata" in k and k.endswith("200"))
