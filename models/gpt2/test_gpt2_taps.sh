#!/bin/sh
# test_gpt2_taps.sh — --tap and --patch on GPT-2 (README "Taps and patches"),
# for one Hugging Face checkpoint and its golden:
#   the rust_circuit model file (module form, gpt2_import --model-file) with
#     --tap a.attn_probs (every layer's copy, named b<i>/a.attn_probs) and
#     --patch b1/a.heads: unpatched logits = Hugging Face's; layer 1's
#     attention pattern = circc eval's (1e-5) and is a causal softmax; with
#     layer 1's heads patched to zeros, or only head 2's output zeroed, the
#     logits = circc eval --patch's and differ from the unpatched ones; 1 and
#     2 threads;
#   generation: the decode circuit (gpt2_import --decode) patched the same way
#     at every step gives, for the golden prompt, the logits of the
#     full-sequence circuit patched with zeros at every position.
# usage: test_gpt2_taps.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT WORKDIR
set -eu
[ $# -eq 7 ] || {
  echo "usage: test_gpt2_taps.sh CIRCC GPT2_IMPORT GPT2_NPY MODEL_DIR GOLDEN_DIR PROMPT WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 model=$4 gold=$5 prompt=$6 work=$7
rm -rf "$work"
mkdir -p "$work"
set -x
"$npy" squeeze "$gold/${prompt}_input_ids.npy" "$work/ids.npy"
"$npy" squeeze "$gold/${prompt}_logits.npy" "$work/logits.npy"
set -- $("$npy" shape "$work/ids.npy")
T=$1

# the model file, tapped and patched
"$import" --model-file --name model "$model" "$work"
flags="--tensors $work/store $work/model.circ --bind-tokens -D SEQ=$T"
"$circc" $flags --tap a.attn_probs --tap b1/a.heads --patch b1/a.heads -o "$work/model"
"$work/model" --info >"$work/info.txt"
grep -q "^  b0/a.attn_probs \[" "$work/info.txt"
grep -q "^  b1/a.attn_probs \[" "$work/info.txt"
heads=$(sed -n 's/^  b1\/a.heads \[\([0-9,]*\)\] float32$/\1/p' "$work/info.txt" | head -1)
"$npy" zeros "$heads" "$work/zeros.npy"
"$circc" eval $flags --tap a.attn_probs --input tokens=@"$work/ids.npy" --output b1/a.attn_probs=@"$work/eval_probs.npy"
"$circc" eval $flags --patch b1/a.heads=@"$work/zeros.npy" --input tokens=@"$work/ids.npy" \
  --output logits=@"$work/eval_patched.npy"
"$npy" causal-softmax "$work/eval_probs.npy"
for t in 1 2; do
  "$work/model" --threads $t --input tokens=@"$work/ids.npy" --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4
  "$work/model" --threads $t --input tokens=@"$work/ids.npy" --check b1/a.attn_probs=@"$work/eval_probs.npy" \
    --rtol 1e-4 --atol 1e-5 --output b1/a.attn_probs=@"$work/probs.npy"
  "$npy" causal-softmax "$work/probs.npy"
  "$work/model" --threads $t --input tokens=@"$work/ids.npy" --patch b1/a.heads=@"$work/zeros.npy" \
    --check logits=@"$work/eval_patched.npy" --rtol 1e-4 --atol 1e-4 --output b1/a.heads=@"$work/patched_heads.npy"
  "$npy" ids "$work/patched_heads.npy" | grep -qv '[1-9]'   # the tap of a patched node is the patch
  rc=0
  "$work/model" --threads $t --input tokens=@"$work/ids.npy" --patch b1/a.heads=@"$work/zeros.npy" \
    --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4 >/dev/null || rc=$?
  [ $rc -eq 1 ]
done

# one head ablated: layer 1's heads as computed, head 2's output zeroed, = circc eval --patch
"$work/model" --input tokens=@"$work/ids.npy" --output b1/a.heads=@"$work/heads.npy"
"$npy" zero-entry 2 "$work/heads.npy" "$work/head2_zeroed.npy"
"$circc" eval $flags --patch b1/a.heads=@"$work/head2_zeroed.npy" --input tokens=@"$work/ids.npy" \
  --output logits=@"$work/eval_head2.npy"
for t in 1 2; do
  "$work/model" --threads $t --input tokens=@"$work/ids.npy" --patch b1/a.heads=@"$work/head2_zeroed.npy" \
    --check logits=@"$work/eval_head2.npy" --rtol 1e-4 --atol 1e-4
done
rc=0
"$work/model" --input tokens=@"$work/ids.npy" --patch b1/a.heads=@"$work/head2_zeroed.npy" \
  --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4 >/dev/null || rc=$?
[ $rc -eq 1 ]   # the head mattered

# generation: the decode program patched at every step = the full program patched everywhere
"$import" --decode --seq "$T" --name gpt2 "$model" "$work/dec"
"$circc" --tensors "$work/dec/store" "$work/dec/gpt2_decode.circ" --patch a1.heads -o "$work/decode"
"$circc" --tensors "$work/dec/store" "$work/dec/gpt2.circ" --output logits --patch b1/a.heads -o "$work/full"
step=$("$work/decode" --info | sed -n 's/^  a1.heads \[\([0-9,]*\)\] float32$/\1/p')
"$npy" zeros "$step" "$work/step_zeros.npy"
"$npy" zeros "$(sed -n 's/^  b1\/a.heads \[\([0-9,]*\)\] float32$/\1/p' "$work/info.txt" | head -1)" "$work/full_zeros.npy"
"$work/decode" --tokens "$("$npy" ids "$work/ids.npy")" --patch a1.heads=@"$work/step_zeros.npy" \
  --dump-logits "$work/decode_logits.npy"
"$work/full" --input tokens=@"$work/ids.npy" --patch b1/a.heads=@"$work/full_zeros.npy" \
  --check logits=@"$work/decode_logits.npy" --rtol 1e-4 --atol 1e-4
"$work/full" --input tokens=@"$work/ids.npy" --check logits=@"$work/logits.npy" --rtol 1e-4 --atol 1e-4
