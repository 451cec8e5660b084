#!/usr/bin/env bash
# Operator end to end: test API server + local kubelet + kvmesh-operator; the real kubectl applies
# the CRD and a builtin:tiny graph, the graph becomes Available, the router answers a completion,
# a replicas patch grows the decode pool, steady state makes zero writes, delete cleans up
# (tests/operator_e2e_check.py, docs/testing-operator.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check operator_e2e_check.py
