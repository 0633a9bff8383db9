#!/usr/bin/env bash
# `buf breaking` against the protos of the commit before HEAD (on CI's fresh clone of main,
# comparing against main itself would compare HEAD with itself). Skips when there is no earlier
# commit with protos.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=tools/node_modules/.bin/buf
base=$(git rev-parse -q --verify HEAD~1 2>/dev/null || true)
if [ -z "$base" ] || [ -z "$(git ls-tree -r --name-only "$base" -- proto 2>/dev/null)" ]; then
  echo "buf breaking: no earlier commit with protos; skipped"
  exit 0
fi
"$BUF" breaking --against ".git#ref=$base"
echo "buf breaking: no breaking change against $base"
