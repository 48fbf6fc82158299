#!/usr/bin/env python3
"""Run demo/workload.py on the stock interpreter and on pymalloc-rs
(LD_PRELOAD and the embedding runner), interleaved, and print the median
times and pymalloc-rs's statistics for one run.

Timings on a shared 2-core machine vary; the median of interleaved runs is
what is printed, with the spread. The benchmarks (make bench-python) are
where speed is measured properly.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "workload.py")


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "LD_PRELOAD"))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    library = os.path.abspath(opts.library)
    setups = {
        "stock python3 (CPython's pymalloc)": ([opts.python], {}),
        "LD_PRELOAD=libpymalloc.so python3": ([opts.python], {"LD_PRELOAD": library}),
        "pymalloc-python (embedded)": ([os.path.abspath(opts.runner)], {}),
    }
    times = {name: [] for name in setups}
    for _ in range(opts.rounds):
        for name, (command, extra) in setups.items():
            env = clean_env()
            env.update(extra)
            out = subprocess.run(command + [WORKLOAD], env=env, check=True,
                                 capture_output=True, text=True).stdout
            times[name].append(float(out.strip()))
    print(f"Python workload (demo/workload.py), {opts.rounds} interleaved runs each:")
    stock = statistics.median(times[next(iter(setups))])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:38} median {median:6.3f} s  (min {min(values):.3f}, max {max(values):.3f})"
              f"  {stock / median:5.2f}x stock speed")
    print("\npymalloc-rs statistics at the end of one run (PYMALLOC_STATS=1):")
    sys.stdout.flush()
    env = clean_env()
    env["PYMALLOC_STATS"] = "1"
    subprocess.run([os.path.abspath(opts.runner), WORKLOAD], env=env, check=True,
                   stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
