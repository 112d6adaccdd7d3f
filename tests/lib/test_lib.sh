#!/bin/sh
# test_lib.sh — circc --emit lib from C: builds tests/data/lib/lib_a.circ and
# lib_b.circ as libraries, checks that each generated header compiles alone
# with -Wall -Wextra -Werror -pedantic (and as C++ when c++ is installed), that
# the libraries export their API and nothing else, then links both into
# test_lib_c.c and runs it. Also: a failed build leaves neither the library nor
# its header; -o NAME.h, expectation programs and an unknown --emit value are
# usage errors (exit 2); --help names --emit lib.
# usage: test_lib.sh CIRCC TESTS_DIR WORKDIR
set -eu
[ $# -eq 3 ] || { echo "usage: test_lib.sh CIRCC TESTS_DIR WORKDIR" >&2; exit 2; }
circc=$1 tests=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
set -x
for m in lib_a lib_b; do
  "$circc" "$tests/data/lib/$m.circ" --emit lib -o "$work/$m.so"
  cc -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c "$work/$m.h"
  if command -v c++ >/dev/null 2>&1; then c++ -Wall -Wextra -Werror -fsyntax-only -x c++ "$work/$m.h"; fi
  nm -D --defined-only "$work/$m.so" | awk '{print $3}' | sort >"$work/$m.exports"
  printf '%s\n' error free info init run set_threads tensor threads | sed "s/^/${m}_/" >"$work/$m.want"
  cmp "$work/$m.exports" "$work/$m.want"
done
cc -std=c11 -Wall -Wextra -Werror -pedantic -fopenmp -I "$work" "$tests/lib/test_lib_c.c" \
  "$work/lib_a.so" "$work/lib_b.so" -Wl,-rpath,"$work" -o "$work/test_lib_c"
"$work/test_lib_c"

# failures: nothing is left at the output (nor a temporary beside it)
status=0
"$circc" "$tests/data/lib/lib_a.circ" --emit lib --cc false -o "$work/failed.so" 2>"$work/err" || status=$?
[ "$status" = 4 ]
[ -z "$(ls "$work" | grep failed)" ]
status=0
"$circc" "$tests/data/lib/lib_a.circ" --emit lib -o "$work/model.h" 2>"$work/err" || status=$?
[ "$status" = 2 ] && grep -q "would be overwritten by its header" "$work/err"
[ ! -e "$work/model.h" ]
status=0
"$circc" "$tests/data/rv/dice_independent.circ" --emit lib -o "$work/dice.so" 2>"$work/err" || status=$?
[ "$status" = 2 ] && grep -q "does not build expectation programs" "$work/err"
[ ! -e "$work/dice.so" ] && [ ! -e "$work/dice.h" ]
"$circc" --help | grep -q -- "--emit exe|c|lib"
status=0
"$circc" "$tests/data/lib/lib_a.circ" --emit so -o "$work/so" 2>"$work/err" || status=$?
[ "$status" = 2 ] && grep -q "expects exe, c or lib, found 'so'" "$work/err"
echo "test_lib.sh: ok"
