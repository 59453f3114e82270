#!/usr/bin/env bash
# Quick start: builds exfilwatch and reads a shipped capture of the reference layout with the
# embedded default rules. Alerts (JSON lines) on stdout, the summary on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet
set +e
target/release/exfilwatch read "${@:-fixtures/reference-layout.pcap}"
rc=$?
set -e
# 1 means "alerts found": the demo capture is meant to raise some.
[ $rc -le 1 ] || exit $rc
