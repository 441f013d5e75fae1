"""Workloads and plugin configurations of `make bench`, in one place.

The Tollgate plugin configurations below are what each benchmark scenario asks the filter
to do (virtual key + routing + accounting + cost for LLM; a 50-rule policy with 10
argument rules for MCP; tagging + trace stitching for A2A). They follow the filters'
configuration schemas (filters/<layer>/src/config.rs); when a schema changes, update the
matching function here, or point the bench at a JSON file without touching code:

    BENCH_LLM_CONFIG=path.json  BENCH_MCP_CONFIG=path.json  BENCH_A2A_CONFIG=path.json

(a file may use the placeholder "{{sha256:KEY}}", replaced by the hex SHA-256 of KEY).
A configuration that Envoy refuses is reported as "not run: <Envoy's error>" — the bench
never silently measures a different workload.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------
# Credentials used by the load generator (bench only; never real keys)
# ----------------------------------------------------------------------------------------

LLM_VIRTUAL_KEY = "sk-tollgate-bench-0001"
MCP_KEY = "tg-mcp-bench-0001"
A2A_KEY = "tg-a2a-bench-0001"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"
MODEL = "gpt-4o-mini"

# Price table (USD per 1M tokens) shared by Tollgate and LiteLLM so both compute the same cost.
PRICE_INPUT_PER_MTOK = 0.15
PRICE_OUTPUT_PER_MTOK = 0.60


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_override(env: str) -> dict | None:
    path = os.environ.get(env)
    if not path:
        return None
    text = Path(path).read_text()
    text = re.sub(r"\{\{sha256:([^}]*)\}\}", lambda m: sha256_hex(m.group(1)), text)
    return json.loads(text)


# ----------------------------------------------------------------------------------------
# LLM: virtual key, model routing, accounting, cost
# ----------------------------------------------------------------------------------------

def add_api_key(cfg: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    keys = cfg.setdefault("identity", {}).setdefault("api_keys", {}).setdefault("keys", [])
    keys[:] = [k for k in keys if k.get("name") != entry["name"]] + [entry]
    return cfg


def llm_config(shipped: dict[str, Any], provider_names: list[str]) -> dict[str, Any]:
    """The shipped plugin configuration of envoy/llm.yaml (its providers, model routes and
    price table) plus the bench's virtual key (stored as SHA-256, allowed on gpt-4o*).
    If the shipped configuration has no routing or prices, a minimal equivalent is used:
    gpt-4o* routed to the provider envoy/llm.yaml routes (`provider_names`), the provider's
    own credential swapped in, and a price for gpt-4o-mini. Accounting is always on."""
    override = _load_override("BENCH_LLM_CONFIG")
    if override is not None:
        return override
    key = {"sha256": sha256_hex(LLM_VIRTUAL_KEY), "name": "bench-key", "principal": "bench-user",
           "team": "bench-team", "models": ["gpt-4o*"]}
    if shipped.get("providers") and shipped.get("models") and shipped.get("prices"):
        cfg = copy.deepcopy(shipped)
        add_api_key(cfg, key)
        cfg["require_identity"] = True
        # Keep the shipped limits (their reservation and reconciliation are part of the
        # per-request work) but out of reach: the 1M-request soak would spend the demo budget.
        for limit in cfg.get("limits", []):
            for cap in ("requests_per_window", "tokens_per_window", "cost_micro_usd_per_window"):
                if cap in limit:
                    limit[cap] = 10**15
        return cfg
    provider = provider_names[0] if provider_names else "provider-a"
    return {
        "identity": {"api_keys": {"keys": [key]}},
        "require_identity": True,
        "providers": [{"name": provider, "apis": ["openai_chat"],
                       "credential": {"value": "sk-upstream-bench", "send_as": "bearer"}}],
        "models": [{"model": "gpt-4o*", "provider": provider}],
        "prices": [{"model": "gpt-4o-mini*", "input": PRICE_INPUT_PER_MTOK, "output": PRICE_OUTPUT_PER_MTOK}],
    }


STREAM_PROMPT_WORDS = 2000  # the long-stream prompt; the fake provider echoes it back


def stream_prompt(words: int) -> str:
    vocab = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
             "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
    return " ".join(vocab[i % len(vocab)] for i in range(words))


def llm_body(size: int = 4096, stream: bool = False, user_text: str | None = None,
             max_tokens: int | None = None) -> bytes:
    """An OpenAI chat request of exactly `size` bytes (when user_text is None). Streaming
    requests carry `max_tokens` only when given (the fake provider cuts its reply there)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
            {"role": "user", "content": ""},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "user": "bench-user",
    }
    if stream:
        body["stream"] = True
        body.pop("max_tokens")
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
    if user_text is not None:
        body["messages"][1]["content"] = user_text
        return json.dumps(body, separators=(",", ":")).encode()
    base = len(json.dumps(body, separators=(",", ":")).encode())
    words = ("Summarise the following quarterly report for the board, highlighting revenue, "
             "churn, hiring and the three largest risks. ").split()
    text, i = [], 0
    while len(" ".join(text)) < size - base:
        text.append(words[i % len(words)])
        i += 1
    filler = " ".join(text)[: max(0, size - base)]
    body["messages"][1]["content"] = filler
    out = json.dumps(body, separators=(",", ":")).encode()
    return out


