"""Hot reload (issue 15 item 6): a plugin configuration change reaches a running Envoy through
file-based LDS (envoy/dynamic.py, what `make run` uses) — no restart, no lost counter, no
broken stream.

The shipped envoy/llm.yaml with a per-principal token limit is split into a bootstrap with
`dynamic_resources` (LDS/CDS from files in a watched directory) and the resource files. Alice
spends; bob opens a slow streaming response; the limit's cap is lowered in lds.yaml, renamed
into place; once Envoy reports the new listener, bob's stream still ends normally and alice is
refused against the *old* spend under the *new* cap.
"""
from __future__ import annotations

import json
import sys
import time

import httpx
import pytest
import yaml

import harness

sys.path.insert(0, str(harness.REPO / "envoy"))
import dynamic  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ALICE = "tg-demo-alice"
BOB = "tg-demo-bob"
LIMIT = "principal-tokens"


def set_plugin(cfg: dict, plugin: dict) -> None:
    for c in harness.wasm_filters(cfg):
        if c.get("root_id") == "tollgate.llm":
            c["configuration"]["value"] = json.dumps(plugin)


def body(max_tokens: int, text: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": text}]}).encode()


def test_plugin_config_change_keeps_counters_and_open_streams(tmp_path):
    started: list[harness.Proc] = []
    try:
        _, ports = harness.start_fake_providers(tmp_path, started)
        plugin = harness.plugin_config(harness.load_envoy_config("llm.yaml"), "tollgate.llm")
        plugin["limits"] = [{"id": LIMIT, "scope": "principal", "tokens_per_window": 100_000, "window_secs": 3600}]
        audit = tmp_path / "audit.log"
        cfg, listeners, admin_port = harness.render(harness.load_envoy_config("llm.yaml"), upstreams=ports,
                                                    plugin_configs={"tollgate.llm": plugin}, audit_log=audit)
        xds = tmp_path / "xds"
        boot = dynamic.write_all(cfg, xds)
        assert "static_resources" not in yaml.safe_load(boot.read_text())
        proc = harness.Proc("envoy", [harness.ENVOY, "-c", str(boot), "--concurrency", "2", "--use-dynamic-base-id",
                                      "-l", "warning", "--component-log-level", "wasm:info",
                                      "--file-flush-interval-msec", "50"], tmp_path)
        started.append(proc)
        admin = f"http://127.0.0.1:{admin_port}"
        gw = f"http://127.0.0.1:{next(iter(listeners.values()))}"
        harness.wait_until(lambda: httpx.get(f"{admin}/ready", timeout=1).status_code == 200, 30, "envoy ready", proc)

        def stat(name: str) -> int:
            for line in httpx.get(f"{admin}/stats?filter=^{name}$", timeout=5).text.splitlines():
                key, _, value = line.partition(": ")
                if key == name:
                    return int(value)
            return 0

        def records(where) -> list[dict]:
            out = []
            for line in audit.read_text().splitlines() if audit.exists() else []:
                if line.strip() and line.strip() != "-":
                    v = json.loads(line)
                    out.extend(v if isinstance(v, list) else [v])
            return [r for r in out if where(r)]

        def record(trace_id: str) -> dict:
            found: list[dict] = []

            def done() -> bool:
                found[:] = records(lambda r: r.get("trace_id") == trace_id and r.get("completed", True))
                return bool(found)
            harness.wait_until(done, 10, f"record {trace_id}")
            return found[-1]

        def post(key: str, data: bytes, trace_id: str, **headers) -> httpx.Response:
            return httpx.post(f"{gw}/v1/chat/completions", content=data, timeout=10, headers={
                "authorization": f"Bearer {key}", "content-type": "application/json",
                "traceparent": f"00-{trace_id}-{'1' * 16}-01", **headers})

        assert stat("listener_manager.lds.update_success") >= 1
        # 1. alice spends.
        first = post(ALICE, body(20, "spend some tokens please"), "a" * 32)
        assert first.status_code == 200, first.text
        spent = record("a" * 32)["tokens"]["total"]
        assert spent == first.json()["usage"]["total_tokens"] > 0

        # 2. bob opens a slow stream (20 chunks, 150 ms apart) and reads its first event.
        opened = time.monotonic()
        client = httpx.Client(timeout=30)
        stream_cm = client.stream("POST", f"{gw}/v1/chat/completions", content=body(50, "stream to me", stream=True),
                                  headers={"authorization": f"Bearer {BOB}", "content-type": "application/json",
                                           "traceparent": f"00-{'b' * 32}-{'1' * 16}-01",
                                           "x-fake-chunks": "20", "x-fake-chunk-delay-ms": "150"})
        stream = stream_cm.__enter__()
        assert stream.status_code == 200
        lines = stream.iter_lines()
        received = [next(lines)]
        assert received[0].startswith("data: ")

        # 3. the new configuration: alice's next request must not fit beside what she spent.
        probe = body(40, "after the reload")
        estimate = -(-len(probe) // 4) + 40
        new_cap = spent + estimate - 1  # fits on a fresh counter, not beside the old spend
        plugin["limits"][0]["tokens_per_window"] = new_cap
        set_plugin(cfg, plugin)
        before = stat("listener_manager.lds.update_success")
        assert dynamic.write_resources(cfg, xds) == ["lds.yaml"]

        def new_listener_active() -> bool:
            if stat("listener_manager.lds.update_success") <= before:
                return False
            dump = httpx.get(f"{admin}/config_dump?resource=dynamic_listeners", timeout=5).json()
            active = json.dumps([c.get("active_state", {}) for c in dump.get("configs", [])])
            return (f'\\"tokens_per_window\\": {new_cap}' in active
                    and stat("listener_manager.total_listeners_warming") == 0)
        harness.wait_until(new_listener_active, 20, "the new listener", proc)
        # The stream takes 19 x 150 ms: it was still open when the new listener took over.
        assert time.monotonic() - opened < 2.0, "the reload took longer than the stream"
        assert stat("listener_manager.listener_in_place_updated") == 1
        assert stat("listener_manager.lds.update_rejected") == 0
        assert stat("server.hot_restart_epoch") == 0 and proc.popen.poll() is None  # the same Envoy

        # 4. the stream opened before the reload completes, on the old filter chain.
        received.extend(lines)
        stream_cm.__exit__(None, None, None)
        client.close()
        received = [line for line in received if line]
        assert received[-1] == "data: [DONE]", received[-3:]
        assert sum(1 for line in received if line.startswith("data: {")) >= 20
        streamed = record("b" * 32)
        assert (streamed["completed"], streamed["status"], streamed["estimated"]) == (True, 200, False), streamed

        # 5. the counter survived: refused under the new cap against the old spend.
        refused = post(ALICE, probe, "c" * 32)
        assert refused.status_code == 429, refused.text
        limit = record("c" * 32)["limit"]
        assert (limit["id"], limit["limit"], limit["used"], limit["requested"]) == (LIMIT, new_cap, spent, estimate), limit
    finally:
        for p in reversed(started):
            p.stop()
