"""Demo MCP upstream for Tollgate tests, built on the official `mcp` SDK (2.x).

Serves Streamable HTTP at `/mcp`. The SDK speaks every revision on the same path:
the handshake era (2024-11-05 .. 2025-11-25: `initialize`, `Mcp-Session-Id`, GET/DELETE)
and the stateless 2026-07-28 revision (routed by its `MCP-Protocol-Version` header,
`server/discover`, no session). `--json-response` answers POSTs with application/json
instead of an SSE stream, in both eras.

Besides MCP, the same Starlette app (via `MCPServer.custom_route`, so one port) serves:
  GET  /_calls        -> {"add": 2, ...}   per-tool count of tool invocations that ran
  POST /_calls/reset  -> {}                 zero the counters
Tests use the counters to prove whether a call reached the upstream or the gateway stopped it.

    python server.py --host 127.0.0.1 --port 8100 [--json-response] [--stateless] [--export-tool]
"""

from __future__ import annotations

import argparse
from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

mcp = MCPServer("tollgate-demo-mcp", version="0.1.0", instructions="Demo upstream for Tollgate gateway tests.")

# Tools are async, so they all run on the event loop: no lock needed around the counter.
tool_calls: Counter[str] = Counter()


# --- tools -------------------------------------------------------------------------------


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def add(a: int, b: int) -> int:
    """Add two integers."""
    tool_calls["add"] += 1
    return a + b


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def echo(text: str) -> str:
    """Return the text unchanged."""
    tool_calls["echo"] += 1
    return text


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def query_db(table: str, sql: str) -> list[dict[str, object]]:
    """Run a SQL query against a table (fake: returns canned rows)."""
    tool_calls["query_db"] += 1
    return [{"id": 1, "table": table, "sql": sql}, {"id": 2, "table": table, "sql": sql}]


@mcp.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=True))
async def transfer(amount: float, to: str) -> str:
    """Transfer money to an account (fake)."""
    tool_calls["transfer"] += 1
    return f"transferred {amount:.2f} to {to}"


@mcp.tool(annotations=ToolAnnotations(destructiveHint=True))
async def delete_row(table: str, id: int) -> str:  # noqa: A002 - `id` is the wire argument name
    """Delete one row by id (fake)."""
    tool_calls["delete_row"] += 1
    return f"deleted {table}#{id}"


@mcp.tool(annotations=ToolAnnotations(destructiveHint=True))
async def admin_reset() -> str:
    """Reset everything (fake, admin only)."""
    tool_calls["admin_reset"] += 1
    return "reset done"


async def export_rows(tables: list[str]) -> list[str]:
    """Export every row of the given tables (fake: returns the tables it exported).

    Registered only with `--export-tool` (the default tool list stays as tests expect it).
    The SDK reads a JSON string such as `"[\\"users\\"]"` as the list it holds for this
    parameter (typed `list[str]`, not `str`): what a gateway's argument rules must see."""
    tool_calls["export_rows"] += 1
    return tables


# --- prompts and resources ---------------------------------------------------------------


@mcp.prompt()
def greeting(name: str) -> str:
    """Greet someone by name."""
    return f"Please greet {name} warmly."


@mcp.resource("file:///data/readme.txt", mime_type="text/plain")
def readme() -> str:
    """A harmless public file."""
    return "Tollgate demo data: nothing to see here.\n"


@mcp.resource("file:///secret/keys.txt", mime_type="text/plain")
def secret_keys() -> str:
    """A file a gateway policy should hide."""
    return "API_KEY=sk-demo-do-not-leak\n"


# --- test-only HTTP endpoints (same port, outside the MCP protocol) -----------------------


@mcp.custom_route("/_calls", methods=["GET"])
async def get_calls(_: Request) -> JSONResponse:
    return JSONResponse(dict(tool_calls))


@mcp.custom_route("/_calls/reset", methods=["POST"])
async def reset_calls(_: Request) -> JSONResponse:
    tool_calls.clear()
    return JSONResponse({})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with application/json, not SSE")
    parser.add_argument("--stateless", action="store_true", help="legacy revisions: no Mcp-Session-Id, no GET stream")
    parser.add_argument("--export-tool", action="store_true", help="also serve export_rows(tables: list[str])")
    args = parser.parse_args()
    if args.export_tool:
        mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))(export_rows)

    mcp.run(
        transport="streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path="/mcp",
        json_response=args.json_response,
        stateless_http=args.stateless,
        # The SDK turns on DNS-rebinding protection for a 127.0.0.1 bind and answers 421 unless
        # Host is 127.0.0.1:<port>-ish; behind Envoy the Host is the gateway's, so accept any.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


if __name__ == "__main__":
    main()
