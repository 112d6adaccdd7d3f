#!/bin/sh
# test_gpt2_generate.sh — end-to-end test of generation with a key/value cache
# for one Hugging Face GPT-2 checkpoint: gpt2_import --decode writes the
# one-new-position circuit, circc compiles it (with --lm SPEC when given), and
#   the decode program's logits after each prompt token (--dump-logits) equal
#     the full circuit's logits for the prompt (rtol 1e-4, atol 1e-4), which
#     equal Hugging Face's, with 1 and 2 threads;
#   greedy generation (--tokens <prompt ids> --greedy --generate N --print-ids)
#     equals <prompt>_greedy<N>.npy token for token (Hugging Face generate), with
#     1 and 2 threads; without such a golden: prompt = the first half of the
#     golden prompt, generate the second half, and every generated token is the
#     argmax of the full circuit's logits over the whole sequence at the position
#     before it (and the decode logits of that sequence equal the full logits);
#   with TEXT: --text TEXT encodes to the golden prompt ids, --top 5 prints five
#     "prob id 'token'" lines, and --text TEXT --generate 50 --top-k 40 --seed 1
#     prints TEXT and a continuation, the same for 1 and 2 threads and every run;
#     --top-k 1, a tiny --top-p and --temperature 0 give the greedy tokens, and
#     so does the prompt piped to --text - (also as --text=- --generate=20);
#   errors: prompt + generated longer than T and ids out of range exit 3, bad
#     options exit 2.
# usage: test_gpt2_generate.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT TEXT|- LM_SPEC|- SEQ WORKDIR
#   SEQ: the decode program's maximum length T (prompt + generated tokens)
set -eu
[ $# -eq 10 ] || {
  echo "usage: test_gpt2_generate.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT TEXT|- LM_SPEC|- SEQ WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 model=$4 gold=$5 prompt=$6 text=$7 lm=$8 seq=$9 work=${10}
# one thread unless a check says --threads 2 (many small steps per token: slow on a busy machine)
OMP_NUM_THREADS=1
export OMP_NUM_THREADS
rm -rf "$work"
mkdir -p "$work"
set -x
set -- $("$npy" shape "$gold/${prompt}_input_ids.npy")
P=$2
ids=$("$npy" ids "$gold/${prompt}_input_ids.npy")
"$npy" squeeze "$gold/${prompt}_input_ids.npy" "$work/ids.npy"
"$npy" squeeze "$gold/${prompt}_logits.npy" "$work/logits.npy"

# expect CODE CMD...: CMD exits with CODE (out.txt, err.txt in $work)
. "$(dirname "$0")/expect.sh"

# the full circuit for the prompt's length, and the decode circuit for T = SEQ
"$import" --seq "$P" --name full "$model" "$work"
"$circc" --tensors "$work/store" "$work/full.circ" -o "$work/full"
"$import" --decode --seq "$seq" --name gpt2 "$model" "$work"
lmflag=
[ "$lm" != - ] && lmflag="--lm $lm"
"$circc" --tensors "$work/store" "$work/gpt2_decode.circ" $lmflag -o "$work/dec"
dec=$work/dec

# the logits at each prompt position = the full circuit's = Hugging Face's
"$work/full" --input tokens=@"$work/ids.npy" --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4
for t in 1 2; do
  "$dec" --threads $t --tokens "$ids" --dump-logits "$work/dec_logits$t.npy"
  "$work/full" --input tokens=@"$work/ids.npy" --check logits=@"$work/dec_logits$t.npy" --rtol 1e-4 --atol 1e-4
done

# greedy generation
greedy=$(ls "$gold/${prompt}"_greedy*.npy 2> /dev/null | head -n 1)
if [ -n "$greedy" ]; then
  want=$("$npy" ids "$greedy")
  set -- $("$npy" shape "$greedy")
  N=$(($2 - P))
  for t in 1 2; do
    got=$("$dec" --threads $t --tokens "$ids" --greedy --generate $N --print-ids | tail -n 1)
    if [ "$got" != "$want" ]; then
      echo "FAIL: greedy ids ($t threads) differ from $greedy:" >&2
      echo " got  $got" >&2
      echo " want $want" >&2
      exit 1
    fi
  done
else
  half=$((P / 2))
  first=$(echo "$ids" | cut -d, -f1-$half)
  for t in 1 2; do
    "$dec" --threads $t --tokens "$first" --greedy --generate $((P - half)) --print-ids > "$work/greedy$t.txt"
  done
  cmp "$work/greedy1.txt" "$work/greedy2.txt"
  got=$(tail -n 1 "$work/greedy1.txt")
  "$npy" from-ids "$got" "$work/greedy.npy"
  "$work/full" --input tokens=@"$work/greedy.npy" --output logits=@"$work/greedy_logits.npy"
  # argmax at position i = token i+1, for the generated tokens
  want=$(echo "$got" | cut -d, -f$((half + 1))-)
  argmax=$("$npy" argmax "$work/greedy_logits.npy" | cut -d, -f$half-$((P - 1)))
  if [ "$argmax" != "$want" ]; then
    echo "FAIL: greedy tokens $want are not the full circuit's argmaxes $argmax" >&2
    exit 1
  fi
  "$dec" --tokens "$got" --dump-logits "$work/greedy_dec_logits.npy"
  "$work/full" --input tokens=@"$work/greedy.npy" --check logits=@"$work/greedy_dec_logits.npy" --rtol 1e-4 --atol 1e-4
fi

# text in, text out
if [ "$text" != - ]; then
  got=$("$dec" --text "$text" --top 5 --print-ids)
  [ "$(echo "$got" | tail -n 1)" = "$ids" ]
  [ "$(echo "$got" | grep -c "^0\.[0-9]* [0-9]* '")" -eq 5 ]
  "$dec" --threads 1 --text "$text" --generate 50 --top-k 40 --seed 1 > "$work/sample1.txt"
  "$dec" --threads 2 --text "$text" --generate 50 --top-k 40 --seed 1 > "$work/sample2.txt"
  "$dec" --text "$text" --generate 50 --top-k 40 --seed 1 > "$work/sample3.txt"
  cat "$work/sample1.txt"
  cmp "$work/sample1.txt" "$work/sample2.txt"
  cmp "$work/sample1.txt" "$work/sample3.txt"
  case $(head -c ${#text} "$work/sample1.txt") in "$text") ;; *) echo "FAIL: the sample does not start with the prompt" >&2; exit 1 ;; esac
  [ $(wc -c < "$work/sample1.txt") -gt $((${#text} + 20)) ]
  # another seed, another text; top-p and temperature run
  "$dec" --text "$text" --generate 50 --top-k 40 --seed 2 > "$work/sample4.txt"
  ! cmp -s "$work/sample1.txt" "$work/sample4.txt"
  "$dec" --text "$text" --generate 20 --top-p 0.9 --temperature 0.8 --seed 3 -v > /dev/null
  # sampling that can only pick the most likely token is greedy
  g=$("$dec" --text "$text" --generate 20 --greedy --print-ids | tail -n 1)
  [ "$("$dec" --text "$text" --generate 20 --top-k 1 --seed 5 --print-ids | tail -n 1)" = "$g" ]
  [ "$("$dec" --text "$text" --generate 20 --top-p 0.00001 --seed 9 --print-ids | tail -n 1)" = "$g" ]
  [ "$("$dec" --text "$text" --generate 20 --temperature 0 --print-ids | tail -n 1)" = "$g" ]
  # --text - reads the prompt from stdin (every byte: printf, not echo); --opt=value forms
  [ "$(printf '%s' "$text" | "$dec" --text - --generate 20 --greedy --print-ids | tail -n 1)" = "$g" ]
  [ "$(printf '%s' "$text" | "$dec" --text=- --generate=20 --greedy --print-ids | tail -n 1)" = "$g" ]
else
  expect 2 "$dec" --text "x" --generate 1
  grep -q "needs a tokenizer" "$work/err.txt"
fi

# errors
expect 3 "$dec" --tokens "$ids" --generate $((seq - P + 1))
grep -q "holds at most $seq" "$work/err.txt"
expect 0 "$dec" --tokens "$ids" --generate $((seq - P)) --greedy
expect 3 "$dec" --tokens 0,99999999 --generate 1
expect 2 "$dec" --generate 5
expect 2 "$dec" --tokens "$ids"
expect 2 "$dec" --tokens 1,,2 --generate 1
expect 2 "$dec" --tokens "$ids" --generate 1 --greedy --seed 1
expect 2 "$dec" --tokens "$ids" --generate 1 --top-p 1.5
expect 2 "$dec" --tokens "$ids" --generate 1 --input tokens=@x.npy
expect 2 "$work/full" --tokens "$ids" --generate 1
grep -q "cannot generate text" "$work/err.txt"
