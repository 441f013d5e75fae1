#!/usr/bin/env python3
"""Fake LLM provider for the Tollgate demo stack and end-to-end tests.

One stdlib-only HTTP/1.1 server (keep-alive, chunked SSE flushed per event) that speaks
four provider APIs with their documented JSON and SSE shapes, checked against the
official `openai`, `anthropic` and `google-genai` SDK types:

  POST /v1/chat/completions                          OpenAI Chat (JSON, SSE)
  POST /v1/responses                                 OpenAI Responses (JSON, SSE)
  POST /v1/embeddings                                OpenAI embeddings
  POST /v1/moderations                               OpenAI moderations (an input naming a category,
                                                     e.g. "violence", is flagged for it)
  POST /v1/messages                                  Anthropic Messages (JSON, SSE)
  POST /v1/messages/count_tokens                     Anthropic token count {input_tokens}
  POST /v1beta/models/{model}:generateContent        Gemini (JSON; also /v1/models/...)
  POST /v1beta/models/{model}:streamGenerateContent  Gemini stream: SSE with ?alt=sse,
                                                     otherwise a streamed JSON array
  POST /v1beta/models/{model}:countTokens            Gemini token count {totalTokens}
  POST /v1beta/models/{model}:embedContent           Gemini embedding {embedding{values}}
  POST /v1beta/models/{model}:batchEmbedContents     {embeddings[{values}]} (what the SDK uses)

Test helpers (never recorded themselves):

  GET  /healthz         -> 200 "ok"
  GET  /_fake/requests  -> JSON list of recorded API requests (every path above, and
                           unknown paths), oldest first (the newest --max-recorded, default
                           10000); each is {method, path, query, query_params, headers
                           (lowercased), body, time, status} where body is parsed JSON, raw
                           text, or null and status the HTTP status answered (null while the
                           reply is still being prepared)
  POST /_fake/reset     -> clears the list and restores the start-up switch defaults
  GET  /_fake/config    -> current switch defaults of this process (each fake is separate)
  POST /_fake/config    -> JSON object of switch fields to change (e.g. {"status": 429,
                           "fail_first": 2}); for fallback tests, where a request header would
                           reach every upstream but only one upstream should fail

Token formula (deterministic so tests can assert exact numbers)
---------------------------------------------------------------
words(s) = len(s.split()), i.e. whitespace-separated words.

Prompt "messages" are: every chat message (OpenAI `messages`, Anthropic `messages`,
Gemini `contents`, Responses `input` items; a string `input` is one message), plus one
for a top-level system prompt when present (Anthropic `system`, Responses
`instructions`, Gemini `systemInstruction`). A message's text is every string found under
`text`, `content` or `output` keys, recursively (string content, text parts, tool results),
and for a Gemini functionResponse part the tool result text (below). Tool definitions and
the arguments of earlier tool calls are not counted.

  input  = sum(words(text of m) for m in messages) + len(messages)

So OpenAI [system, user] and the equivalent Anthropic system + [user] give the same count,
and so do the translations of a tool result (OpenAI tool message "sunny", Anthropic
tool_result content "sunny", Responses function_call_output output "sunny", Gemini
functionResponse response {"result": "sunny"}). The token-count endpoints answer this same
input count (Anthropic count_tokens, Gemini countTokens of `contents` or of a whole
`generateContentRequest`).

The reply text is

  "Hello from {NAME} model {MODEL}: " + <text of the last user message>

where NAME is --name (default "fake-openai" / "fake-anthropic" / "fake-gemini") and MODEL
is the request's model (Gemini: the model in the path). If x-fake-chunks asks for more
chunks than the reply has words, the reply is padded with "lorem" words to that many.
Then it is cut to the request's max tokens (`max_completion_tokens` / `max_tokens`,
`max_output_tokens`, Anthropic `max_tokens`, Gemini `generationConfig.maxOutputTokens`),
which sets finish_reason length / status incomplete / stop_reason max_tokens / MAX_TOKENS.

  output = words(reply text)      (streaming and non-streaming agree)

Tool calls
----------
Function tools offered in the request (OpenAI Chat `tools[{type: function, function: {name,
parameters}}]`, Responses `tools[{type: function, name, parameters}]`, Anthropic
`tools[{name, input_schema}]`, Gemini `tools[{functionDeclarations[{name, parameters |
parametersJsonSchema}]}]`) are called when the last user message's text contains a tool's
name (the first such tool in request order). A tool choice that forces one tool (OpenAI
{function: {name}}, Responses {type: function, name}, Anthropic {type: tool, name}) calls it;
"required" / Anthropic {type: any} / Gemini mode ANY calls the mentioned tool or else the
first (ANY honours allowedFunctionNames); "none" / NONE never calls one.

The arguments are deterministic: each property in the schema's `required` list gets
"<prop>-value" for strings (and unknown types), 1 for number/integer, true for boolean,
[] for array, the same rule recursively for object, and the first value of an `enum`.
Their JSON is json.dumps(arguments), e.g. {"city": "city-value", "days": 1}.

  output = words(JSON arguments) + 1          e.g. 4 + 1 = 5 for the example above

Tool calls are never cut by max tokens. Replies:

  OpenAI Chat  message{content: null, tool_calls[{id: call_..., type: function,
               function{name, arguments}}]}, finish_reason tool_calls. Stream: a first chunk
               with delta.tool_calls[{index: 0, id, type, function{name, arguments: ""}}],
               then one chunk per arguments fragment (delta.tool_calls[{index: 0,
               function{arguments}}]), then finish_reason tool_calls.
  Responses    output [{type: function_call, id: fc_..., call_id: call_..., name, arguments,
               status: completed}]. Stream: response.output_item.added (function_call with
               arguments ""), response.function_call_arguments.delta per fragment,
               response.function_call_arguments.done, response.output_item.done.
  Anthropic    content [{type: tool_use, id: toolu_..., name, input}], stop_reason tool_use.
               Stream: content_block_start {type: tool_use, id, name, input: {}}, one
               content_block_delta {type: input_json_delta, partial_json} per fragment,
               content_block_stop, message_delta stop_reason tool_use.
  Gemini       parts [{functionCall{name, args}}], finishReason STOP; streamed whole in one
               chunk, as Gemini does.

Fragments: the arguments JSON split into x-fake-chunks near-equal character pieces.

When the conversation ends with tool results (OpenAI role tool messages, Anthropic
tool_result blocks in the last user message, Responses function_call_output items, Gemini
functionResponse parts in the last content), no tool is called and the reply text is

  "Hello from {NAME} model {MODEL}: tool result: " + <the results' texts, space-joined>

(a Gemini `response` object's text is its text/content/output, else its string values,
else its JSON).

Request validation
------------------
Besides a missing model / messages / contents, the fake rejects with 400 in the provider's
error shape (OpenAI: error.param names the field; the others name it in the message)
what the real APIs reject, so translated requests are really checked:

  OpenAI Chat  a role outside system/developer/user/assistant/tool/function; a tool message
               without tool_call_id, not following an assistant message with tool_calls, or
               answering an id that message did not ask; tool_calls left unanswered
  Responses    a function_call_output without call_id/output, or whose call_id matches no
               function_call item in the input (unless previous_response_id is set)
  Anthropic    missing max_tokens (Messages only); a role other than user/assistant (system
               gets the API's "use the top-level system parameter" message); a tool_result
               whose tool_use_id is not a tool_use of the previous message; tool_use blocks
               the next message does not answer
  Gemini       missing contents; a role other than user/model; functionResponse parts not
               right after a content with functionCall parts
  Embeddings   empty input, bad dimensions / encoding_format; Gemini content without text

Embeddings
----------
Vectors are deterministic unit vectors of float32 values derived from sha256 of the input
text (a token-id array: its ids joined by spaces), the same for the same text whichever
API asks; 8 dimensions unless OpenAI `dimensions` / Gemini `outputDimensionality` says
otherwise. OpenAI `encoding_format: base64` (what the openai SDK requests by default,
decoding it back to floats) returns the little-endian float32 bytes in base64.
OpenAI usage: prompt_tokens = total_tokens = sum of words per input string (a token array
counts its length); no per-input overhead. Gemini embeddings report no usage, like the API.

Switch values C (cached), W (cache creation), R (reasoning) are reported per provider:

  OpenAI Chat  prompt_tokens=input  completion_tokens=output+R  total=prompt+completion
               prompt_tokens_details{cached_tokens=C}  completion_tokens_details{reasoning_tokens=R}
  Responses    input_tokens=input   output_tokens=output+R      total=input+output
               input_tokens_details{cached_tokens=C, cache_write_tokens=W}
               output_tokens_details{reasoning_tokens=R}
  Anthropic    input_tokens=input (uncached part, as Anthropic reports it)
               cache_read_input_tokens=C  cache_creation_input_tokens=W  output_tokens=output+R
               message_start carries output_tokens=1 like the real API; message_delta
               carries the cumulative totals.
  Gemini       promptTokenCount=input  candidatesTokenCount=output (cumulative per chunk)
               thoughtsTokenCount=R  cachedContentTokenCount=C  total=prompt+candidates+thoughts
               (zero-valued cached/thoughts counts are omitted, as the real API does)

Switches
--------
Each switch is a request header (so tests can set it through the gateway). Its default is
the CLI flag, else the environment variable, and POST /_fake/config changes it at runtime.
Anthropic streams with x-fake-omit-usage break the SDK's stream helper (it expects usage);
use a raw client for those.

  header                          flag                     env
  x-fake-status: N                --status N               FAKE_LLM_STATUS
      reply with HTTP N (>= 400) in the provider's error shape; 429 carries Retry-After
      and rate-limit headers; Anthropic 529 is overloaded_error
  x-fake-chunks: N                --chunks N               FAKE_LLM_CHUNKS (default 5)
      number of content chunks in a stream
  x-fake-chunk-chars: N           --chunk-chars N          FAKE_LLM_CHUNK_CHARS
      stream the reply text in pieces of N characters (words split across chunks)
  x-fake-chunk-delay-ms: N        --chunk-delay-ms N       FAKE_LLM_CHUNK_DELAY_MS
      sleep between streamed content chunks
  x-fake-end-delay-ms: N          --end-delay-ms N         FAKE_LLM_END_DELAY_MS
      sleep after a stream's last event (`[DONE]`, `message_stop`...) before the end of the
      body: a client that stops reading at the last event closes before the end arrives
  x-fake-response-delay-ms: N     --response-delay-ms N    FAKE_LLM_RESPONSE_DELAY_MS
      sleep before the response headers (latency, time to first token, timeouts)
  x-fake-omit-usage: 1            --omit-usage             FAKE_LLM_OMIT_USAGE
      leave usage out of the response / stream (to test estimation)
  x-fake-cached-tokens: N         --cached-tokens N        FAKE_LLM_CACHED_TOKENS
  x-fake-cache-creation-tokens: N --cache-creation-tokens  FAKE_LLM_CACHE_CREATION_TOKENS
  x-fake-reasoning-tokens: N      --reasoning-tokens N     FAKE_LLM_REASONING_TOKENS
  x-fake-retry-after: N           --retry-after N          FAKE_LLM_RETRY_AFTER (default 1)
      seconds in Retry-After on 429/503/529 (and Gemini's RetryInfo retryDelay)
  x-fake-reset-requests: S        --reset-requests S       FAKE_LLM_RESET_REQUESTS
  x-fake-reset-tokens: S          --reset-tokens S         FAKE_LLM_RESET_TOKENS
      seconds (fractions allowed; 0, the default, means the retry-after value) until the
      request / token rate limit resets: OpenAI x-ratelimit-reset-requests / -tokens in
      Go duration format as OpenAI sends them ("250ms", "5s", "1.5s", "1m30s"); Anthropic
      429s carry anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
      remaining,reset} with reset in RFC 3339 (UTC, whole seconds)
  x-fake-fail-first: N            --fail-first N           FAKE_LLM_FAIL_FIRST
      with x-fake-status: only the first N requests fail, later ones are answered normally
      (0, the default: all fail). Counted per process since the last /_fake/reset or
      POST /_fake/config, e.g. POST /_fake/config {"status": 429, "fail_first": 1} makes the
      next request a 429 and the ones after it succeed (a retry or fallback test)

Every reply carries `x-fake-provider-name: NAME`. The status switch applies to every API
path above (embeddings and token counts included) and wins over request validation.

Run:  python examples/fake_llm/server.py --host 127.0.0.1 --port 8000 [--name NAME]
(--port 0 picks a free port). Once listening it prints one line and flushes:
  fake-llm ready name=NAME url=http://HOST:PORT
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------------------
# Switches
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Switches:
    """Per-request behaviour knobs; header `x-fake-<field-with-dashes>` overrides each."""

    status: int = 0
    chunks: int = 5
    chunk_delay_ms: float = 0.0
    response_delay_ms: float = 0.0
    omit_usage: bool = False
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    retry_after: int = 1
    reset_requests: float = 0.0  # seconds; 0 = retry_after
    reset_tokens: float = 0.0  # seconds; 0 = retry_after
    fail_first: int = 0  # with status: fail only the first N requests, then answer normally
    chunk_chars: int = 0  # > 0: stream the reply in pieces of this many characters (words split)
    end_delay_ms: float = 0.0  # sleep after a stream's last event, before its end (the last chunk)

    def reset_seconds(self, kind: str) -> float:
        value = self.reset_requests if kind == "requests" else self.reset_tokens
        return value or float(self.retry_after)

    @staticmethod
    def header_name(field_name: str) -> str:
        return "x-fake-" + field_name.replace("_", "-")

    def updated(self, values: dict[str, Any]) -> "Switches":
        """Returns a copy with `values` (field name -> raw value) applied; ValueError if bad."""
        changes = {}
        for field in dataclasses.fields(self):
            if field.name in values and values[field.name] is not None:
                changes[field.name] = _coerce(field.name, field.type, values[field.name])
        unknown = set(values) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown switch(es): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def with_headers(self, headers: dict[str, str]) -> "Switches":
        values = {}
        for field in dataclasses.fields(self):
            header = self.header_name(field.name)
            if header in headers:
                values[field.name] = headers[header]
        return self.updated(values)


def _coerce(name: str, type_name: str, raw: Any) -> Any:
    try:
        if type_name == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        value = float(raw) if type_name == "float" else int(str(raw).strip())
    except (TypeError, ValueError):
        raise ValueError(f"bad value for {Switches.header_name(name)}: {raw!r}") from None
    if value < 0:
        raise ValueError(f"bad value for {Switches.header_name(name)}: {raw!r}")
    return value


# --------------------------------------------------------------------------------------
# Prompt accounting and the reply plan shared by all providers
# --------------------------------------------------------------------------------------

_TEXT_KEYS = ("text", "content", "output")


def text_of(value: Any) -> str:
    """All text inside a message/content value, in order, joined with spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(filter(None, (text_of(item) for item in value)))
    if isinstance(value, dict):
        if isinstance(value.get("functionResponse"), dict):  # a Gemini tool result part
            return result_text(value["functionResponse"].get("response"))
        return " ".join(filter(None, (text_of(value[k]) for k in _TEXT_KEYS if k in value)))
    return ""


