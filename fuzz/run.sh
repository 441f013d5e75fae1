#!/usr/bin/env bash
# Runs every fuzz target (or those named) for FUZZ_SECONDS each and prints one summary line
# per target. Installs what it needs: the nightly toolchain and cargo-fuzz.
#   FUZZ_SECONDS   seconds per target (default 180)
#   FUZZ_SANITIZER libFuzzer sanitizer: none (default; the natively built code has no unsafe
#                  code, so AddressSanitizer finds nothing a panic would not) or address
#   FUZZ_JOBS      cargo build jobs (default 2)
# Each target starts from its seeds (fuzz/corpus/<target>), the corpus earlier runs grew
# (fuzz/target/corpus/<target>, not checked in) and its regressions (fuzz/regressions/<target>,
# every one run first: a crash there fails the run). A crash is written to
# fuzz/artifacts/<target>/ and makes the script exit non-zero after all targets ran.
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-180}
SANITIZER=${FUZZ_SANITIZER:-none}
export CARGO_BUILD_JOBS=${FUZZ_JOBS:-2}

rustup toolchain list 2>/dev/null | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cargo +nightly fuzz build -s "$SANITIZER" || exit 1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p target/logs
failed=()
printf '%-14s %12s %10s %8s %s\n' target runs exec/s corpus result
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "corpus/$t"
  dirs=("target/corpus/$t" "corpus/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  log="target/logs/$t.log"
  cargo +nightly fuzz run -s "$SANITIZER" "$t" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_EACH" -dict=dict/json.dict -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  corpus=$(ls "target/corpus/$t" | wc -l)
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="CRASH (see $log, fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
  printf '%-14s %12s %10s %8s %s\n' "$t" "${runs:-?}" "${speed:-?}" "$corpus" "$result"
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
