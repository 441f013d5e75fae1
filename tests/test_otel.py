"""OpenTelemetry out of the gateway (issue 20 items 1, 2, 6), through the shipped stack
(envoy/stack.yaml: one Envoy, the three Tollgate filters):

- traces: each filter's span (from its audit record) reaches an OTLP/HTTP JSON receiver in the
  test, parsed into the OTel project's own protobuf classes (`opentelemetry-proto`), so every
  field name is checked against the OTLP definitions; the A2A hop, the LLM call and the MCP
  call of the cross-layer scenario are one trace with the right parent/child links;
- logs: Envoy's own `envoy.access_loggers.open_telemetry` sends each audit record (filter
  state) as an OTLP log record to a gRPC LogsService receiver in the test;
- response headers: the client gets the gateway's `x-request-id` (the provider's kept as
  `x-upstream-request-id`) and `traceparent` (the gateway's span), on denials too;
- exporter slow or down: requests are unaffected, spans beyond the bounded queue are dropped
  and counted (`tollgate.otlp.dropped`).

    .venv/bin/python -m pytest tests/test_otel.py -q -p no:cacheprovider -x
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import harness
from test_cross_layer import start_demo_upstreams
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import SendMessageRequest
from a2a.types.a2a_pb2 import Role

pytestmark = pytest.mark.timeout(120)

LLM_KEY = "tg-demo-alice"  # a virtual key in envoy/stack.yaml
LLM_MODEL = "gpt-4o-mini"
ROOTS = ("tollgate.llm", "tollgate.mcp", "tollgate.a2a")
SPAN_KIND_CLIENT = 3


# --- receivers ----------------------------------------------------------------------------------


def _hex_ids_to_base64(request: dict) -> dict:
    """OTLP/JSON writes trace and span ids as hex (the OTLP specification's exception to the
    protobuf JSON mapping, which would read `bytes` as base64): turn them into what
    `json_format` expects, failing on anything that is not hex of the right length."""
    for rs in request.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key, size in (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)):
                    if key in span:
                        raw = bytes.fromhex(span[key])
                        assert len(raw) == size, (key, span[key])
                        span[key] = base64.b64encode(raw).decode()
    return request


class OtlpHttpReceiver:
    """An OTLP/HTTP JSON traces endpoint. `delay` holds every answer that long (a slow
    collector)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    assert self.path == "/v1/traces", self.path
                    message = json_format.Parse(json.dumps(_hex_ids_to_base64(json.loads(body))), ExportTraceServiceRequest())
                    receiver.requests.append(message)
                    receiver.content_types.append(self.headers.get("content-type", ""))
                except Exception as e:  # noqa: BLE001 - reported by the test
                    receiver.errors.append(f"{type(e).__name__}: {e}: {body[:300]!r}")
                if delay:
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[dict]:
        """Every span received: {scope, service, span (the proto), attrs}."""
        out = []
        for request in list(self.requests):
            for rs in request.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({"scope": ss.scope.name, "service": service, "span": span, "attrs": attributes(span.attributes)})
        return out

    def wait_spans(self, where, count: int = 1, timeout: float = 10) -> list[dict]:
        found: list[dict] = []

        def check() -> bool:
            nonlocal found
            found = [s for s in self.spans() if where(s)]
            return len(found) >= count

        try:
            harness.wait_until(check, timeout, f"{count} spans")
        except TimeoutError:
            raise AssertionError(f"expected {count} spans, got {found}; all: {[(s['scope'], s['span'].name) for s in self.spans()]}; errors: {self.errors}")
        return found

    def stop(self) -> None:
        self.server.shutdown()


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    """An OTLP gRPC LogsService (what Envoy's OpenTelemetry access logger sends to)."""

    def __init__(self) -> None:
        self.requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        self.requests.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()

    def bodies(self) -> list[str]:
        return [lr.body.string_value for r in list(self.requests) for rl in r.resource_logs
                for sl in rl.scope_logs for lr in sl.log_records]  # fmt: skip

    def stop(self) -> None:
        self.server.stop(0)


def attributes(kvs) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


# --- the stack with the exporter and the OTel access logger -------------------------------------


def _cluster(name: str, port: int, http2: bool = False) -> dict:
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }  # fmt: skip
    if http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
    return cluster


