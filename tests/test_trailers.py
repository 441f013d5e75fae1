"""Bodies that end with HTTP trailers, and streams that start with a byte-order mark, through
the real Envoy 1.40 with the shipped configs: an HTTP/2 client (h2, prior knowledge) sends
request trailers, and HTTP/2 upstreams (h2) answer with response trailers.

A body that ends with trailers has no end-of-stream data callback; before the shared glue
turned trailers into the body's end, each of these passed the filter undecided: an A2A call
that policy closes reached the agent, an MCP `tools/list` answer went out unfiltered, an agent
card went out unrewritten with its signatures, and the LLM filter recorded a finished answer as
incomplete. Each upstream here records what reached it, so "refused" means "never arrived".
"""
from __future__ import annotations

import gzip
import json

import pytest

import harness
from h2util import Answer, H2Message, H2Upstream, h2_request, use_http2_upstream

pytestmark = pytest.mark.timeout(90)

TRAILER = [("x-checksum", "abc")]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def chunks(body: bytes, size: int = 16) -> list[bytes]:
    """The body cut in small DATA frames (Envoy may call the filter once per frame)."""
    return [body[i:i + size] for i in range(0, len(body), size)] or [b""]


@pytest.fixture
def upstreams():
    started: list[H2Upstream] = []

    def start(handler) -> H2Upstream:
        upstream = H2Upstream(handler)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.close()


# --- A2A --------------------------------------------------------------------------------------

