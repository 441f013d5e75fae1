"""An MCP server for the official conformance suite (npm `@modelcontextprotocol/conformance`),
built on the official Python `mcp` SDK (2.x, `MCPServer`), to run the suite's server scenarios
against it directly and through Tollgate's MCP filter (tests/test_mcp_conformance.py).

It implements what the suite's server scenarios ask for, by the names they use: the
`test_*` tools (text, image, audio, embedded resource, mixed content, logging, progress,
error, sampling, elicitation, SEP-1034 defaults, SEP-1330 enums, SSE reconnection), the
`json_schema_2020_12_tool`, the `test://` resources and template, the `test_*` prompts,
completion, `logging/setLevel`, `resources/subscribe`/`unsubscribe`, and resumable SSE
(an in-memory event store, priming events with a `retry` field) for `server-sse-polling`.

Everything goes through the SDK's own machinery; where MCPServer has no public hook
(logging/setLevel, resources/subscribe, a hand-written input schema) the low-level server's
`add_request_handler` or the registered tool's schema is used, as commented below.

DNS-rebinding protection is the SDK's default for a 127.0.0.1 bind (Host and Origin must be
127.0.0.1/localhost/[::1] with any port): Envoy keeps the client's Host, so it holds behind
the gateway too. `--no-dns-rebinding-protection` turns it off.

    python server.py --host 127.0.0.1 --port 8200 [--json-response]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import struct
import wave
import warnings
import zlib
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import (
    AudioContent,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

# ctx.info()/logging are deprecated for the 2026-07-28 revision only; these scenarios are 2025-era.
warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")
log = logging.getLogger("mcp-conformance-server")


def _png_1x1() -> bytes:
    """A 1x1 red RGB PNG, built here (no binary fixture in the repo)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence() -> bytes:
    """A tiny mono 8 kHz 16-bit WAV of silence."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8)
    return buf.getvalue()


PNG = _png_1x1()
PNG_B64 = base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(_wav_silence()).decode()


class MemoryEventStore(EventStore):
    """Every SSE event the server sends, kept in memory so a client that reconnects with
    Last-Event-ID gets the rest of its stream (SEP-1699, scenario server-sse-polling)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for s, e, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for s, e, message in self._events:
            if s == stream and int(e) > after and message is not None:  # None: a priming event
                await send_callback(EventMessage(message, e))
        return stream


mcp = MCPServer("tollgate-mcp-conformance", version="0.1.0",
                instructions="Conformance-suite server for Tollgate's end-to-end tests.")
subscriptions: set[str] = set()


# --- tools -------------------------------------------------------------------------------


@mcp.tool()
def test_simple_text() -> str:
    """Returns one text block."""
    return "This is a simple text response for testing."


@mcp.tool()
def test_image_content() -> list[ImageContent]:
    """Returns one PNG image block."""
    return [ImageContent(type="image", data=PNG_B64, mime_type="image/png")]


@mcp.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns one WAV audio block."""
    return [AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]


@mcp.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns one embedded text resource."""
    return [EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."))]


@mcp.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, an image and an embedded resource."""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}))),
    ]


@mcp.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log notifications while it runs."""
    await ctx.info("Tool execution started")
    await anyio.sleep(0.05)
    await ctx.info("Tool processing data")
    await anyio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Tool with logging executed successfully"


@mcp.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 (when the call carries a progress token)."""
    for step in (0, 50, 100):
        await ctx.report_progress(progress=step, total=100, message=f"step {step} of 100")
        if step < 100:
            await anyio.sleep(0.05)
    return "Tool with progress executed successfully"


@mcp.tool()
def test_error_handling() -> str:
    """Always fails: the result has isError true."""
    raise ToolError("This tool intentionally returns an error for testing")


@mcp.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's LLM (sampling/createMessage) and returns its answer."""
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=100, related_request_id=ctx.request_id)
    content = result.content
    text = content.text if isinstance(content, TextContent) else json.dumps(result.model_dump(mode="json"))
    return f"LLM response: {text}"


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> str:
    result = await ctx.session.elicit_form(message=message, requested_schema=schema,
                                           related_request_id=ctx.request_id)
    return f"action={result.action}, content={json.dumps(result.content or {})}"


@mcp.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user (elicitation/create) for a username and an email."""
    schema = {"type": "object", "required": ["username", "email"], "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    }}
    return "User response: " + await _elicit(ctx, message, schema)


@mcp.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicitation whose schema has a default for every primitive type (SEP-1034)."""
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status", "enum": ["active", "inactive", "pending"],
                   "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    }}
    return "Elicitation completed: " + await _elicit(ctx, "Please provide user information", schema)


@mcp.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicitation with the five enum shapes of SEP-1330."""
    schema = {"type": "object", "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": [
            {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"},
            {"const": "value3", "title": "Third Option"}]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": [
            {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"},
            {"const": "value3", "title": "Third Choice"}]}},
    }}
    return "Elicitation completed: " + await _elicit(ctx, "Please select values", schema)


@mcp.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes its own SSE stream mid-call; the result arrives on the resumed stream (SEP-1699)."""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)
    await ctx.info("After reconnect")
    return "Reconnection test completed"


@mcp.tool(description="Tool with JSON Schema 2020-12 features")
def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
    return json.dumps({"name": name, "address": address})


# The scenario wants $schema, $defs, $ref and additionalProperties in the advertised schema;
# MCPServer derives schemas from signatures, so the registered tool's schema is set here.
_tool = mcp._tool_manager.get_tool("json_schema_2020_12_tool")  # noqa: SLF001 - no public setter
assert _tool is not None
_tool.parameters = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


# --- resources ---------------------------------------------------------------------------


@mcp.resource("test://static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG)."""
    return PNG


@mcp.resource("test://template/{id}/data", mime_type="application/json")
def template_data(id: str) -> str:  # noqa: A002 - the template's parameter name
    """A resource template: the id is substituted into the content."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource", mime_type="text/plain")
def watched() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# --- prompts -----------------------------------------------------------------------------


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 - wire name
    """A prompt that embeds the resource named by its argument."""
    return [
        UserMessage(EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."))),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt with an image."""
    return [UserMessage(ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage("Please analyze the image above.")]


# --- completion, logging level, subscriptions --------------------------------------------


@mcp.completion()
async def complete(ref, argument, context) -> Completion:
    """Suggests values that start with what the client typed."""
    candidates = ["test", "testing", "tested", "value"]
    values = [c for c in candidates if c.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


async def set_level(ctx, params: SetLevelRequestParams) -> EmptyResult:
    log.info("client set log level %s", params.level)
    return EmptyResult()


async def subscribe(ctx, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx, params: UnsubscribeRequestParams) -> EmptyResult:
    subscriptions.discard(str(params.uri))
    return EmptyResult()


# MCPServer has no decorators for these three; the low-level server registers them (and then
# advertises the logging capability and resources.subscribe).
_low = mcp._lowlevel_server  # noqa: SLF001
_low.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
_low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
_low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with application/json, not SSE")
    parser.add_argument("--no-dns-rebinding-protection", action="store_true")
    args = parser.parse_args()
    security = (TransportSecuritySettings(enable_dns_rebinding_protection=False)
                if args.no_dns_rebinding_protection else None)  # None: the SDK's default for the bind address
    mcp.run(
        transport="streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path="/mcp",
        json_response=args.json_response,
        event_store=MemoryEventStore(),
        retry_interval=100,  # ms, sent in each stream's priming event
        transport_security=security,
    )


if __name__ == "__main__":
    main()