def otel_stack(procs, collector_port: int, logs_port: int | None, otlp: dict | None = None, ports: dict | None = None):
    """envoy/stack.yaml with `audit.otlp` in the three filters (cluster `otel_collector`) and,
    when `logs_port` is given, the OpenTelemetry access logger to `otel_logs`."""
    cfg = harness.load_envoy_config("stack.yaml")
    cfg["static_resources"]["clusters"].append(_cluster("otel_collector", collector_port))
    if logs_port is not None:
        cfg["static_resources"]["clusters"].append(_cluster("otel_logs", logs_port, http2=True))
        hcm = next(n for n in harness._walk(cfg) if n.get("name") == "envoy.filters.network.http_connection_manager")
        hcm["typed_config"]["access_log"].append(OTEL_ACCESS_LOG)
    plugin_configs = {}
    for root in ROOTS:
        pc = harness.plugin_config(cfg, root)
        pc.setdefault("audit", {})["otlp"] = {"cluster": "otel_collector", "flush_ms": 100, **(otlp or {})}
        plugin_configs[root] = pc
    return procs.envoy(cfg, upstreams=ports or {}, plugin_configs=plugin_configs)


# The audit record as an OTLP log record: Envoy's own logger, the record (filter state) as body.
OTEL_ACCESS_LOG = {
    "name": "envoy.access_loggers.open_telemetry",
    "filter": {"not_health_check_filter": {}},
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        "common_config": {
            "log_name": "tollgate.audit",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "otel_logs"}},
            "buffer_flush_interval": "0.05s",
        },
        "body": {"string_value": "%FILTER_STATE(wasm.tollgate.audit:PLAIN)%"},
        "attributes": {"values": [
            {"key": "http.request.header.x-request-id", "value": {"string_value": "%REQ(X-REQUEST-ID)%"}},
            {"key": "http.response.status_code", "value": {"string_value": "%RESPONSE_CODE%"}},
        ]},
    },
}


async def _send(url: str, text: str) -> str:
    client = await create_client(url, client_config=ClientConfig(streaming=False))
    try:
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        return "\n".join([get_stream_response_text(e) async for e in client.send_message(request)])
    finally:
        await client.close()


def _ports(fleet_store) -> dict:
    return {"llm_provider_a": harness.free_port(), "llm_provider_b": harness.free_port(),
            "mcp_demo": harness.free_port(), "agent_echo": harness.free_port(),
            "tollgate_limits": fleet_store["tollgate_limits"]}  # fmt: skip


@pytest.fixture
def collector():
    receiver = OtlpHttpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def logs():
    receiver = LogsReceiver()
    yield receiver
    receiver.stop()


# --- traces and logs ------------------------------------------------------------------------------


