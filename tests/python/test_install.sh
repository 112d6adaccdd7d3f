#!/bin/sh
# test_install.sh — `cmake --install BUILD --prefix DIR` into a fresh prefix,
# then, from another directory (no source or build tree at hand), the installed
# circc builds an executable and a library of tests/data/lib/lib_b.circ, and the
# installed PREFIX/share/circc/python/circc.py loads the library (s = sum(v*v)).
# The Python part is skipped (exit 77) when no python3 has numpy.
# usage: test_install.sh BUILD_DIR TESTS_DIR WORKDIR
set -eu
[ $# -eq 3 ] || { echo "usage: test_install.sh BUILD_DIR TESTS_DIR WORKDIR" >&2; exit 2; }
build=$1 tests=$2 work=$3
rm -rf "$work"
mkdir -p "$work/elsewhere"
set -x
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
[ -x "$work/prefix/bin/circc" ] && [ -f "$work/prefix/share/circc/python/circc.py" ]
cp "$tests/data/lib/lib_b.circ" "$work/elsewhere/"
cd "$work/elsewhere"
"$work/prefix/bin/circc" lib_b.circ -o sumsq
"$work/prefix/bin/circc" lib_b.circ --emit lib -o sumsq.so
[ -f sumsq.h ]
./sumsq --info | grep -q "v  *\[4\] float32"
PYTHONPATH="$work/prefix/share/circc/python" sh "$tests/python/run_python.sh" -c '
import os, sys, circc
assert os.path.dirname(circc.__file__) == sys.argv[1], circc.__file__
s = circc.load("sumsq.so")(v=[1, 2, 3, 4])["s"]
assert float(s) == 30.0, s
print("test_install.sh: ok")' "$work/prefix/share/circc/python"
