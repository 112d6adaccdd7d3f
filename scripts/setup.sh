#!/bin/sh
# Installs what circc needs to build and test on Debian 12, if it is missing
# (libopenmpi-dev, openmpi-bin: mpicc and mpirun for circc --mpi and its tests;
# libclang-dev: circc parses the C functions of --ops with libclang;
# python3-numpy: python/circc.py and its tests, label python).
# With --bench: what the optional benchmarks need instead (never used by CI):
#   python3-torch, python3-numpy  PyTorch reference of bench/gpt2_bench.py
#                                 (run with /usr/bin/python3; target bench_gpt2)
#   libopenblas-dev               cblas_sgemm for gemm_bench's comparison
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
PKGS="build-essential cmake pkg-config libcriterion-dev libomp-dev clang libclang-dev libopenmpi-dev openmpi-bin python3-numpy"
if [ "${1:-}" = --bench ]; then
  PKGS="python3-torch python3-numpy libopenblas-dev"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
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
