#!/usr/bin/env bash
# Benchmarks B1-B10 of BENCHMARKS.md, side by side in one run, on the release build and the
# built-in emulator. Prints a results table (medians of RUNS runs, peak RSS from
# /usr/bin/time -v) to stdout and to target/bench/results.md.
#   scripts/bench.sh                 # the full suite (50,000 / 500,000 / 1,000,000 contacts)
#   SCALE=0.1 scripts/bench.sh       # everything at a tenth of the size, for a quick look
#   ONLY=B9 scripts/bench.sh         # only B9 (many small accounts); B9_BIG=1 adds 10,000;
#                                    # B9_HISTORY=N no-change runs after (16)
#   ONLY=B10 scripts/bench.sh        # only B10 (a full sync from an independent server)
#   DENSE= scripts/bench.sh          # the emulator's plain data instead of --dense
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"
RUNS="${RUNS:-3}"
N=$(python3 -c "print(int(50000*$SCALE))")
N_BIG=$(python3 -c "print(int(500000*$SCALE))")
N_SQL_PER=$(python3 -c "print(int(50000*$SCALE))")
CACHE="${CONTACTS_ETL_CACHE:-$HOME/.cache/contacts-etl}"
OUT=target/bench; mkdir -p "$OUT"; : > "$OUT/log"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
PEER="$CACHE/bench-peer"
# Checked by importing, not by the interpreter's presence: a venv left half-installed
# (pyarrow without its shared libraries) was taken as ready and the peer failed.
if ! "$PEER/bin/python" -c "import requests, lxml, pyarrow" 2>/dev/null; then
  python3 -m venv "$PEER" && "$PEER/bin/pip" install --quiet --disable-pip-version-check --force-reinstall requests==2.34.2 lxml==6.1.3 pyarrow==26.0.1
