#!/usr/bin/env python3
"""`make run`: the demo stack on localhost — Envoy with all three Tollgate filters
(envoy/stack.yaml) in front of local demo upstreams, with Redis and tollgate-limits keeping
the LLM team budget. Prints a ready-to-paste example per layer and stops everything on Ctrl-C.

Ports (as in envoy/stack.yaml): Envoy 10000 (admin 9901); fake LLM providers 8001 and 8002;
MCP server 8100; A2A agents 9101 (echo), 9102 (planner, delegates to the researcher through the
gateway) and 9103 (researcher: calls the LLM and the MCP tool `echo` through the gateway, so one
request shows a trace across all three layers); tollgate-limits 18081 (gRPC); Redis 6380.
`--port-offset N` (or TOLLGATE_PORT_OFFSET=N) adds N to every one of them, e.g. to run a second
stack beside the first (its state then lives in .run/offset-N/).

Before starting anything, every port is checked: if one is taken, the script names it and the
process holding it (when /proc tells) and exits 1 without starting anything. Readiness checks
only accept the processes this run started (the listening socket belongs to the child's pid;
Envoy's /server_info names this run's node id), so another instance answering on a port never
passes for this one. The script exits 0 on Ctrl-C and 1 when anything fails or dies.

Envoy writes the audit lines to this terminal with --file-flush-interval-msec 100: a record shows
as its request completes (Envoy's default buffers access logs up to 10 s).

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

import argparse
import copy
import errno
import hashlib
import json
import os
import secrets
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
LIMITS_BIN = REPO / "target" / "release" / "tollgate-limits"
STACK = REPO / "envoy" / "stack.yaml"
LAYERS = [REPO / "envoy" / f"{n}.yaml" for n in ("llm", "mcp", "a2a")]
REDIS_PORT = 6380
AUDIT_FLUSH_MSEC = 100

# The demo keys (one naming on every layer: tg-demo-<who>) and what each is for. Which layers
# know a key, with its principal, team and groups, is read from envoy/stack.yaml when printed.
DEMO_KEYS = {
    "tg-demo-alice": "user: every chat model (team payments' monthly budget); MCP add, echo, query_db on "
                     "tables orders/products, prompt greeting, file:///data/*; A2A agents echo and planner",
    "tg-demo-bob": "user: chat models gpt-4o-mini, fast, claude-haiku-* (team research); MCP as alice plus "
                   "transfer up to 1000 (group finance); A2A agents echo and planner",
    "tg-demo-root": "admin: MCP delete_row and admin_* tools besides the everyday ones (group admins)",
    "tg-demo-planner": "the planner agent's own key (svc-planner): trusted to delegate on A2A",
    "tg-demo-researcher": "the researcher agent's LLM key (team research); `make run` gives it to that agent",
}


def stack_ports(cfg: dict) -> dict[str, int]:
    """{"gateway", "admin", <cluster name>...: port} of a stack config."""
    static = cfg["static_resources"]
    ports = {"gateway": static["listeners"][0]["address"]["socket_address"]["port_value"],
             "admin": cfg["admin"]["address"]["socket_address"]["port_value"]}
    for cluster in static["clusters"]:
        for node in _walk(cluster.get("load_assignment", {})):
            if "socket_address" in node:
                ports[cluster["name"]] = node["socket_address"]["port_value"]
    return ports


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def shift_ports(cfg: dict, offset: int) -> dict:
    """`cfg` with every listener, admin and cluster port moved by `offset`."""
    out = copy.deepcopy(cfg)
    if not offset:
        return out
    static = out.get("static_resources", {})
    for node in _walk([static.get("listeners", []), static.get("clusters", []), out.get("admin", {})]):
        addr = node.get("socket_address")
        if isinstance(addr, dict) and "port_value" in addr:
            addr["port_value"] += offset
    return out


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def port_holders(port: int) -> list[int]:
    """Pids of the processes holding a socket listening on `port` (empty when /proc does not say)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    targets = {f"socket:[{i}]" for i in inodes}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def describe_pid(pid: int) -> str:
    try:
        cmd = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
    except OSError:
        cmd = "?"
    return f"pid {pid} ({cmd[:160]})"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def check_ports_free(ports: dict[str, int], offset: int) -> None:
    """Exits 1, naming every taken port and its holder, when any of `ports` is in use."""
    labels = {"gateway": "Envoy listener", "admin": "Envoy admin", "redis": "Redis", "tollgate_limits": "tollgate-limits"}
    taken = [(labels.get(what, f"upstream {what}"), port) for what, port in ports.items() if not port_free(port)]
    if not taken:
        return
    lines = ["make run: cannot start the demo stack: these ports are already in use"]
    for what, port in taken:
        holders = port_holders(port)
        held = ", ".join(describe_pid(p) for p in holders) if holders else "held by a process this user cannot see"
        lines.append(f"  127.0.0.1:{port} ({what}): {held}")
    other = offset + 1000
    lines.append("Another `make run` (or Envoy) may be running: stop it, or start this stack on other ports,")
    lines.append(f"every port moved by N: TOLLGATE_PORT_OFFSET={other} make run  (Envoy then on 127.0.0.1:{10000 + other})")
    raise SystemExit("\n".join(lines))


