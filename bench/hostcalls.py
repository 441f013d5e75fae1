"""What one proxy-wasm host call costs inside Envoy 1.40 (V8), measured, not assumed.

Runs bench/floor (the empty filter) once per kind of host call, configured to make that
call N times per request after reading the body, plus once making none; each under the
same closed-loop load as `make bench` (wrk, A2A SendMessage request, canned upstream,
Envoy pinned to core 0). Cost of one call = (1/req_s(call) - 1/req_s(none)) / N.
Prints a markdown table. Noisy on a shared machine (each row is a median of REPS runs).

    .venv/bin/python bench/hostcalls.py            # after `make build` and bench/run.sh once
    HOSTCALLS_N=20 HOSTCALLS_REPS=3 HOSTCALLS_SECONDS=3 .venv/bin/python bench/hostcalls.py
"""
from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import harness  # noqa: E402

CALLS = ["get_header", "get_headers", "set_header", "remove_absent_header", "set_headers", "get_property",
         "set_property", "get_shared_data", "set_shared_data", "increment_metric", "clock"]


def main() -> int:
    n = int(os.environ.get("HOSTCALLS_N", "20"))
    reps = int(os.environ.get("HOSTCALLS_REPS", "3"))
    seconds = float(os.environ.get("HOSTCALLS_SECONDS", "3"))
    if not bench.FLOOR_WASM.is_file():
        print(f"{bench.FLOOR_WASM} missing: cargo build --release --target wasm32-wasip1 -p tollgate-bench-floor")
        return 2
    bench.WORKDIR = harness.new_workdir("tollgate-hostcalls-")
    canned = bench.start_canned()
    req = bench.workload("a2a").request
    envs: dict[str, bench.Envoy] = {}
    try:
        for call in ["none", *CALLS]:
            cfg = bench.floor_config("a2a", f"{call}={n}")
            env = bench.Envoy(f"hostcalls-{call}", cfg, core=bench.ENVOY_CORE,
                              upstreams={c: canned.port for c in bench.cluster_names(cfg)})
            env.script = bench.wrk_script(req, f"hostcalls-{call}")
            bench.run_wrk(env.url(req.path), env.script, 1, 32)
            envs[call] = env
        rps: dict[str, list[float]] = {k: [] for k in envs}
        for _ in range(reps):
            for call, env in envs.items():
                rps[call].append(bench.run_wrk(env.url(req.path), env.script, seconds, 32, env.pid)["rps"])
        base = statistics.median(rps["none"])
        print(f"| host call ({n} per request) | req/s | cost of one call (us) |")
        print("|---|---|---|")
        print(f"| none (empty filter) | {base:.0f} | - |")
        for call in CALLS:
            r = statistics.median(rps[call])
            print(f"| `{call}` | {r:.0f} | {(1 / r - 1 / base) * 1e6 / n:.2f} |")
    finally:
        for env in envs.values():
            env.stop()
        canned.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
