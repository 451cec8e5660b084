#!/usr/bin/env bash
# README Quick start (1): install what is needed, build, and run the main job.
# Until the router and `kvmesh up` land, the main job is the engine on the CPU: the built-in tiny
# model (created on first use) generates for a chat prompt twice, the second run reusing the
# first one's KV blocks from the prefix cache; then the KV-core demo replays the Mooncake trace
# through G1/G2/G3 tiers; last, a prefill agent and a decode agent serve one request
# disaggregated, the KV moved over UCX (scripts/agent_demo.sh). Arguments go to `kvmesh generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --preset default
./build/cli/kvmesh generate --model builtin:tiny --chat \
  --prompt "Explain KV-cache-aware routing in one paragraph." --max-tokens 48 "$@"
./build/cli/kvmesh kv-demo \
  --trace "$(bash scripts/shared_dir.sh)/data/traces/mooncake_conversation_trace.jsonl"
exec bash scripts/agent_demo.sh build
