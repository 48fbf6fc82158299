#!/bin/sh
# Instructions per operation, counted by callgrind (repeatable on a noisy
# machine), for four workloads of benches/c/pairs.c: malloc+free pairs on
# the hot path, the churn of 100,000 live blocks, the teardown of N blocks
# (per malloc or free) and the size-class sweep (per malloc or free). pymalloc-rs (PyObject_* and PyCore_*) against
# CPython's own pymalloc (PyObject_Malloc of libpython), glibc, mimalloc and
# tcmalloc, each loaded with dlopen; jemalloc, which refuses dlopen (static
# TLS), as malloc under LD_PRELOAD.
# usage: instructions.sh PAIRS_BINARY LIBPYMALLOC LIBPYTHON
set -eu
pairs=$1 ours=$2 cpython=$3
count() { # preload library malloc free n workload -> instructions
  out=$(mktemp)
  if [ -n "$1" ]; then
    LD_PRELOAD=$1 valgrind --tool=callgrind --callgrind-out-file="$out" "$pairs" "$2" "$3" "$4" "$5" "$6" > /dev/null 2>&1
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$pairs" "$2" "$3" "$4" "$5" "$6" > /dev/null 2>&1
  fi
  awk '/^summary:/ { print $2 }' "$out"
  rm -f "$out"
}
per_op() { # preload library malloc free workload n -> instructions per operation
  full=$(count "$1" "$2" "$3" "$4" "$6" "$5")
  base=$(count "$1" "$2" "$3" "$4" 0 "$5")
  ops=$6
  [ "$5" = teardown ] && ops=$((2 * $6))
  awk -v a="$full" -v b="$base" -v n="$ops" 'BEGIN { printf "%.1f", (a - b) / n }'
}
echo "| allocator | pair (malloc+free) | churn (free+malloc) | teardown (per malloc or free) | class sweep (per malloc or free) |"
echo "|---|---|---|---|---|"
for spec in "CPython 3.11 pymalloc||$cpython|PyObject_Malloc|PyObject_Free" \
            "pymalloc-rs PyObject_*||$ours|PyObject_Malloc|PyObject_Free" \
            "pymalloc-rs PyCore_*||$ours|PyCore_Malloc|PyCore_Free" \
            "glibc malloc||libc.so.6|malloc|free" \
            "mimalloc 2.0||libmimalloc.so.2|mi_malloc|mi_free" \
            "tcmalloc (gperftools)||libtcmalloc_minimal.so.4|tc_malloc|tc_free" \
            "jemalloc 5.3 (LD_PRELOAD)|libjemalloc.so.2|-|malloc|free"; do
  name=${spec%%|*}; rest=${spec#*|}; pre=${rest%%|*}; rest=${rest#*|}
  lib=${rest%%|*}; rest=${rest#*|}; m=${rest%%|*}; f=${rest#*|}
  need=$lib; [ -n "$pre" ] && need=$pre
  if [ "${need#/}" = "$need" ] && ! ldconfig -p | grep -q "^[[:space:]]*$need "; then
    echo "| $name | not installed | | | |"
    continue
  fi
  echo "| $name | $(per_op "$pre" "$lib" "$m" "$f" pair 1000000) | $(per_op "$pre" "$lib" "$m" "$f" churn 1000000) | $(per_op "$pre" "$lib" "$m" "$f" teardown 500000) | $(per_op "$pre" "$lib" "$m" "$f" sweep 640000) |"
done
