#!/usr/bin/env python3
"""Charts of the benchmarks (SVG, matplotlib):

  --python-results DIR   bench.py's results.json -> DIR/python-time.svg
                         (ratio to stock per workload and setup) and
                         DIR/python-rss.svg (peak and after-peak RSS)
  --c-table FILE         the C benchmark's table (make bench writes
                         target/bench.md) -> --c-out (ns per operation)
  --instructions FILE    make bench-instructions' table (allocators by
                         workload, instructions per operation) -> --out
  --python-instructions FILE
                         make bench-python-instructions' tables -> --out
                         (instructions / stock's per workload and setup:
                         the whole process, and the allocator alone with
                         its 0.55 target)

matplotlib comes from PyPI into target/bench-venv when this interpreter
lacks it; the script then runs again under that venv.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

VENV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "bench-venv")


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) == os.path.abspath(venv_python):
        sys.exit("plot.py: matplotlib is still missing in the venv " + VENV)
    if not os.path.exists(venv_python):
        print(f"plot.py: creating {VENV} with matplotlib (PyPI)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([venv_python, "-m", "pip", "install", "-q", "matplotlib"], check=True)
    os.execv(venv_python, [venv_python] + sys.argv)


def bars(ax, groups, series, values, ylabel):
    """Grouped bars: one group per entry of `groups`, one bar per series."""
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [values[name][g] for g in range(len(groups))], width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def python_charts(directory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(os.path.join(directory, "results.json")) as f:
        data = json.load(f)
    setups, workloads, runs = data["setups"], data["workloads"], data["runs"]
    med = lambda w, s, key: statistics.median(r[key] for r in runs[w][s])
    ratio = {s: [med(w, "stock", "seconds") / med(w, s, "seconds") for w in workloads] for s in setups}
    fig, ax = plt.subplots(figsize=(11, 5))
    bars(ax, workloads, setups, ratio, "speed relative to stock CPython (higher is faster)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title("Python workloads: stock time / time (median of interleaved runs)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "python-time.svg"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    peak = {s: [med(w, s, "peak_kib") / 1024 for w in workloads] for s in setups}
    bars(left, workloads, setups, peak, "peak RSS, MiB")
    left.set_title("peak resident set")
    after = {s: [med("peak", s, key) / 1024 for key in ("rss_after_kib", "rss_settled_kib")]
             for s in setups} if "peak" in workloads else None
    if after:
        bars(right, ["right after the peak is freed", "after 1 s more work"], setups, after, "RSS, MiB")
        right.set_title("peak workload: memory given back")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "python-rss.svg"))
    print(f"wrote {directory}/python-time.svg and {directory}/python-rss.svg")


def c_chart(table_path, out_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = []
    with open(table_path) as f:
        for line in f:
            if line.startswith("| ") and not line.startswith("| workload"):
                rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            elif line.startswith("| workload"):
                header = [cell.strip() for cell in line.strip().strip("|").split("|")][1:]
    workloads = [row[0] for row in rows]
    values = {}
    for column, name in enumerate(header, start=1):
        values[name] = [float(row[column].split()[0]) if row[column][0].isdigit() else 0.0 for row in rows]
    fig, ax = plt.subplots(figsize=(13, 5.5))
    bars(ax, workloads, header, values, "ns per operation (lower is faster; log scale)")
    ax.set_yscale("log")
    ax.set_title("C benchmark (make bench): median ns per operation")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")


def read_tables(path):
    """The markdown tables of a file: (header cells, rows of cells) each."""
    tables, header, rows = [], None, []
    with open(path) as f:
        for line in f:
            if not line.startswith("|"):
                if header is not None:
                    tables.append((header, rows))
                header, rows = None, []
                continue
            if line.startswith("|---"):
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            else:
                rows.append(cells)
    if header is not None:
        tables.append((header, rows))
    if not tables:
        sys.exit(f"plot.py: no table in {path}")
    return tables


def number(cell):
    try:
        return float(cell.split()[0])
    except (ValueError, IndexError):
        return 0.0


def instructions_chart(table_path, out_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    header, rows = read_tables(table_path)[0]
    workloads = header[1:]
    values = {row[0]: [number(cell) for cell in row[1:]] for row in rows}
    fig, ax = plt.subplots(figsize=(12, 5.5))
    bars(ax, workloads, list(values), values, "instructions per operation (lower is better)")
    ax.set_title("Instructions per operation (callgrind, make bench-instructions)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")


def python_instructions_chart(table_path, out_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tables = read_tables(table_path)
    titles = ["whole process", "the allocator alone (target: 0.55 of stock)"]
    fig, axes = plt.subplots(len(tables), 1, figsize=(11, 5 * len(tables)), squeeze=False)
    for ax, (header, rows), title in zip(axes[:, 0], tables, titles):
        workloads = [row[0] for row in rows]
        # Each "ratio" column follows the column of the setup it is for.
        series = {header[i - 1]: [number(row[i]) for row in rows]
                  for i, name in enumerate(header) if name == "ratio"}
        bars(ax, workloads, list(series), series, "instructions relative to stock CPython (lower is better)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        low = min(min(v) for v in series.values())
        high = max(max(v) for v in series.values())
        if title.startswith("the allocator"):
            ax.axhline(0.55, color="green", linestyle="--", linewidth=1, label="target")
            low = min(low, 0.5)
        ax.set_ylim(min(0.95, low - 0.01), max(1.05, high + 0.01))
        ax.set_title(f"Python workloads, {title}: instructions (callgrind, make bench-python-instructions)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python-results")
    parser.add_argument("--c-table")
    parser.add_argument("--c-out", default="target/bench-c.svg")
    parser.add_argument("--instructions")
    parser.add_argument("--python-instructions")
    parser.add_argument("--out", help="chart file for --instructions or --python-instructions")
    opts = parser.parse_args()
    if not (opts.python_results or opts.c_table or opts.instructions or opts.python_instructions):
        parser.error("give --python-results DIR, --c-table FILE, --instructions FILE or --python-instructions FILE")
    if (opts.instructions or opts.python_instructions) and not opts.out:
        parser.error("--instructions and --python-instructions need --out FILE")
    if opts.instructions and opts.python_instructions:
        parser.error("give one of --instructions and --python-instructions per run (one --out)")
    ensure_matplotlib()
    if opts.instructions:
        instructions_chart(opts.instructions, opts.out)
    if opts.python_instructions:
        python_instructions_chart(opts.python_instructions, opts.out)
    if opts.python_results:
        python_charts(opts.python_results)
    if opts.c_table:
        c_chart(opts.c_table, opts.c_out)


if __name__ == "__main__":
    main()