def _descends_from(pid: int, root: int) -> bool:
    for _ in range(16):
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


def owns_port(proc: subprocess.Popen, port: int) -> bool:
    """The socket listening on `port` belongs to `proc` (or a child of it). Where /proc is not
    readable there is nothing to tell: the ports were checked free before `proc` started."""
    if not Path("/proc/net/tcp").exists():
        return True
    return any(_descends_from(pid, proc.pid) for pid in port_holders(port))


def wait_for(check, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"make run: {name} exited with {proc.returncode} while starting")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"make run: {name} not ready after {timeout:.0f} s")


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status < 500
    except Exception:
        return False


def redis_ready(port: int, proc: subprocess.Popen) -> bool:
    """PONG from the Redis this run started (INFO names its process id)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"INFO server\r\n")
        data = b""
        while b"process_id:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return f"process_id:{proc.pid}\r\n".encode() in data


def grpc_serving(addr: str) -> bool:
    """grpc.health.v1.Health/Check over HTTP/2 cleartext: SERVING (Redis answers too)."""
    try:
        with httpx.Client(http1=False, http2=True, timeout=1) as c:
            r = c.post(f"http://{addr}/grpc.health.v1.Health/Check", content=b"\x00\x00\x00\x00\x00",
                       headers={"content-type": "application/grpc", "te": "trailers"})
            return r.status_code == 200 and r.content[5:] == b"\x08\x01"  # status: SERVING
    except Exception:
        return False


def envoy_is_ours(admin: str, node_id: str) -> bool:
    """The Envoy answering on `admin` is this run's (its node id is this run's token) and ready."""
    info = httpx.get(f"{admin}/server_info", timeout=1).json()
    return info.get("node", {}).get("id") == node_id and info.get("state") == "LIVE"


def admin_stat(admin: str, name: str) -> int:
    try:
        text = httpx.get(f"{admin}/stats?filter=^{name}$", timeout=2).text
        return int(text.partition(": ")[2] or 0)
    except Exception:
        return -1


def identities(cfg: dict) -> str:
    """The demo keys, the layers that know each (principal, team, groups) and what each may do."""
    layers = {}
    for name in ("llm", "mcp", "a2a"):
        for node in _walk(cfg):
            if node.get("root_id") == f"tollgate.{name}" and "configuration" in node:
                plugin = json.loads(node["configuration"]["value"])
                layers[name] = plugin.get("identity", {}).get("api_keys", {}).get("keys", [])
    out = ["Demo identities (demo-only keys; send one as `Authorization: Bearer KEY` or `x-api-key: KEY`;",
           "a new key and its config entry: make key NAME=carol TEAM=payments):"]
    for key, what in DEMO_KEYS.items():
        digest = hashlib.sha256(key.encode()).hexdigest()
        known = []
        for layer, entries in layers.items():
            for e in entries:
                if e.get("sha256", "").lower() == digest:
                    extra = [f"team {e['team']}"] if e.get("team") else []
                    extra += [f"groups {','.join(e['groups'])}"] if e.get("groups") else []
                    known.append(f"{layer.upper()} as {e['principal']}" + (f" ({'; '.join(extra)})" if extra else ""))
        out.append(f"  {key:<20} {', '.join(known) or 'not configured in envoy/stack.yaml'}")
        out.append(f"  {'':<20} {what}")
    return "\n".join(out)


def mcp_example(gateway: str) -> str:
    """The MCP part of the banner: a session (its id is bound to alice by the gateway, so a
    call needs the id `initialize` returned), an allowed call, a call refused for its
    arguments and a tool alice cannot see. bash or zsh; `tests/test_mcp_messages.py` runs it."""
    return f"""# Tools (MCP gateway): alice sees and may call only what the policy allows. A session first:
