#!/usr/bin/env bash
# Instructions per benchmark request of each filter's own code, counted natively with
# callgrind (exact, unlike timings on a shared machine). Each filter's host-call budget test
# drives its `make bench` request through the Exchange against the in-memory host; with
# TOLLGATE_PROFILE_ROUNDS=N it first runs N quiet rounds, so
#   instructions per request = (I(N) - I(0)) / N.
# The in-memory host's own work is included (its own row in the breakdown); host calls'
# cost inside Envoy is not (bench/hostcalls.py measures that).
#
#   bash bench/profile.sh            # PROFILE_ROUNDS=500 by default; then a breakdown by part
#   PROFILE_ONLY=a2a bash bench/profile.sh   # one filter's rows only
# Outputs stay in target/profile/<filter>.<rounds>.callgrind for callgrind_annotate.
# The second column leaves out the C library (natively glibc's malloc, whose instructions
# per call shift with the heap's history even when the calls do not; in wasm the
# allocator is dlmalloc): compare that column between two versions of the code.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null 2>&1 || { echo "profile: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
export CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 CARGO_TARGET_DIR=target/profile
rounds=${PROFILE_ROUNDS:-500}
echo "| filter | request | instructions per request | without the C library |"
echo "|---|---|---|---|"
for entry in "llm:a_chat_completion_stays_within_its_host_call_budget:chat completion (key, route, usage, cost, audit)" \
             "mcp:a_tool_call_stays_within_its_host_call_budget:tools/call (policy with an argument rule, audit)" \
             "a2a:a_send_message_stays_within_its_host_call_budget:SendMessage (tagging, trace, signed context, audit)" \
             "a2a:a_send_message_without_filter_state_tags_stays_within_its_host_call_budget:SendMessage, filter_state_tags false"; do
  IFS=: read -r filter test what <<<"$entry"
  [ -z "${PROFILE_ONLY:-}" ] || [ "$filter" = "$PROFILE_ONLY" ] || continue
  # Output files by filter (bench/breakdown.py reads <filter>.<rounds>.callgrind); a variant's
  # files get their own name.
  name=$filter
  case $test in *without_filter_state_tags*) name=$filter-notags ;; esac
  bin=$(cargo test --release -p "tollgate-$filter" --lib --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -1)
  count() {
    TOLLGATE_PROFILE_ROUNDS=$1 valgrind --tool=callgrind --callgrind-out-file="target/profile/$name.$1.callgrind" \
      "$bin" "$test" --test-threads=1 -q 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
  }
  # Instructions outside the C library and the dynamic loader (by object, bench/breakdown.py).
  own() { python3 bench/breakdown.py --own "target/profile/$name.$1.callgrind"; }
  base=$(count 0)
  many=$(count "$rounds")
  echo "| $filter | $what | $(( (many - base) / rounds )) | $(( ($(own "$rounds") - $(own 0)) / rounds )) |"
done
echo
echo "Where they go (inclusive instructions per request; rows overlap, see bench/breakdown.py):"
echo
python3 bench/breakdown.py "$rounds"
