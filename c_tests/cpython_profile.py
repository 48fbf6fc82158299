"""The allocation profiler through CPython's hooks: a child interpreter,
the embedding runner or python3 with the library preloaded, runs with
PYMALLOC_PROFILE and allocates 20,000 objects of 16 bytes; the profile it
writes at exit must count them as object-domain mallocs of that size.

usage: cpython_profile.py PYTHON LIBRARY RUNNER"""
import csv
import os
import subprocess
import sys
import tempfile

OBJECTS = 20000
CHILD = f"keep = [object() for _ in range({OBJECTS})]"  # object(): 16 bytes


def object_mallocs_of_16_bytes(command, extra_env):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "profile.csv")
        env = dict(os.environ, PYMALLOC_PROFILE=path, **extra_env)
        subprocess.run(command + ["-c", CHILD], env=env, check=True)
        with open(path) as f:
            rows = csv.DictReader(line for line in f if not line.startswith("#"))
            return sum(int(row["count"]) for row in rows
                       if row["event"] == "malloc" and row["api"] == "o"
                       and int(row["size_min"]) <= 16 <= int(row["size_max"]))


def main():
    python, library, runner = sys.argv[1:4]
    for name, command, extra_env in [
        ("runner", [runner], {}),
        ("LD_PRELOAD", [python], {"LD_PRELOAD": library}),
    ]:
        counted = object_mallocs_of_16_bytes(command, extra_env)
        assert counted >= OBJECTS, f"{name}: the profile counts {counted} object mallocs of 16 bytes, expected at least {OBJECTS}"
        print(f"ok: {name}: the profiler counted {counted} object mallocs of 16 bytes (at least {OBJECTS} expected)")


if __name__ == "__main__":
    main()
