#!/usr/bin/env python3
"""The Python package pymalloc-rs, as its users get it: the wheel of `make
wheel` installed into fresh virtual environments (python3, and every pyenv
CPython 3.8 to 3.13 present), then

* the wheel: one file, tagged for every CPython 3, holding the library (no
  libpython among its needs), the headers and the module;
* python -m pymalloc against plain python: stdout, stderr and exit status
  equal for a script (argv, stdin, sys.exit(3), a traceback, a signal),
  -m, -c and --; --stats, --profile, --help and the errors;
* the module: active() False in plain python, whose import does not load
  the library, True under python -m pymalloc and the runner; stats()
  moving with allocations; trim(); a version mismatch named; the headers
  and library usable from C;
* CPython's regression tests test_list, test_dict and test_set under
  python -m pymalloc (python3).

Plain asserts, no pytest. Run by `make test-python-package`.
usage: python_package.py --wheel-dir DIR --runner RUNNER --python PYTHON --work DIR
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pyenv's CPythons tested besides python3: every supported version, when
# installed (python3's own version is tested once, as python3).
PYENV_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
# Quick CPython regression modules (scripts/cpython_tests.py runs more).
REGRESSION_MODULES = ["test_list", "test_dict", "test_set"]

PARITY_SCRIPT = '''\
import os, sys, __main__
print("argv", sys.argv)
print("executable", sys.executable)
print("main", __name__, os.path.basename(__main__.__file__))
print("stdin", repr(sys.stdin.read()))
print("to stderr", file=sys.stderr)
sys.exit(3)
'''
RAISING_SCRIPT = '''\
def inner():
    raise ValueError("raised on purpose")
inner()
'''
SIGNAL_SCRIPT = '''\
import os, signal
os.kill(os.getpid(), signal.SIGTERM)
'''
MODULE_SCRIPT = '''\
import sys
print("module", __name__, sys.argv)
'''
FLAGS_SCRIPT = '''\
import sys
print(sorted(sys._xoptions.items()), sys.warnoptions, "optimize", sys.flags.optimize,
      sys.flags.dont_write_bytecode, sys.flags.no_user_site, sys.flags.utf8_mode)
'''
# Allocates 100k small objects between two snapshots.
STATS_SCRIPT = '''\
import json, pymalloc
def in_use(stats):
    return sum(c.blocks_in_use for c in stats.classes)
before = pymalloc.stats()
keep = [object() for _ in range(100000)]
after = pymalloc.stats()
del keep
pymalloc.trim()
print(json.dumps({
    "active": pymalloc.active(),
    "version": after.version,
    "num_classes": after.num_classes,
    "classes": len(after.classes),
    "block_sizes": [c.block_size for c in after.classes],
    "in_use_before": in_use(before),
    "in_use_after": in_use(after),
    "bytes_before": before.bytes_in_allocated_blocks,
    "bytes_after": after.bytes_in_allocated_blocks,
    "pools_taken": after.pools_taken,
    "fields": sorted(vars(after)),
}))
'''
PLAIN_SCRIPT = '''\
import json, pymalloc
mapped = any("libpymalloc" in line for line in open("/proc/self/maps"))
try:
    pymalloc.stats()
    stats_error = None
except pymalloc.NotLoadedError as error:
    stats_error = str(error)
mapped_after = any("libpymalloc" in line for line in open("/proc/self/maps"))
active = pymalloc.active()
# A copy someone opened with ctypes (RTLD_LOCAL): found, not installed.
import ctypes
ctypes.CDLL(pymalloc.library_path())
print(json.dumps({"active": active, "mapped": mapped or mapped_after,
                  "stats_error": stats_error, "version": pymalloc.__version__,
                  "library": pymalloc.library_path(), "include": pymalloc.include_dir(),
                  "local_copy_active": pymalloc.active(),
                  "local_copy_num_classes": pymalloc.stats().num_classes}))
'''
MISMATCH_SCRIPT = '''\
import pymalloc
pymalloc._module_version = lambda: "0.0.0-test"
try:
    pymalloc.stats()
except pymalloc.VersionMismatchError as error:
    print(error)
'''
NOT_LINUX_SCRIPT = '''\
import runpy, sys
sys.platform = "darwin"
sys.argv = ["pymalloc", "app.py"]
runpy.run_module("pymalloc", run_name="__main__")
'''
LAYOUT_C = r'''
#include <stddef.h>
#include <stdio.h>
#include <pymalloc.h>
int main(void)
{
    printf("%zu %zu %s\n", sizeof(PyCoreStats), offsetof(PyCoreStats, blocks_in_block_caches),
           PyCore_GetVersion());
    return 0;
}
'''


def clean_environment():
    """The environment without anything that steers the allocator or the
    interpreter's path."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "PYTHONPATH", "LD_PRELOAD"))}


