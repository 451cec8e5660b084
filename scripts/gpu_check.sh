#!/usr/bin/env bash
# The one prepared script for a machine with an NVIDIA GPU (H100/H200): builds the CUDA kernels
# and their tests for sm_90, runs the GPU tests (ctest label "gpu") and the kernel benchmark, and
# records nvidia-smi. Everything it produces goes to "${OUT:-/tmp/gpu-out}":
#   summary.txt      one line per step: name, exit code, seconds
#   setup.log configure.log build.log ctest.log bench.json bench.stderr nvidia-smi.txt
#   kvmesh-build.log the optional `kvmesh` binary build (its failure is ignored)
# Budget: under 10 minutes in total on 16 cores; every step has its own timeout, bounded by what
# is left of the budget. Exit status: 0 when the GPU tests pass and the benchmark printed JSON
# without an "error" key, 1 otherwise.
# Usage: scripts/gpu_check.sh   (env: OUT, KVMESH_GPU_BUDGET_S=570, KVMESH_GPU_ARCH=90, JOBS=16)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
budget="${KVMESH_GPU_BUDGET_S:-570}"
arch="${KVMESH_GPU_ARCH:-90}"
jobs="${JOBS:-16}"
build=build-gpu
start=$(date +%s)
: > "$out/summary.txt"

left() { echo $(( budget - ($(date +%s) - start) )); }

# step NAME LIMIT_S LOG CMD...: runs CMD with timeout min(LIMIT_S, budget left), logs, records.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local remaining
  remaining=$(left)
  (( limit > remaining )) && limit=$remaining
  if (( limit < 5 )); then
    echo "$name skipped (budget spent)" | tee -a "$out/summary.txt"
    return 124
  fi
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  echo "$name rc=$rc ${limit}s-limit took=$(( $(date +%s) - t0 ))s" | tee -a "$out/summary.txt"
  return $rc
}

# 0. Machine facts first, so they exist even if everything else fails.
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >> "$out/nvidia-smi.txt"
{ nproc; free -g; /usr/local/cuda/bin/nvcc --version; cmake --version; } > "$out/machine.txt" 2>&1

# 1. Debian packages (may have no network: never fatal, short timeout).
step setup 90 "$out/setup.log" bash scripts/setup.sh --no-build || true

# 2. Configure: CUDA on, only sm_90, no benchmarks of other components, tests on.
if ! step configure 120 "$out/configure.log" cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVMESH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DKVMESH_WERROR=OFF -DKVMESH_BUILD_BENCH=OFF; then
  # Fallback when the machine lacks a package the full tree needs (yaml-cpp, zmq, ...): build the
  # kernels, their tests and the benchmark directly; needs only nvcc, g++, OpenBLAS and GoogleTest.
  echo "configure failed: trying the direct build (see direct.log)" >> "$out/summary.txt"
  direct() {
    set -e
    local d=build-gpu-direct nv=/usr/local/cuda/bin/nvcc
    local inc=(-I. -I/usr/local/cuda/include -I/usr/include/x86_64-linux-gnu/openblas-pthread)
    mkdir -p "$d"
    local objs=()
    for f in common/status.cc kernels/*.cc; do
      case "$f" in *_test.cc|*_bench.cc|*_main.cc|*_fuzz.cc) continue ;; esac
      g++ -std=c++20 -O2 "${inc[@]}" -c "$f" -o "$d/$(basename "$f").o" &
      objs+=("$d/$(basename "$f").o")
    done
    for f in kernels/*.cu; do
      "$nv" -std=c++17 -O2 -lineinfo -arch="sm_$arch" -I. -c "$f" -o "$d/$(basename "$f").o" &
      objs+=("$d/$(basename "$f").o")
    done
    wait
    local libs=(-L/usr/local/cuda/lib64 -lcublas -lcudart -lopenblas -lpthread)
    for t in kernels/*_cuda_test.cc; do
      g++ -std=c++20 -O2 "${inc[@]}" "$t" "${objs[@]}" -lgtest_main -lgtest "${libs[@]}" \
        -o "$d/$(basename "$t" .cc)" &
    done
    g++ -std=c++20 -O2 "${inc[@]}" kernels/gpu_bench_main.cc "${objs[@]}" "${libs[@]}" \
      -o "$d/kvmesh_kernels_gpu_bench" &
    wait
    local rc=0
    for t in "$d"/*_cuda_test; do
      LD_LIBRARY_PATH=/usr/local/cuda/lib64 "$t" > "$d/test.out" 2>&1 || rc=1
      cat "$d/test.out"
      grep -q "\[  SKIPPED \]" "$d/test.out" && { echo "SKIPPED tests: no usable device?"; rc=1; }
    done
    LD_LIBRARY_PATH=/usr/local/cuda/lib64 "$d/kvmesh_kernels_gpu_bench" > "$out/bench.json"
    grep -q -E '"(error|skipped)"' "$out/bench.json" && rc=1
    return $rc
  }
  step direct 400 "$out/direct.log" bash -c "$(declare -f direct); out='$out' arch='$arch' direct"
  rc=$?
  echo "total $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
  exit $rc
fi

# 3. Build only the CUDA targets and what they depend on.
targets=(kvmesh_kernels_cuda kvmesh_kernels_gpu_bench)
while read -r t; do targets+=("$t"); done < <(ninja -C "$build" -t targets all 2>/dev/null |
  sed -n 's/^\(kvmesh_\(kernels\|transfer\)_[a-z_]*_cuda_test\): .*/\1/p' | sort -u)
step build 330 "$out/build.log" ninja -C "$build" -j "$jobs" "${targets[@]}"
build_rc=$?

# 4. GPU tests (each test binary skips nothing here: a device must be usable).
test_rc=1
if (( build_rc == 0 )); then
  step ctest 150 "$out/ctest.log" ctest --test-dir "$build" -L gpu --output-on-failure \
    --timeout 120 -j 4
  test_rc=$?
  grep -E "tests passed|tests failed|Skipped|Failed" "$out/ctest.log" | tail -5 \
    >> "$out/summary.txt"
  if grep -q "(Skipped)" "$out/ctest.log"; then  # on this machine every GPU test must really run
    echo "ctest: some GPU tests were skipped (no usable CUDA device?)" >> "$out/summary.txt"
    test_rc=1
  fi
fi

# 5. Benchmark: JSON on stdout.
bench_rc=1
if [[ -x "$build/kernels/kvmesh_kernels_gpu_bench" ]]; then
  remaining=$(left)
  lim=120; (( lim > remaining )) && lim=$remaining
  t0=$(date +%s)
  timeout --kill-after=10 "$lim" "$build/kernels/kvmesh_kernels_gpu_bench" \
    > "$out/bench.json" 2> "$out/bench.stderr"
  bench_rc=$?
  echo "bench rc=$bench_rc took=$(( $(date +%s) - t0 ))s" | tee -a "$out/summary.txt"
  grep -q -E '"(error|skipped)"' "$out/bench.json" && bench_rc=1
fi

# 6. The kvmesh binary, if the tree has one and there is time left (failure ignored).
if (( $(left) > 60 )) && ninja -C "$build" -t targets all 2>/dev/null | grep -q '^kvmesh:'; then
  step kvmesh-build 60 "$out/kvmesh-build.log" ninja -C "$build" -j "$jobs" kvmesh || true
fi

nvidia-smi --query-gpu=name,memory.used,memory.total,temperature.gpu,clocks.sm --format=csv \
  >> "$out/nvidia-smi.txt" 2>&1 || true
echo "total $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
(( test_rc == 0 && bench_rc == 0 )) && exit 0
exit 1
