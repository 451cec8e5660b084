#!/usr/bin/env bash
# Installs every Debian package kvmesh needs (idempotent, non-interactive, skips what is present),
# then configures and builds. Usage: scripts/setup.sh [--no-build] [--preset NAME]
set -euo pipefail

PACKAGES=(
  # toolchain
  cmake ninja-build g++ pkg-config clang libclang-rt-14-dev
  # libraries
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libyaml-cpp-dev
  libboost-dev libboost-system-dev libssl-dev libcpprest-dev
  libucx-dev ucx-utils libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libxxhash-dev libopenblas-dev libpcre2-dev
  # test tools
  prometheus python3 python3-xxhash python3-zmq python3-msgpack python3-yaml curl
)

build=1
preset=default
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --preset) preset="$2"; shift ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all ${#PACKAGES[@]} packages present"
fi

# Node.js + npm for the end-to-end test with the official `openai` npm client
# (tests/router_openai_test.sh). Debian 12's nodejs (18) and npm packages are enough; a machine that
# already has Node.js from elsewhere (whose nodejs package bundles npm and conflicts with Debian's
# npm package) keeps it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: installing nodejs npm"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

# The Debian prometheus package starts a system service on install; tests run their own server
# on a free loopback port, so the packaged one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

if [ "$build" -eq 1 ]; then
  cd "$(dirname "$0")/.."
  cmake --preset "$preset"
  cmake --build --preset "$preset"
fi
