#!/usr/bin/env python3
"""Fake LLM provider for the Tollgate demo stack and end-to-end tests.

One stdlib-only HTTP/1.1 server (keep-alive, chunked SSE flushed per event) that speaks
four provider APIs with their documented JSON and SSE shapes, checked against the
official `openai` and `anthropic` SDK types:

  POST /v1/chat/completions                          OpenAI Chat (JSON, SSE)
  POST /v1/responses                                 OpenAI Responses (JSON, SSE)
  POST /v1/messages                                  Anthropic Messages (JSON, SSE)
  POST /v1beta/models/{model}:generateContent        Gemini (JSON; also /v1/models/...)
  POST /v1beta/models/{model}:streamGenerateContent  Gemini stream: SSE with ?alt=sse,
                                                     otherwise a streamed JSON array
  POST /v1/embeddings                                OpenAI embeddings (float or base64),
                                                     usage.prompt_tokens = words of the inputs
  POST /v1/messages/count_tokens                     Anthropic {"input_tokens": input}
  POST /v1beta/models/{model}:countTokens            Gemini {"totalTokens": input}
  POST /v1beta/models/{model}:embedContent           Gemini {"embedding": {"values"}} and
  POST /v1beta/models/{model}:batchEmbedContents     {"embeddings": [...]}, no usage (as
                                                     the real API)

Test helpers (never recorded themselves):

  GET  /healthz         -> 200 "ok"
  GET  /_fake/requests  -> JSON list of recorded API requests, oldest first (the newest
                           --max-recorded, default 10000); each is {method, path, query,
                           query_params, headers (lowercased), body, time} where body is
                           parsed JSON, raw text, or null
  POST /_fake/reset     -> clears the list and restores the start-up switch defaults
  GET  /_fake/config    -> current process-wide switch defaults
  POST /_fake/config    -> JSON object of switch fields to change (e.g. {"status": 429});
                           for fallback tests, where a request header would reach every
                           upstream but only one upstream should fail

Token formula (deterministic so tests can assert exact numbers)
---------------------------------------------------------------
words(s) = len(s.split()), i.e. whitespace-separated words.

Prompt "messages" are: every chat message (OpenAI `messages`, Anthropic `messages`,
Gemini `contents`, Responses `input` items; a string `input` is one message), plus one
for a top-level system prompt when present (Anthropic `system`, Responses
`instructions`, Gemini `systemInstruction`). A message's text is every string found under
`text`, `content` or `output` keys, recursively (string content, text parts, tool results).

  input  = sum(words(text of m) for m in messages) + len(messages)

So OpenAI [system, user] and the equivalent Anthropic system + [user] give the same count.

The reply text is

  "Hello from {NAME} model {MODEL}: " + <text of the last user message>

where NAME is --name (default "fake-openai" / "fake-anthropic" / "fake-gemini") and MODEL
is the request's model (Gemini: the model in the path). If x-fake-chunks asks for more
chunks than the reply has words, the reply is padded with "lorem" words to that many.
Then it is cut to the request's max tokens (`max_completion_tokens` / `max_tokens`,
`max_output_tokens`, Anthropic `max_tokens`, Gemini `generationConfig.maxOutputTokens`),
which sets finish_reason length / status incomplete / stop_reason max_tokens / MAX_TOKENS.

  output = words(reply text)      (streaming and non-streaming agree)

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
  x-fake-chunk-delay-ms: N        --chunk-delay-ms N       FAKE_LLM_CHUNK_DELAY_MS
      sleep between streamed content chunks
  x-fake-response-delay-ms: N     --response-delay-ms N    FAKE_LLM_RESPONSE_DELAY_MS
      sleep before the response headers (latency, time to first token, timeouts)
  x-fake-omit-usage: 1            --omit-usage             FAKE_LLM_OMIT_USAGE
      leave usage out of the response / stream (to test estimation)
  x-fake-cached-tokens: N         --cached-tokens N        FAKE_LLM_CACHED_TOKENS
  x-fake-cache-creation-tokens: N --cache-creation-tokens  FAKE_LLM_CACHE_CREATION_TOKENS
  x-fake-reasoning-tokens: N      --reasoning-tokens N     FAKE_LLM_REASONING_TOKENS
  x-fake-retry-after: N           --retry-after N          FAKE_LLM_RETRY_AFTER (default 1)
      seconds in Retry-After on 429/503/529

Every reply carries `x-fake-provider-name: NAME`.

Run:  python examples/fake_llm/server.py --host 127.0.0.1 --port 8000 [--name NAME]
(--port 0 picks a free port). Once listening it prints one line and flushes:
  fake-llm ready name=NAME url=http://HOST:PORT
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import json
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
        return " ".join(filter(None, (text_of(value[k]) for k in _TEXT_KEYS if k in value)))
    return ""


def count_words(text: str) -> int:
    return len(text.split())


@dataclass
class Prompt:
    message_texts: list[str]  # one entry per counted message (system prompt included)
    last_user_text: str

    @property
    def input_tokens(self) -> int:
        return sum(count_words(t) for t in self.message_texts) + len(self.message_texts)


@dataclass
class Reply:
    """What to answer, computed once so JSON and stream carry identical numbers."""

    model: str
    chunks: list[str]  # streamed content pieces; "".join(chunks) == text
    truncated: bool  # cut by the request's max tokens
    input_tokens: int
    output_tokens: int  # words of the visible reply text
    switches: Switches

    @property
    def text(self) -> str:
        return "".join(self.chunks)

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
    words = f"Hello from {name} model {model}: {prompt.last_user_text}".split()
    if len(words) < switches.chunks:
        words += ["lorem"] * (switches.chunks - len(words))
    truncated = max_tokens is not None and len(words) > max_tokens
    if truncated:
        words = words[:max_tokens]
    return Reply(model=model, chunks=split_into_chunks(words, switches.chunks),
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


def last_user_text(messages: list[Any], user_roles: tuple[str, ...] = ("user",)) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") in user_roles:
            return text_of(message.get("content", message.get("parts", "")))
    return ""


def optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class BadRequest(Exception):
    """The request is invalid for the provider; answered with 400 in its error shape."""


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

    def model(self, body: dict, path_model: str | None) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: field required")
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

    def error(self, status: int, message: str, switches: Switches) -> tuple[dict, dict[str, str]]:
        """Returns (body, extra headers) for an error reply."""
        raise NotImplementedError


def _openai_ratelimit_headers(remaining: int, switches: Switches) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": f"{switches.retry_after}s",
        "x-ratelimit-limit-tokens": "2000000",
        "x-ratelimit-remaining-tokens": str(remaining * 200),
        "x-ratelimit-reset-tokens": f"{switches.retry_after}s",
    }


class OpenAIBase(Provider):
    label = "openai"

    def error(self, status: int, message: str, switches: Switches):
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
        body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
        return body, headers


class OpenAIChat(OpenAIBase):
    def prompt(self, body: dict) -> Prompt:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty array")
        return Prompt([text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages],
                      last_user_text(messages))

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
        return "length" if reply.truncated else "stop"

    def json_reply(self, reply: Reply, body: dict) -> dict:
        result = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": now(),
            "model": reply.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "refusal": None,
                            "annotations": []},
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
        items = body.get("input")
        if isinstance(items, str):
            texts.append(items)
            return Prompt(texts, items)
        if not isinstance(items, list):
            raise BadRequest("input: must be a string or an array")
        texts += [text_of(item) for item in items]
        return Prompt(texts, last_user_text(items))

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
        item = self.message_item(new_id("msg_"), reply.text, self.final_status(reply))
        return self.response_object(reply, body, new_id("resp_"), now(), self.final_status(reply),
                                    [item], with_usage=True)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        response_id, item_id, created = new_id("resp_"), new_id("msg_"), now()
        sequence = iter(range(1 << 30))

        def event(kind: str, **fields: Any) -> bytes:
            # The SDK dispatches on data.type; `event:` mirrors it for raw SSE readers.
            return sse({"type": kind, "sequence_number": next(sequence), **fields}, event=kind)

        def snapshot(status: str, output: list[dict], with_usage: bool) -> dict:
            return self.response_object(reply, body, response_id, created, status, output, with_usage)

        location = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield event("response.created", response=snapshot("in_progress", [], False))
        yield event("response.in_progress", response=snapshot("in_progress", [], False))
        yield event("response.output_item.added", output_index=0,
                    item=self.message_item(item_id, None, "in_progress"))
        yield event("response.content_part.added", **location,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        for index, piece in enumerate(reply.chunks):
            yield from content_pauses(index)
            yield event("response.output_text.delta", **location, delta=piece, logprobs=[])
        final_status = self.final_status(reply)
        done_item = self.message_item(item_id, reply.text, final_status)
        yield event("response.output_text.done", **location, text=reply.text, logprobs=[])
        yield event("response.content_part.done", **location, part=done_item["content"][0])
        yield event("response.output_item.done", output_index=0, item=done_item)
        yield event(f"response.{final_status}", response=snapshot(final_status, [done_item], True))


class Anthropic(Provider):
    label = "anthropic"

    def prompt(self, body: dict) -> Prompt:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: must be a non-empty array")
        texts = [text_of(body["system"])] if body.get("system") else []
        texts += [text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        return Prompt(texts, last_user_text(messages))

    def max_tokens(self, body: dict) -> int | None:
        value = optional_int(body.get("max_tokens"))
        if value is None:
            raise BadRequest("max_tokens: Field required")  # required by the real API
        return value

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
        return self.message(reply, [{"type": "text", "text": reply.text}], self.stop_reason(reply),
                            reply.output_tokens + reply.reasoning_tokens)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        def event(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, **fields}, event=kind)

        # Like the real API, message_start reports a token or so of output and message_delta
        # the cumulative total, so a gateway that adds the two instead of replacing is caught.
        yield event("message_start", message=self.message(reply, [], None, 1))
        yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        yield event("ping")
        for index, piece in enumerate(reply.chunks):
            yield from content_pauses(index)
            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
        yield event("content_block_stop", index=0)
        delta = {"stop_reason": self.stop_reason(reply), "stop_sequence": None}
        if reply.switches.omit_usage:
            yield event("message_delta", delta=delta)
        else:
            usage = self.usage(reply, reply.output_tokens + reply.reasoning_tokens)
            del usage["service_tier"]
            yield event("message_delta", delta=delta, usage=usage)
        yield event("message_stop")

    def error(self, status: int, message: str, switches: Switches):
        kinds = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                 529: "overloaded_error"}
        err_type = kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
        request_id = new_id("req_")
        headers = {"request-id": request_id}
        if status == 429:
            headers.update({
                "anthropic-ratelimit-requests-limit": "1000",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-tokens-limit": "400000",
                "anthropic-ratelimit-tokens-remaining": "0",
            })
        if status in (429, 503, 529):
            headers["retry-after"] = str(switches.retry_after)
        body = {"type": "error", "error": {"type": err_type, "message": message},
                "request_id": request_id}
        return body, headers


class Gemini(Provider):
    label = "gemini"
    json_content_type = "application/json; charset=UTF-8"

    def model(self, body: dict, path_model: str | None) -> str:
        return path_model or ""

    def prompt(self, body: dict) -> Prompt:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("contents is not specified")
        system = body.get("systemInstruction") or body.get("system_instruction")
        texts = [text_of(system.get("parts", []))] if isinstance(system, dict) else []
        texts += [text_of(c.get("parts", [])) if isinstance(c, dict) else "" for c in contents]
        return Prompt(texts, last_user_text(contents))

    def max_tokens(self, body: dict) -> int | None:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        return optional_int(config.get("maxOutputTokens", config.get("max_output_tokens")))

    def is_stream(self, body: dict, action: str | None) -> bool:
        return action == "streamGenerateContent"

    def stream_content_type(self, query: dict[str, str]) -> str:
        return "text/event-stream" if query.get("alt") == "sse" else self.json_content_type

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

    def chunk(self, reply: Reply, response_id: str, text: str, finish: bool,
              candidates_so_far: int) -> dict:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"},
                                     "index": 0}
        if finish:
            candidate["finishReason"] = "MAX_TOKENS" if reply.truncated else "STOP"
        result: dict[str, Any] = {"candidates": [candidate]}
        if not reply.switches.omit_usage:
            result["usageMetadata"] = self.usage(reply, candidates_so_far)
        result["modelVersion"] = reply.model
        result["responseId"] = response_id
        return result

    def json_reply(self, reply: Reply, body: dict) -> dict:
        return self.chunk(reply, new_id(""), reply.text, True, reply.output_tokens)

    def stream_reply(self, reply: Reply, body: dict, query: dict[str, str]) -> Stream:
        response_id = new_id("")
        as_sse = query.get("alt") == "sse"
        last = len(reply.chunks) - 1
        for index, piece in enumerate(reply.chunks):
            yield from content_pauses(index)
            data = self.chunk(reply, response_id, piece, index == last,
                              reply.cumulative_output(index + 1))
            if as_sse:
                yield sse(data, newline="\r\n")  # Gemini separates events with CRLF
            else:
                # Without alt=sse the API streams one JSON array, element by element.
                yield (("[" if index == 0 else ",\r\n") + json.dumps(data)
                       + ("]" if index == last else "")).encode()

    def error(self, status: int, message: str, switches: Switches):
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

GEMINI_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$")

GEMINI_EXTRA_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/([^/:]+):(countTokens|embedContent|batchEmbedContents)$")
EMBEDDING_DIMENSIONS = 8


def embedding_vector(text: str) -> list[float]:
    """A deterministic unit-free vector for `text` (the same text, the same vector)."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 7)) % 97) / 97.0 for i in range(EMBEDDING_DIMENSIONS)]