fi
[ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build --release --quiet  # BENCH_NO_BUILD=1: the binary as built
# The build may live outside the clone (CARGO_TARGET_DIR, as .ci/run sets it).
BIN="${CARGO_TARGET_DIR:-target}/release/contacts-etl"
TOKEN=emulator-token
WORK=$(mktemp -d); export LOG="$WORK/apply.log"; trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_emu() { # args… ; sets URL and EMU_PID
  "$BIN" emulator --port 0 --aurinko-page-size 1000 "$@" >"$WORK/emu.url" 2>"$WORK/emu.log" &
  EMU_PID=$!
  for _ in $(seq 600); do [ -s "$WORK/emu.url" ] && break; sleep 0.1; done
  URL=$(head -1 "$WORK/emu.url")
}
# By process id: a job number (`%1`) can name another job or none once jobs have come
# and gone, and a bare `wait` then waited forever on an emulator left running.
stop_emu() { kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timed() { # label cmd… → prints wall seconds (to the millisecond; /usr/bin/time rounds to
  # 10 ms, too coarse for B4's 80 ms); RSS (KiB) to $WORK/rss.$label
  local label=$1 t0 t1; shift
  t0=$(date +%s%N)
  if ! /usr/bin/time -v -o "$WORK/time.$label" "$@" >/dev/null 2>>"$OUT/log"; then
    echo "benchmark step $label failed: $*" >&2; tail -20 "$OUT/log" >&2; exit 1
  fi
  t1=$(date +%s%N)
  python3 -c "print(f'{($t1 - $t0) / 1e9:.3f}')"
  awk -F': ' '/Maximum resident/ {print $2}' "$WORK/time.$label" > "$WORK/rss.$label"
}
cpu() { # label → the CPU seconds (user + sys) of the last `timed` run of that label
  awk -F': ' '/User time|System time/ {t += $2} END {printf "%.2f\n", t}' "$WORK/time.$1"
}
pipeline() { # dir, google|aurinko|both, accounts, extra [lake] line
  local d=$1 kind=$2 accts=${3:-1} extra=${4:-} i
  mkdir -p "$d"; printf '%s' "$TOKEN" > "$d/g.token"
  { echo "[lake]"; echo "url = \"lake\""; echo "$extra"
    if [ "$kind" != aurinko ]; then
      printf '[[sources]]\nname = "shared"\nprovider = "google"\ndomain = "example.com"\nbase_url = "%s"\nauth = { kind = "bearer", token_file = "g.token" }\npage_size = 1000\nconcurrency = 4\n' "$URL"
    fi
    if [ "$kind" != google ]; then
      printf '[[sources]]\nname = "crm"\nprovider = "aurinko"\nbase_url = "%s"\nconcurrency = 4\naccounts = [' "$URL"
      for i in $(seq 101 $((100+accts))); do printf '%s' "$TOKEN-$i" > "$d/$i.token"; printf '{ id = "%s", token_file = "%s.token" },' "$i" "$i"; done
      echo "]"
    fi; } > "$d/p.toml"
}
curl_google() { local s=1; while [ $s -le "$1" ]; do curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H "GData-Version: 3.0" "$URL/m8/feeds/contacts/example.com/full?max-results=1000&start-index=$s"; s=$((s+1000)); done; }
curl_google_p4() { seq 1 1000 "$1" | xargs -P4 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H "GData-Version: 3.0" "$URL/m8/feeds/contacts/example.com/full?max-results=1000&start-index={}"; }
curl_aurinko() { # the page chain with curl; tokens cut out with grep, bodies kept in a file
  local auth="Authorization: Bearer $TOKEN-101" f tok q
  f=$(mktemp)
  curl -sf -o /dev/null -X POST -H "$auth" "$URL/v1/contacts/sync"
  curl -sf -o "$f" -X POST -H "$auth" "$URL/v1/contacts/sync"
  q="deltaToken=$(grep -o '"syncUpdatedToken":"[^"]*"' "$f" | cut -d'"' -f4)"
  while :; do
    curl -sf -o "$f" -H "$auth" "$URL/v1/contacts/sync/updated?$q"
    tok=$(grep -o '"nextPageToken":"[^"]*"' "$f" | cut -d'"' -f4)
    [ -n "$tok" ] || break
    q="pageToken=$tok"
  done
  rm -f "$f"
}
declare -A R
ONLY="${ONLY:-}"
# The emulator's people as dense as real domains' (foreign namespaces, XML blobs, long
# notes, many items): what users' data costs. DENSE= benches the plain data.
DENSE="${DENSE---dense}"

# B9: many small Aurinko accounts in one run, beside one account of the same contacts.
# Accounts come from an accounts_file (id,token_env,token_file). Prints wall, CPU
# (user+sys) and peak RSS of each step.
rss_mb() { awk '{printf "%.0f", $1/1024}' "$WORK/rss.$1"; }
many_pipeline() { # dir, accounts, [concurrency] (none: the source's default)
  local d=$1 n=$2 c=${3:-} i
  mkdir -p "$d"
  { echo "id,token_env,token_file"; for i in $(seq 101 $((100+n))); do printf '%s' "$TOKEN-$i" > "$d/$i.token"; echo "$i,,$i.token"; done; } > "$d/accounts.csv"
  printf '[lake]\nurl = "lake"\n[[sources]]\nname = "crm"\nprovider = "aurinko"\nbase_url = "%s"\n%baccounts_file = "accounts.csv"\n' "$URL" "${c:+concurrency = $c\n}" > "$d/p.toml"
}
b9_step() { # key label cmd… : runs once, records "wall cpu rss" under R[key]
  local key=$1 label=$2; shift 2
  local w; w=$(timed "$label" "$@")
  R[$key]="$w s wall, $(cpu "$label") s CPU, $(rss_mb "$label") MB"
  echo "  $key: ${R[$key]}"
}
b9() {
  echo "== B9: 400 accounts x 20 contacts beside one account of 8,000"
  start_emu --google-contacts 0 --aurinko-accounts 1 --aurinko-contacts 8000
  rm -rf "$WORK/b9one"; many_pipeline "$WORK/b9one" 1
  b9_step b9_one one "$BIN" sync "$WORK/b9one/p.toml"
  b9_step b9_one_none onenone "$BIN" sync "$WORK/b9one/p.toml"
  stop_emu
  start_emu --google-contacts 0 --aurinko-accounts 400 --aurinko-contacts 20
  # A full Aurinko sync waits for the API's first `ready:false` answer (the client polls
  # again after 0.1 s, doubling), so a full run's wall time is bound by that wait over the
  # accounts in flight; CPU is what the lake costs. Two fresh lakes: an explicit
  # `concurrency = 8`, and the default settings (no concurrency line: 50 in flight for 400).
  rm -rf "$WORK/b9c8"; many_pipeline "$WORK/b9c8" 400 8
  b9_step b9_full_c8 fullc8 "$BIN" sync "$WORK/b9c8/p.toml"
  rm -rf "$WORK/b9"; many_pipeline "$WORK/b9" 400
  b9_step b9_full full "$BIN" sync "$WORK/b9/p.toml"
  b9_step b9_none none "$BIN" sync "$WORK/b9/p.toml"
  # 1 % of the contacts change: one update in each of 80 accounts.
  for i in $(seq 101 5 500); do
    curl -sf -X POST -H 'content-type: application/json' -d "{\"aurinko\":{\"account\":\"$i\",\"inserts\":0,\"updates\":1,\"deletes\":0}}" "$URL/_emulator/mutate" >/dev/null
  done
  b9_step b9_one_pct pct "$BIN" sync "$WORK/b9/p.toml"
  # History: more no-change runs of the same 400 accounts. Each adds a sync_runs file per
  # account; what a run costs must not grow with them (B9_HISTORY runs, 16 by default).
  local h w hist="${B9_HISTORY:-16}"
  for h in $(seq 1 "$hist"); do
    w=$(timed hist "$BIN" sync "$WORK/b9/p.toml")
    [ "$h" = 1 ] && R[b9_hist_first]="$w s wall, $(cpu hist) s CPU, $(rss_mb hist) MB"
  done
  R[b9_hist_last]="$w s wall, $(cpu hist) s CPU, $(rss_mb hist) MB"
  echo "  b9_hist: first ${R[b9_hist_first]}; run $hist: ${R[b9_hist_last]}"
  stop_emu
  if [ "${B9_BIG:-0}" = 1 ]; then
    echo "== B9: 10,000 accounts x 20 contacts"
    start_emu --google-contacts 0 --aurinko-accounts 10000 --aurinko-contacts 20
    rm -rf "$WORK/b9big"; many_pipeline "$WORK/b9big" 10000
    b9_step b9_big big "$BIN" sync "$WORK/b9big/p.toml"
    b9_step b9_big_none bignone "$BIN" sync "$WORK/b9big/p.toml"
    stop_emu
  fi
  {
  echo "| B9 | step | wall, CPU (user+sys), peak RSS |"
  echo "|---|---|---|"
  echo "| | one account of 8,000 contacts, full | ${R[b9_one]} |"
  echo "| | the same, incremental, no changes | ${R[b9_one_none]} |"
  echo "| | 400 accounts x 20, full, concurrency 8 | ${R[b9_full_c8]} |"
  echo "| | 400 accounts x 20, full, default settings | ${R[b9_full]} |"
  echo "| | the same, incremental, no changes | ${R[b9_none]} |"
  echo "| | the same, incremental, 1 % changed (80 accounts) | ${R[b9_one_pct]} |"
  echo "| | then no-change runs: the first | ${R[b9_hist_first]} |"
  echo "| | and the ${B9_HISTORY:-16}th | ${R[b9_hist_last]} |"
  if [ "${B9_BIG:-0}" = 1 ]; then
  echo "| | 10,000 accounts x 20, full, default settings | ${R[b9_big]} |"
  echo "| | the same, incremental, no changes | ${R[b9_big_none]} |"
  fi
  } | tee "$OUT/b9.md"
}
if [ "$ONLY" = B9 ]; then b9; exit 0; fi
source scripts/bench/directory.sh  # ONLY=DIR: Google's directory (People API)

# B10: B3 against a server that is not ours. scripts/bench/gdata_dense.py writes N
# contacts shaped like a real domain's to files once (cached) and serves them from a
# plain Python file server, with a length (as our emulator) and chunked (as many real
# servers); client CPU of the full sync beside the Python peer's on the same pages.
b10() {
  local dir="$CACHE/bench-dense/google-$N-v1" mode i
  [ -s "$dir/total" ] || python3 scripts/bench/gdata_dense.py generate "$dir" "$N"
  R[b10_mb]=$(du -cb "$dir"/*.xml | awk 'END {printf "%.0f", $1/1e6}')
  for mode in length chunked; do
    echo "== B10: $N dense contacts from an independent server ($mode)"
    python3 scripts/bench/gdata_dense.py serve "$dir" $([ $mode = chunked ] && echo --chunked) > "$WORK/dense.url" &
    EMU_PID=$!
    for _ in $(seq 100); do [ -s "$WORK/dense.url" ] && break; sleep 0.1; done
    URL=$(head -1 "$WORK/dense.url")
    : > "$WORK/b10.$mode"; : > "$WORK/b10.peer.$mode"
    for i in $(seq "$RUNS"); do
      rm -rf "$WORK/d$i"; pipeline "$WORK/d$i" google
      timed dense "$BIN" sync "$WORK/d$i/p.toml" >/dev/null; cpu dense >> "$WORK/b10.$mode"
      if [ $mode = length ]; then
        timed dpeer "$PEER/bin/python" scripts/bench/python_peer.py google "$URL" "$TOKEN" "$WORK/peer.parquet" >/dev/null
        cpu dpeer >> "$WORK/b10.peer.$mode"
      fi
    done
    R[b10_$mode]=$(median < "$WORK/b10.$mode")
    stop_emu; : > "$WORK/dense.url"
  done
  R[b10_peer]=$(median < "$WORK/b10.peer.length")
}
if [ "$ONLY" = B10 ]; then
  b10
  echo "| B10 | ${R[b10_mb]} MB of dense Atom from an independent server | client CPU ${R[b10_length]} s (with a length), ${R[b10_chunked]} s (chunked); the peer ${R[b10_peer]} s = $(python3 -c "print(f'{${R[b10_peer]}/${R[b10_length]}:.2f}')")× less |" | tee "$OUT/b10.md"
  exit 0
fi

echo "== B1/B3/B4/B5/B6: Google, $N contacts"
start_emu --google-contacts "$N" --aurinko-accounts 0 $DENSE
for i in $(seq "$RUNS"); do
  echo "$(timed curl bash -c "$(declare -f curl_google); URL=$URL TOKEN=$TOKEN curl_google $N")" >> "$WORK/b1.curl"
  echo "$(timed curlp bash -c "$(declare -f curl_google_p4); URL=$URL TOKEN=$TOKEN curl_google_p4 $N")" >> "$WORK/b1.curlp"
  rm -rf "$WORK/g$i"; pipeline "$WORK/g$i" google
  echo "$(timed etl "$BIN" sync "$WORK/g$i/p.toml")" >> "$WORK/b1.etl"; cp "$WORK/rss.etl" "$WORK/rss.g50.$i"
  cpu etl >> "$WORK/b3.cpu.etl"
  echo "$(timed peer "$PEER/bin/python" scripts/bench/python_peer.py google "$URL" "$TOKEN" "$WORK/peer.parquet")" >> "$WORK/b3.google"
  cpu peer >> "$WORK/b3.cpu.peer"
done
R[b1_mb]=$(seq 1 1000 "$N" | while read -r st; do curl -sf -o /dev/null -w '%{size_download}\n' -H "Authorization: Bearer $TOKEN" -H "GData-Version: 3.0" "$URL/m8/feeds/contacts/example.com/full?max-results=1000&start-index=$st"; done | awk '{t += $1} END {printf "%.0f", t/1e6}')
R[b1_curl]=$(median < "$WORK/b1.curl"); R[b1_curlp]=$(median < "$WORK/b1.curlp"); R[b1_etl]=$(median < "$WORK/b1.etl"); R[b3_g]=$(median < "$WORK/b3.google")
R[b6_50]=$(cat "$WORK"/rss.g50.* | median)
R[b3_cpu_etl]=$(median < "$WORK/b3.cpu.etl"); R[b3_cpu_peer]=$(median < "$WORK/b3.cpu.peer")
# B4 twice on the same changes: the default lake (deletion vectors: replaced rows are
# marked) and one with `deletion_vectors = false` (copy-on-write: files holding a changed
# contact are rewritten).
pipeline "$WORK/gcow" google 1 "deletion_vectors = false"
timed cowload "$BIN" sync "$WORK/gcow/p.toml" >/dev/null
for i in $(seq "$RUNS"); do
  curl -sf -X POST -H 'content-type: application/json' -d '{"google":{"inserts":100,"updates":300,"deletes":100}}' "$URL/_emulator/mutate" >/dev/null
  echo "$(timed inc "$BIN" sync "$WORK/g1/p.toml")" >> "$WORK/b4"
  echo "$(timed inccow "$BIN" sync "$WORK/gcow/p.toml")" >> "$WORK/b4cow"
done
# The fixed cost of any run: the same sync with nothing changed.
R[b4_none]=$(timed none "$BIN" sync "$WORK/g1/p.toml")
R[b4]=$(median < "$WORK/b4"); R[b4cow]=$(median < "$WORK/b4cow")
# B5: the batch requests the emulator counted, and the write phase of `apply` (from its
# debug log) against the time the emulator spent handling those batches.
stat() { curl -sf "$URL/_emulator/stats" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1',0))"; }
before=$(stat google.batch); before_us=$(stat google.batch.us)
R[b5_wall]=$(timed apply bash -c '"$@" 2>"$LOG"' _ "$BIN" --log-format json --log-level debug apply "$WORK/g1/p.toml" --source shared --mode update --desired "SELECT account, id, etag, concat('[bench] ', coalesce(substr(notes, 1, 40), '')) AS notes FROM contacts ORDER BY id LIMIT 10000")
R[b5_batches]=$(( $(stat google.batch) - before ))
R[b5_handling]=$(python3 -c "print(round(($(stat google.batch.us) - $before_us) / 1e6, 3))")
R[b5_write]=$(python3 - "$LOG" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    rec = json.loads(line) if line.startswith("{") else {}
    if rec.get("fields", {}).get("message") == "wrote to the API":
        print(rec["fields"]["ms"] / 1000)
PY
)
stop_emu

echo "== B2/B3: Aurinko, $N contacts in one account"
start_emu --google-contacts 0 --aurinko-accounts 1 --aurinko-contacts "$N" $DENSE
for i in $(seq "$RUNS"); do
  echo "$(timed curla bash -c "$(declare -f curl_aurinko); URL=$URL TOKEN=$TOKEN curl_aurinko")" >> "$WORK/b2.curl"
  rm -rf "$WORK/a$i"; pipeline "$WORK/a$i" aurinko 1
  echo "$(timed etla "$BIN" sync "$WORK/a$i/p.toml")" >> "$WORK/b2.etl"; cp "$WORK/rss.etla" "$WORK/rss.a50.$i"
  cpu etla >> "$WORK/b3.cpu.etla"
  echo "$(timed peera "$PEER/bin/python" scripts/bench/python_peer.py aurinko "$URL" "$TOKEN-101" "$WORK/peer.parquet")" >> "$WORK/b3.aurinko"
  cpu peera >> "$WORK/b3.cpu.peera"
done
R[b2_curl]=$(median < "$WORK/b2.curl"); R[b2_etl]=$(median < "$WORK/b2.etl"); R[b3_a]=$(median < "$WORK/b3.aurinko")
R[b6a_50]=$(cat "$WORK"/rss.a50.* | median)
R[b3_cpu_etla]=$(median < "$WORK/b3.cpu.etla"); R[b3_cpu_peera]=$(median < "$WORK/b3.cpu.peera")
stop_emu

echo "== B6 (Aurinko): $N_BIG contacts in one account (memory)"
start_emu --google-contacts 0 --aurinko-accounts 1 --aurinko-contacts "$N_BIG" $DENSE
# Peak RSS moves by ±15 % between runs of the same binary: medians here too.
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/abig"; pipeline "$WORK/abig" aurinko 1
  echo "$(timed abig "$BIN" sync "$WORK/abig/p.toml")" >> "$WORK/b6a.wall"; cat "$WORK/rss.abig" >> "$WORK/b6a.rss"
done
R[b6a_big_wall]=$(median < "$WORK/b6a.wall"); R[b6a_big]=$(median < "$WORK/b6a.rss")
stop_emu

echo "== B6: Google, $N_BIG contacts (memory)"
start_emu --google-contacts "$N_BIG" --aurinko-accounts 0 $DENSE
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/big"; pipeline "$WORK/big" google
  echo "$(timed big "$BIN" sync "$WORK/big/p.toml")" >> "$WORK/b6.wall"; cat "$WORK/rss.big" >> "$WORK/b6.rss"
done
R[b6_big_wall]=$(median < "$WORK/b6.wall"); R[b6_big]=$(median < "$WORK/b6.rss")
stop_emu

echo "== B8: SQL over 20 accounts x $N_SQL_PER contacts"
start_emu --google-contacts 0 --aurinko-accounts 20 --aurinko-contacts "$N_SQL_PER"
rm -rf "$WORK/sql"; pipeline "$WORK/sql" aurinko 20
R[b8_load]=$(timed load "$BIN" sync "$WORK/sql/p.toml")
Q="SELECT account, lower(split_part(address, '@', 2)) AS domain, count(*) FROM contact_emails GROUP BY 1, 2"
for i in $(seq "$RUNS"); do echo "$(timed q "$BIN" query "$WORK/sql/p.toml" "$Q")" >> "$WORK/b8"; done
R[b8]=$(median < "$WORK/b8")
stop_emu

b9
b10

# B7 needs the bench profile: after the release build above it builds in about two
# minutes here (from nothing, as long as a release build). Opt in with BENCH_B7=1.
: > "$WORK/b7"
if [ "${BENCH_B7:-0}" = 1 ]; then
  echo "== B7: decoders (criterion)"
  cargo bench --quiet --bench decode -- --noplot 2>/dev/null | grep -E "^google|^aurinko|thrpt" > "$WORK/b7" || true
fi

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
{
echo "| id | what | result | bar |"
echo "|---|---|---|---|"
echo "| B1 | Google full sync, $N contacts | ${R[b1_etl]} s; raw curl ${R[b1_curl]} s sequential, ${R[b1_curlp]} s 4-way; ratio $(ratio ${R[b1_etl]} ${R[b1_curl]})× / $(ratio ${R[b1_etl]} ${R[b1_curlp]})× | ≤ 1.5× raw |"
echo "| B2 | Aurinko full sync, $N contacts | ${R[b2_etl]} s; raw curl ${R[b2_curl]} s; ratio $(ratio ${R[b2_etl]} ${R[b2_curl]})× | ≤ 1.5× raw |"
echo "| B3 | client CPU (user + sys) for the same full sync vs a Python peer (requests+lxml+pyarrow) | Google ${R[b3_cpu_etl]} s vs ${R[b3_cpu_peer]} s = $(ratio ${R[b3_cpu_peer]} ${R[b3_cpu_etl]})× less; Aurinko ${R[b3_cpu_etla]} s vs ${R[b3_cpu_peera]} s = $(ratio ${R[b3_cpu_peera]} ${R[b3_cpu_etla]})× less (wall: peer ${R[b3_g]} s / ${R[b3_a]} s) | ≥ 10× less CPU |"
pct() { python3 -c "print(f'{100*$1/$2:.1f}')"; }
echo "| B4 | incremental after 500 changes | default (deletion vectors) ${R[b4]} s = $(pct ${R[b4]} ${R[b1_etl]})% of B1; copy-on-write (\`deletion_vectors = false\`) ${R[b4cow]} s = $(pct ${R[b4cow]} ${R[b1_etl]})%; no changes ${R[b4_none]} s = $(pct ${R[b4_none]} ${R[b1_etl]})% | ≤ 5% of B1 |"
echo "| B5 | apply 10,000 Google updates | ${R[b5_batches]} batch requests; write phase ${R[b5_write]} s vs the emulator's handling ${R[b5_handling]} s → $(ratio ${R[b5_write]} ${R[b5_handling]})×; whole command ${R[b5_wall]} s (sync before and after included) | exactly 100; ≤ 2× |"
echo "| B6 | peak RSS, full sync | Google $N: ${R[b6_50]} KiB; $N_BIG: ${R[b6_big]} KiB (${R[b6_big_wall]} s); ratio $(ratio ${R[b6_big]} ${R[b6_50]})×. Aurinko $N: ${R[b6a_50]} KiB; $N_BIG: ${R[b6a_big]} KiB (${R[b6a_big_wall]} s); ratio $(ratio ${R[b6a_big]} ${R[b6a_50]})× | ≤ 1.3× |"
echo "| B10 | B3 on ${R[b10_mb]} MB of dense Atom from an independent server (emulator: ${R[b1_mb]} MB) | client CPU ${R[b10_length]} s with a length, ${R[b10_chunked]} s chunked, vs the emulator's ${R[b3_cpu_etl]} s ($(python3 -c "print(f'{1000*${R[b10_length]}/${R[b10_mb]}:.1f} vs {1000*${R[b3_cpu_etl]}/${R[b1_mb]}:.1f}')") ms per MB); the peer ${R[b10_peer]} s = $(ratio ${R[b10_peer]} ${R[b10_length]})× less | within 20 % of B3; ≥ 8× less than the peer |"
echo "| B8 | SQL over $((20*N_SQL_PER)) contacts, 20 accounts | ${R[b8]} s (process start included; load took ${R[b8_load]} s) | < 0.5 s |"
echo
echo "B7 (criterion, one core):"; echo '```'; cat "$WORK/b7"; echo '```'
} | tee "$OUT/results.md"
