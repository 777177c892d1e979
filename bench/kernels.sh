#!/usr/bin/env bash
# Kernel micro-benchmark (release build): matvec GB/s at the models' shapes for every
# weight type, single- and multi-threaded, plus a memcpy baseline. Prints markdown.
# Options via environment: SWIFTLET_BENCH_THREADS (default: all cores),
# SWIFTLET_BENCH_TYPES (e.g. Q4_1,Q4_K), SWIFTLET_BENCH_SECONDS (per cell, default 0.15).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --build-tests >&2
SWIFTLET_KERNEL_BENCH=1 swift test -c release --skip-build --filter KernelBenchmark 2>/dev/null \
  | sed -n '/^# Swiftlet kernel benchmark/,/^[◇✔✘]/p' | grep -v '^[◇✔✘]'
