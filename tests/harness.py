"""Test harness: start the real Envoy and real upstream servers on free ports, always stop them.

Envoy configs are the ones shipped in `envoy/`; `render()` rewrites only what a test must:
listener/admin ports, upstream cluster ports, module paths, plugin configurations, and adds
a file access log that writes one audit record per request.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx
import yaml

import audit_schema

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENVOY = str(BIN / "envoy") if (BIN / "envoy").exists() else (shutil.which("envoy") or "envoy")
AUDIT_FORMAT = "%FILTER_STATE(wasm.tollgate.audit:PLAIN)%\n"
WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.popen.returncode}\n{proc.log_tail()}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}\n{proc.log_tail() if proc else ''}")


class Proc:
    """A child process with its output in a log file; stopped by PID (its whole group)."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.popen = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO), env=full_env, start_new_session=True
        )
        self.pid = self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return f"----- {self.name} log (last {lines} lines) -----\n" + "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()


def load_envoy_config(name: str) -> dict:
    return yaml.safe_load((REPO / "envoy" / name).read_text())


def _walk(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def wasm_filters(cfg: dict) -> list[dict]:
    """The `config` blocks of every wasm HTTP filter in the bootstrap."""
    return [n["config"] for n in _walk(cfg) if n.get("@type") == WASM_FILTER_TYPE and "config" in n]


def plugin_config(cfg: dict, root_id: str) -> dict:
    """The parsed JSON plugin configuration of the wasm filter with `root_id`."""
    for c in wasm_filters(cfg):
        if c.get("root_id") == root_id:
            return json.loads(c.get("configuration", {}).get("value", "{}") or "{}")
    raise KeyError(root_id)


def render(
    cfg: dict,
    *,
    upstreams: dict[str, int] | None = None,
    plugin_configs: dict[str, dict | str] | None = None,
    audit_log: Path | None = None,
) -> tuple[dict, dict[str, int], int]:
    """Returns (config, {listener name: port}, admin port)."""
    cfg = copy.deepcopy(cfg)
    admin_port = free_port()
    cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    listener_ports = {}
    for listener in cfg.get("static_resources", {}).get("listeners", []):
        port = free_port()
        listener["address"]["socket_address"]["port_value"] = port
        listener_ports[listener.get("name", "listener")] = port
    for cluster in cfg.get("static_resources", {}).get("clusters", []):
        if upstreams and cluster["name"] in upstreams:
            for ep in _walk(cluster.get("load_assignment", {})):
                if "socket_address" in ep:
                    ep["socket_address"]["address"] = "127.0.0.1"
                    ep["socket_address"]["port_value"] = upstreams[cluster["name"]]
    for node in _walk(cfg):
        fn = node.get("filename")
        if isinstance(fn, str) and fn.endswith(".wasm") and not os.path.isabs(fn):
            node["filename"] = str(REPO / fn)
    for c in wasm_filters(cfg):
        root_id = c.get("root_id")
        if plugin_configs and root_id in plugin_configs:
            value = plugin_configs[root_id]
            c["configuration"] = {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": value if isinstance(value, str) else json.dumps(value),
            }
    if audit_log is not None:
        for node in _walk(cfg):
            if node.get("name") == "envoy.filters.network.http_connection_manager":
                node["typed_config"].setdefault("access_log", []).append({
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": str(audit_log),
                        "log_format": {"text_format_source": {"inline_string": AUDIT_FORMAT}},
                    },
                })
    return cfg, listener_ports, admin_port