def result_text(value: Any) -> str:
    """The text of a tool result: its text/content/output, else (a Gemini `response` object
    such as {"result": "sunny"}) its string values, else its JSON."""
    text = text_of(value)
    if text or value is None:
        return text
    if isinstance(value, dict):
        strings = [v for v in value.values() if isinstance(v, str) and v]
        if strings:
            return " ".join(strings)
    return json.dumps(value)


def count_words(text: str) -> int:
    return len(text.split())


@dataclass
class Tool:
    name: str
    schema: Any  # JSON schema of the arguments (OpenAI parameters / Anthropic input_schema)


@dataclass
class ToolCall:
    name: str
    arguments: dict

    @property
    def arguments_json(self) -> str:
        # The one serialisation used everywhere: OpenAI's `arguments` string, the streamed
        # fragments, and the output token count.
        return json.dumps(self.arguments)


@dataclass
class Prompt:
    message_texts: list[str]  # one entry per counted message (system prompt included)
    last_user_text: str
    # Texts of the tool results that end the conversation (empty: it ends with no tool result).
    tool_results: list[str] = dataclasses.field(default_factory=list)
    tools: list[Tool] = dataclasses.field(default_factory=list)  # function tools offered
    # "auto", "none", "required" (call one even if none is mentioned) or a tool name.
    tool_choice: str = "auto"

    @property
    def input_tokens(self) -> int:
        return sum(count_words(t) for t in self.message_texts) + len(self.message_texts)

    def chosen_tool(self) -> Tool | None:
        if self.tool_results or not self.tools or self.tool_choice == "none":
            return None
        by_name = {tool.name: tool for tool in self.tools}
        if self.tool_choice in by_name:
            return by_name[self.tool_choice]
        for tool in self.tools:
            if tool.name and tool.name in self.last_user_text:
                return tool
        return self.tools[0] if self.tool_choice == "required" else None


