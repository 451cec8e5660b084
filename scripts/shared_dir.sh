#!/usr/bin/env bash
# Prints the project's shared folder (public traces etc.): $KVMESH_SHARED_DIR, else ../shared next to
# this checkout, else ../shared next to the repository this one was cloned from (a clean clone in
# /tmp still finds the data). Exits 1 with a message when none exists.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
candidates=()
[[ -n "${KVMESH_SHARED_DIR:-}" ]] && candidates+=("$KVMESH_SHARED_DIR")
candidates+=("$root/../shared")
origin="$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)"
[[ -n "$origin" && -d "$origin" ]] && candidates+=("$origin/../shared")
for c in "${candidates[@]}"; do
  if [[ -d "$c/data/traces" ]]; then (cd "$c" && pwd); exit 0; fi
done
echo "shared_dir.sh: no shared folder with data/traces in: ${candidates[*]} (set KVMESH_SHARED_DIR)" >&2
exit 1
