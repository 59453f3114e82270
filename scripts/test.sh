#!/usr/bin/env bash
# Runs every test: unit tests, the fixture tests on the real binary, the corpus robustness test
# and the differential test against tshark. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
cargo test --release --all-targets