def fake_arguments(schema: Any) -> dict:
    """Deterministic arguments for a JSON schema: every `required` property gets a value."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    return {prop: fake_value(prop, properties.get(prop)) for prop in schema.get("required") or []
            if isinstance(prop, str)}


def fake_value(prop: str, spec: Any) -> Any:
    spec = spec if isinstance(spec, dict) else {}
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][0]
    kind = spec.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    kind = str(kind).lower()  # Gemini's OpenAPI schemas say STRING, NUMBER, ...
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return fake_arguments(spec)
    return f"{prop}-value"


@dataclass
class Reply:
    """What to answer, computed once so JSON and stream carry identical numbers."""

    model: str
    # Streamed pieces: of the reply text ("".join(chunks) == text), or for a tool call of
    # its JSON arguments.
    chunks: list[str]
    truncated: bool  # cut by the request's max tokens
    input_tokens: int
    output_tokens: int  # words of the visible reply text (tool call: words of arguments + 1)
    switches: Switches
    tool_call: ToolCall | None = None

    @property
    def text(self) -> str:
        return "" if self.tool_call else "".join(self.chunks)

    @property
    def reasoning_tokens(self) -> int:
        return self.switches.reasoning_tokens

    @property
    def cached_tokens(self) -> int:
        return self.switches.cached_tokens

    @property
    def cache_creation_tokens(self) -> int:
        return self.switches.cache_creation_tokens

    def cumulative_output(self, chunk_count: int) -> int:
        """Visible output words in the first `chunk_count` chunks."""
        return count_words("".join(self.chunks[:chunk_count]))


def plan_reply(name: str, model: str, prompt: Prompt, max_tokens: int | None,
               switches: Switches) -> Reply:
    tool = prompt.chosen_tool()
    if tool is not None:
        call = ToolCall(tool.name, fake_arguments(tool.schema))
        arguments = call.arguments_json
        return Reply(model=model, chunks=split_text(arguments, switches.chunks), truncated=False,
                     input_tokens=prompt.input_tokens, output_tokens=count_words(arguments) + 1,
                     switches=switches, tool_call=call)
    said = (f"tool result: {' '.join(prompt.tool_results)}" if prompt.tool_results
            else prompt.last_user_text)
    words = f"Hello from {name} model {model}: {said}".split()
    if len(words) < switches.chunks:
        words += ["lorem"] * (switches.chunks - len(words))
    truncated = max_tokens is not None and len(words) > max_tokens
    if truncated:
        words = words[:max_tokens]
    chunks = split_into_chunks(words, switches.chunks)
    if switches.chunk_chars > 0:
        text = "".join(chunks)
        chunks = [text[i:i + switches.chunk_chars] for i in range(0, len(text), switches.chunk_chars)] or [""]
    return Reply(model=model, chunks=chunks,
                 truncated=truncated, input_tokens=prompt.input_tokens,
                 output_tokens=len(words), switches=switches)


def split_into_chunks(words: list[str], wanted: int) -> list[str]:
    """Splits words into min(wanted, len(words)) near-equal pieces that concatenate back."""
    if not words:
        return [""]  # a stream always carries at least one (empty) content chunk
    count = max(1, min(wanted, len(words)))
    base, extra = divmod(len(words), count)
    chunks, start = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        piece = " ".join(words[start:start + size])
        chunks.append(piece if i == 0 else " " + piece)
        start += size
    return chunks


def split_text(text: str, wanted: int) -> list[str]:
    """Splits a string into min(wanted, len(text)) near-equal character pieces (at least one)."""
    count = max(1, min(wanted, len(text)))
    base, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        pieces.append(text[start:start + size])
        start += size
    return pieces


def last_user_text(messages: list[Any], user_roles: tuple[str, ...] = ("user",)) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") in user_roles:
            return text_of(message.get("content", message.get("parts", "")))
    return ""


def optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class BadRequest(Exception):
    """The request is invalid for the provider; answered with 400 in its error shape.
    `param` names the offending field (OpenAI's error.param)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def go_duration(seconds: float) -> str:
    """Formats like Go's time.Duration, as OpenAI's x-ratelimit-reset-* headers do:
    250ms, 5s, 1.5s, 1m30s, 6m0s, 1h0m0s."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339_in(seconds: float) -> str:
    """The UTC time `seconds` from now in RFC 3339, as Anthropic's ratelimit reset headers."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------
# Embeddings (deterministic small vectors)
# --------------------------------------------------------------------------------------

EMBEDDING_DIMENSIONS = 8


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector of float32 values derived from sha256(text): the same text always gets
    the same vector, whichever API asked (so translated requests can be compared)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = []
    for i in range(dimensions):
        block = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        raw.append(int.from_bytes(block[:4], "big") / 2**31 - 1.0)
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry identical values.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in raw))))


