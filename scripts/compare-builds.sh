#!/usr/bin/env bash
# Output equivalence of two exfilwatch builds, for changes meant to alter speed and nothing else
# (how each step in the README's performance table was checked).
#
#   scripts/compare-builds.sh OLD_BINARY NEW_BINARY [--corpus DIR] [CAPTURE...]
#
# Both builds read every fixture capture with the embedded rules and with every rule file of
# fixtures/rules/ and rules/, then each CAPTURE given (embedded rules), writing alerts, flow
# records, --report and --report-json; those, the summary without its wall-clock rate and the
# exit status must be identical. Every fixture is also compared as --format text. With
# --corpus DIR, every file in DIR is read too (alerts, flows, summary, status; 20 s each).
# Prints each difference; exits 1 if there was one.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); shift 2
corpus=""
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --corpus) corpus=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runs=0
bad=0

# run BUILD_DIR BINARY ARGS...: one read, its outputs in BUILD_DIR.
run() {
  local d=$1 bin=$2; shift 2
  rm -rf "$d"; mkdir -p "$d"
  local rc=0
  timeout 120 "$bin" read --alerts "$d/alerts" --flows "$d/flows" --report \
    --report-json "$d/report.json" "$@" >"$d/stdout" 2>"$d/stderr" || rc=$?
  echo "$rc" >"$d/status"
  sed -i -E 's/ in [0-9.]+ s \([0-9]+ packets\/s\)$//' "$d/stderr"
}

compare() {
  runs=$((runs + 1))
  run "$tmp/old" "$old" "$@"
  run "$tmp/new" "$new" "$@"
  if ! diff -r "$tmp/old" "$tmp/new" >/dev/null; then
    bad=$((bad + 1))
    echo "DIFFERS: read $* ($(diff -rq "$tmp/old" "$tmp/new" | grep -oE '/old/[a-z.]+' | sed 's|/old/||' | sort -u | tr '\n' ' '))"
  fi
}

mapfile -t captures < <(find fixtures -maxdepth 1 \( -name '*.pcap' -o -name '*.pcapng' \) | sort)
mapfile -t rules < <(ls fixtures/rules/*.toml rules/*.toml)
for c in "${captures[@]}"; do
  compare "$c"
  for r in "${rules[@]}"; do
    compare --rules "$r" "$c"
  done
  runs=$((runs + 1))
  "$old" read --format text --quiet "$c" >"$tmp/text.old" 2>&1 || true
  "$new" read --format text --quiet "$c" >"$tmp/text.new" 2>&1 || true
  cmp -s "$tmp/text.old" "$tmp/text.new" || { bad=$((bad + 1)); echo "DIFFERS: read --format text $c"; }
done
for c in "${extra[@]}"; do
  compare "$c"
done

if [ -n "$corpus" ]; then
  for f in "$corpus"/*; do
    runs=$((runs + 1))
    for b in old new; do
      bin=$old; [ $b = new ] && bin=$new
      rc=0
      timeout 20 "$bin" read --alerts "$tmp/c.$b.alerts" --flows "$tmp/c.$b.flows" "$f" \
        >/dev/null 2>"$tmp/c.$b.stderr" || rc=$?
      echo "$rc" >>"$tmp/c.$b.stderr"
      sed -i -E 's/ in [0-9.]+ s \([0-9]+ packets\/s\)$//' "$tmp/c.$b.stderr"
    done
    for x in alerts flows stderr; do
      if ! cmp -s "$tmp/c.old.$x" "$tmp/c.new.$x"; then
        bad=$((bad + 1)); echo "DIFFERS: corpus $f ($x)"; break
      fi
    done
    rm -f "$tmp"/c.*
  done
fi

echo "compare-builds: $runs inputs, $bad differing"
[ "$bad" -eq 0 ]
