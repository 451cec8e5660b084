#!/usr/bin/env bash
# Tenants: API keys map to tenants whose cache salts differ, so two tenants never share KV blocks,
# a tenant hits its own cache, client-sent cache_salt is ignored, bad keys get 401, admin endpoints need
# the admin key (tests/router_tenants_check.py, docs/testing-router.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check router_tenants_check.py
