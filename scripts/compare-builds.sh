#!/usr/bin/env bash
# Output equivalence of two exfilwatch builds, for changes meant to alter speed and nothing else
# (how each step in benches/README.md's steps table was checked).
#
#   scripts/compare-builds.sh OLD_BINARY NEW_BINARY [--corpus DIR] [CAPTURE...]
#
# Both builds read every fixture capture with the embedded rules and with every rule file of
# fixtures/rules/ and rules/, then each CAPTURE given (embedded rules), writing alerts, flow
# records, --report and --report-json; those, the summary without its wall-clock rate and the
# exit status must be identical. Every fixture is also compared as --format text. With
# --corpus DIR, every file in DIR is read too (alerts, flows, summary, status; 20 s each).
# A run that times out or dies by a signal is a difference too. Prints each difference; exits
# 1 if there was one, 2 on a usage error.
set -euo pipefail

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
# Paths are taken relative to where the script is called from, before moving to the checkout.
old=$(realpath -e -- "$1") || usage
new=$(realpath -e -- "$2") || usage
shift 2
for b in "$old" "$new"; do
  if [ ! -f "$b" ] || [ ! -x "$b" ]; then
    echo "compare-builds: $b is not an executable file" >&2; exit 2
  fi
done
corpus=""
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --corpus)
      [ $# -ge 2 ] || usage
      corpus=$(realpath -e -- "$2") || usage
      [ -d "$corpus" ] || { echo "compare-builds: $2 is not a directory" >&2; exit 2; }
      shift 2 ;;
    *)
      p=$(realpath -e -- "$1") || usage
      extra+=("$p"); shift ;;
  esac
done
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
outputs=(alerts flows report.json stdout stderr status)
runs=0
bad=0

# run NAME BINARY LIMIT MODE ARGS...: one read with every output option (MODE json: alerts to
# a file; text: text alerts on standard output) into $tmp/out, the same paths for both
# builds, then moved to $tmp/NAME. A timeout (124) or a signal (128 and up) is recorded with
# the time, so it never compares equal to anything.
run() {
  local name=$1 bin=$2 limit=$3 mode=$4; shift 4
  local d=$tmp/out
  rm -rf "$d" "${tmp:?}/$name"; mkdir -p "$d"
  local out=(--flows "$d/flows" --report --report-json "$d/report.json")
  if [ "$mode" = json ]; then out+=(--alerts "$d/alerts"); else out+=(--format text); fi
  local rc=0
  timeout -k 5 "$limit" "$bin" read "${out[@]}" "$@" >"$d/stdout" 2>"$d/stderr" || rc=$?
  if [ "$rc" -ge 124 ]; then rc="$rc (timed out or killed at $(date +%s%N))"; fi
  echo "$rc" >"$d/status"
  sed -i -E 's/ in [0-9.]+ s \([0-9]+ packets\/s\)$//' "$d/stderr"
  mv "$d" "$tmp/$name"
}

# every LABEL LIMIT MODE ARGS...: both builds; names the outputs that differ.
every() {
  local label=$1 limit=$2 mode=$3; shift 3
  runs=$((runs + 1))
  run old "$old" "$limit" "$mode" "$@"
  run new "$new" "$limit" "$mode" "$@"
  local differing=()
  for o in "${outputs[@]}"; do
    if [ -e "$tmp/old/$o" ] || [ -e "$tmp/new/$o" ]; then
      cmp -s "$tmp/old/$o" "$tmp/new/$o" || differing+=("$o")
    fi
  done
  if [ ${#differing[@]} -gt 0 ]; then
    bad=$((bad + 1))
    echo "DIFFERS: $label: ${differing[*]}"
  fi
}

shopt -s nullglob
captures=(fixtures/*.pcap fixtures/*.pcapng)
rules=(fixtures/rules/*.toml rules/*.toml)
[ ${#captures[@]} -gt 0 ] || { echo "compare-builds: no fixtures found" >&2; exit 2; }

for c in "${captures[@]}"; do
  every "read $c" 120 json "$c"
  for r in "${rules[@]}"; do
    every "read --rules $r $c" 120 json --rules "$r" "$c"
  done
  every "read --format text $c" 120 text "$c"
done
for c in "${extra[@]}"; do
  every "read $c" 600 json "$c"
done

if [ -n "$corpus" ]; then
  n=0
  for f in "$corpus"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    every "corpus $f" 20 json "$f"
  done
  [ "$n" -gt 0 ] || { echo "compare-builds: no files in $corpus" >&2; exit 2; }
fi

echo "compare-builds: $runs inputs, $bad differing"
[ "$bad" -eq 0 ]