def run(command, stdin="", env=None, cwd=None, timeout=120):
    return subprocess.run(command, input=stdin, capture_output=True, text=True,
                          env=env or clean_environment(), cwd=cwd, timeout=timeout)


def describe(result):
    return (f"exit status {result.returncode}\n--- stdout\n{result.stdout}"
            f"--- stderr\n{result.stderr}---")


def check_same(python, args, work, stdin="", flags=()):
    """python FLAGS -m pymalloc ARGS behaves exactly as python FLAGS ARGS."""
    flags = list(flags)
    plain = run([python] + flags + args, stdin=stdin, cwd=work)
    ours = run([python] + flags + ["-m", "pymalloc"] + args, stdin=stdin, cwd=work)
    assert (plain.returncode, plain.stdout, plain.stderr) == \
        (ours.returncode, ours.stdout, ours.stderr), \
        f"python {flags} -m pymalloc {args} differs from python {flags} {args}:\n" \
        f"plain python: {describe(plain)}\npython -m pymalloc: {describe(ours)}"
    return plain


def check_wheel(wheel_dir):
    wheels = glob.glob(os.path.join(wheel_dir, "*.whl"))
    assert len(wheels) == 1, f"make wheel must leave exactly one wheel in {wheel_dir}: {wheels}"
    wheel = wheels[0]
    with open(os.path.join(ROOT, "Cargo.toml")) as cargo:
        version = re.search(r'(?m)^version = "([^"]+)"', cargo.read()).group(1)
    name = os.path.basename(wheel)
    assert re.fullmatch(rf"pymalloc_rs-{re.escape(version)}-py3-none-manylinux_2_\d+_x86_64\.whl", name), \
        f"wheel name {name}: expected version {version} (Cargo.toml) and the tag py3-none-manylinux_2_N_x86_64"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for member in ("pymalloc/__init__.py", "pymalloc/__main__.py", "pymalloc/libpymalloc.so.0",
                   "pymalloc/include/pymalloc.h", "pymalloc/include/pymalloc/pymem.h",
                   "pymalloc/include/pymalloc/objimpl.h"):
        assert member in names, f"{name} lacks {member}: {sorted(names)}"
    print(f"ok: {name}: library, headers and module; Cargo.toml's version")
    return wheel, version


