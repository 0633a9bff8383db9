#!/usr/bin/env bash
# The one entry point that regenerates code from proto/: the Python stubs of the client package
# (scripts/gen_protos.py, pinned grpcio-tools + mypy-protobuf) and the TypeScript and Go clients
# (buf generate with the local, pinned plugins named in buf.gen.yaml), and each client's list of
# the RPCs it may retry (scripts/gen_rpc_kinds.py, from the protos' idempotency_level), and the
# memory tools for agents (scripts/gen_tools.py, from proto/tools.toml and the protos' comments).
# --check: fail when any generated tree differs from what the protos produce.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C.UTF-8
PY=${PYTHON:-.venv/bin/python}
BUF=tools/node_modules/.bin/buf
GENERATED=(clients/go/gen clients/typescript/src/gen)
if [[ "${1:-}" == "--check" ]]; then
  "$PY" scripts/gen_protos.py --check
  "$PY" scripts/gen_rpc_kinds.py --check
  "$PY" scripts/gen_tools.py --check
  before=$(mktemp -d)
  for dir in "${GENERATED[@]}"; do mkdir -p "$before/$dir" && cp -a "$dir/." "$before/$dir/"; done
  rm -rf "${GENERATED[@]}"
  "$BUF" generate
  for dir in "${GENERATED[@]}"; do
    if ! diff -r "$before/$dir" "$dir" > /dev/null; then
      echo "generate.sh: $dir is stale; run scripts/generate.sh and commit the result" >&2
      exit 1
    fi
  done
  exit 0
fi
"$PY" scripts/gen_protos.py
"$PY" scripts/gen_rpc_kinds.py
"$PY" scripts/gen_tools.py
rm -rf "${GENERATED[@]}"
"$BUF" generate
