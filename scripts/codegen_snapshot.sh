#!/bin/sh
# codegen_snapshot.sh BUILD_DIR OUT_DIR — writes what circc generates for every
# bundled model (bigram, MLP, the three GPT-2 checkpoints as module, flat,
# symbolic-SEQ and decode circuits, and the test circuits of tests/data/circ) into
# OUT_DIR: each circuit's text (NAME.circ), generated C (NAME.c) and weights blob
# (NAME.weights). A refactoring that should not change the output is checked with
#   sh scripts/codegen_snapshot.sh old-build /tmp/a; sh scripts/codegen_snapshot.sh build /tmp/b
#   diff -r /tmp/a /tmp/b
# (the runtime sources are not part of the snapshot: only what is derived from the circuit).
set -eu
[ $# -eq 2 ] || { echo "usage: codegen_snapshot.sh BUILD_DIR OUT_DIR" >&2; exit 2; }
build=$(cd "$1" && pwd) out=$2
src=$(cd "$(dirname "$0")/.." && pwd)
circc=$build/circc import=$build/models/gpt2_import
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# NAME CIRCUIT STORE [circc options]: the circuit, the generated C and the weights.
# circc runs on copies under fixed relative names, since the generated C records its
# command line.
snap() {
  name=$1 circ=$2 store=$3
  shift 3
  cp "$circ" "$out/$name.circ"
  rm -rf "$work/snap"
  mkdir -p "$work/snap"
  cp "$circ" "$work/snap/model.circ"
  ln -s "$store" "$work/snap/store"
  (cd "$work/snap" && "$circc" --tensors store model.circ "$@" --emit c -o out.d >/dev/null)
  cp "$work/snap/out.d/model.c" "$out/$name.c"
  cp "$work/snap/out.d/weights.bin" "$out/$name.weights"
}
m=$build/models
snap bigram "$m/bigram/bigram.circ" "$m/bigram/store"
snap bigram1 "$m/bigram1/bigram.circ" "$m/bigram1/store" --vocab .abcdefghijklmnopqrstuvwxyz
snap mlp "$m/mlp/mlp.circ" "$m/mlp/store"
snap mlp256 "$m/mlp256/mlp.circ" "$m/mlp256/store" --vocab .abcdefghijklmnopqrstuvwxyz
for model in tiny_random_gpt2 shakespeare_gpt2 shakespeare_char_gpt2; do
  dir=$src/models/gpt2/$model
  "$import" --seq 64 --name seq "$dir" "$work/$model" >/dev/null
  "$import" --seq 64 --flat --name flat "$dir" "$work/$model" >/dev/null
  "$import" --seq 32 --batch 2 --loss --name loss "$dir" "$work/$model" >/dev/null
  "$import" --decode --name sym "$dir" "$work/$model" >/dev/null
  st=$work/$model/store
  snap "${model}_seq" "$work/$model/seq.circ" "$st"
  snap "${model}_flat" "$work/$model/flat.circ" "$st"
  snap "${model}_loss" "$work/$model/loss.circ" "$st"
  snap "${model}_sym" "$work/$model/sym.circ" "$st" -D SEQ=64
  snap "${model}_decode" "$work/$model/sym_decode.circ" "$st" -D SEQ=128
done
for f in "$src"/tests/data/circ/*.circ; do
  n=$(basename "$f" .circ)
  snap "circ_$n" "$f" "$src/tests/data/store" --random-tensors --allow-unused-inputs -D SEQ=8 -D HIDDEN=8 -D LOG_LIKELYHOOD_CLASSES=5 2>/dev/null || echo "$n: not compiled" >>"$out/skipped.txt"
done
echo "snapshot of $(ls "$out" | wc -l) files in $out"
