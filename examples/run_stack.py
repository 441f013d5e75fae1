#!/usr/bin/env python3
"""`make run`: the demo stack on localhost — Envoy with all three Tollgate filters
(envoy/stack.yaml) in front of local demo upstreams. Prints a ready-to-paste example per
layer and stops everything on Ctrl-C.

Ports (fixed, as in envoy/stack.yaml): Envoy 10000 (admin 9901); fake LLM providers 8001
and 8002; MCP server 8100; A2A agents 9101 (echo) and 9102 (planner, delegates to echo).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENVOY = str(BIN / "envoy")
GATEWAY = "http://127.0.0.1:10000"

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
        envoy = subprocess.Popen([ENVOY, "-c", "envoy/stack.yaml", "--concurrency", "2", "-l", "warning",
                                  "--component-log-level", "wasm:info"], cwd=REPO, env=env, start_new_session=True)
        procs.append(("envoy", envoy))
        for name, args, ready in UPSTREAMS:
            p = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((name, p))
            wait_ready(ready, p, name)
        wait_ready("http://127.0.0.1:9901/ready", envoy, "envoy")
        print(EXAMPLES, flush=True)
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.5)
        dead = [n for n, p in procs if p.poll() is not None]
        print(f"stopped: {dead} exited", file=sys.stderr)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
