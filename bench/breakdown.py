"""Where each filter's instructions go, per benchmark request (from bench/profile.sh's files).

Reads target/profile/<filter>.0.callgrind and <filter>.<N>.callgrind and prints, for the
parts named below, their inclusive instructions per request ((I(N) - I(0)) / N, summed over
every function whose name contains the part's pattern, whatever file its inlined code came
from). Rows overlap (a callback includes the audit record it writes, its allocations and the
test host's work it causes): each says what one piece of work costs, not a partition. The
in-memory test host (maps standing in for Envoy's side of the host calls) has its own row.
The LLM workload is the budget test's small chat request, not the bench's 4 KB one.

    python3 bench/breakdown.py 200      # after PROFILE_ROUNDS=200 bash bench/profile.sh
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

PROFILE = Path(__file__).resolve().parent.parent / "target" / "profile"
# Pseudo-function: the allocator's cost when called from outside the test harness.
ALLOCATED = "(allocator called from outside the test harness)"

# (filter, part, [function-name patterns]); a function counts once per part even if several
# patterns match it.
PARTS: list[tuple[str, str, list[str]]] = [
    ("llm", "request headers (key check, trace)", ["HttpExchange>::on_request_headers"]),
    ("llm", "request body (parse, route, limits, forward-time record)", ["HttpExchange>::on_request_body"]),
    ("llm", "response headers + body (usage, final record, metrics)", ["HttpExchange>::on_response_headers", "HttpExchange>::on_response_body"]),
    ("llm", "audit records (build + serialize, both)", ["Exchange::write_record"]),
    ("llm", "  of which JSON serialization", ["tollgate_core::audit::to_json"]),
    ("llm", "metrics (name lookup + update)", ["tollgate_llm::record::emit_metrics", "tollgate_core::metrics::Metrics::inc"]),
    ("llm", "request JSON parse", ["tollgate_llm::api::parse_request"]),
    ("llm", "response usage scan", ["tollgate_llm::usage::UsageTracker::feed"]),
    ("llm", "SHA-256 (API key)", ["tollgate_core::hash::sha256_hex"]),
    ("mcp", "request headers (key check, server, trace)", ["HttpExchange>::on_request_headers"]),
    ("mcp", "request body (parse, policy, arguments)", ["HttpExchange>::on_request_body"]),
    ("mcp", "  of which JSON-RPC parse + duplicate-key check", ["tollgate_core::jsonrpc::parse_body_unique_as"]),
    ("mcp", "  of which policy decision", ["tollgate_mcp::policy::Policy::"]),
    ("mcp", "response headers + body (result check, audit record)", ["HttpExchange>::on_response_headers", "HttpExchange>::on_response_body"]),
    ("mcp", "audit record (build, serialize, metrics)", ["tollgate_mcp::exchange::Exchange::finish"]),
    ("mcp", "metrics (name lookup + update)", ["tollgate_core::metrics::Metrics::inc"]),
    ("mcp", "SHA-256 (API key, arguments digest)", ["tollgate_core::hash::sha256_hex"]),
    ("a2a", "request headers (identity, agent, trace)", ["HttpExchange>::on_request_headers"]),
    ("a2a", "request body (classify, ids, trace, delegation, tags)", ["HttpExchange>::on_request_body"]),
    ("a2a", "  of which JSON-RPC parse + duplicate-key check", ["tollgate_a2a::classify::classify_rpc"]),
    ("a2a", "  of which signed delegation context (HMAC)", ["tollgate_a2a::chain::sign"]),
    ("a2a", "response body (ids, conversation table)", ["HttpExchange>::on_response_body"]),
    ("a2a", "  of which conversation table writes", ["tollgate_a2a::flow::Exchange::record_response_ids"]),
    ("a2a", "tags published as filter state", ["tollgate_a2a::flow::Exchange::set_filter_state"]),
    ("a2a", "end of stream: audit record, metrics", ["HttpExchange>::on_log"]),
]
# Everywhere: allocation and the test host.
COMMON: list[tuple[str, list[str], bool]] = [
    ("memory allocation by the filter (glibc here, dlmalloc in the wasm)", [ALLOCATED], True),
    ("in-memory test host (stands in for Envoy; not in the wasm)", ["<tollgate_core::host::MemoryHost as tollgate_core::host::Host>::"], False),
]


HARNESS = ("MemoryHost", "::tests::", "tollgate_core::testing::", "BTreeMap")
ALLOCATOR = ("malloc", "free", "realloc")


def inclusive_costs(path: Path) -> dict[str, int]:
    """Function name -> inclusive instructions (self + calls made from it; a function's
    calls to itself are not added again). The key ALLOCATED holds what the allocator cost
    when called from outside the test harness."""
    names: dict[str, str] = {}
    cost: dict[str, int] = defaultdict(int)
    fn = callee = None
    after_calls = False
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, idx, name = m.groups()
            if name:
                names[idx] = name
            if kind == "fn":
                fn = names.get(idx)
            else:
                callee = names.get(idx)
            continue
        if line.startswith("calls="):
            after_calls = True
            continue
        if fn is None or not line or not (line[0].isdigit() or line[0] in "+-*"):
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and not (after_calls and callee == fn):
            # Self cost, or (right after calls=) the inclusive cost of that call.
            cost[fn] += int(parts[1])
            if after_calls and callee in ALLOCATOR and fn not in ALLOCATOR and not any(h in fn for h in HARNESS):
                cost[ALLOCATED] += int(parts[1])
        after_calls = False
    return cost


def per_request(base: dict[str, int], many: dict[str, int], rounds: int, patterns: list[str], exact: bool = False) -> int:
    total = 0
    for name in set(base) | set(many):
        hit = any((name == p) if exact else (p in name) for p in patterns)
        if hit:
            total += many.get(name, 0) - base.get(name, 0)
    return total // rounds


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print("| filter | part | instructions per request |")
    print("|---|---|---|")
    for flt in ("llm", "mcp", "a2a"):
        files = [PROFILE / f"{flt}.0.callgrind", PROFILE / f"{flt}.{rounds}.callgrind"]
        if not all(f.is_file() for f in files):
            print(f"| {flt} | missing {files[1].name}: run bench/profile.sh first | - |")
            continue
        base, many = (inclusive_costs(f) for f in files)
        for layer, part, patterns in PARTS:
            if layer == flt:
                print(f"| {flt} | {part} | {per_request(base, many, rounds, patterns):,} |")
        for part, patterns, exact in COMMON:
            print(f"| {flt} | {part} | {per_request(base, many, rounds, patterns, exact):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
