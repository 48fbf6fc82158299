#!/bin/sh
# Instructions (callgrind) of each Python workload of benches/py under
# stock CPython and under pymalloc-rs (the runner, with and without block
# caches, and LD_PRELOAD): repeatable figures where wall-clock timings on
# a shared machine are not. Two runs at a time. Prints two tables: the
# whole process, and the allocator alone (stock, runner, LD_PRELOAD).
#
# The allocator alone: the instructions executed inside the memory API,
# from CPython's call into it until it returns, with one definition for
# every setup. Its functions are those of libpymalloc.so and those that
# libpython compiles from Objects/obmalloc.c (found through libpython's
# debug information): the PyMem_*/PyObject_* entry points, the hook-table
# wrappers that the runner's calls still pass through, stock pymalloc and
# the raw-heap wrappers. Counted are their own instructions plus the whole
# cost of the calls they make to the C library and the dynamic linker
# (malloc, calloc, realloc and free for requests above 512 bytes, the
# memset and memcpy of calloc and realloc, mmap, munmap and madvise, TLS
# lookups). Calls from them into the rest of libpython are left out: the
# preloaded library's typed-object exports (_PyObject_GC_New,
# PyObject_GC_Del, ...) defer to libpython's own functions, CPython's work
# in every setup; the allocator calls those make are counted where they
# land. One-off work (the preload's installation at start-up) is included.
#
# The setups must print the same results (each workload prints a digest
# of its work; PYTHONHASHSEED=0): the script compares their output,
# valgrind's lines and the timing figures aside, and fails with a diff.
#
# usage: python_instructions.sh PYTHON RUNNER LIBRARY [WORKLOAD...]
#   PYTHON: the interpreter binary itself (not a wrapper script such as a
#   pyenv shim: valgrind would measure the shell); make passes it.
set -eu
me=python_instructions.sh
here=$(cd "$(dirname "$0")/../benches/py" && pwd)
die() {
  echo "$me: $*" >&2
  exit 1
}

# Reads a callgrind profile written with --compress-strings=no and
# --compress-pos=no twice (the first pass learns each function's file)
# and prints: allocator instructions, whole-process instructions, number
# of obmalloc.c functions seen, number of libpymalloc.so functions seen.
allocator_awk='
function kind(ob, fn) {
  if (ob ~ /\/libpymalloc\.so$/ || ((ob, fn) in obmalloc)) return "allocator"
  if (ob ~ /\/libpython[^\/]*$/ && ((ob, fn) in cpython)) return "cpython"
  return "system"
}
FNR == NR {
  if (/^ob=/) ob = substr($0, 4)
  else if (/^fl=/) fl = substr($0, 4)
  else if (/^fn=/) {
    fn = substr($0, 4)
    if (fl ~ /\/Objects\/obmalloc\.c$/) { if (!((ob, fn) in obmalloc)) found_obmalloc++; obmalloc[ob, fn] = 1 }
    else if (fl != "???") cpython[ob, fn] = 1
    if (ob ~ /\/libpymalloc\.so$/ && !((ob, fn) in ours)) { ours[ob, fn] = 1; found_ours++ }
  }
  next
}
/^summary:/ { total = $2; next }
/^ob=/ { ob = substr($0, 4); next }
/^fn=/ { inside = kind(ob, substr($0, 4)) == "allocator"; next }
/^cob=/ { cob = substr($0, 5); next }
/^cfn=/ { cfn = substr($0, 5); next }
/^calls=/ { call = 1; callee = kind(cob != "" ? cob : ob, cfn); cob = ""; next }
/^[0-9+*-]/ {
  if (call) { if (inside && callee == "system") allocator += $2; call = 0 }
  else if (inside) allocator += $2
}
END { printf "%.0f %.0f %d %d\n", allocator, total, found_obmalloc, found_ours }'

if [ "${1-}" = --one ]; then # --one DIR PYTHON RUNNER LIBRARY WORKLOAD SETUP: one run
  dir=$2 python=$3 runner=$4 library=$5 w=$6 setup=$7
  # A fixed hash seed: with a random one, dict and set layouts (and so the
  # counts) change from run to run.
  case $setup in
    stock) cmd=$python; env="PYTHONHASHSEED=0 PYMALLOC_CPYTHON=0" ;;
    ours) cmd=$runner; env="PYTHONHASHSEED=0 PYMALLOC_BLOCK_CACHE_BYTES=4096" ;;
    ours-nocache) cmd=$runner; env="PYTHONHASHSEED=0 PYMALLOC_BLOCK_CACHE_BYTES=0" ;;
    preload) cmd=$python; env="PYTHONHASHSEED=0 LD_PRELOAD=$library" ;;
    *) die "unknown setup $setup" ;;
  esac
  out=$dir/$w.$setup.out
  cd "$here"
  if ! env $env valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
      --callgrind-out-file="$out" "$cmd" "$w.py" > "$dir/$w.$setup.log" 2>&1; then
    echo "$me: $w under $setup failed:" >&2
    cat "$dir/$w.$setup.log" >&2
    exit 1
  fi
  set -- $(awk "$allocator_awk" "$out" "$out")
  rm -f "$out"
  [ "$2" -gt 0 ] || die "$w under $setup: no instruction total in the callgrind profile"
  [ "$3" -gt 0 ] || die "$w under $setup: no function of Objects/obmalloc.c in the profile:" \
    "libpython has no debug information, so the allocator's instructions cannot be told apart"
  case $setup in
    stock) [ "$4" -eq 0 ] || die "$w under stock: libpymalloc.so was loaded" ;;
    *) [ "$4" -gt 0 ] || die "$w under $setup: libpymalloc.so ran no function: the setup does not use it" ;;
  esac
  echo "$1" > "$dir/$w.$setup.allocator"
  echo "$2" > "$dir/$w.$setup.count"
  echo "$me: $w under $setup: $2 instructions, allocator $1" >&2
  exit 0