class Envoy:
    """A running Envoy with helpers to read its stats and audit records."""

    def __init__(self, cfg: dict, workdir: Path, concurrency: int = 1, name: str = "envoy", **render_args):
        self.audit_log = workdir / f"{name}-audit.log"
        self.config, self.ports, self.admin_port = render(cfg, audit_log=self.audit_log, **render_args)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc = Proc(name, [
            ENVOY, "-c", str(self.config_path), "--concurrency", str(concurrency), "--use-dynamic-base-id",
            "-l", "warning", "--component-log-level", "wasm:info",
            "--file-flush-interval-msec", "50",
        ], workdir)
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        wait_until(lambda: httpx.get(f"{self.admin}/ready", timeout=1).status_code == 200, 30, "envoy ready", self.proc)

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        text = httpx.get(f"{self.admin}/stats", timeout=5).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            try:
                out[name] = int(value)
            except ValueError:
                pass
        return out

    def stat(self, name: str) -> int:
        return self.stats().get(name, 0)

    def prometheus(self) -> str:
        return httpx.get(f"{self.admin}/stats/prometheus", timeout=5).text

    def audit_records(self, validate: bool = True) -> list[dict]:
        """Every audit record written so far (a JSON array line expands to its records), each
        checked against schemas/audit-record.schema.json unless `validate` is false."""
        records = []
        if not self.audit_log.exists():
            return records
        for line in self.audit_log.read_text().splitlines():
            line = line.strip()
            if not line or line == "-":
                continue
            value = json.loads(line)
            records.extend(value if isinstance(value, list) else [value])
        if validate:
            audit_schema.check(records)
        return records

    def wait_audit(self, count: int, timeout: float = 5, where: Callable[[dict], bool] = lambda r: True) -> list[dict]:
        """Waits until at least `count` records matching `where` were logged; returns them."""
        found: list[dict] = []

        def check() -> bool:
            nonlocal found
            found = [r for r in self.audit_records(validate=False) if where(r)]
            return len(found) >= count

        try:
            wait_until(check, timeout, f"{count} audit records")
        except TimeoutError:
            raise AssertionError(f"expected {count} audit records, got {found}\n{self.proc.log_tail()}")
        audit_schema.check(found)
        return found

    def log(self) -> str:
        return self.proc.log()

    def stop(self) -> None:
        self.proc.stop()


def run_envoy_expect_failure(cfg: dict, workdir: Path, **render_args) -> str:
    """Starts Envoy with a config that must be refused; returns its log once it exits."""
    rendered, _, _ = render(cfg, **render_args)
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    result = subprocess.run(
        [ENVOY, "-c", str(path), "--concurrency", "1", "--use-dynamic-base-id", "-l", "info"],
        capture_output=True, text=True, timeout=60, cwd=str(REPO),
    )
    assert result.returncode != 0, "Envoy started with a bad plugin configuration"
    return result.stdout + result.stderr


def python_server(name: str, script: str, args: list[str], workdir: Path, ready_url: str,
                  env: dict[str, str] | None = None, timeout: float = 30) -> Proc:
    """Starts a Python demo upstream from `examples/` and waits until `ready_url` answers."""
    proc = Proc(name, [sys.executable, str(REPO / script), *args], workdir, env=env)

    def ready() -> bool:
        return httpx.get(ready_url, timeout=1).status_code < 500

    wait_until(ready, timeout, f"{name} ready", proc)
    return proc


FAKE_LLM = "examples/fake_llm/server.py"
# The fake providers behind envoy/llm.yaml's two provider clusters.
FAKE_PROVIDERS = (("alpha", "llm_provider_a"), ("beta", "llm_provider_b"))


def start_fake_providers(workdir: Path, started: list[Proc]) -> tuple[dict[str, str], dict[str, int]]:
    """Starts one fake LLM provider per provider cluster (appended to `started`, which the
    caller stops); returns ({name: base url}, {cluster: port})."""
    urls, ports = {}, {}
    for name, cluster in FAKE_PROVIDERS:
        port = free_port()
        started.append(python_server(f"fake-{name}", FAKE_LLM, ["--host", "127.0.0.1", "--port", str(port), "--name", name],
                                     workdir, f"http://127.0.0.1:{port}/healthz"))
        urls[name] = f"http://127.0.0.1:{port}"
        ports[cluster] = port
    return urls, ports


def new_workdir(prefix: str = "tollgate-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


class DemoMcpGateway:
    """The demo MCP server (`examples/mcp_server/server.py`, started with `server_args`)
    behind an Envoy with one MCP plugin configuration: the server's call log tells what
    reached it."""

    def __init__(self, workdir: Path, name: str, envoy_config: dict, plugin_configs: dict, server_args: list[str]):
        self.procs: list[Proc] = []
        self.port = free_port()
        self.procs.append(python_server(
            f"{name}-server", "examples/mcp_server/server.py", ["--host", "127.0.0.1", "--port", str(self.port), *server_args],
            workdir, f"http://127.0.0.1:{self.port}/_calls"))
        self.envoy = Envoy(envoy_config, workdir, name=name, upstreams={"mcp_demo": self.port}, plugin_configs=plugin_configs)
        self.procs.append(self.envoy.proc)

    def calls(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.port}/_calls", timeout=5).json()

    def reset_calls(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_calls/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
