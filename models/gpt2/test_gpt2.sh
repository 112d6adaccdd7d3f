#!/bin/sh
# test_gpt2.sh — end-to-end test of one Hugging Face GPT-2 checkpoint: imports
# it with gpt2_import in module form and with --flat, compiles both with circc
# for the golden prompt's length T and checks (design.md §4 tolerances)
#   logits and hidden0..hidden<L> = Hugging Face's (rtol 1e-4, atol 1e-4), with
#     1 and 2 threads; the circuits take tokens [T], so the [1,T,...] goldens are
#     squeezed to [T,...] with gpt2_npy;
#   the same with --batch 1 (tokens [1,T]: the goldens as they are);
#   with EVAL=1 (tiny models only: the evaluator is slow on big einsums) the
#     compiled outputs = `circc eval`'s, module and flat form, loss included;
#   with VAL=<name> (e.g. val4x128): the circuit built with --seq T --batch B
#     --loss on <name>_input_ids.npy [B,T] (targets = ids[:,1:]) gives the mean
#     loss of info.json's <name>_mean_loss (rtol 1e-5), module and flat form.
# usage: test_gpt2.sh CIRCC GPT2_IMPORT GPT2_NPY SCALAR_NPY MODEL_DIR GOLDEN_DIR PROMPT VAL|- EVAL WORKDIR
set -eu
[ $# -eq 10 ] || {
  echo "usage: test_gpt2.sh CIRCC GPT2_IMPORT GPT2_NPY SCALAR_NPY MODEL_DIR GOLDEN_DIR PROMPT VAL|- EVAL WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 scalar_npy=$4 model=$5 gold=$6 prompt=$7 val=$8 eval=$9 work=${10}
rm -rf "$work"
mkdir -p "$work"
set -x
set -- $("$npy" shape "$gold/${prompt}_input_ids.npy")
T=$2
L=$(($(ls "$gold/${prompt}"_hidden*.npy | wc -l) - 1))

# the goldens without their leading batch axis
for f in input_ids logits $(i=0; while [ $i -le $L ]; do echo hidden$i; i=$((i + 1)); done); do
  "$npy" squeeze "$gold/${prompt}_$f.npy" "$work/$f.npy"
done
checks() {   # DIR: --check every output against the goldens in DIR
  echo "--check logits=@$1/logits.npy"
  i=0
  while [ $i -le $L ]; do echo "--check hidden$i=@$1/hidden$i.npy"; i=$((i + 1)); done
}
outputs() {  # DIR PREFIX: --output of every output into DIR
  echo "--output logits=@$1/$2logits.npy"
  i=0
  while [ $i -le $L ]; do echo "--output hidden$i=@$1/$2hidden$i.npy"; i=$((i + 1)); done
}

for form in module flat; do
  flag=; [ $form = flat ] && flag=--flat
  "$import" $flag --seq "$T" --name gpt2 "$model" "$work/$form"
  "$circc" --tensors "$work/$form/store" "$work/$form/gpt2.circ" -o "$work/$form/gpt2"
  for t in 1 2; do
    "$work/$form/gpt2" --threads $t --input tokens=@"$work/input_ids.npy" $(checks "$work") --rtol 1e-4 --atol 1e-4
  done
  # batch dimension 1 and the loss output: the unsqueezed goldens
  "$import" $flag --seq "$T" --batch 1 --loss --name gpt2b "$model" "$work/$form"
  "$circc" --tensors "$work/$form/store" "$work/$form/gpt2b.circ" -o "$work/$form/gpt2b"
  "$npy" next "$gold/${prompt}_input_ids.npy" "$work/targets.npy"
  "$work/$form/gpt2b" --input tokens=@"$gold/${prompt}_input_ids.npy" --input targets=@"$work/targets.npy" \
    --check logits=@"$gold/${prompt}_logits.npy" $(i=0; while [ $i -le $L ]; do
      echo "--check hidden$i=@$gold/${prompt}_hidden$i.npy"; i=$((i + 1)); done) --rtol 1e-4 --atol 1e-4
  if [ "$eval" = 1 ]; then
    mkdir -p "$work/$form/eval"
    "$circc" eval --tensors "$work/$form/store" "$work/$form/gpt2.circ" --input tokens=@"$work/input_ids.npy" \
      $(outputs "$work/$form/eval" "")
    "$work/$form/gpt2" --input tokens=@"$work/input_ids.npy" $(checks "$work/$form/eval") --rtol 1e-4 --atol 1e-4
    "$circc" eval --tensors "$work/$form/store" "$work/$form/gpt2b.circ" \
      --input tokens=@"$gold/${prompt}_input_ids.npy" --input targets=@"$work/targets.npy" \
      --output loss=@"$work/$form/eval/loss.npy"
    "$work/$form/gpt2b" --input tokens=@"$gold/${prompt}_input_ids.npy" --input targets=@"$work/targets.npy" \
      --check loss=@"$work/$form/eval/loss.npy" --rtol 1e-5 --atol 1e-6
  fi
done

# the validation loss of info.json
if [ "$val" != - ]; then
  set -- $("$npy" shape "$gold/${val}_input_ids.npy")
  B=$1 T=$2
  want=$(sed -n "s/.*\"${val}_mean_loss\": *\([-0-9.eE+]*\).*/\1/p" "$gold/info.json")
  [ -n "$want" ]
  "$scalar_npy" "$want" "$work/loss_golden.npy"
  "$npy" next "$gold/${val}_input_ids.npy" "$work/val_targets.npy"
  for form in module flat; do
    flag=; [ $form = flat ] && flag=--flat
    "$import" $flag --seq "$T" --batch "$B" --loss --name val "$model" "$work/$form"
    "$circc" --tensors "$work/$form/store" "$work/$form/val.circ" -o "$work/$form/val"
    "$work/$form/val" --input tokens=@"$gold/${val}_input_ids.npy" --input targets=@"$work/val_targets.npy" \
      --check loss=@"$work/loss_golden.npy" --rtol 1e-5 --atol 0
  done
fi
