#!/bin/sh
# test_bigram.sh — end-to-end test of the bigram model: compiles the circuit
# bigram_build generated, runs it with 1 and 2 threads, and checks
#   loss      = 2.454577, the published mean NLL of makemore's bigram model (rtol 1e-5)
#   log_probs = circc eval's (the reference evaluator) within 1e-5
# usage: test_bigram.sh CIRCC SCALAR_NPY GENDIR WORKDIR
set -eu
[ $# -eq 4 ] || { echo "usage: test_bigram.sh CIRCC SCALAR_NPY GENDIR WORKDIR" >&2; exit 2; }
circc=$1 scalar_npy=$2 gen=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
set -x
"$circc" --tensors "$gen/store" "$gen/bigram.circ" -o "$work/bigram"
"$scalar_npy" 2.454577 "$work/loss_golden.npy"
"$circc" eval --tensors "$gen/store" "$gen/bigram.circ" --input xs=@"$gen/xs.npy" --input ys=@"$gen/ys.npy" \
  --output log_probs=@"$work/log_probs_eval.npy" --output loss=@"$work/loss_eval.npy"
for t in 1 2; do
  # --rtol/--atol apply to every --check of a run, hence two runs
  "$work/bigram" --threads $t --input xs=@"$gen/xs.npy" --input ys=@"$gen/ys.npy" \
    --check loss=@"$work/loss_golden.npy" --rtol 1e-5 --atol 0
  "$work/bigram" --threads $t --input xs=@"$gen/xs.npy" --input ys=@"$gen/ys.npy" \
    --check log_probs=@"$work/log_probs_eval.npy" --rtol 1e-5 --atol 1e-5
done