fi

[ $# -ge 3 ] || die "usage: $me PYTHON RUNNER LIBRARY [WORKLOAD...]"
command -v valgrind > /dev/null || die "valgrind is missing (Debian: apt-get install valgrind)"
for f in "$1" "$2" "$3"; do
  [ -f "$f" ] || die "$f does not exist (make runner builds the runner and the library)"
done
[ "$(head -c 2 "$1")" != "#!" ] || die "$1 is a script (a pyenv shim?), not the interpreter:" \
  "pass the binary, e.g. \$(python3 -c 'import sys; print(sys.executable)')"
python=$1 runner=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
library=$(cd "$(dirname "$3")" && pwd)/$(basename "$3"); shift 3
workloads=${*:-containers json_roundtrip strings richards gc_cycles peak mem_calloc mixed_sizes}
for w in $workloads; do
  [ -f "$here/$w.py" ] || die "no workload $here/$w.py"
done
setups="stock ours ours-nocache preload"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for w in $workloads; do
  for setup in $setups; do
    echo "$w $setup"
  done
done | xargs -P 2 -L 1 sh "$0" --one "$dir" "$python" "$runner" "$library" ||
  die "a run failed (its output is above)"

# The program's output: valgrind's lines (==PID==) and the timing and
# memory figures aside, every setup must print what stock prints.
normalise() {
  sed -e '/^==[0-9]*==/d' -e 's/"seconds": [0-9.e+-]*/"seconds": _/' \
    -e 's/"\([a-z_]*_kib\)": [0-9]*/"\1": _/g' "$1"
}
differ=0
for w in $workloads; do
  normalise "$dir/$w.stock.log" > "$dir/$w.stock.txt"
  for setup in $setups; do
    [ "$setup" != stock ] || continue
    normalise "$dir/$w.$setup.log" > "$dir/$w.$setup.txt"
    if ! cmp -s "$dir/$w.stock.txt" "$dir/$w.$setup.txt"; then
      echo "$me: $w prints something else under $setup than under stock:" >&2
      diff -u "$dir/$w.stock.txt" "$dir/$w.$setup.txt" >&2 || true
      differ=1
    fi
  done
done
[ "$differ" -eq 0 ] || die "the setups' outputs differ (above): the counts are not comparable"

for w in $workloads; do
  echo "$w" $(cat "$dir/$w.stock.count" "$dir/$w.ours.count" "$dir/$w.ours-nocache.count" \
    "$dir/$w.preload.count" "$dir/$w.stock.allocator" "$dir/$w.ours.allocator" "$dir/$w.preload.allocator")
done > "$dir/figures"
awk '
function cells(base, a, b, c) {
  return sprintf("| %.1f | %.1f | %.3f | %.1f | %.3f", base / 1e6, a / 1e6, a / base, b / 1e6, b / base) \
    (c == "" ? "" : sprintf(" | %.1f | %.3f", c / 1e6, c / base))
}
{ w[NR] = $1; for (i = 2; i <= 8; i++) f[NR, i] = $i }
END {
  print "Whole process: instructions, millions (ratio: this / stock)\n"
  print "| workload | stock (millions) | pymalloc-rs runner | ratio | runner, block caches off | ratio | pymalloc-rs LD_PRELOAD | ratio |"
  print "|---|---|---|---|---|---|---|---|"
  for (r = 1; r <= NR; r++) print "| " w[r] " " cells(f[r, 2], f[r, 3], f[r, 4], f[r, 5]) " |"
  print "\nThe allocator alone: instructions inside the memory API, millions (ratio: this / stock;"
  print "target: at most 0.55 for every workload; share: of its whole process)\n"
  print "| workload | stock allocator (M) | runner allocator (M) | ratio | preload allocator (M) | ratio | stock allocator share | ratio ≤ 0.55 |"
  print "|---|---|---|---|---|---|---|---|"
  for (r = 1; r <= NR; r++) {
    s = f[r, 6]; o = f[r, 7]; p = f[r, 8]
    met = (o / s <= 0.55 ? "runner" : "") (o / s <= 0.55 && p / s <= 0.55 ? ", " : "") (p / s <= 0.55 ? "preload" : "")
    printf "| %s %s | %.1f %% | %s |\n", w[r], cells(s, o, p, ""), 100 * s / f[r, 2], met == "" ? "neither" : met
  }
}' "$dir/figures"