def embedding_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# Marker yielded by stream generators where the chunk delay belongs.
PAUSE = object()

Stream = Iterator[Any]  # yields bytes (one SSE event / array element) or PAUSE


def content_pauses(index: int) -> list[Any]:
    # Delays go *between* content chunks so N chunks take (N-1) * delay.
    return [PAUSE] if index > 0 else []


def sse(data: Any, event: str | None = None, newline: str = "\n") -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}{newline}" if event else ""
    return f"{head}data: {payload}{newline}{newline}".encode()


def now() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------


class Provider:
    """One provider API: how to read its request and write its replies and errors."""

    label = ""  # used for the default NAME: fake-<label>
    json_content_type = "application/json"
    # Actions answered by `other` with one JSON object (embeddings, token counts).
    other_actions: tuple[str, ...] = ()

    def model(self, body: dict, path_model: str | None) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: field required", "model")
        return model

    def prompt(self, body: dict) -> Prompt:
        raise NotImplementedError

    def max_tokens(self, body: dict) -> int | None:
        raise NotImplementedError

    def is_stream(self, body: dict, action: str | None) -> bool:
        return body.get("stream") is True

    def json_reply(self, reply: Reply, body: dict) -> dict:
        raise NotImplementedError

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        raise NotImplementedError

    def stream_content_type(self, query: dict[str, str]) -> str:
        return "text/event-stream; charset=utf-8"

    def other(self, action: str, body: dict, path_model: str | None, switches: Switches) -> dict:
        """Answers one of `other_actions` (embeddings, token counting)."""
        raise NotImplementedError

    def error(self, status: int, message: str, switches: Switches,
              param: str | None = None) -> tuple[dict, dict[str, str]]:
        """Returns (body, extra headers) for an error reply."""
        raise NotImplementedError


def _openai_ratelimit_headers(remaining: int, switches: Switches) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": go_duration(switches.reset_seconds("requests")),
        "x-ratelimit-limit-tokens": "2000000",
        "x-ratelimit-remaining-tokens": str(remaining * 200),
        "x-ratelimit-reset-tokens": go_duration(switches.reset_seconds("tokens")),
    }


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "auto"


class OpenAIBase(Provider):
    label = "openai"
    other_actions = ("embeddings", "moderations")

    def error(self, status: int, message: str, switches: Switches, param: str | None = None):
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            403: ("invalid_request_error", "unsupported_country_region_territory"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }
        err_type, code = kinds.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        headers = {"x-request-id": new_id("req_")}
        if status == 429:
            headers.update(_openai_ratelimit_headers(0, switches))
        if status in (429, 503, 529):
            headers["retry-after"] = str(switches.retry_after)
        body = {"error": {"message": message, "type": err_type, "param": param, "code": code}}
        return body, headers

    def other(self, action: str, body: dict, path_model: str | None, switches: Switches) -> dict:
        if action == "moderations":
            return moderate(body)
        # POST /v1/embeddings
        model = self.model(body, None)
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                       and all(optional_int(i) is not None for i in inputs)):
            inputs = [inputs]  # one string, or one list of token ids
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("'input' must be a non-empty string or array of strings or token arrays.",
                             "input")
        for index, item in enumerate(inputs):
            is_tokens = isinstance(item, list) and item and all(optional_int(i) is not None for i in item)
            if not (isinstance(item, str) and item) and not is_tokens:
                raise BadRequest(f"'$.input[{index}]' is invalid: expected a non-empty string or "
                                 "array of token ids.", "input")
        dimensions = body.get("dimensions")
        if dimensions is not None and (optional_int(dimensions) is None or dimensions < 1):
            raise BadRequest(f"Invalid value for 'dimensions': {dimensions!r}.", "dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest(f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
                             "encoding_format")
        data, tokens = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_words(item) if isinstance(item, str) else len(item)
            vector = fake_embedding(text, dimensions or EMBEDDING_DIMENSIONS)
            data.append({"object": "embedding", "index": index,
                         "embedding": embedding_base64(vector) if encoding == "base64" else vector})
        result = {"object": "list", "data": data, "model": model}
        if not switches.omit_usage:
            result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return result


MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


def moderate(body: dict) -> dict:
    """POST /v1/moderations (OpenAI's shape): one result per input; an input naming a category
    (e.g. the word "violence") is flagged for it, deterministically."""
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, (str, dict)) for i in inputs):
        raise BadRequest("'input' must be a string or an array of strings.", "input")
    results = []
    for item in inputs:
        text = (item if isinstance(item, str) else str(item.get("text", ""))).lower()
        categories = {c: c.split("/")[0] in text.split() for c in MODERATION_CATEGORIES}
        results.append({
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": {c: (0.99 if hit else 0.0001) for c, hit in categories.items()},
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        })
    return {"id": new_id("modr-"), "model": body.get("model") or "omni-moderation-latest", "results": results}


OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class OpenAIChat(OpenAIBase):
    def prompt(self, body: dict) -> Prompt:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty array", "messages")
        self.validate(messages)
        tool_results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            tool_results.insert(0, text_of(message.get("content")))
        tools = [Tool(str(t["function"].get("name", "")), t["function"].get("parameters"))
                 for t in body.get("tools") or []
                 if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)]
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            choice = str(choice["function"].get("name", "auto"))
        else:
            choice = _choice(choice, ("none", "required"))
        return Prompt([text_of(m.get("content")) for m in messages], last_user_text(messages),
                      tool_results, tools, choice)

    @staticmethod
    def validate(messages: list) -> None:
        """What the real API rejects: unknown roles, tool messages without a tool_call_id or
        not answering the preceding assistant tool_calls, and unanswered tool_calls."""
        pending: set | None = None  # tool_call ids the current tool messages may answer
        asked_at = 0

        def unanswered() -> BadRequest:
            return BadRequest("An assistant message with 'tool_calls' must be followed by tool messages "
                              "responding to each 'tool_call_id'. The following tool_call_ids did not "
                              f"have response messages: {', '.join(sorted(pending))}",
                              f"messages.[{asked_at}].role")

        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"Invalid type for 'messages[{i}]': expected an object.", f"messages.[{i}]")
            role = message.get("role")
            if role not in OPENAI_ROLES:
                raise BadRequest(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                                 "'user', 'function', 'tool', and 'developer'.", f"messages.[{i}].role")
            if role == "tool":
                call_id = message.get("tool_call_id")
                if not isinstance(call_id, str):
                    raise BadRequest("Missing parameter 'tool_call_id': messages with role 'tool' must "
                                     "have a 'tool_call_id'.", f"messages.[{i}].tool_call_id")
                if pending is None:
                    raise BadRequest("Invalid parameter: messages with role 'tool' must be a response to a "
                                     "preceding message with 'tool_calls'.", f"messages.[{i}].role")
                if call_id not in pending:
                    raise BadRequest(f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                                     "'tool_calls' of previous message.", f"messages.[{i}].tool_call_id")
                pending.discard(call_id)
                continue
            if pending:
                raise unanswered()
            pending = None
            calls = message.get("tool_calls") if role == "assistant" else None
            if isinstance(calls, list) and calls:
                pending = {c.get("id") for c in calls if isinstance(c, dict)}
                asked_at = i
        if pending:
            raise unanswered()

    def max_tokens(self, body: dict) -> int | None:
        value = optional_int(body.get("max_completion_tokens"))
        return value if value is not None else optional_int(body.get("max_tokens"))

    @staticmethod
    def usage(reply: Reply) -> dict:
        completion = reply.output_tokens + reply.reasoning_tokens
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.input_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def finish_reason(reply: Reply) -> str:
        if reply.tool_call:
            return "tool_calls"
        return "length" if reply.truncated else "stop"

    def json_reply(self, reply: Reply, body: dict) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None,
                                   "annotations": []}
        if reply.tool_call:
            message["content"] = None
            message["tool_calls"] = [{"id": new_id("call_"), "type": "function",
                                      "function": {"name": reply.tool_call.name,
                                                   "arguments": reply.tool_call.arguments_json}}]
        result = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": now(),
            "model": reply.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": self.finish_reason(reply),
            }],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if not reply.switches.omit_usage:
            result["usage"] = self.usage(reply)
        return result

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and not reply.switches.omit_usage
        base = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": now(),
                "model": reply.model, "service_tier": "default", "system_fingerprint": "fp_fake"}

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            data = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": finish_reason}])
            if include_usage:
                data["usage"] = None  # real API: null on every chunk but the last
            return sse(data)

        if reply.tool_call:
            # The first chunk names the call with empty arguments; the arguments follow in
            # fragments, each tagged only with the call's index.
            yield chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"index": 0, "id": new_id("call_"), "type": "function",
                 "function": {"name": reply.tool_call.name, "arguments": ""}}]})
            for index, piece in enumerate(reply.chunks):
                yield from content_pauses(index)
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        else:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            for index, piece in enumerate(reply.chunks):
                yield from content_pauses(index)
                yield chunk({"content": piece})
        yield chunk({}, self.finish_reason(reply))
        if include_usage:
            yield sse(dict(base, choices=[], usage=self.usage(reply)))
        yield sse("[DONE]")


