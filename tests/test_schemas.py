"""The published JSON Schemas (`schemas/`) against what ships (issue 21 item 8).

- every schema is a valid draft 2020-12 schema;
- every shipped plugin configuration (each Tollgate wasm filter in `envoy/*.yaml`, and the
  Istio examples) validates against its filter's schema;
- each filter README's configuration tables name only fields of the schema, every top-level
  field of the schema, every field of an object documented field by field, and state the
  schema's defaults.

The schemas themselves are checked against the serde config types by the Rust tests
`filters/<filter>/src/schema_tests.rs` (fields, required, defaults, unknown fields refused,
enum variants), so shipped configs, READMEs and code all meet at the schema.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import harness

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
FILTERS = ("llm", "mcp", "a2a")


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name))


@pytest.mark.parametrize("name", [p.name.removesuffix(".schema.json") for p in sorted(SCHEMAS.glob("*.schema.json"))])
def test_each_schema_is_a_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(schema(name))


# ---- shipped configurations ----------------------------------------------------------------


_walk = harness._walk


def _filter_of(text: str) -> str | None:
    m = re.search(r"tollgate_(llm|mcp|a2a)(?:_attempt)?\.wasm", text)
    return m.group(1) if m else None


def shipped_configs() -> list[tuple[str, str, Any]]:
    """(where, filter, plugin configuration) of every Tollgate filter in the shipped files."""
    found = []
    files = sorted((REPO / "envoy").glob("*.yaml")) + sorted((REPO / "examples").rglob("*.yaml"))
    for path in files:
        where = str(path.relative_to(REPO))
        for doc in yaml.safe_load_all(path.read_text()):
            for node in _walk(doc):
                # An Envoy wasm filter: vm_config.code names the module; configuration.value is the JSON.
                if "vm_config" in node and "configuration" in node:
                    flt = _filter_of(json.dumps(node["vm_config"]))
                    value = (node.get("configuration") or {}).get("value")
                    if flt and isinstance(value, str):
                        found.append((f"{where} root_id={node.get('root_id')}", flt, json.loads(value or "{}")))
                # An Istio WasmPlugin: url names the module; pluginConfig is the configuration.
                if "pluginConfig" in node and _filter_of(str(node.get("url", ""))):
                    found.append((f"{where} WasmPlugin", _filter_of(str(node["url"])), node["pluginConfig"]))
    return found


def test_the_shipped_files_hold_configs_of_every_filter():
    counts = {f: 0 for f in FILTERS}
    for _, flt, _ in shipped_configs():
        counts[flt] += 1
    assert all(counts.values()), counts


@pytest.mark.parametrize("where,flt,config", shipped_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_shipped_plugin_configuration_validates_against_its_schema(where, flt, config):
    errors = sorted(validator(f"{flt}-config").iter_errors(config), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where} ({flt}):\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_the_schema_refuses_an_unknown_field_like_the_loader():
    for flt in FILTERS:
        v = validator(f"{flt}-config")
        assert v.is_valid({})
        assert not v.is_valid({"no_such_field": 1}), flt
        assert not v.is_valid({"audit": {"log": True, "no_such_field": 1}}), flt


# The loader's bounds of `audit.otlp` (core `observe::otlp`, `TryFrom<RawOtlpConfig>`), which no
# shipped configuration sets: what test_otel.py runs with passes, what the loader refuses fails.
OTLP_ACCEPTED = [
    {"cluster": "otel_collector"},
    {"cluster": "otel_collector", "flush_ms": 100},
    {"cluster": "otel_collector", "flush_ms": 100, "max_batch": 2, "max_queued": 4, "max_in_flight": 1, "timeout_ms": 5000},
    {"cluster": "c", "authority": None, "path": "/v1/traces", "service_name": "gw", "max_batch": 65536,
     "max_queued": 65536, "max_in_flight": 64, "flush_ms": 60000, "timeout_ms": 60000},
    {"cluster": "c", "authority": ""},
]
OTLP_REFUSED = [
    ({}, "cluster"),
    ({"cluster": ""}, "cluster"),
    ({"cluster": "  "}, "cluster"),
    ({"cluster": "c", "path": "v1/traces"}, "path"),
    ({"cluster": "c", "max_queued": 0}, "max_queued"),
    ({"cluster": "c", "max_queued": 65537}, "max_queued"),
    ({"cluster": "c", "max_batch": 0}, "max_batch"),
    ({"cluster": "c", "max_in_flight": 0}, "max_in_flight"),
    ({"cluster": "c", "max_in_flight": 65}, "max_in_flight"),
    ({"cluster": "c", "flush_ms": 99}, "flush_ms"),
    ({"cluster": "c", "flush_ms": 60001}, "flush_ms"),
    ({"cluster": "c", "timeout_ms": 0}, "timeout_ms"),
    ({"cluster": "c", "timeout_ms": 60001}, "timeout_ms"),
    ({"cluster": "c", "endpoint": "http://x"}, "endpoint"),
]


@pytest.mark.parametrize("flt", FILTERS)
def test_the_audit_otlp_section_has_the_loaders_bounds(flt):
    v = validator(f"{flt}-config")
    for otlp in OTLP_ACCEPTED:
        errors = [e.message for e in v.iter_errors({"audit": {"otlp": otlp}})]
        assert not errors, (otlp, errors)
    assert v.is_valid({"audit": {"otlp": None}})
    for otlp, field in OTLP_REFUSED:
        errors = list(v.iter_errors({"audit": {"otlp": otlp}}))
        assert errors, f"{flt}: the schema accepts audit.otlp {otlp}, which the loader refuses"
        text = " ".join(f"{list(e.absolute_path)} {e.message}" for err in errors for e in [err, *(err.context or [])])
        assert field in text, (otlp, text)


# ---- README configuration tables -----------------------------------------------------------


def _resolve(root: dict, node: dict) -> dict:
    # An optional field: `{"anyOf": [{"$ref": ...}, {"type": "null"}]}` (serde takes null for None).
    refs = [n for n in node.get("anyOf", []) if "$ref" in n]
    if len(refs) == 1:
        node = {**refs[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = {**root["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _child(root: dict, node: dict, name: str) -> dict | None:
    node = _resolve(root, node)
    if node.get("type") == "array":
        node = _resolve(root, node.get("items", {}))
    props = node.get("properties", {})
    if name in props:
        return _resolve(root, props[name])
    # Anything else (a map's values included) is not looked into: the README names no field there.
    return None


def lookup(root: dict, path: str) -> dict | None:
    node: dict | None = root
    for part in path.split("."):
        if node is None:
            return None
        node = _child(root, node, part)
    return node


def readme_rows(flt: str) -> list[tuple[list[str], list[str], str]]:
    """(field paths, default cells, the row) of every `| field | default | meaning |` table."""
    rows = []
    prefix = None
    for line in (REPO / "filters" / flt / "README.md").read_text().splitlines():
        m = re.match(r"^\|\s*(`([^`]*)`\s*)?field\s*\|\s*default\s*\|", line)
        if m:
            prefix = m.group(2) or ""
            continue
        if prefix is None:
            continue
        if not line.startswith("|"):
            prefix = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= {"-", " "}:
            continue
        names: list[str] = []
        for raw in re.findall(r"`([^`]+)`", cells[0]):
            name = raw.replace("[]", "")
            if name.startswith(".") and names:  # `conversations.capacity` / `.ttl_secs`
                name = names[-1].rsplit(".", 1)[0] + name
            names.append(prefix + name)
        defaults = [d.strip() for d in re.split(r"\s+/\s+|,\s+(?=`)", cells[1])]
        rows.append((names, defaults, line))
    return rows


def readme_default(cell: str) -> Any:
    """A README default cell as a value, or `...` when it is prose (none, required, ...)."""
    m = re.fullmatch(r"`([^`]*)`|(-?[0-9][0-9_]*)|([0-9]+) MiB|(true|false)", cell)
    if not m:
        return ...
    if m.group(3):
        return int(m.group(3)) << 20
    text = m.group(1) if m.group(1) is not None else (m.group(2) or m.group(4))
    try:
        return json.loads(text)
    except ValueError:
        return text


@pytest.mark.parametrize("flt", FILTERS)
def test_readme_configuration_tables_name_exactly_the_schemas_fields_and_defaults(flt):
    root = schema(f"{flt}-config")
    rows = readme_rows(flt)
    assert rows, f"filters/{flt}/README.md has no `| field | default | meaning |` table"
    problems = []
    named: set[str] = set()
    own_rows: set[str] = set()
    for names, defaults, line in rows:
        for name in names:
            named.add(name)
            if len(names) == 1:
                own_rows.add(name)
            if lookup(root, name) is None:
                problems.append(f"README names `{name}`, which is no field of schemas/{flt}-config.schema.json: {line[:100]}")
        for name, cell in zip(names, defaults if len(defaults) == len(names) else []):
            prop = lookup(root, name)
            if prop is None or "default" not in prop:
                continue
            documented = readme_default(cell)
            if documented is ... and cell in ("none", "—", "-"):
                problems.append(f"`{name}`: README says no default ({cell}), the schema's is {json.dumps(prop['default'])}")
            elif documented is not ... and documented != prop["default"]:
                problems.append(f"`{name}`: README says the default is {cell}, the schema's is {json.dumps(prop['default'])}")
    # Every top-level field has a row (its own or a dotted one).
    for prop in root["properties"]:
        if not any(n == prop or n.startswith(prop + ".") for n in named):
            problems.append(f"schemas/{flt}-config.schema.json field `{prop}` has no row in the README's configuration table")
    # An object documented field by field (dotted rows, no row of its own) lists every field.
    parents = {n.rsplit(".", 1)[0] for n in named if "." in n}
    for parent in sorted(parents):
        if parent in own_rows:
            continue
        node = lookup(root, parent)
        if node is None:
            continue
        node = _resolve(root, node)
        if node.get("type") == "array":
            node = _resolve(root, node.get("items", {}))
        for prop in node.get("properties", {}):
            if f"{parent}.{prop}" not in named:
                problems.append(f"`{parent}.{prop}` (schemas/{flt}-config.schema.json) has no row in the README's `{parent}` rows")
    assert not problems, f"filters/{flt}/README.md and its schema disagree:\n  " + "\n  ".join(problems)


# ---- audit records ---------------------------------------------------------------------------
# Every record the e2e tests read is validated against schemas/audit-record.schema.json
# (tests/audit_schema.py, called by harness.Envoy.audit_records / wait_audit).

DETAIL = {"llm": "LlmDetail", "mcp": "McpDetail", "a2a": "A2aDetail"}


def test_the_audit_schema_refuses_a_field_it_does_not_list():
    import audit_schema
    record = {"schema": "tollgate.audit/v1", "layer": "llm", "timestamp_ms": 1, "identity": None,
              "decision": "allow", "enforced": True, "stream": False, "usage_injected": False,
              "tokens": {k: 0 for k in ("input", "output", "cached_input", "cache_creation", "reasoning", "total")},
              "estimated": False, "request_bytes": 1, "response_bytes": 0, "completed": True}
    assert audit_schema.problems(record) == []
    assert any("requested_model" in p for p in audit_schema.problems({**record, "requested_model": "m"}))
    assert audit_schema.problems({**record, "layer": "mcp"}), "an LLM detail is not an MCP record"


@pytest.mark.parametrize("flt", FILTERS)
def test_readme_names_every_audit_field_of_its_layer(flt):
    root = schema("audit-record")
    readme = (REPO / "filters" / flt / "README.md").read_text()
    named = set(re.findall(r"`([a-z_0-9]+)", readme))
    missing = [p for p in root["$defs"][DETAIL[flt]]["properties"] if p not in named]
    assert not missing, f"filters/{flt}/README.md does not name the audit fields {missing} (schemas/audit-record.schema.json)"


def test_the_llm_readme_lists_only_fields_its_records_have():
    root = schema("audit-record")
    readme = (REPO / "filters" / "llm" / "README.md").read_text()
    m = re.search(r"Fields beside the core envelope:(.*?)\n- \*\*Metrics\*\*", readme, re.S)
    assert m, "filters/llm/README.md: the audit paragraph ('Fields beside the core envelope: ...') is gone"
    listed = re.findall(r"`([a-z_0-9]+)`?\s*[,{(]|`([a-z_0-9]+)`", m.group(1))
    names = {a or b for a, b in listed}
    fields = set(root["$defs"]["LlmDetail"]["properties"]) | set(root["properties"])
    values = {"deny", "rate_limited", "exceeds_limit", "requests", "tokens", "cost_micro_usd"} | \
        set(root["$defs"]["LlmDetail"]["properties"]["limit"]["properties"]) | \
        set(root["$defs"]["LlmDetail"]["properties"]["reserved"]["properties"]) | set(root["$defs"]["TokenCounts"]["properties"])
    unknown = sorted(n for n in names if n not in fields and n not in values)
    assert not unknown, f"filters/llm/README.md names audit fields its records do not have: {unknown}"
