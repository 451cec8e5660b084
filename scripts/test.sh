#!/usr/bin/env bash
# README Quick start (2): install what is needed, build, and run every test (unit, fuzz, integration).
# With CI=true, warnings are errors. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-build
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
cmake --preset default -DKVMESH_WERROR="$werror"
cmake --build --preset default
ctest --preset default
