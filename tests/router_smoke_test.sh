#!/usr/bin/env bash
# kvmesh-router in front of a prefill and a decode agent (tests/router_smoke_check.py).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_smoke_check.py
