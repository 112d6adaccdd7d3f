#!/bin/sh
# test_gpt2_small.sh — GPT-2 small (124M) at full size, with deterministic
# random weights (gpt2_import --random-config CONFIG; no checkpoint needed):
#   T=8:    import, compile, run on 8 fixed token ids; logits = `circc eval`'s
#           (rtol 1e-4, atol 1e-4), with 1 and 2 threads;
#   T=64, T=1024: import, compile (logits only), run once on the same 8 ids
#           followed by filler ids; every logit finite and, attention being
#           causal, the first 8 rows = the T=8 program's logits (rtol/atol 1e-4).
# Prints the time of every step. Each import is a ~500 MB store and each
# program ~500 MB: everything lives in WORKDIR (under the build tree) and is
# deleted at the end, on failure too. Label `slow` (about 2 minutes on 2 cores).
# usage: test_gpt2_small.sh CIRCC GPT2_IMPORT GPT2_NPY CONFIG WORKDIR
set -eu
[ $# -eq 5 ] || {
  echo "usage: test_gpt2_small.sh CIRCC GPT2_IMPORT GPT2_NPY CONFIG WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 config=$4 work=$5
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

now() {  # seconds, with fractions where date supports %N
  t=$(date +%s.%N)
  case $t in *N) date +%s ;; *) echo "$t" ;; esac
}
step() {  # LABEL COMMAND...: runs COMMAND, prints its time
  label=$1
  shift
  t0=$(now)
  "$@"
  t1=$(now)
  awk -v l="$label" -v a="$t0" -v b="$t1" 'BEGIN { printf "gpt2_small: %-28s %7.2f s\n", l, b - a }'
}
ids8=464,2068,7586,21831,18045,625,262,16931   # 8 fixed token ids
ids() {  # T: the 8 fixed ids, then filler ids up to length T
  out=$ids8 i=8
  while [ "$i" -lt "$1" ]; do out="$out,$(((i * 7919 + 13) % 50257))"; i=$((i + 1)); done
  echo "$out"
}

# T=8: compiled logits = the reference evaluator's
d=$work/t8
step "T=8 import" "$import" --seq 8 --random-config "$config" "$d"
step "T=8 compile" "$circc" --tensors "$d/store" "$d/gpt2.circ" -o "$d/gpt2"
"$npy" from-ids "$(ids 8)" "$d/ids.npy"
step "T=8 circc eval" "$circc" eval --tensors "$d/store" "$d/gpt2.circ" --input tokens=@"$d/ids.npy" \
  --output logits=@"$d/eval_logits.npy"
"$npy" finite "$d/eval_logits.npy"
rm -rf "$d/store"
for t in 1 2; do
  step "T=8 run, $t thread(s)" "$d/gpt2" --threads $t --input tokens=@"$d/ids.npy" \
    --check logits=@"$d/eval_logits.npy" --rtol 1e-4 --atol 1e-4
done

# T=64 and T=1024: finite logits whose first 8 rows are the T=8 program's
for T in 64 1024; do
  e=$work/t$T
  step "T=$T import" "$import" --seq $T --random-config "$config" "$e"
  step "T=$T compile" "$circc" --tensors "$e/store" "$e/gpt2.circ" --output logits -o "$e/gpt2"
  rm -rf "$e/store"
  "$npy" from-ids "$(ids $T)" "$e/ids.npy"
  step "T=$T run" "$e/gpt2" --input tokens=@"$e/ids.npy" --output logits=@"$e/logits.npy"
  "$npy" finite "$e/logits.npy"
  "$npy" head 8 "$e/logits.npy" "$e/logits8.npy"
  "$d/gpt2" --input tokens=@"$d/ids.npy" --check logits=@"$e/logits8.npy" --rtol 1e-4 --atol 1e-4
  rm -rf "$e"
done
echo "gpt2_small: ok"