def a2a_send(text: str, message_id: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": "r1", "method": "SendMessage", "params": {"message": {
        "messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]}}}).encode()


def a2a_task(request: H2Message) -> Answer:
    body = json.dumps({"jsonrpc": "2.0", "id": "r1", "result": {"task": {
        "id": "task-1", "contextId": "ctx-1", "status": {"state": "TASK_STATE_COMPLETED"}}}}).encode()
    return Answer(headers=[("content-type", "application/json")], chunks=[body], trailers=TRAILER)


def test_a2a_request_ending_with_trailers_is_decided(procs, upstreams) -> None:
    researcher = upstreams(a2a_task)
    echo = upstreams(a2a_task)
    cfg = harness.load_envoy_config("a2a.yaml")
    for cluster in ("agent_researcher", "agent_echo"):
        use_http2_upstream(cfg, cluster)
    envoy = procs.envoy(cfg, upstreams={"agent_researcher": researcher.port, "agent_echo": echo.port,
                                        "agent_planner": echo.port})
    headers = [("content-type", "application/json"), ("a2a-version", "1.0"), ("traceparent", TRACEPARENT)]

    # The shipped policy closes the researcher to everyone but the planner agent.
    refused = h2_request(envoy.port, "POST", "/agents/researcher/", headers,
                         chunks(a2a_send("let me in", "m-forbidden")), trailers=TRAILER)
    assert refused.status == 200, refused
    error = refused.json()["error"]
    assert "A2A_FORBIDDEN" in json.dumps(error), error
    assert researcher.received == [], "a call the policy closes reached the agent"
    record = envoy.wait_audit(1, where=lambda r: r.get("target") == "researcher")[-1]
    assert (record["decision"], record["method"]) == ("deny", "SendMessage")

    # No body at all, only trailers after the headers: an empty body, refused as one.
    empty = h2_request(envoy.port, "POST", "/agents/researcher/", headers, [], trailers=TRAILER)
    assert empty.status == 200, empty
    assert empty.json()["error"]["code"] in (-32600, -32700), empty.body
    assert researcher.received == []

    # An allowed call ending with trailers is decided too: hop headers, trace, audit.
    allowed = h2_request(envoy.port, "POST", "/agents/echo/", headers,
                         chunks(a2a_send("hello", "m-allowed")), trailers=TRAILER)
    assert allowed.status == 200, allowed
    assert allowed.json()["result"]["task"]["id"] == "task-1"
    assert len(echo.received) == 1
    seen = echo.received[0]
    assert seen.headers.get("x-tollgate-a2a-hop") == "1", seen.headers
    assert seen.headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert seen.headers["traceparent"] != TRACEPARENT, "the gateway's own span"
    assert json.loads(seen.body)["params"]["message"]["messageId"] == "m-allowed"
    record = envoy.wait_audit(1, where=lambda r: r.get("target") == "echo")[-1]
    assert (record["decision"], record["method"]) == ("allow", "SendMessage")


def test_a2a_card_ending_with_trailers_is_rewritten_and_stripped(procs, upstreams) -> None:
    card = json.dumps({"name": "echo", "url": "http://127.0.0.1:1/", "version": "1",
                       "supportedInterfaces": [{"url": "http://127.0.0.1:1/", "protocolBinding": "JSONRPC",
                                                "protocolVersion": "1.0"}],
                       "signatures": [{"protected": "eyJhbGciOiJFUzI1NiJ9", "signature": "c2ln"}]}).encode()
    agent = upstreams(lambda _: Answer(headers=[("content-type", "application/json")], chunks=chunks(card, 40),
                                       trailers=TRAILER))
    cfg = harness.load_envoy_config("a2a.yaml")
    use_http2_upstream(cfg, "agent_echo")
    plugin = harness.plugin_config(cfg, "tollgate.a2a")
    plugin["cards"]["signed"] = "strip"
    envoy = procs.envoy(cfg, upstreams={"agent_echo": agent.port}, plugin_configs={"tollgate.a2a": plugin})
    out = h2_request(envoy.port, "GET", "/agents/echo/.well-known/agent-card.json", [], [])
    assert out.status == 200, out
    body = out.json()
    assert body["url"] == f"http://127.0.0.1:{envoy.port}/agents/echo/", body
    assert body["supportedInterfaces"][0]["url"] == body["url"]
    assert "signatures" not in body, "signatures kept under cards.signed: strip"
    record = envoy.wait_audit(1, where=lambda r: r.get("method") == "AgentCard")[-1]
    assert record["card"]["result"] == "signatures_removed", record


# --- MCP --------------------------------------------------------------------------------------

ALICE = [("x-api-key", "tg-demo-alice"), ("content-type", "application/json"),
         ("accept", "application/json, text/event-stream"), ("mcp-protocol-version", "2025-06-18")]
ALL_TOOLS = ["add", "echo", "query_db", "transfer", "delete_row", "admin_reset"]
ALICE_SEES = ["add", "echo", "query_db"]


def tools_list_answer(request: H2Message) -> Answer:
    """A tools/list answer with every tool; the request's `x-test-shape` picks the framing."""
    message = request.json() if request.body else {}
    result = {"jsonrpc": "2.0", "id": message.get("id"), "result": {
        "tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ALL_TOOLS]}}
    if message.get("method") != "tools/list":
        result = {"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": [], "isError": False}}
    body = json.dumps(result).encode()
    shape = request.headers.get("x-test-shape", "json")
    if shape == "sse-bom":
        # The first line is the data line: behind the mark its field name is not `data` to a
        # parser that keeps the mark.
        event = b"\xef\xbb\xbfdata: " + body + b"\r\n\r\n"
        return Answer(headers=[("content-type", "text/event-stream")], chunks=[event[:2], event[2:]])
    if shape == "list-for-anything":
        # Answers whatever came (a notification too) with a tools list under id 7.
        listed = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {
            "tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ALL_TOOLS]}}).encode()
        return Answer(headers=[("content-type", "application/json")], chunks=[listed])
    if shape == "repeated-result":
        # Clients keep the last `result`: the first is empty, the last has every tool.
        tools = json.dumps([{"name": n} for n in ALL_TOOLS])
        twice = f'{{"jsonrpc":"2.0","id":{json.dumps(message.get("id"))},"result":{{"tools":[]}},"result":{{"tools":{tools}}}}}'
        return Answer(headers=[("content-type", "application/json")], chunks=[twice.encode()])
    if shape == "gzip":
        return Answer(headers=[("content-type", "application/json"), ("content-encoding", "gzip")],
                      chunks=chunks(gzip.compress(body), 50), trailers=TRAILER)
    return Answer(headers=[("content-type", "application/json")], chunks=chunks(body, 50), trailers=TRAILER)


def sse_messages(raw: bytes) -> list[dict]:
    """The JSON messages in an SSE body, read as the TypeScript SDK and browsers read it
    (a leading byte-order mark is stripped)."""
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            messages.append(json.loads("\n".join(data)))
    return messages


@pytest.fixture
def mcp_gateway(procs, upstreams):
    server = upstreams(tools_list_answer)
    cfg = harness.load_envoy_config("mcp.yaml")
    use_http2_upstream(cfg, "mcp_demo")
    envoy = procs.envoy(cfg, upstreams={"mcp_demo": server.port})
    return envoy, server


def test_mcp_request_ending_with_trailers_is_judged(mcp_gateway) -> None:
    envoy, server = mcp_gateway
    call = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "admin_reset", "arguments": {}}}).encode()
    refused = h2_request(envoy.port, "POST", "/mcp", ALICE, chunks(call), trailers=TRAILER)
    assert refused.status == 200, refused
    assert refused.json()["error"]["message"] == "Unknown tool: admin_reset"
    assert server.received == [], "a denied tools/call reached the server"
    record = envoy.wait_audit(1, where=lambda r: r.get("tool") == "admin_reset")[-1]
    assert record["decision"] == "deny"

    # No body at all, only trailers after the headers: refused as an empty body.
    empty = h2_request(envoy.port, "POST", "/mcp", ALICE, [], trailers=TRAILER)
    assert empty.status == 400, empty
    assert empty.json()["error"]["code"] in (-32600, -32700), empty.body
    assert server.received == []

    allowed = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                          "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}).encode()
    out = h2_request(envoy.port, "POST", "/mcp", ALICE, chunks(allowed), trailers=TRAILER)
    assert out.status == 200, out
    assert [json.loads(r.body)["params"]["name"] for r in server.received] == ["add"]
    assert "x-api-key" not in server.received[0].headers, "the client's key never reaches the server"


