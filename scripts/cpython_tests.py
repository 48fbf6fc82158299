#!/usr/bin/env python3
"""Run a selection of CPython's own regression tests on top of pymalloc-rs.

Three runs of the same tests, one after the other, with the same options:
  stock    the interpreter as installed (CPython's own pymalloc)
  preload  LD_PRELOAD=libpymalloc.so python3
  runner   target/pymalloc-python (embedding: hooks installed before start-up)

The failing test cases of each pymalloc-rs run must equal the stock run's,
apart from the cases listed in EXPECTED below (tests that assume CPython's
own pymalloc). Each run must also prove that pymalloc-rs served it: every
process appends a summary line to a PYMALLOC_STATS_FILE at exit, and the
run must have lines with pools taken from our arenas.

usage: cpython_tests.py --python PY --library LIB --runner RUNNER [--jobs 2] [TEST ...]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

DEFAULT_TESTS = (
    "test_capi test_tracemalloc test_gc test_weakref test_sys test_list test_dict "
    "test_set test_tuple test_bytes test_unicode test_long test_descr test_json "
    "test_pickle test_array test_struct test_deque test_itertools test_threading test_io"
).split()

# Test cases that fail only because the interpreter is not using CPython's
# own pymalloc. The one place where such differences are listed.
EXPECTED = {
    "test.test_sys.SysModuleTest.test_debugmallocstats":
        "sys._debugmallocstats() prints pymalloc's statistics only when the object "
        "domain is exactly CPython's _PyObject_Malloc; with our table it prints nothing "
        "(use PyCore_PrintStats or PYMALLOC_STATS=1 instead)",
    "test.test_sys.SysModuleTest.test_getallocatedblocks":
        "sys.getallocatedblocks() counts only blocks in CPython's own pymalloc pools; "
        "with our table it is 0 while the test expects a positive count",
}


def failing_cases(junit_path):
    """Ids (module.class.test) of the test cases that failed or errored."""
    failed = set()
    tree = ET.parse(junit_path)
    for case in tree.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            name = case.get("name", "")
            # regrtest writes the full dotted id in "name"
            failed.add(name.split(" ")[0])
    return failed


def run(label, command, env, tests, jobs, workdir):
    junit = os.path.join(workdir, f"{label}.xml")
    log = os.path.join(workdir, f"{label}.log")
    args = command + ["-m", "test", f"-j{jobs}", "--timeout", "600", "--junit-xml", junit] + tests
    print(f"[{label}] {' '.join(args)}", flush=True)
    start = time.monotonic()
    with open(log, "w") as out:
        status = subprocess.call(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    with open(log) as f:
        text = f.read()
    summary = re.findall(r"^(?:Total tests|Result|.*tests? (?:OK|failed)).*$", text, re.M)
    print(f"[{label}] exit {status} in {elapsed:.0f} s; " + "; ".join(s.strip() for s in summary[-3:]))
    if not os.path.exists(junit):
        sys.exit(f"[{label}] no JUnit report: see {log}")
    return failing_cases(junit), log


def check_served(label, stats_file):
    try:
        with open(stats_file) as f:
            lines = [l for l in f if l.startswith("pymalloc ")]
    except FileNotFoundError:
        lines = []
    served = [l for l in lines if int(re.search(r"pools_taken=(\d+)", l).group(1)) > 0]
    if not served:
        sys.exit(f"[{label}] FAIL: no process reported pooled allocations "
                 f"({stats_file}): pymalloc-rs did not serve this run")
    pools = sum(int(re.search(r"pools_taken=(\d+)", l).group(1)) for l in served)
    print(f"[{label}] served by pymalloc-rs: {len(served)} processes, {pools} pools taken in all")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--venv-python",
                        help="python of a virtual environment with the pymalloc-rs wheel: "
                             "adds the mode python-m (python -m pymalloc -m test ...)")
    parser.add_argument("--modes", help="comma-separated; default: stock,preload,runner "
                                        "and python-m with --venv-python")
    parser.add_argument("tests", nargs="*")
    opts = parser.parse_args()
    tests = opts.tests or DEFAULT_TESTS
    workdir = tempfile.mkdtemp(prefix="pymalloc-cpython-tests.")
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "LD_PRELOAD", "PYTHONDEVMODE"))}
    modes = (opts.modes or "stock,preload,runner" + (",python-m" if opts.venv_python else "")).split(",")
    results = {}
    for mode in modes:
        env = dict(base_env)
        stats_file = os.path.join(workdir, f"{mode}.stats")
        if mode == "stock":
            command = [opts.python]
        elif mode == "preload":
            command = [opts.python]
            env["LD_PRELOAD"] = os.path.abspath(opts.library)
            env["PYMALLOC_STATS_FILE"] = stats_file
        elif mode == "runner":
            command = [os.path.abspath(opts.runner)]
            env["PYMALLOC_STATS_FILE"] = stats_file
        elif mode == "python-m":
            if not opts.venv_python:
                sys.exit("mode python-m needs --venv-python")
            command = [opts.venv_python, "-m", "pymalloc"]
            env["PYMALLOC_STATS_FILE"] = stats_file
        else:
            sys.exit(f"unknown mode {mode}")
        results[mode], _ = run(mode, command, env, tests, opts.jobs, workdir)
        if mode != "stock":
            check_served(mode, stats_file)

    ok = True
    stock = results.get("stock", set())
    for mode in modes:
        if mode == "stock":
            continue
        new = results[mode] - stock
        expected = {case for case in new if case in EXPECTED}
        unexpected = new - expected
        fixed = stock - results[mode]
        for case in sorted(expected):
            print(f"[{mode}] expected difference: {case}: {EXPECTED[case]}")
        for case in sorted(fixed):
            print(f"[{mode}] passes here but fails on stock: {case}")
        for case in sorted(unexpected):
            print(f"[{mode}] NEW FAILURE: {case}")
        ok = ok and not unexpected
    print(f"stock failures ({len(stock)}): {' '.join(sorted(stock)) or 'none'}")
    print("logs and reports in", workdir)
    if not ok:
        sys.exit("CPython test suite: failures beyond the stock interpreter's (see above)")
    print("CPython test suite: same results as the stock interpreter, apart from the listed expected differences")


if __name__ == "__main__":
    main()
