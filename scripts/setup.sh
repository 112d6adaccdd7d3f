#!/bin/sh
# Installs what circc needs to build and test on Debian 12, if it is missing
# (libopenmpi-dev, openmpi-bin: mpicc and mpirun for circc --mpi and its tests;
# libclang-dev: circc parses the C functions of --ops with libclang;
# python3-numpy: python/circc.py and its tests, label python).
# With --bench [DIR]: what the optional benchmarks need instead (never used by CI):
#   python3-torch, python3-numpy  PyTorch reference of bench/gpt2_bench.py
#                                 (run with /usr/bin/python3; target bench_gpt2)
#   python3-onnx                  torch.onnx.export of its ONNX Runtime models
#   nodejs, npm (if node is absent) and the npm package onnxruntime-node
#                                 (pinned below) in DIR/node_modules, default
#                                 build/bench/ort (where bench_gpt2 looks when
#                                 the build directory is build; never committed)
#   libopenblas-dev               cblas_sgemm for gemm_bench's comparison
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
ORT_NODE=onnxruntime-node@1.31.1  # bench/gpt2_bench.py's ORT_VERSION; tested on node 20
PKGS="build-essential cmake pkg-config libcriterion-dev libomp-dev clang libclang-dev libopenmpi-dev openmpi-bin python3-numpy"
bench=
if [ "${1:-}" = --bench ]; then
  bench=1
  PKGS="python3-torch python3-numpy python3-onnx libopenblas-dev"
  command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
  command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: missing packages:$missing" >&2
    echo "setup: run: sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi
[ -z "$bench" ] && exit 0
dir="${2:-$(cd "$(dirname "$0")/.." && pwd)/build/bench/ort}"
if [ ! -f "$dir/node_modules/onnxruntime-node/package.json" ] ||
   ! grep -q "\"version\": \"${ORT_NODE#*@}\"" "$dir/node_modules/onnxruntime-node/package.json"; then
  echo "setup: npm install $ORT_NODE into $dir/node_modules" >&2
  mkdir -p "$dir"
  # the package ships the CPU binaries; its install script would only fetch
  # the CUDA ones (from outside the npm registry): skip it
  ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix "$dir" --no-audit --no-fund --no-save "$ORT_NODE" >&2
fi
