#!/usr/bin/env python3
"""Run demo/workload.py on the stock interpreter and on pymalloc-rs
(`python -m pymalloc` from the pip-installed wheel, LD_PRELOAD and the
embedding runner), compare them two ways, and print pymalloc-rs's
statistics for one run (`python -m pymalloc --stats`):

* instructions (valgrind's callgrind, whole process, PYTHONHASHSEED=0 so
  that dict layouts repeat): one run per setup of a smaller run of the
  same parts (the whole workload would take minutes under valgrind);
  repeatable to a fraction of a percent, the figure to read;
* time: --rounds interleaved rounds (every setup once per round, in a
  fresh order), the median of the per-round ratios to stock, with their
  range. On a shared machine the same run varies by tens of percent.

The benchmarks (make bench-python-instructions, make bench-python) are
where speed is measured properly.
"""
import argparse
import concurrent.futures
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "workload.py")
# The workload's parts, smaller (about a third of its instructions).
SMALL_WORKLOAD = (f"import sys; sys.path.insert(0, {HERE!r}); import workload as w; "
                  "w.containers(1); w.strings(); w.json_round_trips(); "
                  "w.Scheduler(500).run(50000); w.cycles(20000)")


def setups(opts):
    """name -> (command, extra environment). Add a setup here; stock comes
    first: it is the baseline."""
    library = os.path.abspath(opts.library)
    chosen = {
        "stock python3 (CPython's pymalloc)": ([opts.python], {}),
        "LD_PRELOAD=libpymalloc.so python3": ([opts.python], {"LD_PRELOAD": library}),
        "pymalloc-python (embedded)": ([os.path.abspath(opts.runner)], {}),
    }
    if opts.venv_python:
        chosen[PYTHON_M] = ([opts.venv_python, "-m", "pymalloc"], {})
    return chosen


# `python -m pymalloc` runs the program in the same interpreter started
# again with the packaged library under LD_PRELOAD: what it executes is the
# LD_PRELOAD setup's, plus one interpreter start-up (the launcher's).
PYTHON_M = "python -m pymalloc (pip-installed wheel)"


def environment(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "LD_PRELOAD"))}
    env.update(extra)
    return env


def instructions(command, extra, out_file):
    """Whole-process instructions of the smaller workload under callgrind."""
    env = environment(extra)
    env["PYTHONHASHSEED"] = "0"
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
                         + command + ["-c", SMALL_WORKLOAD],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.exit(f"compare.py: {' '.join(command)} under callgrind failed:\n{run.stderr}")
    with open(out_file) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    sys.exit(f"compare.py: no summary line in {out_file}")


def show_instructions(names_commands):
    if shutil.which("valgrind") is None:
        print("Instructions: valgrind is missing, skipped (Debian: apt-get install valgrind).\n")
        return
    names_commands = {name: setup for name, setup in names_commands.items() if name != PYTHON_M}
    print("Instructions (callgrind, whole process, a smaller run of the same parts; "
          "this / stock, below 1 is fewer; `python -m pymalloc` runs the LD_PRELOAD "
          "setup after its launcher's start-up):", flush=True)
    with tempfile.TemporaryDirectory() as directory, \
            concurrent.futures.ThreadPoolExecutor(max_workers=len(names_commands)) as pool:
        futures = {name: pool.submit(instructions, command, extra, os.path.join(directory, f"{i}.out"))
                   for i, (name, (command, extra)) in enumerate(names_commands.items())}
        counts = {name: future.result() for name, future in futures.items()}
    stock = counts[next(iter(counts))]
    for name, count in counts.items():
        print(f"  {name:38} {count / 1e6:8.1f} M  {count / stock:.3f}")
    print()


def show_times(names_commands, rounds):
    names = list(names_commands)
    times = {name: [] for name in names}
    shuffle = random.Random(1)
    for _ in range(rounds):
        order = names[:]
        shuffle.shuffle(order)
        for name in order:
            command, extra = names_commands[name]
            out = subprocess.run(command + [WORKLOAD], env=environment(extra), check=True,
                                 capture_output=True, text=True).stdout
            times[name].append(float(out.strip()))
    stock = times[names[0]]
    print(f"Time ({rounds} interleaved rounds; per round this / stock, below 1 is faster: "
          "median and range):")
    for name in names:
        ratios = [mine / base for mine, base in zip(times[name], stock)]
        print(f"  {name:38} median {statistics.median(times[name]):6.3f} s  "
              f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print("Timings on a shared machine vary from run to run (see the ranges); "
          "the instruction ratio is the stable figure.")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--venv-python",
                        help="the python of a virtual environment where the pymalloc-rs "
                             "wheel is installed (make demo-python makes one)")
    opts = parser.parse_args()
    # The interpreter itself, not a wrapper script (a pyenv shim): valgrind
    # would count the shell's instructions.
    opts.python = subprocess.run([opts.python, "-c", "import sys; print(sys.executable)"],
                                 check=True, capture_output=True, text=True).stdout.strip()
    names_commands = setups(opts)
    print(f"Python workload (demo/workload.py) on {len(names_commands)} setups.\n")
    show_instructions(names_commands)
    show_times(names_commands, opts.rounds)
    sys.stdout.flush()
    if opts.venv_python:
        print("\npymalloc-rs statistics at the end of one run (python -m pymalloc --stats):")
        sys.stdout.flush()
        command = [opts.venv_python, "-m", "pymalloc", "--stats", WORKLOAD]
    else:
        print("\npymalloc-rs statistics at the end of one run (PYMALLOC_STATS=1):")
        sys.stdout.flush()
        command = [os.path.abspath(opts.runner), WORKLOAD]
    env = environment({"PYMALLOC_STATS": "1"} if not opts.venv_python else {})
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
