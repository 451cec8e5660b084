#!/usr/bin/env bash
# The SLA planner in `kvmesh up` scales a local decode pool up and down without dropping a request
# (tests/up_planner_check.py).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check up_planner_check.py