def test_cross_layer_scenario_is_one_trace_of_linked_spans_with_convention_attributes(procs, fleet_store, collector, logs) -> None:
    ports = _ports(fleet_store)
    envoy = otel_stack(procs, collector.port, logs.port, ports=ports)
    gw = envoy.url
    start_demo_upstreams(procs, gw, ports)

    reply = asyncio.run(_send(f"{gw}/agents/echo", "cross the layers")).splitlines()
    assert reply[0] == "[tools] echo: cross the layers" and reply[2] == "mcp: cross the layers", reply

    [hop] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("method") == "SendMessage")
    [llm] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm")
    [call] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("tool") == "echo")
    trace_id = hop["trace_id"]

    def of(record):
        return lambda s: s["span"].span_id.hex() == record["span_id"]

    [a2a_span] = collector.wait_spans(of(hop))
    [llm_span] = collector.wait_spans(of(llm))
    [mcp_span] = collector.wait_spans(of(call))
    assert collector.errors == [], collector.errors
    assert set(collector.content_types) == {"application/json"}

    # One trace; the LLM and MCP calls the agent made are children of the A2A hop's span, which
    # is a child of the client's span (the SDK's, when it sent a traceparent) or a root.
    for s in (a2a_span, llm_span, mcp_span):
        assert s["span"].trace_id.hex() == trace_id
        assert s["span"].kind == SPAN_KIND_CLIENT
        assert s["service"] == "tollgate"
        assert s["span"].end_time_unix_nano >= s["span"].start_time_unix_nano > 0
    assert llm_span["span"].parent_span_id.hex() == hop["span_id"]
    assert mcp_span["span"].parent_span_id.hex() == hop["span_id"]
    assert a2a_span["span"].parent_span_id.hex() == (hop.get("parent_span_id") or "")
    assert (a2a_span["scope"], llm_span["scope"], mcp_span["scope"]) == ("tollgate-a2a", "tollgate-llm", "tollgate-mcp")

    a = a2a_span["attrs"]
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["a2a.method.name"] == hop.get("jsonrpc_method", hop["method"])
    assert a["gen_ai.agent.name"] == "echo"
    assert a["gen_ai.conversation.id"] == hop["context_id"]
    assert a["a2a.task.id"] == hop["task_id"] and a["a2a.task.state"] == hop["task_state"]
    assert a["tollgate.decision"] == "allow" and a["tollgate.request_id"] == hop["request_id"]

    m = llm_span["attrs"]
    assert llm_span["span"].name == f"chat {LLM_MODEL}"
    assert m["gen_ai.operation.name"] == "chat"
    assert m["gen_ai.provider.name"] == llm["provider"]
    assert m["gen_ai.request.model"] == LLM_MODEL
    assert m["gen_ai.response.model"] == llm["upstream_model"]
    assert m["gen_ai.usage.input_tokens"] == llm["tokens"]["input"] > 0
    assert m["gen_ai.usage.output_tokens"] == llm["tokens"]["output"] > 0
    assert m["tollgate.cost_micro_usd"] == llm["cost_micro_usd"]
    assert m["tollgate.principal"] == llm["identity"]["principal"]
    assert m["http.response.status_code"] == 200

    t = mcp_span["attrs"]
    assert mcp_span["span"].name == "tools/call echo"
    assert t["mcp.method.name"] == "tools/call" and t["gen_ai.tool.name"] == "echo"
    assert t["gen_ai.operation.name"] == "execute_tool"
    assert t["jsonrpc.request.id"] == str(call["jsonrpc_id"])
    assert t["mcp.session.id"] == call["session_id"]
    assert t["tollgate.decision"] == "allow"

    # Logs: every audit record of the scenario also arrived as an OTLP log record (body = record).
    def logged() -> list[dict]:
        out = []
        for body in logs.bodies():
            if body and body != "-":
                value = json.loads(body)
                out.extend(value if isinstance(value, list) else [value])
        return out

    wanted = {(r["layer"], r["span_id"]) for r in (hop, llm, call)}
    harness.wait_until(lambda: wanted <= {(r.get("layer"), r.get("span_id")) for r in logged()}, 10, "audit records as OTLP logs")
    by_span = {r["span_id"]: r for r in logged()}
    assert by_span[llm["span_id"]] == llm
    assert by_span[call["span_id"]]["tool"] == "echo"
    assert envoy.stat("wasmcustom.tollgate.otlp.dropped") == 0


# --- response headers ---------------------------------------------------------------------------


