#!/usr/bin/env bash
# Fuzzes the decoders and file readers (tests/fuzz, proptest) for minutes: each target
# (atom, aurinko, vcard, saved_plan, desired, dv, answers) runs for SECONDS (default 120), split
# among its properties, one property at a time. Prints per target the cases run and the
# time; exits non-zero if a target found a crash (the smallest input it shrank to is saved
# under the target dir's tmp/fuzz-crashes/, and the failure names it).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 300 atom dv
#
# Not part of scripts/test.sh's time: there the same targets run a few dozen cases each.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-120}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(atom aurinko vcard saved_plan desired dv answers)

# The test binary is run directly, so that a hung case is killed with it (not only cargo).
BIN="$(cargo test --locked --test fuzz --no-run 2>&1 | tee /dev/stderr |
  sed -nE 's/.*Executable tests\/fuzz\/main\.rs \((.*)\)$/\1/p' | tail -1)"
[ -x "$BIN" ] || { echo "could not find the fuzz test binary" >&2; exit 2; }
LIST="$("$BIN" --list 2>/dev/null)"

failed=()
for t in "${TARGETS[@]}"; do
  props=$(grep -c "^${t}::fuzz_.*: test$" <<<"$LIST" || true)
  if [ "$props" = 0 ]; then
    echo "no such target: $t (atom, aurinko, vcard, saved_plan, desired, dv, answers)" >&2
    exit 2
  fi
  per=$(awk -v s="$SECS" -v n="$props" 'BEGIN { printf "%.1f", s / n }')
  log="$(mktemp)"
  start=$(date +%s)
  # A hang is a finding too: the whole target stops at three times its time.
  set +e
  CONTACTS_ETL_FUZZ_SECS="$per" timeout --signal=KILL $((SECS * 3 + 300)) \
    "$BIN" "${t}::fuzz_" --test-threads=1 --nocapture >"$log" 2>&1
  status=$?
  set -e
  took=$(( $(date +%s) - start ))
  cases=$({ grep -oE 'fuzz [a-z_]+: [0-9]+ cases' "$log" || true; } | awk '{ n += $3 } END { print n + 0 }')
  if [ "$status" = 0 ]; then
    echo "target $t: $cases cases in ${took} s ($props properties), 0 crashes"
  else
    echo "target $t: FAILED after ${took} s (exit $status)"
    grep -E 'fuzz [a-z_]+: |saved: |panicked at' "$log" | head -20 || true
    [ "$status" = 137 ] && echo "  (killed: a case hung, or the run ran far past its time)"
    failed+=("$t")
  fi
  { grep -oE 'fuzz [a-z_]+: [0-9]+ cases in [0-9.]+ s' "$log" || true; } | sed 's/^/  /'
  rm -f "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]}"
  exit 1
fi