def test_mcp_list_answer_ending_with_trailers_is_filtered(mcp_gateway) -> None:
    envoy, server = mcp_gateway
    request = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode()
    # Request trailers too: both directions end with them.
    out = h2_request(envoy.port, "POST", "/mcp", ALICE, chunks(request), trailers=TRAILER)
    assert out.status == 200, out
    assert [t["name"] for t in out.json()["result"]["tools"]] == ALICE_SEES
    assert out.headers.get("cache-control") == "private"
    record = envoy.wait_audit(1, where=lambda r: r.get("method") == "tools/list")[-1]
    assert record["list_hidden"] == len(ALL_TOOLS) - len(ALICE_SEES), record


def test_mcp_sse_list_behind_a_byte_order_mark_is_filtered(mcp_gateway) -> None:
    envoy, _ = mcp_gateway
    request = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}).encode()
    out = h2_request(envoy.port, "POST", "/mcp", [*ALICE, ("x-test-shape", "sse-bom")], [request])
    assert out.status == 200, out
    messages = sse_messages(out.body)
    assert [t["name"] for t in messages[0]["result"]["tools"]] == ALICE_SEES, out.body


def test_mcp_unreadable_list_ending_with_trailers_is_an_error(mcp_gateway) -> None:
    envoy, _ = mcp_gateway
    request = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}).encode()
    out = h2_request(envoy.port, "POST", "/mcp", [*ALICE, ("x-test-shape", "gzip")], [request])
    assert out.status == 502, out
    assert "content-encoding" not in out.headers
    error = out.json()
    assert (error["id"], error["error"]["code"]) == (5, -32603), error
    assert b"admin_reset" not in out.body


def test_mcp_list_answering_a_notification_never_reaches_the_client(mcp_gateway) -> None:
    """Fuzz findings F3 (the answer to a POST of only notifications was never read) and F6 (a
    response answering no request of its POST passed): such a response, a list here, is
    replaced by a JSON-RPC error and recorded; nothing of it reaches the client."""
    envoy, _ = mcp_gateway
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    out = h2_request(envoy.port, "POST", "/mcp", [*ALICE, ("x-test-shape", "list-for-anything")], [note])
    assert out.status == 200, out
    error = out.json()
    assert (error["id"], error["error"]["code"]) == (None, -32603), error
    assert b"tools" not in out.body and b"admin_reset" not in out.body, out.body
    record = envoy.wait_audit(1)[-1]
    assert record["decision"] == "error" and "answers no request of this POST" in record["error"], record


def test_mcp_server_message_repeating_a_key_never_passes(mcp_gateway) -> None:
    """Fuzz finding F4: a message repeating `result` failed the filter's reading and passed."""
    envoy, _ = mcp_gateway
    request = json.dumps({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}).encode()
    out = h2_request(envoy.port, "POST", "/mcp", [*ALICE, ("x-test-shape", "repeated-result")], [request])
    assert b"admin_reset" not in out.body, out.body
    assert out.json()["error"]["code"] == -32603, out.body


# --- LLM --------------------------------------------------------------------------------------

def chat_answer(request: H2Message) -> Answer:
    body = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "hi"}}],
                       "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}).encode()
    return Answer(headers=[("content-type", "application/json")], chunks=chunks(body, 64), trailers=TRAILER)


def test_llm_both_directions_ending_with_trailers_are_routed_and_accounted(procs, upstreams) -> None:
    provider = upstreams(chat_answer)
    cfg = harness.load_envoy_config("llm.yaml")
    use_http2_upstream(cfg, "llm_provider_a")
    envoy = procs.envoy(cfg, upstreams={"llm_provider_a": provider.port, "llm_provider_b": provider.port})
    headers = [("authorization", "Bearer tg-demo-alice"), ("content-type", "application/json"),
               ("traceparent", TRACEPARENT)]
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hello"}]}).encode()
    out = h2_request(envoy.port, "POST", "/v1/chat/completions", headers, chunks(body), trailers=TRAILER)
    assert out.status == 200, out
    assert out.json()["usage"]["total_tokens"] == 16
    seen = provider.received[0]
    assert json.loads(seen.body)["model"] == "gpt-4o-mini", "alias rewritten at the trailers"
    assert seen.headers["authorization"] == "Bearer sk-demo-provider-a", "the client's key never reaches the provider"
    record = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm" and r.get("completed") is not None
                              and r.get("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736")[-1]
    assert record["completed"] is True, record
    assert (record["tokens"]["input"], record["tokens"]["output"]) == (11, 5), record

    # Unknown model, ending with trailers: refused in OpenAI's shape, nothing forwarded.
    unknown = json.dumps({"model": "no-such-model", "messages": []}).encode()
    out = h2_request(envoy.port, "POST", "/v1/chat/completions", headers, chunks(unknown), trailers=TRAILER)
    assert out.status == 404, out
    assert out.json()["error"]["code"] == "model_not_found"
    assert len(provider.received) == 1