def _traceparent_ids(value: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and len(flags) == 2, value
    return trace_id, span_id


def test_every_response_names_the_gateway_request_id_and_span(procs, fleet_store, collector) -> None:
    ports = _ports(fleet_store)
    envoy = otel_stack(procs, collector.port, None, ports=ports)
    gw = envoy.url
    start_demo_upstreams(procs, gw, ports)

    # LLM, through the OpenAI SDK (its raw response exposes the headers): the provider's own
    # x-request-id is kept aside, the client sees the gateway's.
    client = openai.OpenAI(base_url=f"{gw}/v1", api_key=LLM_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=LLM_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm" and r.get("request_id") == raw.headers.get("x-request-id"))
    assert raw.headers["x-upstream-request-id"].startswith("req_"), raw.headers
    assert raw.headers["x-upstream-request-id"] != raw.headers["x-request-id"]
    assert _traceparent_ids(raw.headers["traceparent"]) == (rec["trace_id"], rec["span_id"])
    [span] = collector.wait_spans(lambda s: s["span"].span_id.hex() == rec["span_id"])
    assert span["attrs"]["tollgate.request_id"] == raw.headers["x-request-id"]

    # An LLM denial (unknown key: a local reply) carries them too.
    bad = openai.OpenAI(base_url=f"{gw}/v1", api_key="tg-unknown", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        bad.chat.completions.create(model=LLM_MODEL, messages=[{"role": "user", "content": "hi"}])
    h = denied.value.response.headers
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm" and r.get("request_id") == h.get("x-request-id"))
    assert rec["decision"] != "allow"
    assert _traceparent_ids(h["traceparent"]) == (rec["trace_id"], rec["span_id"])
    assert "x-upstream-request-id" not in h

    # MCP (raw HTTP: the SDK does not expose response headers): an initialize that reaches the
    # server, and a refused message (a local JSON-RPC error).
    mcp_headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    ok = httpx.post(f"{gw}/mcp", json=init, headers=mcp_headers, timeout=10)
    assert ok.status_code == 200, ok.text
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("request_id") == ok.headers.get("x-request-id"))
    assert rec["method"] == "initialize"
    assert _traceparent_ids(ok.headers["traceparent"]) == (rec["trace_id"], rec["span_id"])
    refused = httpx.post(f"{gw}/mcp", content=b"{not json", headers=mcp_headers, timeout=10)
    assert refused.json()["error"]["code"] == -32700, refused.text
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("request_id") == refused.headers.get("x-request-id"))
    assert rec["decision"] == "error"
    assert _traceparent_ids(refused.headers["traceparent"]) == (rec["trace_id"], rec["span_id"])

    # A2A (raw JSON-RPC, with the client's own traceparent): the response names the gateway's
    # span in the client's trace.
    client_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
        "messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}}}  # fmt: skip
    sent = httpx.post(f"{gw}/agents/echo/", json=body, headers={"A2A-Version": "1.0", "traceparent": client_tp}, timeout=20)
    assert sent.status_code == 200, sent.text
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("request_id") == sent.headers.get("x-request-id"))
    assert rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and rec["parent_span_id"] == "b7ad6b7169203331"
    assert _traceparent_ids(sent.headers["traceparent"]) == (rec["trace_id"], rec["span_id"])
    # An A2A refusal (a body that is not JSON) names the gateway's span too, not the client's.
    refused = httpx.post(
        f"{gw}/agents/echo/", content=b"{not json", headers={"A2A-Version": "1.0", "traceparent": client_tp,
                                                           "content-type": "application/json"}, timeout=20)
    assert (refused.status_code, refused.json()["error"]["code"]) == (200, -32700), refused.text
    [rec] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("request_id") == refused.headers.get("x-request-id"))
    assert rec["decision"] != "allow" and rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert _traceparent_ids(refused.headers["traceparent"]) == (rec["trace_id"], rec["span_id"])
    assert rec["span_id"] != "b7ad6b7169203331"


# --- a slow or absent collector -------------------------------------------------------------------


@pytest.mark.parametrize("collector_state", ["slow", "down"])
def test_slow_or_down_collector_never_delays_requests_and_drops_are_counted(procs, fleet_store, collector_state) -> None:
    slow = OtlpHttpReceiver(delay=3.0) if collector_state == "slow" else None
    port = slow.port if slow else harness.free_port()  # down: nothing listens there
    try:
        ports = _ports(fleet_store)
        # One export in flight at a time, a queue of 4: a slow collector holds the one export,
        # the queue fills and drops.
        envoy = otel_stack(procs, port, None, otlp={"max_batch": 2, "max_queued": 4, "max_in_flight": 1, "timeout_ms": 5000}, ports=ports)
        gw = envoy.url
        procs.python("mcp", "examples/mcp_server/server.py", ["--port", str(ports["mcp_demo"]), "--json-response"],
                     f"http://127.0.0.1:{ports['mcp_demo']}/_calls")  # fmt: skip
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
        durations = []
        with httpx.Client(timeout=10) as http:
            for _ in range(30):
                start = time.monotonic()
                r = http.post(f"{gw}/mcp", json=init, headers=headers)
                durations.append(time.monotonic() - start)
                assert r.status_code == 200, r.text
                assert r.json()["result"]["serverInfo"]
        envoy.wait_audit(30, where=lambda r: r.get("layer") == "mcp")
        # No request waited for the exporter (a slow export holds 3 s).
        assert max(durations) < 1.5, durations
        # Bounded: every span was sent, or dropped and counted, but for at most 4 still queued.
        def accounted() -> int:
            return envoy.stat("wasmcustom.tollgate.otlp.dropped") + envoy.stat("wasmcustom.tollgate.otlp.sent")

        harness.wait_until(lambda: accounted() >= 30 - 4, 10, "spans sent or dropped")
        assert accounted() <= 30
        if collector_state == "slow":
            # One export held 3 s at a time: most spans could only be dropped.
            assert envoy.stat("wasmcustom.tollgate.otlp.dropped") >= 10, envoy.stats()
            assert slow.errors == []
        else:
            harness.wait_until(lambda: envoy.stat("wasmcustom.tollgate.otlp.failed") > 0, 10, "failed exports counted")
    finally:
        if slow:
            slow.stop()
