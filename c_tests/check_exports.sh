#!/bin/sh
# The shared library exports exactly the functions its headers declare.
# usage: check_exports.sh LIBRARY INCLUDE_DIR
set -eu
lib=$1
inc=$2
tmp=${TMPDIR:-/tmp}/pymalloc-exports.$$
trap 'rm -f "$tmp".*' EXIT
# Declarations are the lines ending in ");" that are not macros.
cat "$inc"/pymalloc.h "$inc"/pymalloc/*.h | grep -v '^#' | grep -E '\);$' \
  | grep -oE '\b_?Py[A-Za-z_]+\(' | tr -d '(' | sort -u > "$tmp.declared"
nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" || $2 == "W" { print $3 }' \
  | sort -u > "$tmp.exported"
if ! diff -u "$tmp.declared" "$tmp.exported"; then
  echo "check_exports: exports of $lib differ from the declarations in $inc (- declared only, + exported only)" >&2
  exit 1
fi
echo "check_exports: $(wc -l < "$tmp.exported") exported functions, all declared in the headers"
