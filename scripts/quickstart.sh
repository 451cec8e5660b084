#!/usr/bin/env bash
# README Quick start (1): install what is needed, build, and run the main job: `kvmesh up` with the
# embedded default graph (built-in tiny model, a prefill agent, a decode agent and the router, all
# local processes on the CPU), then a sample request through the router's OpenAI endpoint
# (scripts/up_demo.sh). The other demos stay available: `kvmesh generate`, `kvmesh kv-demo`,
# scripts/agent_demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --preset default
exec bash scripts/up_demo.sh build
