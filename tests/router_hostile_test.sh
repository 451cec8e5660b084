#!/usr/bin/env bash
# Hostile input: malformed/oversized/out-of-range requests get the right errors, forged
# kv_transfer_params are ignored, slow and garbage connections do not hurt others, a client disconnect
# cancels the agent's work, and the router stays up (tests/router_hostile_check.py, docs/testing-router.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_hostile_check.py
