#!/bin/sh
# test_sample.sh — end-to-end test of --sample for a character model: compiles
# CIRC with --vocab ".a..z" and checks that --sample 20 --seed 7 prints 20
# names of at most 50 letters a-z, the same ones on every run and with 1 or 2
# threads, different ones for another seed; and that a program compiled
# without --vocab refuses --sample (exit 2), as does --sample with an option of the run
# mode (--input, --output, --rtol, --bench, ...).
# usage: test_sample.sh CIRCC STORE CIRC WORKDIR
set -eu
[ $# -eq 4 ] || { echo "usage: test_sample.sh CIRCC STORE CIRC WORKDIR" >&2; exit 2; }
circc=$1 store=$2 circ=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
set -x
"$circc" --tensors "$store" "$circ" --vocab ".abcdefghijklmnopqrstuvwxyz" -o "$work/names"
"$work/names" --threads 1 --sample 20 --seed 7 > "$work/a.txt"
"$work/names" --threads 2 --sample 20 --seed 7 > "$work/b.txt"
"$work/names" --threads 1 --sample 20 --seed 8 > "$work/c.txt"
cat "$work/a.txt"
cmp "$work/a.txt" "$work/b.txt"
! cmp -s "$work/a.txt" "$work/c.txt"
[ "$(wc -l < "$work/a.txt")" -eq 20 ]
! grep -vxE '[a-z]{0,50}' "$work/a.txt"
[ "$(grep -c . "$work/a.txt")" -ge 15 ]   # hardly any empty names
"$circc" --tensors "$store" "$circ" -o "$work/novocab"
set +e
"$work/novocab" --sample 1 --seed 1
code=$?
set -e
[ $code -eq 2 ]
# options of the run mode are usage errors with --sample, not silently ignored
for extra in "--rtol x" "--input x=@nothing.npy" "--output logits=@$work/out.npy" "--bench 3"; do
  set +e
  # shellcheck disable=SC2086
  "$work/names" --sample 1 $extra 2> "$work/err.txt"
  code=$?
  set -e
  [ $code -eq 2 ]
  grep -q "cannot be combined with ${extra%% *}" "$work/err.txt"
done
[ ! -e "$work/out.npy" ]
