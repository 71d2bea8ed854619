#!/usr/bin/env bash
# Runs kiln's ONNX node-test conformance suite; the one command that
# regenerates docs/conformance.md and tests/conformance/passing.txt.
#
#   scripts/conformance.sh            set up .venv, generate the node tests
#                                     (once per onnx version), run the suite;
#                                     fails if a case in passing.txt stops passing
#   scripts/conformance.sh --update   the same, then rewrite passing.txt and
#                                     docs/conformance.md from the results
#
# Further arguments go to the test binary (after `--`). Environment variables
# understood by the runner (KILN_CONFORMANCE_FILTER, ...) are listed at the top
# of tests/conformance.rs. Works from any working directory.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

update=0
args=()
for a in "$@"; do
    case "$a" in
        --update) update=1 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$a") ;;
    esac
done

py="$(bash scripts/setup-python.sh)"
"$py" scripts/gen-node-tests.py

if [ "$update" = 1 ]; then
    export KILN_CONFORMANCE_UPDATE=1
fi
exec cargo test --release --test conformance -- --nocapture ${args[@]+"${args[@]}"}
