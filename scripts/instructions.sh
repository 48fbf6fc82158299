#!/bin/sh
# Instructions per malloc+free pair on the hot path, counted by callgrind
# (repeatable on a noisy machine): pymalloc-rs (PyObject_* and PyCore_*)
# against CPython's own pymalloc (PyObject_Malloc of libpython).
# usage: instructions.sh PAIRS_BINARY LIBPYMALLOC LIBPYTHON
set -eu
pairs=$1 ours=$2 cpython=$3
n=1000000
count() { # library malloc free n -> instructions
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$pairs" "$1" "$2" "$3" "$4" > /dev/null 2>&1
  awk '/^summary:/ { print $2 }' "$out"
  rm -f "$out"
}
echo "| allocator | instructions per malloc+free pair |"
echo "|---|---|"
for spec in "CPython 3.11 pymalloc|$cpython|PyObject_Malloc|PyObject_Free" \
            "pymalloc-rs PyObject_*|$ours|PyObject_Malloc|PyObject_Free" \
            "pymalloc-rs PyCore_*|$ours|PyCore_Malloc|PyCore_Free" \
            "glibc malloc|libc.so.6|malloc|free"; do
  name=${spec%%|*}; rest=${spec#*|}; lib=${rest%%|*}; rest=${rest#*|}; m=${rest%%|*}; f=${rest#*|}
  full=$(count "$lib" "$m" "$f" $n)
  base=$(count "$lib" "$m" "$f" 0)
  echo "| $name | $(awk -v a="$full" -v b="$base" -v n=$n 'BEGIN { printf "%.1f", (a - b) / n }') |"
done
