#!/usr/bin/env bash
# KV-aware routing vs round robin on a shared-prefix workload: 4 aggregated agents + router, run
# once per mode on fresh processes; kv must reach a clearly higher cached-token ratio and a lower
# mean TTFT (tests/router_kv_routing_check.py, docs/testing-router.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_kv_routing_check.py
