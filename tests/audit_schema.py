"""Audit records against `schemas/audit-record.schema.json` (issue 21 item 8).

`harness.Envoy.audit_records` / `wait_audit` check every record a test reads, so a field a
filter writes without a schema entry fails the test that meets it, naming the field.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "audit-record.schema.json"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def problems(record: dict) -> list[str]:
    out = []
    # The most precise first: a bad nested field also fails the layer's branch as a whole, which
    # then reports every detail field as "unevaluated".
    errors = list(_validator().iter_errors(record))
    nested = [e for e in errors for e in ([e] + list(e.context or [])) if e.absolute_path]
    for e in sorted(nested, key=lambda e: -len(e.absolute_path)) or errors:
        where = "/".join(map(str, e.absolute_path)) or "<record>"
        out.append(f"{where}: {e.message}")
    return list(dict.fromkeys(out))


def check(records: list[dict]) -> None:
    """Raises AssertionError naming every record that does not match the schema."""
    bad = []
    for r in records:
        found = problems(r)
        if found:
            bad.append(f"layer {r.get('layer')} record {json.dumps(r)[:300]}:\n    " + "\n    ".join(found))
    if bad:
        raise AssertionError(
            "audit records that do not match schemas/audit-record.schema.json (a new record field needs an "
            "entry there, and in its filter README's audit section):\n  " + "\n  ".join(bad))
