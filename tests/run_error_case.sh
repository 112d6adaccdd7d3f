#!/bin/sh
# Runs circc on one must-fail case and compares its stderr with <case>.err and
# its exit code with the `# expect-exit: N` line of the .circ. Extra arguments
# come from a `# args: ...` line; no file may be left behind except those a
# `# expect-files: ...` line names. Run from the case's directory so paths in
# diagnostics are stable. Usage: run_error_case.sh CIRCC CASE.circ
set -u
circc=$1; circ=$2
dir=$(dirname "$circ"); base=$(basename "$circ" .circ)
cd "$dir" || exit 1
# @DATA@ in the args stands for tests/data
args=$(sed -n 's/^# args: //p' "$base.circ" | sed "s|@DATA@|$PWD/../data|g")
want_code=$(sed -n 's/^# expect-exit: //p' "$base.circ")
out=$(mktemp -d)
# shellcheck disable=SC2086
(cd "$out" && NO_COLOR=1 "$circc" $args "$OLDPWD/$base.circ" >stdout 2>stderr; echo $? >code)
sed -e "s|$PWD/../data|@DATA@|g" -e "s|$PWD/||g" "$out/stderr" >"$out/stderr.rel"
status=0
if [ "$(cat "$out/code")" != "$want_code" ]; then
  echo "FAIL $base: exit code $(cat "$out/code"), expected $want_code"; status=1
fi
if ! diff -u "$base.err" "$out/stderr.rel"; then
  echo "FAIL $base: diagnostics differ (expected vs actual above)"; status=1
fi
# a case that succeeds may name the files it must write: `# expect-files: a.npy b.npy`
for f in $(sed -n 's/^# expect-files: //p' "$base.circ"); do
  if [ -f "$out/$f" ]; then rm "$out/$f"; else echo "FAIL $base: did not write $f"; status=1; fi
done
extra=$(ls "$out" | grep -v -e '^stdout$' -e '^stderr$' -e '^stderr.rel$' -e '^code$' || true)
if [ -n "$extra" ]; then echo "FAIL $base: left files behind: $extra"; status=1; fi
rm -rf "$out"
[ $status = 0 ] && echo "ok $base"
exit $status