# initialize, keep the Mcp-Session-Id it returns (the gateway binds it to alice), confirm.
mcp() {{ curl -s {gateway}/mcp -H 'Authorization: Bearer tg-demo-alice' -H 'content-type: application/json' \\
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' -w '\\n' "$@"; }}
SID=$(mcp -D - -o /dev/null -d '{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"curl","version":"0"}}}}}}' \\
  | tr -d '\\r' | awk 'tolower($1) == "mcp-session-id:" {{print $2}}')
mcp -H "mcp-session-id: $SID" -d '{{"jsonrpc":"2.0","method":"notifications/initialized"}}'
# allowed: query_db on a table the policy lets alice read
mcp -H "mcp-session-id: $SID" -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"query_db","arguments":{{"table":"orders","sql":"select 1"}}}}}}'
# refused for its arguments (403, -31403 "Not allowed: tools/call query_db with these arguments")
mcp -H "mcp-session-id: $SID" -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"query_db","arguments":{{"table":"users","sql":"select 1"}}}}}}'
# a tool alice's tools/list does not show: -32602 "Unknown tool: delete_row"
mcp -H "mcp-session-id: $SID" -d '{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"delete_row","arguments":{{"table":"orders","id":1}}}}}}'
"""


def examples(gateway: str, admin: str, ident: str) -> str:
    return f"""
Tollgate demo stack is up: Envoy on {gateway} (admin {admin}), audit lines below.

{ident}

# Models (LLM gateway): a Tollgate virtual key, routed by model, tokens and cost recorded
curl -s {gateway}/v1/chat/completions -H 'Authorization: Bearer tg-demo-alice' \\
  -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hello there"}}]}}'

curl -sN {gateway}/v1/messages -H 'x-api-key: tg-demo-alice' -H 'anthropic-version: 2023-06-01' \\
  -H 'content-type: application/json' \\
  -d '{{"model":"claude-sonnet-4-6","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'

{mcp_example(gateway)}
# Agents (A2A gateway): the card points at the gateway; planner delegates to the researcher
# through it, and the researcher calls the LLM and the MCP tool `echo` through it too: the
# audit lines of all three layers below share one trace_id.
curl -s {gateway}/agents/planner/.well-known/agent-card.json
curl -s {gateway}/agents/planner/ -H 'A2A-Version: 1.0' -H 'content-type: application/json' \\
  -H 'Authorization: Bearer tg-demo-alice' \\
  -d '{{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{{"message":{{"messageId":"m1","role":"ROLE_USER","parts":[{{"text":"hi"}}]}}}}}}'

# Any other path is a plain 404 from the route table
curl -si {gateway}/nothing

# Metrics with labels
curl -s {admin}/stats/prometheus | grep '^tollgate_'

# The team budget (team-monthly-budget, a calendar month) is counted in Redis: it survives a
# restart of `make run` (state in .run/redis/). Hot reload: edit envoy/stack.yaml (or
# envoy/llm.yaml, mcp.yaml, a2a.yaml) and the running Envoy picks it up.