def interpreters(python3):
    found = [python3]
    own = run([python3, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    root = os.path.join(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv")), "versions")
    for minor in PYENV_VERSIONS:
        if minor == own:
            continue
        candidates = sorted(glob.glob(os.path.join(root, minor + ".*", "bin", "python3")))
        if not candidates:
            print(f"skip: no CPython {minor} under {root}")
            continue
        found.append(candidates[-1])
    return found


def install(python, wheel, work):
    version = run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    venv = os.path.join(work, "venv-" + version)
    result = run([python, "-m", "venv", "--clear", venv])
    assert result.returncode == 0, f"{python} -m venv {venv}: {describe(result)}"
    venv_python = os.path.join(venv, "bin", "python")
    result = run([venv_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  "--no-index", "--no-deps", wheel])
    assert result.returncode == 0, f"pip install {wheel} into {venv}: {describe(result)}"
    return version, venv_python


def check_launcher(python, work):
    """python -m pymalloc against plain python."""
    for name, text in (("parity.py", PARITY_SCRIPT), ("raising.py", RAISING_SCRIPT),
                       ("signalled.py", SIGNAL_SCRIPT), ("mainmodule.py", MODULE_SCRIPT)):
        with open(os.path.join(work, name), "w") as script:
            script.write(text)
    plain = check_same(python, ["parity.py", "a", "--stats", "b c"], work, stdin="piped\ninput\n")
    assert plain.returncode == 3 and "'piped\\ninput\\n'" in plain.stdout, describe(plain)
    check_same(python, ["--", "parity.py", "x"], work, stdin="")
    plain = check_same(python, ["raising.py"], work)
    assert plain.returncode == 1 and "ValueError: raised on purpose" in plain.stderr, describe(plain)
    plain = check_same(python, ["signalled.py"], work)
    assert plain.returncode == -signal.SIGTERM, describe(plain)
    plain = check_same(python, ["-m", "mainmodule", "m1", "m2"], work)
    assert "module __main__" in plain.stdout and "'m1', 'm2'" in plain.stdout, describe(plain)
    plain = check_same(python, ["-c", "import sys; print(sys.argv); sys.exit(4)", "c1"], work)
    assert plain.returncode == 4 and "['-c', 'c1']" in plain.stdout, describe(plain)
    check_same(python, ["-"], work, stdin="import sys; print('from stdin', sys.argv)\n")
    # The interpreter's own options reach the program.
    plain = check_same(python, ["-c", FLAGS_SCRIPT], work, flags=[
        "-X", "utf8", "-X", "int_max_str_digits=5000", "-W", "error::DeprecationWarning", "-O", "-B", "-s"])
    assert "('int_max_str_digits', '5000')" in plain.stdout and "optimize 1" in plain.stdout, describe(plain)

    result = run([python, "-m", "pymalloc", "--help"])
    assert result.returncode == 0 and "--profile FILE" in result.stdout, describe(result)
    result = run([python, "-m", "pymalloc", "missing.py"], cwd=work)
    assert result.returncode == 2 and "can't open file" in result.stderr \
        and "missing.py" in result.stderr, describe(result)
    result = run([python, "-m", "pymalloc"])
    assert result.returncode == 2 and "no program given" in result.stderr, describe(result)
    result = run([python, "-m", "pymalloc", "--profile"])
    assert result.returncode == 2 and "--profile needs a file name" in result.stderr, describe(result)
    result = run([python, "-c", NOT_LINUX_SCRIPT])
    assert result.returncode == 1 and "Linux only" in result.stderr, describe(result)

    env = clean_environment()
    env["LD_PRELOAD"] = "libm.so.6"
    result = run([python, "-m", "pymalloc", "-c", "import os; print(os.environ['LD_PRELOAD'])"], env=env)
    library = run([python, "-c", "import pymalloc; print(pymalloc.library_path())"]).stdout.strip()
    assert result.stdout.strip() == f"{library}:libm.so.6", \
        f"LD_PRELOAD must be the packaged library, then the value before: {describe(result)}"


def check_module(python, version, work):
    """The module's answers in plain python and under python -m pymalloc."""
    result = run([python, "-c", PLAIN_SCRIPT])
    assert result.returncode == 0, describe(result)
    plain = json.loads(result.stdout)
    assert plain["active"] is False, f"active() must be False in plain python: {plain}"
    assert plain["mapped"] is False, f"importing pymalloc (and stats()) must not load the library: {plain}"
    assert plain["stats_error"] and "python -m pymalloc" in plain["stats_error"], \
        f"stats() in plain python must raise NotLoadedError pointing at python -m pymalloc: {plain}"
    assert plain["version"] == version, f"pymalloc.__version__ {plain['version']} != {version}"
    assert plain["local_copy_active"] is False and plain["local_copy_num_classes"] == 32, \
        f"a copy loaded with ctypes after start-up must be found for stats() but serve nothing: {plain}"
    assert os.path.isfile(plain["library"]) and os.path.isfile(os.path.join(plain["include"], "pymalloc.h")), plain
    needed = run(["readelf", "-d", plain["library"]]).stdout
    assert "NEEDED" in needed and "libpython" not in needed, \
        f"the packaged library must not need libpython:\n{needed}"

    result = run([python, "-m", "pymalloc", "-c", STATS_SCRIPT])
    assert result.returncode == 0, describe(result)
    stats = json.loads(result.stdout)
    assert stats["active"] is True, f"active() must be True under python -m pymalloc: {stats}"
    assert stats["version"] == 2 and stats["num_classes"] == stats["classes"] == 32, stats
    assert stats["block_sizes"] == [16 * (i + 1) for i in range(32)], stats
    assert stats["in_use_after"] - stats["in_use_before"] >= 100000, \
        f"100k objects must show as blocks in use: {stats}"
    assert stats["bytes_after"] - stats["bytes_before"] >= 100000 * 16, stats
    assert stats["pools_taken"] > 0, stats
    for field in ("arenas_allocated_total", "bytes_lost_to_quantization", "cross_thread_frees",
                  "blocks_in_block_caches", "metadata_pools_per_arena", "small_request_threshold"):
        assert field in stats["fields"], f"stats() lacks {field}: {stats['fields']}"

    result = run([python, "-m", "pymalloc", "-c", MISMATCH_SCRIPT])
    assert result.returncode == 0 and "0.0.0-test" in result.stdout and version in result.stdout, \
        f"a version mismatch must name both versions: {describe(result)}"

    result = run([python, "-m", "pymalloc", "--stats", "-c", "print('out')"])
    assert result.returncode == 0 and result.stdout == "out\n", describe(result)
    assert "Small block threshold" in result.stderr and "size classes" in result.stderr, \
        f"--stats must print the statistics on stderr at exit: {describe(result)}"
    profile = os.path.join(work, "profile.csv")
    if os.path.exists(profile):
        os.remove(profile)
    result = run([python, "-m", "pymalloc", "--profile", profile, "-c", "x = [str(i) for i in range(1000)]"])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    with open(profile) as written:
        lines = written.read().splitlines()
    assert lines[0].startswith("# pymalloc allocation profile") and len(lines) > 10, \
        f"--profile must write the profile: {lines[:5]}"


def check_runner(runner, python, version, work):
    """active() and stats() under the runner, which links the library."""
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    env = clean_environment()
    env["PYTHONPATH"] = site
    result = run([runner, "-c", "import pymalloc; print(pymalloc.active(), pymalloc.stats().pools_taken > 0)"],
                 env=env)
    assert result.returncode == 0 and result.stdout == "True True\n", \
        f"active() and stats() under the runner {runner}: {describe(result)}"

    # The headers and the library of the package, from C.
    include = run([python, "-c", "import pymalloc; print(pymalloc.include_dir())"]).stdout.strip()
    library = run([python, "-c", "import pymalloc; print(pymalloc.library_path())"]).stdout.strip()
    source = os.path.join(work, "layout.c")
    with open(source, "w") as c_file:
        c_file.write(LAYOUT_C)
    program = os.path.join(work, "layout")
    # The program records the library's SONAME, which is the packaged
    # file's name: with the package directory as its run path, the loader
    # finds it there, with no link of that name made by hand.
    soname = "libpymalloc.so." + version.split(".")[0]
    assert os.path.basename(library) == soname, f"library_path() {library} is not named {soname}"
    result = run(["gcc", "-std=c11", "-Wall", "-Werror", "-I", include, "-o", program, source, library,
                  "-Wl,-rpath," + os.path.dirname(library)])
    assert result.returncode == 0, f"compiling against include_dir() and library_path(): {describe(result)}"
    size, offset, c_version = run([program]).stdout.split()
    layout = run([python, "-c", "import ctypes, pymalloc._library as l; "
                  "print(ctypes.sizeof(l.PyCoreStats), l.PyCoreStats.blocks_in_block_caches.offset)"])
    assert layout.stdout.split() == [size, offset], \
        f"the module's PyCoreStats (size, last offset) {layout.stdout.split()} != C's {[size, offset]}"
    assert c_version == version, f"PyCore_GetVersion() {c_version} != {version}"
    print("ok: runner: active() and stats(); the packaged headers and library from C, layouts equal")


def check_regression_tests(python, work):
    stats_file = os.path.join(work, "regression-stats.txt")
    if os.path.exists(stats_file):
        os.remove(stats_file)
    env = clean_environment()
    env["PYMALLOC_STATS_FILE"] = stats_file
    result = run([python, "-m", "pymalloc", "-m", "test"] + REGRESSION_MODULES, env=env, timeout=600)
    assert result.returncode == 0, f"python -m pymalloc -m test {REGRESSION_MODULES}: {describe(result)}"
    with open(stats_file) as lines:
        served = [line for line in lines if int(re.search(r"pools_taken=(\d+)", line).group(1)) > 0]
    assert served, "no process of the regression tests took pools from pymalloc-rs"
    print(f"ok: python -m pymalloc -m test {' '.join(REGRESSION_MODULES)} passed "
          f"({len(served)} processes served by pymalloc-rs)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheel-dir", required=True)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--python", required=True, help="python3: also runs the runner and regression checks")
    parser.add_argument("--work", required=True)
    opts = parser.parse_args()
    if os.path.isdir(opts.work):
        shutil.rmtree(opts.work)
    os.makedirs(opts.work)
    work = os.path.abspath(opts.work)
    wheel, version = check_wheel(opts.wheel_dir)
    for python in interpreters(opts.python):
        python_version, venv_python = install(python, os.path.abspath(wheel), work)
        scratch = os.path.join(work, "run-" + python_version)
        os.makedirs(scratch)
        check_launcher(venv_python, scratch)
        check_module(venv_python, version, scratch)
        print(f"ok: CPython {python_version}: python -m pymalloc as plain python; "
              "active(), stats(), trim(), --stats, --profile")
        if python == opts.python:
            check_runner(os.path.abspath(opts.runner), venv_python, version, scratch)
            check_regression_tests(venv_python, scratch)
    print("python_package: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
