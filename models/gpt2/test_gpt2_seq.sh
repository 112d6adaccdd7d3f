#!/bin/sh
# test_gpt2_seq.sh — end-to-end test of a symbolic sequence length for one
# Hugging Face GPT-2 checkpoint: gpt2_import without --seq writes circuits
# whose length is the library's symbolic size SEQ (1s), and circc -D SEQ=N
# picks it:
#   without -D, circc exits 1 and says to bind SEQ with -D SEQ=N;
#   with PARTS=all (PARTS=decode skips it: the full circuits of the bigger
#     models are slow to compile): the full circuit (tokens and positions
#     [SEQ]), module and flat form, with -D SEQ=T and positions 0..T-1 gives
#     the logits of the circuit imported with --seq T (rtol 1e-5, atol 1e-5)
#     and Hugging Face's (1e-4), the same for 1 and 2 threads (and with
#     --batch 1, module form); left-padded (4 pad tokens first, whose
#     positions come after every real token's) its last T rows are the same
#     logits; at -D SEQ=8 the compiled logits = `circc eval -D SEQ=8`'s;
#   the decode circuit compiled with -D SEQ=64 and -D SEQ=256 (--lm SPEC when
#     given) generates the greedy tokens of <prompt>_greedy<N>.npy (Hugging
#     Face generate; as many as fit), or without one (PARTS=all) its logits
#     after each prompt token = those of the --seq T full circuit;
#   -D SEQ beyond the model's n_positions: a compile-time error (exit 1)
#     naming the position table, for the decode and the full circuit.
# usage: test_gpt2_seq.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT LM_SPEC|- all|decode WORKDIR
set -eu
[ $# -eq 9 ] || {
  echo "usage: test_gpt2_seq.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT LM_SPEC|- all|decode WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 model=$4 gold=$5 prompt=$6 lm=$7 parts=$8 work=$9
OMP_NUM_THREADS=1
export OMP_NUM_THREADS
rm -rf "$work"
mkdir -p "$work"
set -x
set -- $("$npy" shape "$gold/${prompt}_input_ids.npy")
T=$2
ids=$("$npy" ids "$gold/${prompt}_input_ids.npy")
"$npy" squeeze "$gold/${prompt}_input_ids.npy" "$work/ids.npy"
"$npy" squeeze "$gold/${prompt}_logits.npy" "$work/logits.npy"
npos=$(grep '"n_positions"' "$model/config.json" | tr -dc 0-9)

# range A B: A,A+1,...,B-1
range() {
  i=$1 s=
  while [ "$i" -lt "$2" ]; do s=$s${s:+,}$i; i=$((i + 1)); done
  echo "$s"
}
# expect CODE CMD...: CMD exits with CODE (out.txt, err.txt in $work)
. "$(dirname "$0")/expect.sh"

"$import" --decode --name gpt2 "$model" "$work/module"
"$import" --flat --name gpt2 "$model" "$work/flat"
grep -q "'tokens' \[1s\] Symbol" "$work/module/gpt2.circ"
grep -q "'kv_mask' \[1s\] Symbol" "$work/module/gpt2_decode.circ"

# no -D: the error names SEQ and -D
for c in gpt2 gpt2_decode; do
  expect 1 "$circc" --tensors "$work/module/store" "$work/module/$c.circ" -o "$work/nope"
  grep -q "symbolic size 1s (SEQ) is not bound by any module; bind it with -D SEQ=N" "$work/err.txt"
done

# full circuit: -D SEQ=T = --seq T; left padding
"$npy" from-ids "$(range 0 "$T")" "$work/pos.npy"
"$npy" from-ids "0,0,0,0,$ids" "$work/padded.npy"
"$npy" from-ids "$(range "$T" $((T + 4))),$(range 0 "$T")" "$work/padded_pos.npy"
for form in module flat; do
  [ "$parts" = all ] || break
  flag=; [ $form = flat ] && flag=--flat
  d=$work/$form
  "$import" $flag --seq "$T" --name fixed "$model" "$d"
  "$circc" --tensors "$d/store" "$d/fixed.circ" --output logits -o "$d/fixed"
  "$d/fixed" --input tokens=@"$work/ids.npy" --output logits=@"$d/fixed_logits.npy"
  "$circc" -D SEQ="$T" --tensors "$d/store" "$d/gpt2.circ" --output logits -o "$d/sym"
  for t in 1 2; do
    "$d/sym" --threads $t --input tokens=@"$work/ids.npy" --input positions=@"$work/pos.npy" \
      --check logits=@"$d/fixed_logits.npy" --rtol 1e-5 --atol 1e-5 \
      --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4 --output logits=@"$d/sym_logits$t.npy"
  done
  cmp "$d/sym_logits1.npy" "$d/sym_logits2.npy"
  "$circc" -D SEQ=$((T + 4)) --tensors "$d/store" "$d/gpt2.circ" --output logits -o "$d/padded"
  "$d/padded" --input tokens=@"$work/padded.npy" --input positions=@"$work/padded_pos.npy" \
    --output logits=@"$d/padded_logits.npy"
  "$npy" tail "$T" "$d/padded_logits.npy" "$d/unpadded_logits.npy"
  "$d/sym" --input tokens=@"$work/ids.npy" --input positions=@"$work/pos.npy" \
    --check logits=@"$d/unpadded_logits.npy" --rtol 1e-5 --atol 1e-5
  if [ $form = module ]; then   # --batch 1: tokens [1,SEQ], positions [SEQ]
    "$import" --batch 1 --name batch "$model" "$d"
    "$circc" -D SEQ="$T" --tensors "$d/store" "$d/batch.circ" --output logits -o "$d/batch"
    "$d/batch" --input tokens=@"$gold/${prompt}_input_ids.npy" --input positions=@"$work/pos.npy" \
      --check logits=@"$gold/${prompt}_logits.npy" --rtol 1e-4 --atol 1e-4
  fi
  "$npy" head 8 "$work/ids.npy" "$work/ids8.npy"
  "$npy" head 8 "$work/pos.npy" "$work/pos8.npy"
  "$circc" eval -D SEQ=8 --tensors "$d/store" "$d/gpt2.circ" --input tokens=@"$work/ids8.npy" \
    --input positions=@"$work/pos8.npy" --output logits=@"$d/eval8.npy"
  "$circc" -D SEQ=8 --tensors "$d/store" "$d/gpt2.circ" --output logits -o "$d/sym8"
  for t in 1 2; do
    "$d/sym8" --threads $t --input tokens=@"$work/ids8.npy" --input positions=@"$work/pos8.npy" \
      --check logits=@"$d/eval8.npy" --rtol 1e-4 --atol 1e-5
  done
done

# decode circuit: -D SEQ=64 and 256 give Hugging Face's greedy tokens
lmflag=
[ "$lm" != - ] && lmflag="--lm $lm"
greedy=$(ls "$gold/${prompt}"_greedy*.npy 2> /dev/null | head -n 1)
for S in 64 256; do
  dec=$work/dec$S
  "$circc" -D SEQ=$S --tensors "$work/module/store" "$work/module/gpt2_decode.circ" $lmflag -o "$dec"
  "$dec" --help | grep -q "max length T = $S tokens"
  if [ -n "$greedy" ]; then
    want=$("$npy" ids "$greedy")
    set -- $("$npy" shape "$greedy")
    n=$(($2 < S ? $2 : S))
    want=$(echo "$want" | cut -d, -f1-$n)
    for t in 1 2; do
      got=$("$dec" --threads $t --tokens "$ids" --greedy --generate $((n - T)) --print-ids | tail -n 1)
      if [ "$got" != "$want" ]; then
        echo "FAIL: greedy ids (-D SEQ=$S, $t threads) differ from $greedy:" >&2
        echo " got  $got" >&2
        echo " want $want" >&2
        exit 1
      fi
    done
  else
    "$dec" --tokens "$ids" --dump-logits "$work/dec_logits.npy"
    "$work/module/fixed" --input tokens=@"$work/ids.npy" --check logits=@"$work/dec_logits.npy" --rtol 1e-4 --atol 1e-4
  fi
  expect 3 "$dec" --tokens "$ids" --generate $((S - T + 1))
  grep -q "holds at most $S (T); compile it with a larger circc -D SEQ=N" "$work/err.txt"
done

# SEQ beyond n_positions: a compile-time error naming the position table
# (decode: pos runs to SEQ-1; full: positions [SEQ]); no program is written
for c in gpt2_decode gpt2; do
  expect 1 "$circc" -D SEQ=$((npos + 8)) --tensors "$work/module/store" "$work/module/$c.circ" -o "$work/big"
  grep -q "'t.w.pos_embeds' \[$npos,[0-9]*\] has $npos positions along axis 0, but input '[a-z]*' takes the positions 0..$((npos + 7)) of a sequence of $((npos + 8)); -D SEQ=$((npos + 8)): bind SEQ to at most $npos" "$work/err.txt"
  [ ! -e "$work/big" ]
done
