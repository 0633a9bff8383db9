#!/usr/bin/env bash
# The one entry point that regenerates code from proto/: Python stubs for the client package.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C.UTF-8
PY=${PYTHON:-.venv/bin/python}
"$PY" scripts/gen_protos.py "$@"
