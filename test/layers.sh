#!/bin/sh
# layers.sh: no src/ file calls into a layer above it (test/check-layers,
# with the order from doc/design.md), and the checker catches one that does.
dir=$(dirname "$0")
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
"$dir/check-layers" --self-test || exit 1
exec "$dir/check-layers" --root "$dir/.."
