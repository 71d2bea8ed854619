#!/usr/bin/env bash
# The whole test suite, from a fresh clone: Python tools (onnx, numpy,
# onnxruntime in .venv), the ONNX node tests and the end-to-end models
# (generated into build/, never committed), then every Rust test, the
# conformance suite included. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-python.sh
PY=.venv/bin/python

"$PY" scripts/gen-node-tests.py

# End-to-end models and onnxruntime reference outputs; regenerated when the script changes.
stamp=build/models/.stamp
want=$(sha256sum scripts/make_models.py scripts/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf build/models
  "$PY" scripts/make_models.py build/models
  echo "$want" > "$stamp"
fi

cargo test --workspace -- --nocapture