class OpenAIResponses(OpenAIBase):
    def prompt(self, body: dict) -> Prompt:
        texts: list[str] = []
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            texts.append(instructions)
        tools = [Tool(str(t.get("name", "")), t.get("parameters")) for t in body.get("tools") or []
                 if isinstance(t, dict) and t.get("type") == "function"]
        choice = body.get("tool_choice")
        choice = (str(choice.get("name", "auto")) if isinstance(choice, dict) and choice.get("type") == "function"
                  else _choice(choice, ("none", "required")))
        items = body.get("input")
        if isinstance(items, str):
            texts.append(items)
            return Prompt(texts, items, [], tools, choice)
        if not isinstance(items, list):
            raise BadRequest("input: must be a string or an array", "input")
        self.validate(items, body)
        tool_results: list[str] = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            tool_results.insert(0, text_of(item.get("output")))
        texts += [text_of(item) for item in items]
        messages = [item for item in items if item.get("type", "message") == "message"]
        return Prompt(texts, last_user_text(messages), tool_results, tools, choice)

    @staticmethod
    def validate(items: list, body: dict) -> None:
        """A function_call_output must answer a function_call in the input (or in the
        previous response, which this fake does not keep)."""
        call_ids = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
            kind = item.get("type")
            if kind == "function_call":
                call_ids.add(item.get("call_id"))
            elif kind == "function_call_output":
                for field in ("call_id", "output"):
                    if field not in item:
                        raise BadRequest(f"Missing required parameter: 'input[{i}].{field}'.",
                                         f"input[{i}].{field}")
                if item["call_id"] not in call_ids and not body.get("previous_response_id"):
                    raise BadRequest("No tool call found for function call output with call_id "
                                     f"{item['call_id']}.", "input")

    def max_tokens(self, body: dict) -> int | None:
        return optional_int(body.get("max_output_tokens"))

    @staticmethod
    def usage(reply: Reply) -> dict:
        output = reply.output_tokens + reply.reasoning_tokens
        return {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens,
                                     "cache_write_tokens": reply.cache_creation_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.input_tokens + output,
        }

    @staticmethod
    def message_item(item_id: str, text: str | None, status: str) -> dict:
        content = [] if text is None else [{"type": "output_text", "text": text,
                                            "annotations": [], "logprobs": []}]
        return {"id": item_id, "type": "message", "status": status, "role": "assistant",
                "content": content}

    @staticmethod
    def call_item(item_id: str, call_id: str, call: ToolCall, arguments: str, status: str) -> dict:
        return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
                "call_id": call_id, "name": call.name}

    def response_object(self, reply: Reply, body: dict, response_id: str, created: int,
                        status: str, output: list[dict], with_usage: bool) -> dict:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": reply.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self.usage(reply) if with_usage and not reply.switches.omit_usage else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    @staticmethod
    def final_status(reply: Reply) -> str:
        return "incomplete" if reply.truncated else "completed"

    def json_reply(self, reply: Reply, body: dict) -> dict:
        if reply.tool_call:
            item = self.call_item(new_id("fc_"), new_id("call_"), reply.tool_call,
                                  reply.tool_call.arguments_json, "completed")
        else:
            item = self.message_item(new_id("msg_"), reply.text, self.final_status(reply))
        return self.response_object(reply, body, new_id("resp_"), now(), self.final_status(reply),
                                    [item], with_usage=True)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        response_id, created = new_id("resp_"), now()
        sequence = iter(range(1 << 30))

        def event(kind: str, **fields: Any) -> bytes:
            # The SDK dispatches on data.type; `event:` mirrors it for raw SSE readers.
            return sse({"type": kind, "sequence_number": next(sequence), **fields}, event=kind)

        def snapshot(status: str, output: list[dict], with_usage: bool) -> dict:
            return self.response_object(reply, body, response_id, created, status, output, with_usage)

        yield event("response.created", response=snapshot("in_progress", [], False))
        yield event("response.in_progress", response=snapshot("in_progress", [], False))
        final_status = self.final_status(reply)
        if reply.tool_call:
            item_id, call_id, arguments = new_id("fc_"), new_id("call_"), reply.tool_call.arguments_json
            yield event("response.output_item.added", output_index=0,
                        item=self.call_item(item_id, call_id, reply.tool_call, "", "in_progress"))
            for index, piece in enumerate(reply.chunks):
                yield from content_pauses(index)
                yield event("response.function_call_arguments.delta", item_id=item_id, output_index=0,
                            delta=piece)
            yield event("response.function_call_arguments.done", item_id=item_id, output_index=0,
                        name=reply.tool_call.name, arguments=arguments)
            done_item = self.call_item(item_id, call_id, reply.tool_call, arguments, "completed")
        else:
            item_id = new_id("msg_")
            location = {"item_id": item_id, "output_index": 0, "content_index": 0}
            yield event("response.output_item.added", output_index=0,
                        item=self.message_item(item_id, None, "in_progress"))
            yield event("response.content_part.added", **location,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            for index, piece in enumerate(reply.chunks):
                yield from content_pauses(index)
                yield event("response.output_text.delta", **location, delta=piece, logprobs=[])
            done_item = self.message_item(item_id, reply.text, final_status)
            yield event("response.output_text.done", **location, text=reply.text, logprobs=[])
            yield event("response.content_part.done", **location, part=done_item["content"][0])
        yield event("response.output_item.done", output_index=0, item=done_item)
        yield event(f"response.{final_status}", response=snapshot(final_status, [done_item], True))


def _blocks(message: Any, kind: str) -> list[tuple[int, dict]]:
    """(index, block) of the content blocks of one type in an Anthropic message."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [(j, b) for j, b in enumerate(content) if isinstance(b, dict) and b.get("type") == kind]


class Anthropic(Provider):
    label = "anthropic"
    other_actions = ("count_tokens",)

    def prompt(self, body: dict) -> Prompt:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty array")
        self.validate(messages)
        texts = [text_of(body["system"])] if body.get("system") else []
        texts += [text_of(m.get("content")) for m in messages]
        tool_results = []
        if messages[-1].get("role") == "user":
            tool_results = [text_of(b.get("content")) for _, b in _blocks(messages[-1], "tool_result")]
        # Client tools have an input_schema (type absent or "custom"); server tools do not.
        tools = [Tool(str(t.get("name", "")), t.get("input_schema")) for t in body.get("tools") or []
                 if isinstance(t, dict) and "input_schema" in t and t.get("type", "custom") == "custom"]
        choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
        kind = choice.get("type", "auto")
        tool_choice = (str(choice.get("name", "")) if kind == "tool"
                       else {"any": "required", "none": "none"}.get(kind, "auto"))
        return Prompt(texts, last_user_text(messages), tool_results, tools, tool_choice)

    @staticmethod
    def validate(messages: list) -> None:
        """What the real API rejects: roles other than user/assistant, and tool_use /
        tool_result blocks that do not pair up across adjacent messages."""
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"messages.{i}: Input should be a valid dictionary")
            role = message.get("role")
            if role == "system":
                raise BadRequest('messages: Unexpected role "system". The Messages API accepts a top-level '
                                 '`system` parameter, not "system" as an input message role.')
            if role not in ("user", "assistant"):
                raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        for i, message in enumerate(messages):
            previous = messages[i - 1] if i and messages[i - 1].get("role") == "assistant" else None
            asked = {b.get("id") for _, b in _blocks(previous, "tool_use")}
            for j, block in _blocks(message, "tool_result"):
                if block.get("tool_use_id") not in asked:
                    raise BadRequest(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                                     f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                                     "block must have a corresponding `tool_use` block in the previous message.")
            if message.get("role") == "assistant" and i + 1 < len(messages):
                answered = {b.get("tool_use_id") for _, b in _blocks(messages[i + 1], "tool_result")}
                missing = [b.get("id") for _, b in _blocks(message, "tool_use") if b.get("id") not in answered]
                if missing:
                    raise BadRequest(f"messages.{i + 1}: `tool_use` ids were found without `tool_result` "
                                     f"blocks immediately after: {', '.join(map(str, missing))}. Each "
                                     "`tool_use` block must have a corresponding `tool_result` block in the "
                                     "next message.")

    def max_tokens(self, body: dict) -> int | None:
        value = optional_int(body.get("max_tokens"))
        if value is None:
            raise BadRequest("max_tokens: Field required")  # required by the real API
        return value

    def other(self, action: str, body: dict, path_model: str | None, switches: Switches) -> dict:
        # POST /v1/messages/count_tokens: the Messages input count (max_tokens not needed).
        self.model(body, None)
        return {"input_tokens": self.prompt(body).input_tokens}

    @staticmethod
    def usage(reply: Reply, output_tokens: int) -> dict:
        return {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_creation_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    @staticmethod
    def stop_reason(reply: Reply) -> str:
        if reply.tool_call:
            return "tool_use"
        return "max_tokens" if reply.truncated else "end_turn"

    def message(self, reply: Reply, content: list[dict], stop_reason: str | None,
                output_tokens: int) -> dict:
        result = {"id": new_id("msg_"), "type": "message", "role": "assistant",
                  "model": reply.model, "content": content, "stop_reason": stop_reason,
                  "stop_sequence": None}
        if not reply.switches.omit_usage:
            result["usage"] = self.usage(reply, output_tokens)
        return result

    def json_reply(self, reply: Reply, body: dict) -> dict:
        if reply.tool_call:
            content = [{"type": "tool_use", "id": new_id("toolu_"), "name": reply.tool_call.name,
                        "input": reply.tool_call.arguments}]
        else:
            content = [{"type": "text", "text": reply.text}]
        return self.message(reply, content, self.stop_reason(reply),
                            reply.output_tokens + reply.reasoning_tokens)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        def event(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, **fields}, event=kind)

        # Like the real API, message_start reports a token or so of output and message_delta
        # the cumulative total, so a gateway that adds the two instead of replacing is caught.
        yield event("message_start", message=self.message(reply, [], None, 1))
        if reply.tool_call:
            # input starts empty; the JSON arrives as partial_json fragments to concatenate.
            yield event("content_block_start", index=0, content_block={
                "type": "tool_use", "id": new_id("toolu_"), "name": reply.tool_call.name, "input": {}})
        else:
            yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        yield event("ping")
        for index, piece in enumerate(reply.chunks):
            yield from content_pauses(index)
            delta = ({"type": "input_json_delta", "partial_json": piece} if reply.tool_call
                     else {"type": "text_delta", "text": piece})
            yield event("content_block_delta", index=0, delta=delta)
        yield event("content_block_stop", index=0)
        delta = {"stop_reason": self.stop_reason(reply), "stop_sequence": None}
        if reply.switches.omit_usage:
            yield event("message_delta", delta=delta)
        else:
            usage = self.usage(reply, reply.output_tokens + reply.reasoning_tokens)
            del usage["service_tier"]
            yield event("message_delta", delta=delta, usage=usage)
        yield event("message_stop")

    def error(self, status: int, message: str, switches: Switches, param: str | None = None):
        kinds = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                 529: "overloaded_error"}
        err_type = kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
        request_id = new_id("req_")
        headers = {"request-id": request_id}
        if status == 429:
            requests_reset = rfc3339_in(switches.reset_seconds("requests"))
            tokens_reset = rfc3339_in(switches.reset_seconds("tokens"))
            for kind, limit, reset in (("requests", 1000, requests_reset), ("tokens", 400000, tokens_reset),
                                       ("input-tokens", 320000, tokens_reset),
                                       ("output-tokens", 80000, tokens_reset)):
                headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{kind}-remaining"] = "0"
                headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        if status in (429, 503, 529):
            headers["retry-after"] = str(switches.retry_after)
        body = {"type": "error", "error": {"type": err_type, "message": message},
                "request_id": request_id}
        return body, headers


def _parts(content: Any, key: str) -> list[dict]:
    """The parts of one Gemini content that carry `key` (functionCall, functionResponse)."""
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p[key] for p in parts or [] if isinstance(p, dict) and isinstance(p.get(key), dict)]


class Gemini(Provider):
    label = "gemini"
    json_content_type = "application/json; charset=UTF-8"
    other_actions = ("countTokens", "embedContent", "batchEmbedContents")

    def model(self, body: dict, path_model: str | None) -> str:
        return path_model or ""

    def prompt(self, body: dict) -> Prompt:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("contents is not specified")
        self.validate(contents)
        system = body.get("systemInstruction") or body.get("system_instruction")
        texts = [text_of(system.get("parts", []))] if isinstance(system, dict) else []
        texts += [text_of(c.get("parts", [])) for c in contents]
        tool_results = [result_text(r.get("response")) for r in _parts(contents[-1], "functionResponse")]
        tools = []
        for tool in body.get("tools") or []:
            if isinstance(tool, dict):
                for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
                    if isinstance(decl, dict):
                        schema = next((decl[k] for k in ("parameters", "parametersJsonSchema",
                                                         "parameters_json_schema") if k in decl), None)
                        tools.append(Tool(str(decl.get("name", "")), schema))
        config = (body.get("toolConfig") or body.get("tool_config") or {})
        calling = config.get("functionCallingConfig") or config.get("function_calling_config") or {}
        mode = str(calling.get("mode", "AUTO")).upper()
        allowed = calling.get("allowedFunctionNames") or calling.get("allowed_function_names")
        if mode == "ANY" and isinstance(allowed, list):
            tools = [t for t in tools if t.name in allowed]
        choice = {"NONE": "none", "ANY": "required"}.get(mode, "auto")
        return Prompt(texts, last_user_text(contents), tool_results, tools, choice)

    @staticmethod
    def validate(contents: list) -> None:
        for i, content in enumerate(contents):
            if not isinstance(content, dict):
                raise BadRequest(f"Invalid value at 'contents[{i}]': expected an object")
            role = content.get("role")
            if role not in (None, "", "user", "model"):
                raise BadRequest(f"contents[{i}].role: Please use a valid role: user, model.")
            if _parts(content, "functionResponse") and not (i and _parts(contents[i - 1], "functionCall")):
                raise BadRequest(f"contents[{i}]: Please ensure that function response turn comes "
                                 "immediately after a function call turn.")

    def max_tokens(self, body: dict) -> int | None:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        return optional_int(config.get("maxOutputTokens", config.get("max_output_tokens")))

    def is_stream(self, body: dict, action: str | None) -> bool:
        return action == "streamGenerateContent"

    def stream_content_type(self, query: dict[str, str]) -> str:
        return "text/event-stream" if query.get("alt") == "sse" else self.json_content_type

    def other(self, action: str, body: dict, path_model: str | None, switches: Switches) -> dict:
        if action == "countTokens":
            # Either {contents} or the whole {generateContentRequest: {contents, systemInstruction, ...}}.
            request = body.get("generateContentRequest") or body.get("generate_content_request") or body
            total = self.prompt(request if isinstance(request, dict) else {}).input_tokens
            return {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
        if action == "embedContent":
            return {"embedding": self.embed(body, "")}
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("requests is not specified")
        return {"embeddings": [self.embed(r if isinstance(r, dict) else {}, f"requests[{i}].")
                               for i, r in enumerate(requests)]}

    @staticmethod
    def embed(request: dict, where: str) -> dict:
        content = request.get("content")
        text = text_of(content.get("parts", [])) if isinstance(content, dict) else ""
        if not text:
            raise BadRequest(f"{where}content is not specified")
        dimensions = request.get("outputDimensionality", request.get("output_dimensionality"))
        if dimensions is not None and (optional_int(dimensions) is None or dimensions < 1):
            raise BadRequest(f"{where}outputDimensionality: must be a positive integer")
        return {"values": fake_embedding(text, dimensions or EMBEDDING_DIMENSIONS)}

    @staticmethod
    def usage(reply: Reply, candidates: int) -> dict:
        usage = {
            "promptTokenCount": reply.input_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": reply.input_tokens + candidates + reply.reasoning_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
        }
        # proto3 JSON drops zero values; gateways must cope with the fields being absent.
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
        if reply.reasoning_tokens:
            usage["thoughtsTokenCount"] = reply.reasoning_tokens
        return usage

    def chunk(self, reply: Reply, response_id: str, parts: list[dict], finish: bool,
              candidates_so_far: int) -> dict:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            # A function call ends with STOP too; the functionCall part tells it apart.
            candidate["finishReason"] = "MAX_TOKENS" if reply.truncated else "STOP"
        result: dict[str, Any] = {"candidates": [candidate]}
        if not reply.switches.omit_usage:
            result["usageMetadata"] = self.usage(reply, candidates_so_far)
        result["modelVersion"] = reply.model
        result["responseId"] = response_id
        return result

    @staticmethod
    def call_parts(reply: Reply) -> list[dict]:
        return [{"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}]

    def json_reply(self, reply: Reply, body: dict) -> dict:
        parts = self.call_parts(reply) if reply.tool_call else [{"text": reply.text}]
        return self.chunk(reply, new_id(""), parts, True, reply.output_tokens)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        response_id = new_id("")
        as_sse = query.get("alt") == "sse"
        if reply.tool_call:
            # Gemini streams a function call whole, in one chunk.
            pieces = [(self.call_parts(reply), reply.output_tokens)]
        else:
            pieces = [([{"text": piece}], reply.cumulative_output(index + 1))
                      for index, piece in enumerate(reply.chunks)]
        last = len(pieces) - 1
        for index, (parts, so_far) in enumerate(pieces):
            yield from content_pauses(index)
            data = self.chunk(reply, response_id, parts, index == last, so_far)
            if as_sse:
                yield sse(data, newline="\r\n")  # Gemini separates events with CRLF
            else:
                # Without alt=sse the API streams one JSON array, element by element.
                yield (("[" if index == 0 else ",\r\n") + json.dumps(data)
                       + ("]" if index == last else "")).encode()

    def error(self, status: int, message: str, switches: Switches, param: str | None = None):
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                    504: "DEADLINE_EXCEEDED"}
        error: dict[str, Any] = {"code": status, "message": message,
                                 "status": statuses.get(status, "UNKNOWN")}
        if status == 429:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{switches.retry_after}s"}]
        return {"error": error}, {}


OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC, GEMINI = OpenAIChat(), OpenAIResponses(), Anthropic(), Gemini()

GEMINI_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent"
                         r"|countTokens|embedContent|batchEmbedContents)$")

ERROR_MESSAGES = {
    429: "Rate limit reached (fake). Please try again in {retry_after}s.",
    500: "The server had an error while processing your request (fake).",
    503: "The service is temporarily unavailable (fake).",
    529: "Overloaded (fake).",
}


def route(method: str, path: str) -> tuple[Provider | None, str | None, str | None]:
    """Returns (provider, model from the path, action) for an API path; the action is the
    Gemini method or one of a provider's `other_actions`."""
    if method != "POST":
        return None, None, None
    if path == "/v1/chat/completions":
        return OPENAI_CHAT, None, None
    if path == "/v1/responses":
        return OPENAI_RESPONSES, None, None
    if path == "/v1/embeddings":
        return OPENAI_CHAT, None, "embeddings"
    if path == "/v1/moderations":
        return OPENAI_CHAT, None, "moderations"
    if path == "/v1/messages":
        return ANTHROPIC, None, None
    if path == "/v1/messages/count_tokens":
        return ANTHROPIC, None, "count_tokens"
    match = GEMINI_PATH.match(path)
    if match:
        return GEMINI, match.group(1), match.group(2)
    return None, None, None


# --------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------


class FakeLLMServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default 5 drops connections under load tests

    def __init__(self, address: tuple[str, int], name: str | None, defaults: Switches,
                 verbose: bool = False, max_recorded: int = 10000):
        super().__init__(address, Handler)
        self.name = name
        self.startup_defaults = defaults
        self.defaults = defaults
        self.verbose = verbose
        self.lock = threading.Lock()
        # Bounded so long load runs against the demo stack cannot exhaust memory.
        self.recorded: collections.deque[dict] = collections.deque(maxlen=max_recorded or None)
        self.failures = 0  # failures served under fail_first since the last reset or config change

    def record(self, entry: dict) -> None:
        with self.lock:
            self.recorded.append(entry)

    def reset(self) -> None:
        with self.lock:
            self.recorded.clear()
            self.defaults = self.startup_defaults
            self.failures = 0

    def take_failure(self, fail_first: int) -> bool:
        """Whether a request under the status switch fails: always when fail_first is 0,
        else only for the first fail_first such requests (counted process-wide)."""
        if fail_first <= 0:
            return True
        with self.lock:
            if self.failures < fail_first:
                self.failures += 1
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply has Content-Length or is chunked
    server_version = "fake-llm/1.0"
    responses = {**BaseHTTPRequestHandler.responses, 529: ("Overloaded", "")}  # Anthropic-only code
    server: FakeLLMServer
    entry: dict | None = None  # the recorded entry of the API request being answered

    def setup(self) -> None:
        super().setup()
        # Small SSE chunks must leave at once, not wait on Nagle + delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        if self.entry is not None:
            self.entry["status"] = code  # shown in /_fake/requests
        super().send_response(code, message)

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    # ---- request -----------------------------------------------------------------------

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Envoy re-chunks request bodies that a filter rewrote without a length.
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def dispatch(self) -> None:
        self.entry = None
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.read_body()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")

        if path == "/healthz":
            return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if path.startswith("/_fake/"):
            return self.handle_admin(path, body)

        self.entry = {"method": self.command, "path": path, "query": url.query,
                      "query_params": query, "headers": headers, "body": body,
                      "time": time.time(), "status": None}
        self.server.record(self.entry)

        provider, path_model, action = route(self.command, path)
        if provider is None:
            return self.send_json(404, {"error": {"message": f"no route for {self.command} {path}",
                                                  "type": "invalid_request_error", "param": None,
                                                  "code": "unknown_url"}})
        self.handle_api(provider, path_model, action, headers, body, query)

    def handle_admin(self, path: str, body: Any) -> None:
        server = self.server
        if path == "/_fake/requests" and self.command == "GET":
            with server.lock:
                return self.send_json(200, list(server.recorded))
        if path == "/_fake/reset" and self.command == "POST":
            server.reset()
            return self.send_json(200, {"ok": True})
        if path == "/_fake/config":
            if self.command == "POST":
                try:
                    with server.lock:
                        server.defaults = server.defaults.updated(body if isinstance(body, dict) else {})
                        server.failures = 0  # fail_first counts from the new configuration
                except ValueError as err:
                    return self.send_json(400, {"error": str(err)})
            return self.send_json(200, dataclasses.asdict(server.defaults))
        self.send_json(404, {"error": f"no admin route {self.command} {path}"})

    def handle_api(self, provider: Provider, path_model: str | None, action: str | None,
                   headers: dict[str, str], body: Any, query: dict[str, str]) -> None:
        switches = self.server.defaults
        name = self.server.name or f"fake-{provider.label}"
        try:
            switches = switches.with_headers(headers)
        except ValueError as err:
            return self.send_provider_error(provider, 400, str(err), switches, name)

        if switches.response_delay_ms:
            time.sleep(switches.response_delay_ms / 1000)
        # The status switch wins over validation so tests can send minimal bodies.
        if switches.status >= 400 and self.server.take_failure(switches.fail_first):
            message = ERROR_MESSAGES.get(switches.status, "Fake error {status}.")
            return self.send_provider_error(
                provider, switches.status,
                message.format(status=switches.status, retry_after=switches.retry_after),
                switches, name)
        try:
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            if action in provider.other_actions:
                other, reply = provider.other(action, body, path_model, switches), None
            else:
                model = provider.model(body, path_model)
                reply = plan_reply(name, model, provider.prompt(body), provider.max_tokens(body), switches)
        except BadRequest as err:
            return self.send_provider_error(provider, 400, str(err), switches, name, err.param)

        extra = {"x-fake-provider-name": name}
        if provider.label == "openai":
            extra.update(_openai_ratelimit_headers(9999, switches))
            extra["x-request-id"] = new_id("req_")
        elif provider is ANTHROPIC:
            extra["request-id"] = new_id("req_")
        if reply is None:
            self.send_json(200, other, provider.json_content_type, extra)
        elif provider.is_stream(body, action):
            self.send_stream(provider.stream_reply(reply, body, query),
                             provider.stream_content_type(query), switches, extra)
        else:
            self.send_json(200, provider.json_reply(reply, body), provider.json_content_type, extra)

    # ---- response ----------------------------------------------------------------------

    def send_provider_error(self, provider: Provider, status: int, message: str,
                            switches: Switches, name: str, param: str | None = None) -> None:
        body, headers = provider.error(status, message, switches, param)
        headers["x-fake-provider-name"] = name
        self.send_json(status, body, provider.json_content_type, headers)

    def send_json(self, status: int, data: Any, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(data).encode(), content_type, headers)

    def send_bytes(self, status: int, payload: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.write_safely(lambda: self.wfile.write(payload))

    def send_stream(self, events: Stream, content_type: str, switches: Switches,
                    headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

        def write_all() -> None:
            for item in events:
                if item is PAUSE:
                    if switches.chunk_delay_ms:
                        time.sleep(switches.chunk_delay_ms / 1000)
                    continue
                # One HTTP chunk per event, sent in a single write so it leaves immediately.
                self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
                self.wfile.flush()
            if switches.end_delay_ms:
                time.sleep(switches.end_delay_ms / 1000)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        self.write_safely(write_all)

    def write_safely(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-reply


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic/Gemini provider for tests.")
    parser.add_argument("--host", default=env.get("FAKE_LLM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("FAKE_LLM_PORT", "8000")),
                        help="0 picks a free port (printed in the readiness line)")
    parser.add_argument("--name", default=env.get("FAKE_LLM_NAME"),
                        help="name in replies and x-fake-provider-name (default fake-<provider>)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--max-recorded", type=int, default=int(env.get("FAKE_LLM_MAX_RECORDED", "10000")),
                        help="keep only the newest N requests for /_fake/requests (0: unlimited)")
    for field in dataclasses.fields(Switches):
        flag = "--" + field.name.replace("_", "-")
        env_value = env.get("FAKE_LLM_" + field.name.upper())
        if field.type == "bool":
            parser.add_argument(flag, dest=field.name, action="store_true", default=env_value)
        else:
            parser.add_argument(flag, dest=field.name, default=env_value,
                                help=f"default for header {Switches.header_name(field.name)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        defaults = Switches().updated({f.name: getattr(args, f.name) for f in dataclasses.fields(Switches)})
    except ValueError as err:
        sys.exit(f"fake-llm: {err}")
    server = FakeLLMServer((args.host, args.port), args.name, defaults, args.verbose, args.max_recorded)
    host, port = server.server_address[:2]
    print(f"fake-llm ready name={args.name or 'fake-<provider>'} url=http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
