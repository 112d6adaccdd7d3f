#!/bin/sh
# test_gpt2_precision.sh — end-to-end test of circc --precision bf16 or int8 on
# one Hugging Face GPT-2 checkpoint (module form, --seq T of the golden prompt):
#   the program gives the same bits with 1 and 2 threads (logits and every
#     hidden state), and --info names the precision;
#   its logits are within LOGIT_ATOL of Hugging Face's fp32 logits (the goldens)
#     and of circc's fp32 program's; LOGIT_ATOL is measured on the model with a
#     margin (README, Precision: bf16 rounds each GEMM operand by up to 2^-9
#     relative, int8 each weight by up to s/2 = max|w|/254 of its group, and
#     neither has a useful bound through layernorm and softmax);
#   with VAL (a [B,T] validation set with its mean loss in info.json): the
#     program's mean loss is within LOSS_RTOL (relative) of it;
#   the decode program (gpt2_import --decode, KV cache; its GEMMs of one row run
#     on the vector / decode path) holds its key/value cache as bf16 (--info),
#     generates the same greedy ids with 1 and 2 threads, and its logits after
#     each prompt token (every cache row rounded to bf16 as generation stores
#     it) equal the full program's within LOGIT_ATOL.
# usage: test_gpt2_precision.sh PRECISION CIRCC GPT2_IMPORT GPT2_NPY SCALAR_NPY MODEL_DIR GOLDEN_DIR PROMPT VAL|-
#        LOGIT_ATOL LOSS_RTOL WORKDIR
set -eu
[ $# -eq 12 ] || {
  echo "usage: test_gpt2_precision.sh PRECISION CIRCC GPT2_IMPORT GPT2_NPY SCALAR_NPY MODEL_DIR GOLDEN_DIR PROMPT VAL|- LOGIT_ATOL LOSS_RTOL WORKDIR" >&2
  exit 2
}
prec=$1
shift
circc=$1 import=$2 npy=$3 scalar_npy=$4 model=$5 gold=$6 prompt=$7 val=$8 atol=$9 loss_rtol=${10} work=${11}
rm -rf "$work"
mkdir -p "$work"
set -x
set -- $("$npy" shape "$gold/${prompt}_input_ids.npy")
T=$2
L=$(($(ls "$gold/${prompt}"_hidden*.npy | wc -l) - 1))
"$npy" squeeze "$gold/${prompt}_input_ids.npy" "$work/ids.npy"
"$npy" squeeze "$gold/${prompt}_logits.npy" "$work/logits.npy"
outputs() {  # PREFIX: --output of every output into $work
  echo "--output logits=@$work/$1logits.npy"
  i=0
  while [ $i -le $L ]; do echo "--output hidden$i=@$work/$1hidden$i.npy"; i=$((i + 1)); done
}

"$import" --seq "$T" --name gpt2 "$model" "$work"
"$circc" --tensors "$work/store" "$work/gpt2.circ" -o "$work/fp32"
"$circc" --precision "$prec" --tensors "$work/store" "$work/gpt2.circ" -o "$work/low"
"$work/low" --info | grep "^precision:    $prec (GEMMs: "
"$work/fp32" --info | grep -x "precision:    fp32"
"$work/fp32" --input tokens=@"$work/ids.npy" $(outputs fp32_)
for t in 1 2; do
  "$work/low" --threads $t --input tokens=@"$work/ids.npy" $(outputs "t${t}_")
done
cmp "$work/t1_logits.npy" "$work/t2_logits.npy"
i=0
while [ $i -le $L ]; do cmp "$work/t1_hidden$i.npy" "$work/t2_hidden$i.npy"; i=$((i + 1)); done
"$work/low" --input tokens=@"$work/ids.npy" --check logits=@"$work/logits.npy" --rtol 0 --atol "$atol"
"$work/low" --input tokens=@"$work/ids.npy" --check logits=@"$work/fp32_logits.npy" --rtol 0 --atol "$atol"

if [ "$val" != - ]; then
  set -- $("$npy" shape "$gold/${val}_input_ids.npy")
  B=$1 TV=$2
  want=$(sed -n "s/.*\"${val}_mean_loss\": *\([-0-9.eE+]*\).*/\1/p" "$gold/info.json")
  [ -n "$want" ]
  "$scalar_npy" "$want" "$work/loss_golden.npy"
  "$npy" next "$gold/${val}_input_ids.npy" "$work/val_targets.npy"
  "$import" --seq "$TV" --batch "$B" --loss --name val "$model" "$work"
  "$circc" --precision "$prec" --tensors "$work/store" "$work/val.circ" -o "$work/val"
  "$work/val" --input tokens=@"$gold/${val}_input_ids.npy" --input targets=@"$work/val_targets.npy" \
    --check loss=@"$work/loss_golden.npy" --rtol "$loss_rtol" --atol 0
fi

# a cache of at least 128 positions: the past keys' and values' products then
# run as GEMMs (>= 8192 FLOPs even for n_embd 32), so the cache is held as bf16
DT=$((T > 128 ? T : 128))
"$import" --decode --seq "$DT" --name dec "$model" "$work"
"$circc" --precision "$prec" --tensors "$work/store" "$work/dec_decode.circ" -o "$work/dec"
"$work/dec" --info | grep -q "^  past_k \[.*\] float32 (stored as bf16)$"
"$work/dec" --info | grep -q "^  past_v \[.*\] float32 (stored as bf16)$"
ids=$("$npy" ids "$gold/${prompt}_input_ids.npy")
half=$(((T + 1) / 2))
first=$(echo "$ids" | cut -d, -f1-$half)
for t in 1 2; do
  "$work/dec" --threads $t --tokens "$first" --greedy --generate $((T - half)) --print-ids > "$work/greedy$t.txt"
  "$work/dec" --threads $t --tokens "$ids" --dump-logits "$work/dec_logits$t.npy"
done
cmp "$work/greedy1.txt" "$work/greedy2.txt"
cmp "$work/dec_logits1.npy" "$work/dec_logits2.npy"
"$work/low" --input tokens=@"$work/ids.npy" --check logits=@"$work/dec_logits1.npy" --rtol 0 --atol "$atol"
echo "PASS"
