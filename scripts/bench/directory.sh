# Sourced by scripts/bench.sh (its helpers: start_emu, stop_emu, timed, cpu, median,
# rss_mb, $BIN, $PEER, $WORK, $OUT, $N, $RUNS, $TOKEN). B1/B3/B4/B6 for Google's directory
# (provider google_directory, People API listDirectoryPeople) at $N people: four fifths
# directory profiles, one fifth domain shared contacts. Run it alone with
#   ONLY=DIR scripts/bench.sh          # SCALE=0.1 for a quick look
# Prints a table to stdout and to target/bench/directory.md.
DIR_MASK="addresses,biographies,birthdays,clientData,emailAddresses,events,externalIds,memberships,metadata,names,nicknames,organizations,phoneNumbers,photos,relations,urls,userDefined"
dir_pipeline() { # dir
  mkdir -p "$1"; printf '%s' "$TOKEN" > "$1/p.token"
  printf '[lake]\nurl = "lake"\n[[sources]]\nname = "directory"\nprovider = "google_directory"\ndomain = "example.com"\nbase_url = "%s"\nauth = { kind = "bearer", token_file = "p.token" }\npage_size = 1000\n' "$URL" > "$1/p.toml"
}
curl_directory() { # the same page chain with curl; tokens cut out with grep
  local f q tok base
  f=$(mktemp)
  base="$URL/v1/people:listDirectoryPeople?readMask=$DIR_MASK&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE&pageSize=1000&requestSyncToken=true"
  q=""
  while :; do
    curl -sf -o "$f" -H "Authorization: Bearer $TOKEN" "$base$q"
    tok=$(grep -o '"nextPageToken":"[^"]*"' "$f" | cut -d'"' -f4)
    [ -n "$tok" ] || break
    q="&pageToken=$tok"
  done
  rm -f "$f"
}
bdir() {
  local contacts=$((N / 5)) profiles=$((N - N / 5)) i
  echo "== DIR: Google's directory, $N people ($profiles profiles + $contacts domain contacts)"
  start_emu --google-contacts "$contacts" --aurinko-accounts 0 --directory-profiles "$profiles"
  : > "$WORK/dir.curl"; : > "$WORK/dir.etl"; : > "$WORK/dir.cpu"; : > "$WORK/dir.rss"; : > "$WORK/dir.peer"; : > "$WORK/dir.cpu.peer"
  for i in $(seq "$RUNS"); do
    timed dcurl bash -c "$(declare -f curl_directory); URL=$URL TOKEN=$TOKEN DIR_MASK=$DIR_MASK curl_directory" >> "$WORK/dir.curl"
    rm -rf "$WORK/d$i"; dir_pipeline "$WORK/d$i"
    timed detl "$BIN" sync "$WORK/d$i/p.toml" >> "$WORK/dir.etl"
    cpu detl >> "$WORK/dir.cpu"; cat "$WORK/rss.detl" >> "$WORK/dir.rss"
    timed dpeer "$PEER/bin/python" scripts/bench/python_peer.py directory "$URL" "$TOKEN" "$WORK/peer.parquet" >> "$WORK/dir.peer"
    cpu dpeer >> "$WORK/dir.cpu.peer"
  done
  R[dir_curl]=$(median < "$WORK/dir.curl"); R[dir_etl]=$(median < "$WORK/dir.etl")
  R[dir_cpu]=$(median < "$WORK/dir.cpu"); R[dir_rss]=$(median < "$WORK/dir.rss")
  R[dir_peer]=$(median < "$WORK/dir.peer"); R[dir_cpu_peer]=$(median < "$WORK/dir.cpu.peer")
  # 500 changes a run (100 inserts, 300 updates, 100 deletes, as B4), in the domain's
  # shared contacts: the emulator's admin route mutates those, not profiles.
  : > "$WORK/dir.inc"; : > "$WORK/dir.inc.cpu"
  for i in $(seq "$RUNS"); do
    curl -sf -X POST -H 'content-type: application/json' -d '{"google":{"inserts":100,"updates":300,"deletes":100}}' "$URL/_emulator/mutate" >/dev/null
    timed dinc "$BIN" sync "$WORK/d1/p.toml" >> "$WORK/dir.inc"; cpu dinc >> "$WORK/dir.inc.cpu"
  done
  R[dir_inc]=$(median < "$WORK/dir.inc"); R[dir_inc_cpu]=$(median < "$WORK/dir.inc.cpu")
  R[dir_none]=$(timed dnone "$BIN" sync "$WORK/d1/p.toml")
  stop_emu
  dir_ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
  dir_pct() { python3 -c "print(f'{100*$1/$2:.1f}')"; }
  {
  echo "| DIR | google_directory, $N people ($profiles profiles + $contacts domain contacts), medians of $RUNS | result |"
  echo "|---|---|---|"
  echo "| B1 | full sync vs raw curl of the same page chain | ${R[dir_etl]} s vs ${R[dir_curl]} s = $(dir_ratio "${R[dir_etl]}" "${R[dir_curl]}")× |"
  echo "| B3 | client CPU (user+sys) vs a Python peer (requests+json+pyarrow) | ${R[dir_cpu]} s vs ${R[dir_cpu_peer]} s = $(dir_ratio "${R[dir_cpu_peer]}" "${R[dir_cpu]}")× less (peer wall ${R[dir_peer]} s) |"
  echo "| B6 | peak RSS of the full sync | $(awk '{printf "%.0f", $1/1024}' <<< "${R[dir_rss]}") MB |"
  echo "| B4 | incremental after 500 changes | ${R[dir_inc]} s = $(dir_pct "${R[dir_inc]}" "${R[dir_etl]}")% of the full sync (CPU ${R[dir_inc_cpu]} s); no changes ${R[dir_none]} s |"
  } | tee "$OUT/directory.md"
}
if [ "$ONLY" = DIR ]; then bdir; exit 0; fi
