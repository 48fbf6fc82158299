#!/bin/sh
# Instructions (callgrind) of each Python workload of benches/py, whole
# process, under stock CPython and under pymalloc-rs (the runner, with and
# without block caches, and LD_PRELOAD): repeatable figures where
# wall-clock timings on a shared machine are not. Two runs at a time.
# usage: python_instructions.sh PYTHON RUNNER LIBRARY [WORKLOAD...]
set -eu
here=$(cd "$(dirname "$0")/../benches/py" && pwd)
if [ "$1" = --one ]; then # --one DIR PYTHON RUNNER LIBRARY WORKLOAD SETUP: one run
  dir=$2 python=$3 runner=$4 library=$5 w=$6 setup=$7
  # A fixed hash seed: with a random one, dict and set layouts (and so the
  # counts) change from run to run.
  case $setup in
    stock) cmd=$python; env="PYTHONHASHSEED=0 PYMALLOC_CPYTHON=0" ;;
    ours) cmd=$runner; env="PYTHONHASHSEED=0 PYMALLOC_BLOCK_CACHE_BYTES=4096" ;;
    ours-nocache) cmd=$runner; env="PYTHONHASHSEED=0 PYMALLOC_BLOCK_CACHE_BYTES=0" ;;
    preload) cmd=$python; env="PYTHONHASHSEED=0 LD_PRELOAD=$library" ;;
  esac
  cd "$here"
  if ! env $env valgrind --tool=callgrind --callgrind-out-file="$dir/$w.$setup.out" \
      "$cmd" "$w.py" > "$dir/$w.$setup.log" 2>&1; then
    echo "python_instructions.sh: $w under $setup failed:" >&2
    cat "$dir/$w.$setup.log" >&2
    exit 1
  fi
  awk '/^summary:/ { print $2 }' "$dir/$w.$setup.out" > "$dir/$w.$setup.count"
  rm -f "$dir/$w.$setup.out"
  exit 0
fi
python=$1 runner=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
library=$(cd "$(dirname "$3")" && pwd)/$(basename "$3"); shift 3
workloads=${*:-containers json_roundtrip strings richards gc_cycles peak}
dir=$(mktemp -d)
for w in $workloads; do
  for setup in stock ours ours-nocache preload; do
    echo "$w $setup"
  done
done | xargs -P 2 -L 1 sh "$0" --one "$dir" "$python" "$runner" "$library"
echo "| workload | stock (millions) | pymalloc-rs runner | ratio | runner, block caches off | ratio | pymalloc-rs LD_PRELOAD | ratio |"
echo "|---|---|---|---|---|---|---|---|"
for w in $workloads; do
  s=$(cat "$dir/$w.stock.count"); o=$(cat "$dir/$w.ours.count"); n=$(cat "$dir/$w.ours-nocache.count")
  p=$(cat "$dir/$w.preload.count")
  awk -v w="$w" -v s="$s" -v o="$o" -v n="$n" -v p="$p" 'BEGIN { printf "| %s | %.1f | %.1f | %.3f | %.1f | %.3f | %.1f | %.3f |\n", w, s/1e6, o/1e6, o/s, n/1e6, n/s, p/1e6, p/s }'
done
rm -rf "$dir"