def llm_headers() -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {LLM_VIRTUAL_KEY}"}


# ----------------------------------------------------------------------------------------
# MCP: 50 rules, 10 of them on arguments (JSONPath)
# ----------------------------------------------------------------------------------------

def mcp_rules() -> list[dict[str, Any]]:
    """The abstract policy: 40 tool-name rules and 10 tool+argument rules, all `allow`
    (default deny). The benchmark request matches only the LAST rule, so a first-match
    engine evaluates all 50."""
    rules: list[dict[str, Any]] = []
    for i in range(40):
        rules.append({"id": f"p{i:02d}", "tool": f"svc{i:02d}.read_records"})
    argument_rules = [
        ("fs.read", ["path"], "/srv/reports/q1.txt"),
        ("fs.read", ["path"], "/srv/reports/q2.txt"),
        ("http.get", ["url"], "https://intranet.example/status"),
        ("http.get", ["url"], "https://intranet.example/health"),
        ("db.query", ["options", "database"], "analytics"),
        ("db.query", ["table"], "customers"),
        ("db.query", ["table"], "invoices"),
        ("db.query", ["table"], "products"),
        ("db.query", ["table"], "shipments"),
        ("db.query", ["table"], "orders"),  # the one the request matches
    ]
    for j, (tool, path, value) in enumerate(argument_rules):
        rules.append({"id": f"p{40 + j:02d}", "tool": tool, "arg_path": path, "equals": value})
    assert len(rules) == 50
    return rules


def mcp_config(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped plugin configuration of envoy/mcp.yaml with its policy rules replaced by
    mcp_rules() in the filter's schema (ordered rules; any matching deny wins, else the
    first matching allow, else deny) and the bench caller's API key added (required)."""
    override = _load_override("BENCH_MCP_CONFIG")
    if override is not None:
        return override
    rules = []
    for r in mcp_rules():
        rule: dict[str, Any] = {"id": r["id"], "effect": "allow", "methods": ["tools/call"], "tools": [r["tool"]]}
        if "arg_path" in r:
            rule["arguments"] = [{"path": "$." + ".".join(r["arg_path"]), "equals": r["equals"]}]
        rules.append(rule)
    cfg = copy.deepcopy(shipped)
    add_api_key(cfg, {"sha256": sha256_hex(MCP_KEY), "name": "bench-agent", "principal": "bench-agent"})
    cfg["require_identity"] = True
    # Sessions stay bound (the shipped default): a fixed key lets the bench present the bound
    # id the filter would have issued for its session (mcp_session_id()).
    sessions = cfg.get("sessions") if isinstance(cfg.get("sessions"), dict) else {}
    if sessions.get("bind", True):
        sessions["binding_key"] = MCP_SESSION_KEY
        cfg["sessions"] = sessions
    cfg.pop("rate_limits", None)  # the scenario is the policy; a demo rate limit would answer 429
    policy = cfg.get("policy") if isinstance(cfg.get("policy"), dict) else {}
    policy["rules"] = rules
    policy.pop("dry_run", None)
    cfg["policy"] = policy
    return cfg


MCP_SESSION_KEY = "bench-session-binding-key-0123456789abcdef"
MCP_SERVER = "demo"  # envoy/mcp.yaml's route metadata (tollgate.mcp_server)
MCP_PRINCIPAL = "bench-agent"
MCP_SERVER_SESSION = "bench-session-0001"  # the server's own session id (what `bind: false` passes on)


