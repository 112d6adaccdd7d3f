#!/bin/sh
# test_gpt2_large.sh — a model past the small code model's 2 GiB: GPT-2 large
# (774M parameters, 3.1 GB of float32 weights) with deterministic random
# weights (gpt2_import --random-config; no checkpoint), T=16:
#   compiled into a program of more than 2 GiB (the weights are linked into
#   .lrodata) with a peak memory, over circc and the C compiler, assembler and
#   linker it runs, below twice the weights;
#   one prefill of 16 fixed token ids: every logit finite, the same bits with
#   1 and 2 threads.
# Prints the time of every step. Label `slow` (~5 minutes on 2 cores, ~13 GB of
# temporary files in WORKDIR, deleted at the end, on failure too).
# usage: test_gpt2_large.sh CIRCC GPT2_IMPORT GPT2_NPY CONFIG WORKDIR
set -eu
[ $# -eq 5 ] || {
  echo "usage: test_gpt2_large.sh CIRCC GPT2_IMPORT GPT2_NPY CONFIG WORKDIR" >&2
  exit 2
}
circc=$1 import=$2 npy=$3 config=$4 work=$5
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
step() {  # LABEL COMMAND...: runs COMMAND, prints its time
  label=$1
  shift
  t0=$(date +%s)
  "$@"
  echo "gpt2_large: $label $(($(date +%s) - t0)) s"
}
step import "$import" --random-config "$config" --seq 16 --name gpt2 "$work"
weights_kb=$(du -sk "$work/store" | cut -f1)
# the largest resident set of circc and everything it ran (ru_maxrss of the waited-for tree)
peak_kb=$(python3 -c '
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' \
  "$circc" --tensors "$work/store" "$work/gpt2.circ" -o "$work/gpt2")
echo "gpt2_large: weights $weights_kb KB, compile peak $peak_kb KB"
[ "$peak_kb" -lt $((2 * weights_kb)) ]
[ "$(wc -c <"$work/gpt2")" -gt 2147483648 ]
rm -rf "$work/store"
"$npy" from-ids 464,2068,7586,21831,18045,625,262,16931,11,290,340,373,257,1110,13,198 "$work/ids.npy"
for t in 1 2; do
  step "prefill T=16, $t thread(s)" "$work/gpt2" --threads $t --input tokens=@"$work/ids.npy" \
    --output logits=@"$work/logits$t.npy"
  "$npy" finite "$work/logits$t.npy"
done
cmp "$work/logits1.npy" "$work/logits2.npy"
