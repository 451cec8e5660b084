#!/usr/bin/env bash
# README Quick start (1): install what is needed, build, and run the main job.
# Until the router lands, the main job is the KV-core demo: the Mooncake conversation trace replayed
# through a block pool with G1/G2/G3 tiers, printing hit ratios per tier and events per second.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --preset default
exec ./build/cli/kvmesh kv-demo "$@"
