#!/usr/bin/env python3
"""make bench-python: the object-heavy workloads of this directory under
CPython's own pymalloc, pymalloc-rs (LD_PRELOAD and the embedding runner)
and PYTHONMALLOC=malloc with glibc, mimalloc, jemalloc and tcmalloc.

Runs are interleaved (each round runs every workload under every setup in
a fresh order) so that the machine's drift hits all setups alike; tables
give medians, ratios to stock (stock time / this time: above 1 is faster),
their geometric mean, the peak resident set (the child's ru_maxrss) and
the resident set after the freed peak. Raw runs go to results.json.
"""
import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ["containers", "json_roundtrip", "strings", "richards", "gc_cycles", "peak",
             "mem_calloc", "mixed_sizes"]
PEERS = {
    "mimalloc": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}


def setups(opts):
    library = os.path.abspath(opts.library)
    found = {
        "stock": ([opts.python], {}),
        "pymalloc-rs preload": ([opts.python], {"LD_PRELOAD": library}),
        "pymalloc-rs runner": ([os.path.abspath(opts.runner)], {}),
        "malloc (glibc)": ([opts.python], {"PYTHONMALLOC": "malloc"}),
    }
    for name, path in PEERS.items():
        if not os.path.exists(path):
            sys.exit(f"bench.py: {path} is missing (sh scripts/install_deps.sh bench installs it)")
        found[f"malloc ({name})"] = ([opts.python], {"PYTHONMALLOC": "malloc", "LD_PRELOAD": path})
    return found


def clean_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "LD_PRELOAD", "PYTHON"))}
    env.update(extra)
    return env


def spawn(command, extra, workload):
    read_end, write_end = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.posix_spawn(command[0], command + [os.path.join(HERE, workload + ".py")],
                         clean_env(extra),
                         file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1),
                                       (os.POSIX_SPAWN_DUP2, err_write, 2),
                                       (os.POSIX_SPAWN_CLOSE, read_end),
                                       (os.POSIX_SPAWN_CLOSE, err_read)])
    os.close(write_end)
    os.close(err_write)
    with os.fdopen(read_end) as out, os.fdopen(err_read) as err:
        text, errors = out.read(), err.read()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench.py: {' '.join(command)} {workload}: "
                 f"exit {os.waitstatus_to_exitcode(status)}\n{errors}")
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_kib"] = usage.ru_maxrss
    return result


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def table(title, rows, columns, cell):
    lines = [f"\n{title}\n", "| workload | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cell(row, c) for c in columns) + " |")
    return lines


def report(opts, runs, names, workloads, command_line):
    med = {(w, s): statistics.median(r["seconds"] for r in runs[w][s]) for w in workloads for s in names}
    def mib(key, w, s):
        return statistics.median(r[key] for r in runs[w][s]) / 1024
    out = [f"Python workloads (benches/py), {opts.runs} interleaved runs, medians",
           f"machine: {machine()}; {subprocess.run([opts.python, '-VV'], capture_output=True, text=True).stdout.strip()}",
           f"command: {command_line}"]
    out += table("seconds (ratio: stock / this; above 1 is faster; min-max)", workloads, names,
                 lambda w, s: f"{med[w, s]:.3f} ({med[w, 'stock'] / med[w, s]:.2f}x; "
                              f"{min(r['seconds'] for r in runs[w][s]):.3f}-{max(r['seconds'] for r in runs[w][s]):.3f})")
    geo = {s: math.exp(statistics.mean(math.log(med[w, "stock"] / med[w, s]) for w in workloads)) for s in names}
    worst = {s: min(med[w, "stock"] / med[w, s] for w in workloads) for s in names}
    out.append("| **geometric mean of ratios** | " + " | ".join(f"**{geo[s]:.3f}x**" for s in names) + " |")
    out.append("| slowest workload's ratio | " + " | ".join(f"{worst[s]:.2f}x" for s in names) + " |")
    # The machine's speed drifts between rounds (a shared VM): a round's
    # setups run back to back, so the ratio within a round cancels the
    # drift that a ratio of medians taken over all rounds keeps.
    paired = {(w, s): statistics.median(a["seconds"] / b["seconds"]
                                        for a, b in zip(runs[w]["stock"], runs[w][s]))
              for w in workloads for s in names}
    paired_geo = {s: math.exp(statistics.mean(math.log(paired[w, s]) for w in workloads)) for s in names}
    out.append("| paired: geometric mean of each workload's median per-round ratio | "
               + " | ".join(f"{paired_geo[s]:.3f}x" for s in names) + " |")
    out += table("peak RSS, MiB (ratio to stock)", workloads, names,
                 lambda w, s: f"{mib('peak_kib', w, s):.1f} ({mib('peak_kib', w, s) / mib('peak_kib', w, 'stock'):.2f})")
    out += table("RSS right after the work, all freed and collected, MiB", workloads, names,
                 lambda w, s: f"{mib('rss_after_kib', w, s):.1f}")
    if "peak" in workloads:
        out += table("peak workload: RSS after 1 s of further work, MiB", ["peak"], names,
                     lambda w, s: f"{mib('rss_settled_kib', w, s):.1f}")
    return "\n".join(out) + "\n", geo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--library", required=True, help="libpymalloc.so")
    parser.add_argument("--runner", required=True, help="target/pymalloc-python")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="run only the workloads whose name contains this")
    parser.add_argument("--setups", help="comma-separated: run only the setups whose name contains "
                                         "one of these (stock always runs: it is the baseline)")
    parser.add_argument("--out", default="target/bench-python")
    parser.add_argument("--plot", action="store_true", help="also draw SVG charts (matplotlib)")
    opts = parser.parse_args()
    names_commands = setups(opts)
    if opts.setups:
        wanted = [w.strip() for w in opts.setups.split(",") if w.strip()]
        names_commands = {name: command for name, command in names_commands.items()
                          if name == "stock" or any(w in name for w in wanted)}
    names = list(names_commands)
    workloads = [w for w in WORKLOADS if not opts.only or opts.only in w]
    runs = {w: {s: [] for s in names} for w in workloads}
    shuffle = random.Random(1)
    started = time.monotonic()
    for round_number in range(opts.runs):
        for w in workloads:
            order = names[:]
            shuffle.shuffle(order)
            for s in order:
                command, extra = names_commands[s]
                runs[w][s].append(spawn(command, extra, w))
        print(f"round {round_number + 1}/{opts.runs} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    os.makedirs(opts.out, exist_ok=True)
    command_line = " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    text, geo = report(opts, runs, names, workloads, command_line)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(opts.out, "results.json"), "w") as f:
        json.dump({"setups": names, "workloads": workloads, "runs": runs}, f, indent=1)
    print(text)
    if opts.plot:
        plot = [os.path.join(HERE, "plot.py"), "--python-results", opts.out]
        subprocess.run([sys.executable] + plot, check=True)


if __name__ == "__main__":
    main()
