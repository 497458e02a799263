#!/usr/bin/env bash
# The GPU check of the speed work: one command, one JSON + one text table (scripts/benchmarks/gpu_check.py explains the settings).
#
#   scripts/benchmarks/gpu_check.sh [--out DIR] [--budget S]   # CUDA, official 512 networks, filler weights, < 8 min (H100/H200)
#   scripts/benchmarks/gpu_check.sh --device cpu --quick       # dry run on the CPU (tests/test_gpu_check.py)
#
# Needs torch (a CUDA build) and this repository; nothing is downloaded. With DIFFACE_GPU_CHECK_INSTALL=1 it
# first installs the onnxruntime-gpu wheel from PyPI (for the onnxruntime CUDA / TensorRT rows; without it
# those rows are reported as skipped, with the reason). Results go to --out (default $OUT, else gpu_check_out).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${DIFFACE_GPU_CHECK_INSTALL:-0}" = 1 ]; then
    python -m pip install -q onnxruntime-gpu || echo "note: onnxruntime-gpu could not be installed; its rows will skip" >&2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 python scripts/benchmarks/gpu_check.py "$@"
