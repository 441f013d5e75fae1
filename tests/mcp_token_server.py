"""An MCP server (the real `mcp` SDK, Streamable HTTP, JSON responses) that records the
`Authorization` header of every HTTP request it receives, for the token-exchange tests.

    python tests/mcp_token_server.py PORT

GET /_seen -> ["Bearer ...", null, ...] in arrival order; POST /_seen/reset clears it.
Tools: add(a, b), echo(text).
"""
from __future__ import annotations

import sys

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

mcp = MCPServer("tollgate-token-recorder", version="0.1.0")
seen: list[str | None] = []


@mcp.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.custom_route("/_seen", methods=["GET"])
async def get_seen(_: Request) -> JSONResponse:
    return JSONResponse(seen)


@mcp.custom_route("/_seen/reset", methods=["POST"])
async def reset_seen(_: Request) -> JSONResponse:
    seen.clear()
    return JSONResponse({})


app = mcp.streamable_http_app(
    streamable_http_path="/mcp", json_response=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


async def recording(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/mcp":
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        seen.append(headers.get("authorization"))
    await app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(recording, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
