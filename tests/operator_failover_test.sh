#!/usr/bin/env bash
# Operator leader election: two kvmesh-operator processes on one Lease; only the leader writes;
# kill -9 of the leader -> the other takes over within lease duration + retry period and converges
# a change made while nobody led (tests/operator_failover_check.py, docs/testing-operator.md).
set -euo pipefail
source "$(dirname "$0")/router_e2e_lib.sh"
e2e_run_check operator_failover_check.py
