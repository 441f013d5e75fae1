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
# Objects left out of the "own" count: the C library (natively glibc: malloc, free, memcpy)
# and the dynamic loader.
C_LIBRARY = ("libc.so", "libc-", "ld-linux")
# The in-memory test host's side of the host calls.
TEST_HOST = ["MemoryHost as tollgate_core::host::Host>::"]

# (filter, part, [function-name patterns]); a function counts once per part even if several
# patterns match it, and a call between two matching functions once.
PARTS: list[tuple[str, str, list[str]]] = [
    ("llm", "request headers (key check, trace)", ["HttpExchange>::on_request_headers"]),
    ("llm", "request body (parse, route, limits, forward-time record)", ["HttpExchange>::on_request_body"]),
    ("llm", "response headers + body (usage, final record, metrics)", ["HttpExchange>::on_response_headers", "HttpExchange>::on_response_body"]),
    ("llm", "audit records (build + serialize, both)", ["Exchange::write_record"]),
    ("llm", "  of which JSON serialization", ["tollgate_core::observe::audit::to_json"]),
    ("llm", "metrics (name lookup + update)", ["tollgate_llm::record::emit_metrics", "tollgate_core::observe::metrics::Metrics::inc"]),
    ("llm", "request JSON parse", ["tollgate_llm::api::parse_request"]),
    ("llm", "response usage scan", ["tollgate_llm::usage::UsageTracker::feed"]),
    ("llm", "SHA-256 (API key)", ["tollgate_core::hash::sha256_hex"]),
    ("mcp", "request headers (key check, server, trace)", ["HttpExchange>::on_request_headers"]),
    ("mcp", "request body (parse, policy, arguments)", ["HttpExchange>::on_request_body"]),
    ("mcp", "  of which JSON-RPC parse + duplicate-key check", ["tollgate_core::wire::jsonrpc::parse_body_unique_as"]),
    ("mcp", "  of which policy decision", ["tollgate_mcp::policy::Policy::"]),
    ("mcp", "response headers + body (result check, audit record)", ["HttpExchange>::on_response_headers", "HttpExchange>::on_response_body"]),
    ("mcp", "audit record (build, serialize, metrics)", ["tollgate_mcp::exchange::Exchange::finish"]),
    ("mcp", "metrics (name lookup + update)", ["tollgate_core::observe::metrics::Metrics::inc"]),
    ("mcp", "SHA-256 (API key, arguments digest)", ["tollgate_core::hash::sha256_hex"]),
    ("a2a", "request headers (identity, agent, trace)", ["HttpExchange>::on_request_headers"]),
    ("a2a", "request body (classify, ids, trace, delegation, tags)", ["HttpExchange>::on_request_body"]),
    ("a2a", "  of which JSON-RPC parse + duplicate-key check", ["tollgate_a2a::classify::classify_rpc"]),
    ("a2a", "  of which signed delegation context (HMAC)", ["tollgate_a2a::chain::sign", "tollgate_a2a::chain::SignMemo::sign"]),
    ("a2a", "response body (ids, conversation table)", ["HttpExchange>::on_response_body"]),
    ("a2a", "  of which recording response ids (conversation table, tags)", ["tollgate_a2a::exchange::Exchange::record_response_ids"]),
    ("a2a", "tags published as filter state", ["tollgate_a2a::record::Tags::publish"]),
    ("a2a", "end of stream: audit record, metrics", ["HttpExchange>::on_log"]),
]

Parsed = tuple[dict[str, int], dict[str, dict[str, int]], int, int]


def parse(path: Path) -> Parsed:
    """(self cost per function, inclusive cost of the calls per caller -> callee, total,
    total outside the C library and the dynamic loader)."""
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    self_cost: dict[str, int] = defaultdict(int)
    calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total = own = 0
    fn = callee = None
    obj = ""
    after_calls = False
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"(c?fn|c?ob)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, idx, name = m.groups()
            table = objects if kind.endswith("ob") else names
            if name:
                table[idx] = name
            if kind == "fn":
                fn = names.get(idx)
            elif kind == "cfn":
                callee = names.get(idx)
            elif kind == "ob":
                obj = objects.get(idx, "")
            continue
        if line.startswith("positions:") and line.split()[1:] != ["line"]:
            raise SystemExit(f"{path}: positions {line.split()[1:]}: run callgrind with line positions only")
        if line.startswith("calls="):
            after_calls = True
            continue
        if fn is None or not line or not (line[0].isdigit() or line[0] in "+-*"):
            continue
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            cost = int(fields[1])
            if after_calls:
                # The inclusive cost of the call just named.
                if callee is not None:
                    calls[fn][callee] += cost
            else:
                self_cost[fn] += cost
                total += cost
                if not any(lib in obj for lib in C_LIBRARY):
                    own += cost
        after_calls = False
    return self_cost, calls, total, own


def part_cost(parsed: Parsed, patterns: list[str]) -> int:
    """Inclusive cost of the functions matching `patterns`, a call between two of them
    counted once (a matching caller and callee, or recursion, do not add twice)."""
    self_cost, calls, _, _ = parsed
    matched = {f for f in set(self_cost) | set(calls) if any(p in f for p in patterns)}
    return sum(self_cost.get(f, 0) + sum(c for g, c in calls.get(f, {}).items() if g not in matched) for f in matched)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--own":
        # For bench/profile.sh: the instructions outside the C library in one file.
        print(parse(Path(sys.argv[2]))[3])
        return 0
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print("| filter | part | instructions per request |")
    print("|---|---|---|")
    for flt in ("llm", "mcp", "a2a"):
        files = [PROFILE / f"{flt}.0.callgrind", PROFILE / f"{flt}.{rounds}.callgrind"]
        if not all(f.is_file() for f in files):
            print(f"| {flt} | missing {files[1].name}: run bench/profile.sh first | - |")
            continue
        base, many = (parse(f) for f in files)

        def per_request(patterns: list[str]) -> int:
            return (part_cost(many, patterns) - part_cost(base, patterns)) // rounds

        for layer, part, patterns in PARTS:
            if layer == flt:
                print(f"| {flt} | {part} | {per_request(patterns):,} |")
        c_library = ((many[2] - many[3]) - (base[2] - base[3])) // rounds
        print(f"| {flt} | C library: allocator, memcpy (glibc here, dlmalloc in the wasm; the test host's included) | {c_library:,} |")
        print(f"| {flt} | in-memory test host (stands in for Envoy; not in the wasm) | {per_request(TEST_HOST):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
