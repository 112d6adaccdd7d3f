#!/bin/sh
# test_gpt2_model_file.sh — end-to-end test of gpt2_import --model-file on one
# Hugging Face GPT-2 checkpoint: the rust_circuit model file it writes
#   loads with `circc --info-model`, which reports the golden's layer count;
#   compiled with `circc --bind-tokens -D SEQ=T` (T = the golden prompt's
#     length) gives Hugging Face's logits (rtol 1e-4, atol 1e-4, design.md §4)
#     with 1 and 2 threads; the circuit takes tokens [T], so the [1,T,...]
#     goldens are squeezed to [T,...] with gpt2_npy;
#   with EVAL=1 (tiny models only: the evaluator is slow on big einsums)
#     `circc eval --bind-tokens` gives the compiled program's logits (1e-4).
# --model-file with an option of the other circuits is a usage error (exit 2).
# usage: test_gpt2_model_file.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT EVAL WORKDIR
set -eu
[ $# -eq 8 ] || {
  echo "usage: test_gpt2_model_file.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT EVAL WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 model=$4 gold=$5 prompt=$6 eval=$7 work=$8
rm -rf "$work"
mkdir -p "$work"
set -x
set -- $("$npy" shape "$gold/${prompt}_input_ids.npy")
T=$2
L=$(($(ls "$gold/${prompt}"_hidden*.npy | wc -l) - 1))
"$npy" squeeze "$gold/${prompt}_input_ids.npy" "$work/input_ids.npy"
"$npy" squeeze "$gold/${prompt}_logits.npy" "$work/logits.npy"

"$import" --model-file --name model "$model" "$work"
"$circc" --info-model "$work/model.circ" >"$work/info.txt"
grep -qx "layers: $L" "$work/info.txt"

"$circc" --tensors "$work/store" "$work/model.circ" --bind-tokens -D SEQ="$T" -o "$work/model"
for t in 1 2; do
  "$work/model" --threads $t --input tokens=@"$work/input_ids.npy" --check logits=@"$work/logits.npy" \
    --rtol 1e-4 --atol 1e-4
done
if [ "$eval" = 1 ]; then
  "$circc" eval --tensors "$work/store" "$work/model.circ" --bind-tokens -D SEQ="$T" \
    --input tokens=@"$work/input_ids.npy" --output logits=@"$work/eval_logits.npy"
  "$work/model" --input tokens=@"$work/input_ids.npy" --check logits=@"$work/eval_logits.npy" --rtol 1e-4 --atol 1e-4
fi

rc=0
"$import" --model-file --seq "$T" "$model" "$work/usage" 2>"$work/usage.err" || rc=$?
[ $rc -eq 2 ]
grep -q -- "--model-file writes only the model file" "$work/usage.err"
