#!/usr/bin/env bash
# Global routing tier: a router over two clusters' routers (tests/router_global_check.py).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_global_check.py
