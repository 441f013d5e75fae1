"""`make run` itself (examples/run_stack.py), started as a user starts it, on ports moved by
--port-offset so it runs beside the tests' own Envoys:

- it prints the demo identities (from the running config) and comes up with the researcher
  agent: alice -> planner -> researcher -> LLM and MCP, one trace across the three layers;
- unknown paths get a plain 404 from the route table, no filter answers them;
- an audit line reaches its terminal within a second of the response (flush interval);
- a second run on the same ports exits 1 at once, naming the port and the process holding it,
  and the first keeps working; readiness checks only accept the run's own processes;
- Ctrl-C stops it with exit 0 and frees every port.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import harness

pytestmark = pytest.mark.timeout(180)

SCRIPT = harness.REPO / "examples" / "run_stack.py"
_spec = importlib.util.spec_from_file_location("run_stack", SCRIPT)
run_stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_stack)

NOT_FOUND = "not found: this gateway serves /v1/ and /v1beta/ (LLM), /mcp (MCP) and /agents/<name>/ (A2A)\n"


@dataclass
class Run:
    proc: subprocess.Popen
    offset: int
    ports: dict[str, int]
    out: Path
    err: Path

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def audit(self) -> list[dict]:
        records = []
        for line in self.stdout().splitlines():
            if line.startswith("[audit] {") or line.startswith("[audit] ["):
                value = json.loads(line[len("[audit] "):])
                records.extend(value if isinstance(value, list) else [value])
        return records

    def stat(self, name: str) -> int:
        return run_stack.admin_stat(self.admin, name)


def stack_ports(offset: int) -> dict[str, int]:
    cfg = run_stack.shift_ports(harness.load_envoy_config("stack.yaml"), offset)
    return {**run_stack.stack_ports(cfg), "redis": run_stack.REDIS_PORT + offset}


def free_offset() -> int:
    for _ in range(50):
        offset = random.randrange(1000, 14000, 10)  # every port stays below the ephemeral range
        if all(run_stack.port_free(p) for p in stack_ports(offset).values()):
            return offset
    raise RuntimeError("no offset with every stack port free")


def start(offset: int, tmp: Path, name: str) -> subprocess.Popen:
    out, err = open(tmp / f"{name}.out", "wb"), open(tmp / f"{name}.err", "wb")
    return subprocess.Popen([sys.executable, str(SCRIPT), "--port-offset", str(offset)], cwd=harness.REPO,
                            stdout=out, stderr=err, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    offset = free_offset()
    proc = start(offset, tmp, "first")
    r = Run(proc, offset, stack_ports(offset), tmp / "first.out", tmp / "first.err")
    try:
        harness.wait_until(lambda: "Tollgate demo stack is up" in r.stdout(), 120, "make run to come up")
    except Exception:
        proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"make run did not come up (exit {proc.poll()}):\n{r.stdout()[-3000:]}\n{r.err.read_text()[-3000:]}")
    yield r
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(harness.REPO / ".run" / f"offset-{offset}", ignore_errors=True)


def test_it_prints_the_demo_identities_from_the_config(run):
    out = run.stdout()
    assert f"Envoy on {run.gateway} (admin {run.admin})" in out
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("  tg-demo-")}
    assert set(lines) == {"tg-demo-alice", "tg-demo-bob", "tg-demo-root", "tg-demo-planner", "tg-demo-researcher"}, out
    assert "LLM as alice (team payments), MCP as alice (groups eng), A2A as alice" in lines["tg-demo-alice"]
    assert "LLM as bob (team research), MCP as bob (groups finance), A2A as bob" in lines["tg-demo-bob"]
    assert lines["tg-demo-root"].split(None, 1)[1] == "MCP as root (groups admins)"
    assert lines["tg-demo-planner"].split(None, 1)[1] == "A2A as svc-planner"
    assert lines["tg-demo-researcher"].split(None, 1)[1] == "LLM as researcher (team research)"
    assert "make key NAME=carol TEAM=payments" in out


@pytest.mark.parametrize("path", ["/", "/agents/nobody/", "/nothing", "/agents/nobody/.well-known/agent-card.json"])
def test_unknown_paths_get_a_plain_404_from_the_route_table(run, path):
    before = {layer: run.stat(f"wasmcustom.tollgate.{layer}.requests") for layer in ("llm", "mcp", "a2a")}
    for method in ("GET", "POST"):
        r = httpx.request(method, run.gateway + path, headers={"authorization": "Bearer tg-demo-alice"},
                          json={"model": "gpt-4o-mini"}, timeout=10)
        assert (r.status_code, r.text) == (404, NOT_FOUND), (method, r.status_code, r.text)
    after = {layer: run.stat(f"wasmcustom.tollgate.{layer}.requests") for layer in ("llm", "mcp", "a2a")}
    assert after == before  # no filter saw them


@pytest.mark.parametrize("path", ["/mcp", "/agents/echo/"])
def test_a_client_set_provider_header_does_not_pull_mcp_or_a2a_onto_the_llm_routes(run, path):
    """The LLM's provider routes match any path carrying x-tollgate-provider (the LLM filter sets
    it); the MCP and A2A routes come first, so their own filter still judges such a request."""
    layer = "mcp" if path == "/mcp" else "a2a"
    before = {n: run.stat(f"wasmcustom.tollgate.{n}.requests") for n in ("llm", layer)}
    r = httpx.post(run.gateway + path, headers={"x-tollgate-provider": "provider-a", "accept": "application/json, text/event-stream",
                                                "a2a-version": "1.0", "mcp-protocol-version": "2025-06-18"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
    assert "LLM API" not in r.text, r.text
    assert run.stat("wasmcustom.tollgate.llm.requests") == before["llm"]
    assert run.stat(f"wasmcustom.tollgate.{layer}.requests") == before[layer] + 1


def test_researcher_is_started_and_one_request_crosses_the_three_layers(run):
    card = httpx.get(f"{run.gateway}/agents/researcher/.well-known/agent-card.json", timeout=10)
    assert card.status_code == 200, card.text
    assert {i["url"] for i in card.json()["supportedInterfaces"]} == {f"{run.gateway}/agents/researcher/"}
    trace = secrets.token_hex(16)
    sent = httpx.post(f"{run.gateway}/agents/planner/", timeout=60,
                      headers={"a2a-version": "1.0", "authorization": "Bearer tg-demo-alice",
                               "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"},
                      json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                          "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}})
    assert sent.status_code == 200, sent.text
    text = json.dumps(sent.json())
    assert "[planner] echo: hi" in text and "[researcher] echo: hi" in text and "mcp: hi" in text, text
    assert "llm: Hello from provider-a" in text, text

    def records() -> list[dict]:
        return [r for r in run.audit() if r.get("trace_id") == trace]
    def seen() -> set:
        return {(r["layer"], f"{r.get('target')}:{r.get('method')}" if r["layer"] == "a2a" else r.get("method"))
                for r in records()}
    wanted = {("a2a", "planner:SendMessage"), ("a2a", "researcher:SendMessage"), ("mcp", "tools/call")}
    try:
        harness.wait_until(lambda: seen() >= wanted and any(r["layer"] == "llm" for r in records()), 10, "three layers")
    except TimeoutError:
        raise AssertionError(f"got {seen()}")
    got = records()
    hops = [r for r in got if r["layer"] == "a2a" and r.get("method") == "SendMessage"]
    assert len(hops) == 2 and all(r["decision"] == "allow" for r in hops), json.dumps([r for r in run.audit() if r["layer"] == "a2a"][-3:])
    (llm,) = [r for r in got if r["layer"] == "llm"]
    assert llm["identity"]["principal"] == "researcher" and llm["status"] == 200, llm
    assert [r["decision"] for r in got if r["layer"] == "mcp" and r.get("tool") == "echo"] == ["allow"], got


def test_an_audit_line_reaches_the_terminal_within_a_second(run):
    for attempt in range(3):  # three requests: each must show within the second
        trace = secrets.token_hex(16)
        r = httpx.post(f"{run.gateway}/v1/chat/completions", timeout=10,
                       headers={"authorization": "Bearer tg-demo-alice", "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "flush me"}]})
        done = time.monotonic()
        assert r.status_code == 200, r.text
        while not any(rec.get("trace_id") == trace for rec in run.audit()):
            assert time.monotonic() - done < 1.0, f"no audit line within 1 s of the response (attempt {attempt})"
            time.sleep(0.02)


def test_readiness_accepts_only_the_runs_own_processes(tmp_path):
    """owns_port: the listening socket must belong to the child itself, not to whoever answers."""
    port = harness.free_port()
    mine = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        harness.wait_until(lambda: not run_stack.port_free(port), 10, "http.server listening")
        assert run_stack.port_holders(port) == [mine.pid]
        assert run_stack.owns_port(mine, port) and not run_stack.owns_port(other, port)
        assert run_stack.http_answers(f"http://127.0.0.1:{port}/")  # answering alone is not enough
    finally:
        for p in (mine, other):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_a_second_run_on_taken_ports_exits_1_naming_the_port_and_its_holder(run, tmp_path):
    started = time.monotonic()
    second = start(run.offset, tmp_path, "second")
    assert second.wait(timeout=30) == 1
    assert time.monotonic() - started < 15
    out, err = (tmp_path / "second.out").read_text(), (tmp_path / "second.err").read_text()
    assert "demo stack is up" not in out, out
    assert "cannot start the demo stack: these ports are already in use" in err, err
    envoy_pids = run_stack.port_holders(run.ports["gateway"])
    assert envoy_pids, "the first run's Envoy holds the gateway port"
    line = next(l for l in err.splitlines() if f"127.0.0.1:{run.ports['gateway']} " in l)
    assert "(Envoy listener)" in line and f"pid {envoy_pids[0]} (" in line and "envoy" in line, line
    assert f"127.0.0.1:{run.ports['redis']} (Redis)" in err, err
    assert "TOLLGATE_PORT_OFFSET=" in err, err
    # `make run` asks the same before it builds anything.
    check = subprocess.run([sys.executable, str(SCRIPT), "--check-ports", "--port-offset", str(run.offset)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and "(Envoy listener): pid" in check.stderr, check.stderr
    check = subprocess.run([sys.executable, str(SCRIPT), "--check-ports", "--port-offset", str(free_offset())],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # The first run is untouched and still serves.
    assert run.proc.poll() is None
    r = httpx.post(f"{run.gateway}/v1/chat/completions", headers={"authorization": "Bearer tg-demo-alice"}, timeout=10,
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]})
    assert r.status_code == 200, r.text


def test_ctrl_c_stops_everything_with_exit_0(run):
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.proc.wait(timeout=30) == 0
    busy = {what: port for what, port in run.ports.items() if not run_stack.port_free(port)}
    assert not busy, busy