def extra_route(method: str, path: str) -> tuple[str, str | None] | None:
    """(kind, model from the path) for the non-generating endpoints, else None."""
    if method != "POST":
        return None
    if path == "/v1/embeddings":
        return "openai_embeddings", None
    if path == "/v1/messages/count_tokens":
        return "anthropic_count_tokens", None
    match = GEMINI_EXTRA_PATH.match(path)
    if match:
        return {"countTokens": "gemini_count_tokens", "embedContent": "gemini_embed",
                "batchEmbedContents": "gemini_batch_embed"}[match.group(2)], match.group(1)
    return None


ERROR_MESSAGES = {
    429: "Rate limit reached (fake). Please try again in {retry_after}s.",
    500: "The server had an error while processing your request (fake).",
    503: "The service is temporarily unavailable (fake).",
    529: "Overloaded (fake).",
}


def route(method: str, path: str) -> tuple[Provider | None, str | None, str | None]:
    """Returns (provider, model from the path, Gemini action) for an API path."""
    if method != "POST":
        return None, None, None
    if path == "/v1/chat/completions":
        return OPENAI_CHAT, None, None
    if path == "/v1/responses":
        return OPENAI_RESPONSES, None, None
    if path == "/v1/messages":
        return ANTHROPIC, None, None
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

    def record(self, entry: dict) -> None:
        with self.lock:
            self.recorded.append(entry)

    def reset(self) -> None:
        with self.lock:
            self.recorded.clear()
            self.defaults = self.startup_defaults


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply has Content-Length or is chunked
    server_version = "fake-llm/1.0"
    responses = {**BaseHTTPRequestHandler.responses, 529: ("Overloaded", "")}  # Anthropic-only code
    server: FakeLLMServer

    def setup(self) -> None:
        super().setup()
        # Small SSE chunks must leave at once, not wait on Nagle + delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

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

        self.server.record({"method": self.command, "path": path, "query": url.query,
                            "query_params": query, "headers": headers, "body": body,
                            "time": time.time()})

        extra = extra_route(self.command, path)
        if extra is not None:
            return self.handle_extra(extra[0], extra[1], headers, body)
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
        if switches.status >= 400:
            message = ERROR_MESSAGES.get(switches.status, "Fake error {status}.")
            return self.send_provider_error(
                provider, switches.status,
                message.format(status=switches.status, retry_after=switches.retry_after),
                switches, name)
        try:
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            model = provider.model(body, path_model)
            reply = plan_reply(name, model, provider.prompt(body), provider.max_tokens(body), switches)
        except BadRequest as err:
            return self.send_provider_error(provider, 400, str(err), switches, name)

        extra = {"x-fake-provider-name": name}
        if provider.label == "openai":
            extra.update(_openai_ratelimit_headers(9999, switches))
            extra["x-request-id"] = new_id("req_")
        elif provider is ANTHROPIC:
            extra["request-id"] = new_id("req_")
        if provider.is_stream(body, action):
            self.send_stream(provider.stream_reply(reply, body, query),
                             provider.stream_content_type(query), switches, extra)
        else:
            self.send_json(200, provider.json_reply(reply, body), provider.json_content_type, extra)

    def handle_extra(self, kind: str, path_model: str | None, headers: dict[str, str], body: Any) -> None:
        """Embeddings and token counting: no generation, same switches (status, delay, omit-usage)."""
        provider = {"openai_embeddings": OPENAI_CHAT, "anthropic_count_tokens": ANTHROPIC}.get(kind, GEMINI)
        name = self.server.name or f"fake-{provider.label}"
        try:
            switches = self.server.defaults.with_headers(headers)
        except ValueError as err:
            return self.send_provider_error(provider, 400, str(err), self.server.defaults, name)
        if switches.response_delay_ms:
            time.sleep(switches.response_delay_ms / 1000)
        if switches.status >= 400:
            message = ERROR_MESSAGES.get(switches.status, "Fake error {status}.")
            return self.send_provider_error(
                provider, switches.status,
                message.format(status=switches.status, retry_after=switches.retry_after), switches, name)
        extra = {"x-fake-provider-name": name}
        try:
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            if kind == "openai_embeddings":
                model = provider.model(body, None)
                raw = body.get("input")
                inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
                if not inputs or any(i is None or i == "" for i in inputs):
                    raise BadRequest("input: must be a non-empty string or array")
                texts = [i if isinstance(i, str) else " ".join(map(str, i)) for i in inputs]
                tokens = sum(count_words(t) for t in texts)
                data = []
                for index, text in enumerate(texts):
                    vector = embedding_vector(text)
                    if body.get("encoding_format") == "base64":
                        vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                    data.append({"object": "embedding", "index": index, "embedding": vector})
                reply = {"object": "list", "data": data, "model": model}
                if not switches.omit_usage:
                    reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
                extra["x-request-id"] = new_id("req_")
            elif kind == "anthropic_count_tokens":
                provider.model(body, None)
                reply = {"input_tokens": provider.prompt(body).input_tokens}
                extra["request-id"] = new_id("req_")
            elif kind == "gemini_count_tokens":
                inner = body.get("generateContentRequest")
                reply = {"totalTokens": GEMINI.prompt(inner if isinstance(inner, dict) else body).input_tokens}
            elif kind == "gemini_embed":
                content = body.get("content")
                if not isinstance(content, dict):
                    raise BadRequest("content is not specified")
                reply = {"embedding": {"values": embedding_vector(text_of(content.get("parts", [])))}}
            else:
                requests = body.get("requests")
                if not isinstance(requests, list) or not requests:
                    raise BadRequest("requests is not specified")
                for r in requests:
                    if isinstance(r, dict) and r.get("model") not in (None, f"models/{path_model}"):
                        raise BadRequest(f"Model {r.get('model')} does not match the model in the path")
                reply = {"embeddings": [{"values": embedding_vector(text_of((r.get("content") or {}).get("parts", [])))}
                                        for r in requests if isinstance(r, dict)]}
        except BadRequest as err:
            return self.send_provider_error(provider, 400, str(err), switches, name)
        self.send_json(200, reply, provider.json_content_type, extra)

    # ---- response ----------------------------------------------------------------------

    def send_provider_error(self, provider: Provider, status: int, message: str,
                            switches: Switches, name: str) -> None:
        body, headers = provider.error(status, message, switches)
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
