"""Demo A2A agent for Tollgate tests, built on the official `a2a-sdk` (1.3.0).

One JSON-RPC endpoint at `/` speaks A2A 1.0 (`SendMessage`, `A2A-Version: 1.0`) and 0.3
(`message/send`, no or `0.3` version header); the card is at `/.well-known/agent-card.json`
and lists a 1.0 and a 0.3 JSON-RPC interface, both at `--public-url`.

Each message runs an echo task (submitted -> working -> artifact -> completed; streamed or
not, as the client asks). Optionally, before answering, the agent makes outbound calls and
appends their results to its reply, forwarding the incoming trace headers on each so tests
can follow a trace across hops:
  --delegate-to URL   send the same text to another A2A agent (usually a gateway URL)
  --call-llm URL      OpenAI-compatible chat completion; URL is the base (e.g. .../v1);
                      key from $AGENT_LLM_KEY, model from $AGENT_LLM_MODEL (gpt-4o-mini)
  --call-mcp URL      call the MCP tool `echo` at a Streamable HTTP URL (e.g. .../mcp)
  --mcp-tool NAME     call this tool instead, with --mcp-arguments JSON (default {"text": <text>})
The forwarded headers are `traceparent`, `tracestate`, `baggage` and every `x-tollgate-*`
header of the inbound request: among them the gateway credential `x-tollgate-a2a-credential`
the A2A filter gave this agent, which the LLM and MCP filters accept as its identity
(`identity.gateway`) on this trace.
A failing outbound call does not fail the task: its error is written into the reply instead,
so a test sees what the gateway did to it.

Test-only endpoints on the same port:
  GET  /_seen         -> [{"method", "http_method", "path", "headers"}...] every request received
                         other than GET/HEAD (POST, and PUT, PATCH... a gateway must not pass;
                         "method" is the JSON-RPC method of the body, headers lowercased)
  POST /_seen/reset   -> clears that list

    python agent.py --host 127.0.0.1 --port 9101 --name agent-a [--public-url URL]
                    [--delegate-to URL [--delegate-follow-card]] [--call-llm URL] [--call-mcp URL]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from a2a.client import A2ACardResolver, ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import (
    get_message_text,
    get_stream_response_text,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, SendMessageRequest
from a2a.types.a2a_pb2 import Role, TaskState

# Headers an agent must carry from its inbound request onto its outbound calls so the trace
# (and Tollgate's own context) survives the hop. The 1.3.0 SDK client forwards none of them.
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
TOLLGATE_HEADER_PREFIX = "x-tollgate-"

OUTBOUND_TIMEOUT_S = 20.0


def forwarded_headers(inbound: dict[str, str]) -> dict[str, str]:
    """Pick the headers to propagate from an inbound (lowercase-keyed) header dict."""
    return {k: v for k, v in inbound.items() if k in TRACE_HEADERS or k.startswith(TOLLGATE_HEADER_PREFIX)}


@dataclass(frozen=True)
class Outbound:
    """Where the agent calls out to while handling a message (all optional)."""

    delegate_to: str | None = None
    delegate_follow_card: bool = False
    llm_url: str | None = None
    mcp_url: str | None = None
    mcp_mode: str = "legacy"
    mcp_tool: str = "echo"
    mcp_arguments: str | None = None


class EchoExecutor(AgentExecutor):
    def __init__(self, name: str, outbound: Outbound) -> None:
        self.name = name
        self.outbound = outbound

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task_from_user_message(context.message)
        if not context.current_task:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue=event_queue, task_id=task.id, context_id=task.context_id)
        await updater.update_status(state=TaskState.TASK_STATE_WORKING)

        text = get_message_text(context.message)
        # DefaultServerCallContextBuilder stores dict(request.headers) here (keys lowercased by
        # Starlette), for 1.0 and for 0.3-compat requests alike.
        inbound_headers: dict[str, str] = context.call_context.state.get("headers", {})
        headers = forwarded_headers(inbound_headers)

        lines = [f"[{self.name}] echo: {text}"]
        if self.outbound.delegate_to:
            lines.append("delegate: " + await _guarded(self._delegate(text, headers)))
        if self.outbound.llm_url:
            lines.append("llm: " + await _guarded(self._call_llm(text, headers)))
        if self.outbound.mcp_url:
            lines.append("mcp: " + await _guarded(self._call_mcp(text, headers)))

        await updater.add_artifact(parts=[new_text_part(text="\n".join(lines), media_type="text/plain")])
        await updater.update_status(state=TaskState.TASK_STATE_COMPLETED)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue=event_queue, task_id=context.task_id, context_id=context.context_id)
        await updater.cancel()

    async def _delegate(self, text: str, headers: dict[str, str]) -> str:
        url = self.outbound.delegate_to
        assert url
        async with httpx.AsyncClient(timeout=OUTBOUND_TIMEOUT_S) as http:
            # Build the factory first: it stamps `A2A-Version: 1.0` on the shared client, so the
            # card fetch looks like the SDK's own create_client().
            factory = ClientFactory(ClientConfig(streaming=False, httpx_client=http))
            card = await A2ACardResolver(http, url).get_agent_card(http_kwargs={"headers": headers})
            if not self.outbound.delegate_follow_card:
                # The SDK client posts to the card's interface URL. Pin it to the URL we were
                # given so the hop goes through the gateway even if the card names the agent.
                for interface in card.supported_interfaces:
                    interface.url = url
            client = factory.create(card)
            try:
                request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
                # service_parameters become HTTP headers on the JSON-RPC POST.
                call_context = ClientCallContext(service_parameters=headers)
                events = client.send_message(request, context=call_context)
                replies = [get_stream_response_text(event) async for event in events]
            finally:
                await client.close()
        return "\n".join(r for r in replies if r)

    async def _call_llm(self, text: str, headers: dict[str, str]) -> str:
        # Imported on use: openai adds ~0.7 s to every agent start, and most agents never call it.
        from openai import AsyncOpenAI  # noqa: PLC0415

        llm = AsyncOpenAI(
            base_url=self.outbound.llm_url,
            api_key=os.environ.get("AGENT_LLM_KEY", "unset"),
            default_headers=headers,
            max_retries=0,  # a gateway denial should show up once, not be retried
            timeout=OUTBOUND_TIMEOUT_S,
        )
        async with llm:
            completion = await llm.chat.completions.create(
                model=os.environ.get("AGENT_LLM_MODEL", "gpt-4o-mini"),
                messages=[{"role": "user", "content": text}],
            )
        return completion.choices[0].message.content or ""

    async def _call_mcp(self, text: str, headers: dict[str, str]) -> str:
        assert self.outbound.mcp_url
        import httpx2  # noqa: PLC0415 - imported on use, like openai above
        from mcp import Client as McpClient  # noqa: PLC0415
        from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415

        # The mcp SDK (2.x) takes an httpx2 client; its default headers ride on every request.
        async with httpx2.AsyncClient(headers=headers, timeout=OUTBOUND_TIMEOUT_S) as http:
            transport = streamable_http_client(self.outbound.mcp_url, http_client=http)
            async with McpClient(transport, mode=self.outbound.mcp_mode) as mcp:
                arguments = json.loads(self.outbound.mcp_arguments) if self.outbound.mcp_arguments else {"text": text}
                result = await mcp.call_tool(self.outbound.mcp_tool, arguments)
        texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
        return ("error: " if result.is_error else "") + "\n".join(texts)


async def _guarded(call: Any) -> str:
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - the reply reports any failure of the hop
        # The mcp client raises from anyio task groups; report the leaf cause, on one line.
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        first_line = next(iter(str(exc).splitlines()), "")
        return f"error: {type(exc).__name__}: {first_line}"


class SeenRecorder:
    """ASGI middleware recording every request but GET/HEAD (JSON-RPC method + headers) before the SDK sees it.

    Pure ASGI rather than BaseHTTPMiddleware: the body is read once and replayed, and SSE
    responses are passed through untouched.
    """

    def __init__(self, app: ASGIApp, seen: list[dict[str, Any]]) -> None:
        self.app = app
        self.seen = seen

    def entry(self, scope: Scope, body: bytes) -> dict[str, Any]:
        """What is recorded of one request (a subclass may record more or less)."""
        return {
            "method": _jsonrpc_method(body),
            "http_method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD") or scope["path"].startswith("/_seen"):
            await self.app(scope, receive, send)
            return

        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        self.seen.append(self.entry(scope, bytes(body)))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _jsonrpc_method(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload.get("method") if isinstance(payload, dict) else None


def build_card(name: str, public_url: str) -> AgentCard:
    return AgentCard(
        name=name,
        description=f"Tollgate demo echo agent {name}",
        version="0.1.0",
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        capabilities=AgentCapabilities(streaming=True),
        supported_interfaces=[
            AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0", url=public_url),
            # A 0.3 interface also makes the served card carry the 0.3 fields (url, preferredTransport).
            AgentInterface(protocol_binding="JSONRPC", protocol_version="0.3", url=public_url),
        ],
        skills=[AgentSkill(id="echo", name="Echo", description="Echoes the message back", tags=["echo"])],
    )


def build_app(name: str, public_url: str, outbound: Outbound) -> Starlette:
    card = build_card(name, public_url)
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(name, outbound), task_store=InMemoryTaskStore(), agent_card=card
    )
    seen: list[dict[str, Any]] = []

    async def get_seen(_: Request) -> JSONResponse:
        return JSONResponse(seen)

    async def reset_seen(_: Request) -> JSONResponse:
        seen.clear()
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/_seen", get_seen, methods=["GET"]),
            Route("/_seen/reset", reset_seen, methods=["POST"]),
            *create_agent_card_routes(card),
            *create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True),
        ]
    )
    app.add_middleware(SeenRecorder, seen=seen)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--name", default="echo-agent")
    parser.add_argument("--public-url", help="URL put in the card's interfaces (default http://HOST:PORT/)")
    parser.add_argument("--delegate-to", metavar="URL", help="A2A agent (gateway) URL to call before answering")
    parser.add_argument(
        "--delegate-follow-card",
        action="store_true",
        help="post to the URL the delegate's card names instead of pinning it to --delegate-to",
    )
    parser.add_argument("--call-llm", metavar="URL", help="OpenAI-compatible base URL, e.g. http://gw/v1")
    parser.add_argument("--call-mcp", metavar="URL", help="MCP Streamable HTTP URL whose `echo` tool to call")
    parser.add_argument(
        "--mcp-mode", default="legacy", choices=["legacy", "auto", "2026-07-28"], help="mcp Client(mode=...)"
    )
    parser.add_argument("--mcp-tool", default="echo", help="the MCP tool --call-mcp calls")
    parser.add_argument("--mcp-arguments", metavar="JSON", help='its arguments (default {"text": <message text>})')
    args = parser.parse_args()

    outbound = Outbound(
        delegate_to=args.delegate_to,
        delegate_follow_card=args.delegate_follow_card,
        llm_url=args.call_llm,
        mcp_url=args.call_mcp,
        mcp_mode=args.mcp_mode,
        mcp_tool=args.mcp_tool,
        mcp_arguments=args.mcp_arguments,
    )
    public_url = args.public_url or f"http://{args.host}:{args.port}/"
    uvicorn.run(build_app(args.name, public_url, outbound), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