Ctrl-C stops everything.
"""


class Watcher:
    """Polls envoy/stack.yaml and the layer configs; a layer change is composed into
    stack.yaml, a stack.yaml change is written to the LDS/CDS files (renamed into place)."""

    def __init__(self, xds: Path, admin: str, offset: int):
        self.xds, self.admin, self.offset = xds, admin, offset
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
            cfg = shift_ports(yaml.safe_load(STACK.read_text()), self.offset)
        except Exception as e:
            print(f"[reload] envoy/stack.yaml not read: {e}", file=sys.stderr, flush=True)
            return
        stat = lambda name: admin_stat(self.admin, name)  # noqa: E731
        success, rejected = stat("listener_manager.lds.update_success"), stat("listener_manager.lds.update_rejected")
        written = dynamic.write_resources(cfg, self.xds)
        if not written:
            print("[reload] envoy/stack.yaml changed outside listeners and clusters: restart `make run` to apply", flush=True)
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if stat("listener_manager.lds.update_rejected") > rejected or stat("cluster_manager.cds.update_rejected") > 0:
                print(f"[reload] Envoy REJECTED {written}: see its log; the previous config stays active", flush=True)
                return
            if "lds.yaml" not in written or stat("listener_manager.lds.update_success") > success:
                print(f"[reload] applied {written} to the running Envoy", flush=True)
                return
            time.sleep(0.2)
        print(f"[reload] wrote {written}; Envoy has not confirmed it yet", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The Tollgate demo stack (`make run`).")
    parser.add_argument("--port-offset", type=int, default=int(os.environ.get("TOLLGATE_PORT_OFFSET", "0") or 0),
                        help="add N to every port of the stack (default: $TOLLGATE_PORT_OFFSET or 0)")
    parser.add_argument("--check-ports", action="store_true",
                        help="only check that every port of the stack is free (exit 0) or name the taken ones (exit 1)")
    args = parser.parse_args(argv)
    if not -5000 <= args.port_offset <= 50000:
        parser.error("--port-offset must be between -5000 and 50000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    offset = args.port_offset
    cfg = shift_ports(yaml.safe_load(STACK.read_text()), offset)
    ports = stack_ports(cfg)
    ports["redis"] = REDIS_PORT + offset
    gateway, admin = f"http://127.0.0.1:{ports['gateway']}", f"http://127.0.0.1:{ports['admin']}"
    state = REPO / ".run" if not offset else REPO / ".run" / f"offset-{offset}"
    limits_addr = f"127.0.0.1:{ports['tollgate_limits']}"
    node_id = f"tollgate-run-{secrets.token_hex(6)}"  # Envoy's /server_info must name it: this run's Envoy
    upstreams = [
        ("fake-llm-a", "llm_provider_a", ["examples/fake_llm/server.py", "--name", "provider-a"], "/healthz", {}),
        ("fake-llm-b", "llm_provider_b", ["examples/fake_llm/server.py", "--name", "provider-b"], "/healthz", {}),
        ("mcp-server", "mcp_demo", ["examples/mcp_server/server.py"], "/_calls", {}),
        ("agent-echo", "agent_echo", ["examples/a2a_agent/agent.py", "--name", "echo"],
         "/.well-known/agent-card.json", {}),
        ("agent-researcher", "agent_researcher",
         ["examples/a2a_agent/agent.py", "--name", "researcher", "--call-llm", f"{gateway}/v1", "--call-mcp", f"{gateway}/mcp"],
         "/.well-known/agent-card.json", {"AGENT_LLM_KEY": "tg-demo-researcher", "AGENT_LLM_MODEL": "gpt-4o-mini"}),
        ("agent-planner", "agent_planner",
         ["examples/a2a_agent/agent.py", "--name", "planner", "--delegate-to", f"{gateway}/agents/researcher/"],
         "/.well-known/agent-card.json", {}),
    ]
    if args.check_ports:  # `make run` asks this before it builds anything
        try:
            check_ports_free(ports, offset)
        except SystemExit as e:
            print(e.code, file=sys.stderr, flush=True)
            return 1
        return 0
    procs: list[tuple[str, subprocess.Popen]] = []

    def stop_all() -> None:
        for _, p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    class Stop(BaseException):  # not an Exception: the readiness checks' `except Exception` must not swallow Ctrl-C
        pass

    def on_signal(*_):
        raise Stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Provider credentials reach the LLM module through vm_config.environment_variables in
    # envoy/stack.yaml (demo values there; use host_env_keys for real ones).
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        check_ports_free(ports, offset)
        if not LIMITS_BIN.exists():
            raise SystemExit(f"make run: {LIMITS_BIN} is missing: run `make limits-service`")
        # Redis, persistent across restarts, then tollgate-limits on it (the fleet counters).
        (state / "redis").mkdir(parents=True, exist_ok=True)
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]),
                                  "--dir", str(state / "redis"), "--appendonly", "yes", "--save", "60 1"],
                                 cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        procs.append(("redis", redis))
        wait_for(lambda: redis_ready(ports["redis"], redis), redis, "redis")
        limits = subprocess.Popen([str(LIMITS_BIN), "--listen", limits_addr, "--redis", f"redis://127.0.0.1:{ports['redis']}/"],
                                  cwd=REPO, env=env, start_new_session=True)
        procs.append(("tollgate-limits", limits))
        wait_for(lambda: grpc_serving(limits_addr) and owns_port(limits, ports["tollgate_limits"]), limits, "tollgate-limits")
        # Envoy with file-based LDS/CDS (hot reload), generated from envoy/stack.yaml.
        xds = state / "envoy"
        bootstrap = dynamic.write_all(cfg, xds)
        watcher = Watcher(xds, admin, offset)
        envoy = subprocess.Popen([ENVOY, "-c", str(bootstrap), "--concurrency", "2", "-l", "warning",
                                  "--component-log-level", "wasm:info", "--service-node", node_id,
                                  "--disable-hot-restart", "--file-flush-interval-msec", str(AUDIT_FLUSH_MSEC)],
                                 cwd=REPO, env=env, start_new_session=True)
        procs.append(("envoy", envoy))
        for name, cluster, script, ready_path, extra_env in upstreams:
            port = ports[cluster]
            cmd = [sys.executable, *script, "--port", str(port)]
            if script[0].endswith("agent.py"):
                cmd += ["--public-url", f"http://127.0.0.1:{port}/"]
            p = subprocess.Popen(cmd, cwd=REPO, env={**env, **extra_env}, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((name, p))
            url = f"http://127.0.0.1:{port}{ready_path}"
            wait_for(lambda: http_answers(url) and owns_port(p, port), p, name)
        wait_for(lambda: envoy_is_ours(admin, node_id) and http_answers(f"{admin}/ready"), envoy, "envoy")
        print(examples(gateway, admin, identities(cfg)), flush=True)
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.5)
            watcher.poll()
        dead = [f"{n} (exit {p.returncode})" for n, p in procs if p.poll() is not None]
        print(f"make run: stopped, {', '.join(dead)} exited", file=sys.stderr, flush=True)
        return 1
    except Stop:
        return 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr, flush=True)
            return 1
        return e.code or 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
