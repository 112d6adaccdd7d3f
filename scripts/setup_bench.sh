#!/bin/sh
# Installs what the optional benchmarks need on Debian 12, if it is missing
# (never used by CI; scripts/setup.sh covers building and testing):
#   python3-torch, python3-numpy  PyTorch reference of bench/gpt2_bench.py
#                                 (run with /usr/bin/python3; target bench_gpt2)
#   libopenblas-dev               cblas_sgemm for gemm_bench's comparison
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
PKGS="python3-torch python3-numpy libopenblas-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "setup_bench: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "setup_bench: missing packages:$missing" >&2
  echo "setup_bench: run: sudo apt-get install -y$missing" >&2
  exit 1
fi
