#!/usr/bin/env bash
# Migration: kill -9 the decode agent serving a greedy stream mid-way; the client's stream completes
# with exactly the tokens of an undisturbed run; with max_migrations 0 it ends with an error event and
# [DONE] (tests/router_migration_check.py, docs/testing-router.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_migration_check.py