def mcp_session_id(server_id: str = MCP_SERVER_SESSION) -> str:
    """The id the MCP filter gives the bench caller for the server's `server_id` (sessions
    bound to caller and server, filters/mcp/README.md): `S.<first 16 bytes of
    HMAC-SHA256(key, framing), hex>`."""
    import hmac
    import hashlib
    import struct
    msg = b"tollgate-mcp-session/v1\n"
    for field in (MCP_SERVER.encode(), b"\x01" + MCP_PRINCIPAL.encode(), server_id.encode()):
        msg += struct.pack(">I", len(field)) + field
    return f"{server_id}.{hmac.new(MCP_SESSION_KEY.encode(), msg, hashlib.sha256).hexdigest()[:32]}"


def mcp_body(table: str = "orders") -> bytes:
    """tools/call db.query; table "orders" matches rule p49 (allowed), any other table is denied."""
    return json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "db.query",
                   "arguments": {"table": table, "sql": f"select id, status from {table} order by id limit 3",
                                 "options": {"database": "sales", "timeout_ms": 2000}}},
    }, separators=(",", ":")).encode()


def mcp_headers() -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
        "mcp-session-id": mcp_session_id(),
        "authorization": f"Bearer {MCP_KEY}",
    }


def native_mcp_rbac_filters() -> list[dict[str, Any]]:
    """Envoy 1.40's native equivalent of mcp_rules(): `envoy.filters.http.mcp` (extracting
    params.name and the argument paths the rules use) + `envoy.filters.http.rbac` with one
    ALLOW policy per rule, matched on the MCP dynamic metadata."""
    ns = "envoy.filters.http.mcp"
    rules = mcp_rules()
    paths = sorted({"params.arguments." + ".".join(r["arg_path"]) for r in rules if "arg_path" in r})

    def md(path: list[str], value: str) -> dict:
        return {"sourced_metadata": {"metadata_matcher": {
            "filter": ns, "path": [{"key": k} for k in path], "value": {"string_match": {"exact": value}}}}}

    policies = {}
    for r in rules:
        conds = [md(["method"], "tools/call"), md(["params", "name"], r["tool"])]
        if "arg_path" in r:
            conds.append(md(["params", "arguments", *r["arg_path"]], r["equals"]))
        policies[r["id"]] = {"permissions": [{"and_rules": {"rules": conds}}], "principals": [{"any": True}]}
    return [
        {"name": "envoy.filters.http.mcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp",
            "traffic_mode": "PASS_THROUGH",
            "parser_config": {"methods": [{
                "method": "tools/call",
                "extraction_rules": [{"path": "params.name"}] + [{"path": p} for p in paths],
            }]},
        }},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        }},
    ]


# ----------------------------------------------------------------------------------------
# A2A: SendMessage with tagging and trace stitching
# ----------------------------------------------------------------------------------------

def a2a_config(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped plugin configuration of envoy/a2a.yaml plus an API-key caller identity;
    tagging (task/context ids into audit records and headers) and trace stitching are on
    by default in the A2A filter."""
    override = _load_override("BENCH_A2A_CONFIG")
    if override is not None:
        return override
    cfg = copy.deepcopy(shipped)
    add_api_key(cfg, {"sha256": sha256_hex(A2A_KEY), "name": "bench-caller", "principal": "agent-bench"})
    return cfg


def a2a_body() -> bytes:
    return json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {
            "message": {
                "messageId": "m-bench-1", "role": "ROLE_USER",
                "contextId": "c0ffee00-1111-4222-8333-944455556666",
                "parts": [{"text": "please summarise the quarterly report"}],
                "metadata": {"source": "bench"},
            },
            "configuration": {"acceptedOutputModes": ["text/plain"], "historyLength": 1},
        },
    }, separators=(",", ":")).encode()


def a2a_headers() -> dict[str, str]:
    return {
        "content-type": "application/json",
        "a2a-version": "1.0",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=bench",
        "authorization": f"Bearer {A2A_KEY}",
    }


# ----------------------------------------------------------------------------------------
# LiteLLM: the closest equivalent without a database
# ----------------------------------------------------------------------------------------

def litellm_config(upstream_base: str) -> dict[str, Any]:
    """Model routing (model_list), key check (master key: LiteLLM's virtual keys need its
    Postgres database), and per-request spend computed from the same price table (LiteLLM
    returns it as `x-litellm-response-cost`; persisting spend per key also needs the DB)."""
    return {
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": upstream_base,
                "api_key": "sk-upstream-bench",
                "input_cost_per_token": PRICE_INPUT_PER_MTOK / 1e6,
                "output_cost_per_token": PRICE_OUTPUT_PER_MTOK / 1e6,
            },
        }],
        "litellm_settings": {"drop_params": True, "set_verbose": False, "telemetry": False},
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
