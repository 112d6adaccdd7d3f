#!/bin/sh
# test_mlp.sh — end-to-end test of the makemore MLP: compiles the circuits
# mlp_build generated for the dev set (N = 22655) and its first 256 examples,
# runs them with 1 and 2 threads, and checks
#   loss over the dev set = 2.1632766723632812 (PyTorch, info.json; rtol 1e-5)
#   logits of the first 256 = PyTorch's dev_logits_first256.npy (rtol 1e-4, atol 1e-4)
#   logits of the first 256 = circc eval's (the reference evaluator; rtol 1e-4, atol 1e-4)
# (design.md §4 tolerances; float32 logits of this model differ by up to 1e-5
# from the float64 evaluator, as PyTorch's do)
# usage: test_mlp.sh CIRCC SCALAR_NPY GENDIR GENDIR256 GOLDENDIR WORKDIR
set -eu
[ $# -eq 6 ] || { echo "usage: test_mlp.sh CIRCC SCALAR_NPY GENDIR GENDIR256 GOLDENDIR WORKDIR" >&2; exit 2; }
circc=$1 scalar_npy=$2 gen=$3 gen256=$4 gold=$5 work=$6
rm -rf "$work"
mkdir -p "$work"
set -x
"$circc" --tensors "$gen/store" "$gen/mlp.circ" -o "$work/mlp"
"$circc" --tensors "$gen256/store" "$gen256/mlp.circ" -o "$work/mlp256"
"$scalar_npy" 2.1632766723632812 "$work/loss_golden.npy"
"$circc" eval --tensors "$gen256/store" "$gen256/mlp.circ" --input contexts=@"$gold/dev_contexts_first256.npy" \
  --input targets=@"$gold/dev_targets_first256.npy" --output logits=@"$work/logits256_eval.npy" \
  --output loss=@"$work/loss256_eval.npy"
for t in 1 2; do
  "$work/mlp" --threads $t --input contexts=@"$gold/dev_contexts.npy" --input targets=@"$gold/dev_targets.npy" \
    --check loss=@"$work/loss_golden.npy" --rtol 1e-5 --atol 0
  "$work/mlp256" --threads $t --input contexts=@"$gold/dev_contexts_first256.npy" \
    --input targets=@"$gold/dev_targets_first256.npy" \
    --check logits=@"$gold/dev_logits_first256.npy" --rtol 1e-4 --atol 1e-4
  "$work/mlp256" --threads $t --input contexts=@"$gold/dev_contexts_first256.npy" \
    --input targets=@"$gold/dev_targets_first256.npy" \
    --check logits=@"$work/logits256_eval.npy" --rtol 1e-4 --atol 1e-4
done
