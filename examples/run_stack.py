#!/usr/bin/env python3
"""`make run`: the demo stack on localhost — Envoy with all three Tollgate filters
(envoy/stack.yaml) in front of local demo upstreams, with Redis and tollgate-limits keeping
the LLM team budget. Prints a ready-to-paste example per layer and stops everything on Ctrl-C.

Ports (fixed, as in envoy/stack.yaml): Envoy 10000 (admin 9901); fake LLM providers 8001
and 8002; MCP server 8100; A2A agents 9101 (echo) and 9102 (planner, delegates to echo);
tollgate-limits 18081 (gRPC); Redis 6380.

State that outlives a restart lives in .run/ (gitignored): .run/redis/ (Redis with
`appendonly yes`: the fleet counters, e.g. `team-monthly-budget`, survive `make run`
restarts; delete the directory to start over) and .run/envoy/ (the generated bootstrap and
the LDS/CDS files of the hot reload).

Hot reload: Envoy reads its listeners and clusters from .run/envoy/lds.yaml and cds.yaml
(file-based dynamic resources, envoy/dynamic.py). While it runs, this script watches
envoy/stack.yaml — edit it (or envoy/llm.yaml, mcp.yaml, a2a.yaml: they are composed into
stack.yaml by envoy/compose_stack.py first) and the change is renamed into place and picked up
by the running Envoy without a restart; counters and open streams are kept.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "envoy"))
import compose_stack  # noqa: E402
import dynamic  # noqa: E402
import yaml  # noqa: E402

BIN = Path(sys.executable).parent
ENVOY = str(BIN / "envoy")
GATEWAY = "http://127.0.0.1:10000"
ADMIN = "http://127.0.0.1:9901"
STATE = REPO / ".run"
REDIS_PORT = 6380
LIMITS_ADDR = "127.0.0.1:18081"  # the tollgate_limits cluster of envoy/stack.yaml
LIMITS_BIN = REPO / "target" / "release" / "tollgate-limits"
STACK = REPO / "envoy" / "stack.yaml"
LAYERS = [REPO / "envoy" / f"{n}.yaml" for n in ("llm", "mcp", "a2a")]

UPSTREAMS = [
    ("fake-llm-a", ["examples/fake_llm/server.py", "--port", "8001", "--name", "provider-a"], "http://127.0.0.1:8001/healthz"),
    ("fake-llm-b", ["examples/fake_llm/server.py", "--port", "8002", "--name", "provider-b"], "http://127.0.0.1:8002/healthz"),
    ("mcp-server", ["examples/mcp_server/server.py", "--port", "8100"], "http://127.0.0.1:8100/_calls"),
    ("agent-echo", ["examples/a2a_agent/agent.py", "--port", "9101", "--name", "echo",
                    "--public-url", "http://127.0.0.1:9101/"], "http://127.0.0.1:9101/.well-known/agent-card.json"),
    ("agent-planner", ["examples/a2a_agent/agent.py", "--port", "9102", "--name", "planner",
                       "--public-url", "http://127.0.0.1:9102/", "--delegate-to", f"{GATEWAY}/agents/echo/"],
     "http://127.0.0.1:9102/.well-known/agent-card.json"),
]

EXAMPLES = f"""
Tollgate demo stack is up: Envoy on {GATEWAY} (admin http://127.0.0.1:9901), audit lines below.

# Models (LLM gateway): a Tollgate virtual key, routed by model, tokens and cost recorded
curl -s {GATEWAY}/v1/chat/completions -H 'Authorization: Bearer tg-demo-alice' \\
  -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hello there"}}]}}'

curl -sN {GATEWAY}/v1/messages -H 'x-api-key: tg-demo-alice' -H 'anthropic-version: 2023-06-01' \\
  -H 'content-type: application/json' \\
  -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'

# Tools (MCP gateway): alice sees and may call only what the policy allows
curl -s {GATEWAY}/mcp -H 'Authorization: Bearer tg-demo-alice' -H 'content-type: application/json' \\
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \\
  -d '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"query_db","arguments":{{"table":"users","sql":"select 1"}}}}}}'

# Agents (A2A gateway): the card points at the gateway; planner delegates to echo through it
curl -s {GATEWAY}/agents/planner/.well-known/agent-card.json
curl -s {GATEWAY}/agents/planner/ -H 'A2A-Version: 1.0' -H 'content-type: application/json' \\
  -H 'Authorization: Bearer tg-demo-alice' \\
  -d '{{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{{"message":{{"messageId":"m1","role":"ROLE_USER","parts":[{{"text":"hi"}}]}}}}}}'

# Metrics with labels
curl -s http://127.0.0.1:9901/stats/prometheus | grep '^tollgate_'

# The team budget (team-monthly-budget, a calendar month) is counted in Redis: it survives a
# restart of `make run` (state in .run/redis/). Hot reload: edit envoy/stack.yaml (or
# envoy/llm.yaml, mcp.yaml, a2a.yaml) and the running Envoy picks it up.

Ctrl-C stops everything.
"""


def wait_ready(url: str, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{name} not ready at {url}")


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def grpc_serving(addr: str) -> bool:
    """grpc.health.v1.Health/Check over HTTP/2 cleartext: SERVING (Redis answers too)."""
    try:
        with httpx.Client(http1=False, http2=True, timeout=1) as c:
            r = c.post(f"http://{addr}/grpc.health.v1.Health/Check", content=b"\x00\x00\x00\x00\x00",
                       headers={"content-type": "application/grpc", "te": "trailers"})
            return r.status_code == 200 and r.content[5:] == b"\x08\x01"  # status: SERVING
    except Exception:
        return False


def wait_for(check, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"{name} not ready")


def admin_stat(name: str) -> int:
    try:
        text = httpx.get(f"{ADMIN}/stats?filter=^{name}$", timeout=2).text
        return int(text.partition(": ")[2] or 0)
    except Exception:
        return -1


class Watcher:
    """Polls envoy/stack.yaml and the layer configs; a layer change is composed into
    stack.yaml, a stack.yaml change is written to the LDS/CDS files (renamed into place)."""

    def __init__(self, xds: Path):
        self.xds = xds
        self.seen = {p: self.mtime(p) for p in [STACK, *LAYERS]}

    @staticmethod
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0

    def changed(self, paths) -> bool:
        out = False
        for p in paths:
            m = self.mtime(p)
            if m != self.seen[p]:
                self.seen[p] = m
                out = True
        return out

    def poll(self) -> None:
        if self.changed(LAYERS):
            try:
                STACK.write_text(compose_stack.render())
                print("[reload] envoy/stack.yaml recomposed from the layer configs", flush=True)
            except Exception as e:  # a half-edited file: wait for the next save
                print(f"[reload] not composed: {e}", file=sys.stderr, flush=True)
        if not self.changed([STACK]):
            return
        try:
            cfg = yaml.safe_load(STACK.read_text())
        except Exception as e:
            print(f"[reload] envoy/stack.yaml not read: {e}", file=sys.stderr, flush=True)
            return
        success, rejected = admin_stat("listener_manager.lds.update_success"), admin_stat("listener_manager.lds.update_rejected")
        written = dynamic.write_resources(cfg, self.xds)
        if not written:
            print("[reload] envoy/stack.yaml changed outside listeners and clusters: restart `make run` to apply", flush=True)
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if admin_stat("listener_manager.lds.update_rejected") > rejected or admin_stat("cluster_manager.cds.update_rejected") > 0:
                print(f"[reload] Envoy REJECTED {written}: see its log; the previous config stays active", flush=True)
                return
            if "lds.yaml" not in written or admin_stat("listener_manager.lds.update_success") > success:
                print(f"[reload] applied {written} to the running Envoy", flush=True)
                return
            time.sleep(0.2)
        print(f"[reload] wrote {written}; Envoy has not confirmed it yet", flush=True)


def main() -> None:
    procs: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_):
        for name, p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    # Provider credentials reach the LLM module through vm_config.environment_variables in
    # envoy/stack.yaml (demo values there; use host_env_keys for real ones).
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        # Redis, persistent across restarts, then tollgate-limits on it (the fleet counters).
        (STATE / "redis").mkdir(parents=True, exist_ok=True)
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                                  "--dir", str(STATE / "redis"), "--appendonly", "yes", "--save", "60 1"],
                                 cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        procs.append(("redis", redis))
        wait_for(lambda: redis_ready(REDIS_PORT), redis, "redis")
        if not LIMITS_BIN.exists():
            raise SystemExit(f"{LIMITS_BIN} is missing: run `make limits-service`")
        limits = subprocess.Popen([str(LIMITS_BIN), "--listen", LIMITS_ADDR, "--redis", f"redis://127.0.0.1:{REDIS_PORT}/"],
                                  cwd=REPO, env=env, start_new_session=True)
        procs.append(("tollgate-limits", limits))
        wait_for(lambda: grpc_serving(LIMITS_ADDR), limits, "tollgate-limits")
        # Envoy with file-based LDS/CDS (hot reload), generated from envoy/stack.yaml.
        xds = STATE / "envoy"
        bootstrap = dynamic.write_all(yaml.safe_load(STACK.read_text()), xds)
        watcher = Watcher(xds)
        envoy = subprocess.Popen([ENVOY, "-c", str(bootstrap), "--concurrency", "2", "-l", "warning",
                                  "--component-log-level", "wasm:info"], cwd=REPO, env=env, start_new_session=True)
        procs.append(("envoy", envoy))
        for name, args, ready in UPSTREAMS:
            p = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((name, p))
            wait_ready(ready, p, name)
        wait_ready(f"{ADMIN}/ready", envoy, "envoy")
        print(EXAMPLES, flush=True)
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.5)
            watcher.poll()
        dead = [n for n, p in procs if p.poll() is not None]
        print(f"stopped: {dead} exited", file=sys.stderr)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
