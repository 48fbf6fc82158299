#!/usr/bin/env python3
"""Choose pymalloc's size-class spacing, small-request threshold and pool
size by measurement, from allocation profiles (PYMALLOC_PROFILE files).

For each candidate configuration (spacing = ALIGNMENT 8/16/32, threshold
256/512/1024, pool 4/16/64 KiB; arenas 1 MiB, or larger when a 64 KiB pool
would leave too few per arena):

* memory, computed from the profile's request sizes: bytes lost to
  quantization (class size minus request), to pool headers (the arena's
  metadata pools that hold the pool records, shared by its pools) and to the
  tail of each pool that no block fits ("pool quantization"), per pooled
  request, and the share of requests too large for the pools (they go to
  malloc);
* time: the library is built with that configuration and benches/c/replay.c
  churns a live set with sizes drawn from the profile (median ns/op).

Configurations the build rejects (a pool must hold two blocks of the largest
class) are reported as such.

usage: tune.py [--no-time] [--ops N] PROFILE...
"""
import argparse
import collections
import itertools
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_BYTES = 48  # one pool record, kept in the arena's metadata pools


def read_sizes(paths):
    """Request counts by size, over malloc, calloc and realloc events."""
    sizes = collections.Counter()
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.startswith(("#", "event,", "transition")):
                    continue
                event, api, low, high, count = line.strip().split(",")
                # Exact below 4096; a range above: take its upper end.
                sizes[int(high)] += int(count)
    return sizes


def memory_figures(sizes, alignment, threshold, pool, arena):
    pools = arena // pool
    metadata_pools = -(-(pools * RECORD_BYTES) // pool)
    # The records of an arena's pools fill its first pool(s): that memory,
    # shared by the arena's block pools, is the per-pool header cost.
    overhead = metadata_pools * pool / (pools - metadata_pools)
    pooled = quantization = headers = pool_tail = 0
    large = 0
    for size, count in sizes.items():
        if size > threshold:
            large += count
            continue
        block = max(-(-size // alignment), 1) * alignment
        per_pool = pool // block
        pooled += count
        quantization += (block - size) * count
        headers += overhead / per_pool * count
        pool_tail += (pool % block) / per_pool * count
    requests = pooled + large
    return {
        "pooled": pooled / requests,
        "quantization": quantization / max(pooled, 1),
        "headers": headers / max(pooled, 1),
        "pool_tail": pool_tail / max(pooled, 1),
    }


def library_major():
    """The major version in Cargo.toml: the library's SONAME is libpymalloc.so.MAJOR."""
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        for line in f:
            if line.startswith("version = "):
                return line.split('"')[1].split(".")[0]
    raise RuntimeError("Cargo.toml has no version")


def build(alignment, threshold, pool, arena):
    target = os.path.join(ROOT, "target", "tune", f"a{alignment}-t{threshold}-p{pool}")
    env = dict(os.environ, PYMALLOC_ALIGNMENT=str(alignment), PYMALLOC_SMALL_REQUEST_THRESHOLD=str(threshold),
               PYMALLOC_POOL_SIZE=str(pool), PYMALLOC_ARENA_SIZE=str(arena))
    env.pop("PYMALLOC_WRITE_HEADERS", None)
    result = subprocess.run(["cargo", "build", "--release", "--quiet", "--target-dir", target],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        reason = [l for l in result.stderr.splitlines() if "invalid pymalloc build configuration" in l]
        return None, (reason[0].split(": ", 2)[-1] if reason else result.stderr.strip()[-200:])
    libdir = os.path.join(target, "release")
    # The program records the library's SONAME (libpymalloc.so.MAJOR, as in
    # the Makefile): give the loader that name beside the library.
    soname = os.path.join(libdir, "libpymalloc.so." + library_major())
    if not os.path.lexists(soname):
        os.symlink("libpymalloc.so", soname)
    replay = os.path.join(target, "replay")
    subprocess.run(["gcc", "-O2", "-I", os.path.join(ROOT, "include"), "-o", replay,
                    os.path.join(ROOT, "benches", "c", "replay.c"), "-L", libdir, "-lpymalloc",
                    f"-Wl,-rpath,{libdir}"], check=True)
    return replay, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--no-time", action="store_true", help="memory figures only (no builds)")
    parser.add_argument("--ops", type=int, default=4000000)
    opts = parser.parse_args()
    sizes = read_sizes(opts.profiles)
    total = sum(sizes.values())
    distribution = os.path.join(ROOT, "target", "tune", "distribution.txt")
    os.makedirs(os.path.dirname(distribution), exist_ok=True)
    with open(distribution, "w") as f:
        for size, count in sorted(sizes.items()):
            f.write(f"{size} {count}\n")
    print(f"profiles: {', '.join(os.path.basename(p) for p in opts.profiles)}; {total:,} requests")
    print()
    print("| spacing | threshold | pool | pooled requests | quantization B/req | pool header B/req "
          "| pool tail B/req | total lost B/req | replay ns/op |")
    print("|---|---|---|---|---|---|---|---|---|")
    candidates = list(itertools.product((8, 16, 32), (256, 512, 1024), (4096, 16384, 65536)))
    # Build everything first, then time: compilation would disturb the timings.
    replays = {}
    if not opts.no_time:
        for alignment, threshold, pool in candidates:
            replays[(alignment, threshold, pool)] = build(alignment, threshold, pool, max(1 << 20, pool * 16))
    for alignment, threshold, pool in candidates:
        m = memory_figures(sizes, alignment, threshold, pool, max(1 << 20, pool * 16))
        lost = m["quantization"] + m["headers"] + m["pool_tail"]
        timing = "-"
        if not opts.no_time:
            replay, error = replays[(alignment, threshold, pool)]
            if replay is None:
                timing = f"build refused: {error}"
            else:
                timing = subprocess.run([replay, distribution, str(opts.ops)], capture_output=True,
                                        text=True, check=True).stdout.strip()
        print(f"| {alignment} | {threshold} | {pool // 1024} KiB | {m['pooled']:.2%} | {m['quantization']:.2f} "
              f"| {m['headers']:.2f} | {m['pool_tail']:.2f} | {lost:.2f} | {timing} |", flush=True)

if __name__ == "__main__":
    sys.exit(main())
