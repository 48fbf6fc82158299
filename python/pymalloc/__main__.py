"""python -m pymalloc: run a Python program on pymalloc-rs from its first
allocation.

The program is run by this same interpreter (sys.executable, with the
interpreter flags of this process) with the packaged libpymalloc.so.0 put
first in LD_PRELOAD; the library's constructor installs its allocator
tables before CPython starts (docs/cpython.md). os.execve replaces this
process, so the arguments, environment, standard streams, exit status and
signals are the program's own, and inside it sys.argv, sys.executable and
__main__ are what plain `python` gives.
"""
from __future__ import annotations

import os
import subprocess
import sys

from . import library_path

PROG = "python -m pymalloc"
USAGE = f"usage: {PROG} [--stats] [--profile FILE] [--] (script | -m module | -c command | -) [args ...]"
HELP = f"""{USAGE}

Run a Python program on pymalloc-rs, as `python` would run it: the same
interpreter and flags, with the packaged libpymalloc.so.0 preloaded
(LD_PRELOAD), so that every allocation of the interpreter is served by it.

options (before the program; everything after it is the program's):
  --stats         print the allocator's statistics to stderr at exit
                  (PYMALLOC_STATS=1; inherited by child processes)
  --profile FILE  write the allocation profile to FILE at exit
                  (PYMALLOC_PROFILE; %p in FILE stands for the process id)
  --              end of these options
  -h, --help      show this text

In the program, `import pymalloc; pymalloc.active()` is True."""

# What the library's constructor reads (docs/cpython.md, docs/python.md).
STATS_SETTING = "PYMALLOC_STATS"
PROFILE_SETTING = "PYMALLOC_PROFILE"


class UsageError(Exception):
    pass


def parse(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split our options from the program: (settings for the environment,
    the program's command line as python takes it)."""
    settings = {}
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument in ("-h", "--help"):
            print(HELP)
            sys.exit(0)
        elif argument == "--stats":
            settings[STATS_SETTING] = "1"
        elif argument == "--profile":
            if index + 1 == len(arguments):
                raise UsageError("--profile needs a file name")
            index += 1
            settings[PROFILE_SETTING] = arguments[index]
        elif argument.startswith("--profile="):
            settings[PROFILE_SETTING] = argument[len("--profile="):]
        elif argument == "--":
            index += 1
            break
        else:
            break  # the program: a script, -m, -c or -
        index += 1
    program = arguments[index:]
    if PROFILE_SETTING in settings:
        if not settings[PROFILE_SETTING]:
            raise UsageError("--profile needs a file name")
        # Where the user is now, even if the program changes directory.
        settings[PROFILE_SETTING] = os.path.abspath(settings[PROFILE_SETTING])
    if not program:
        raise UsageError("no program given: a script, -m module, -c command or - (stdin)")
    first = program[0]
    if first in ("-m", "-c"):
        if len(program) == 1:
            raise UsageError(f"{first} needs an argument")
    elif first.startswith(("-m", "-c")) or first == "-":
        pass  # -mmodule, -ccode: python's own attached forms; - reads stdin
    elif first.startswith("-"):
        raise UsageError(f"unknown option {first} (python's own options go before -m pymalloc)")
    elif not os.path.exists(first):
        raise UsageError(f"can't open file {os.path.abspath(first)!r}: no such file or directory")
    return settings, program


def preload_value(library: str, existing: str | None) -> str:
    """LD_PRELOAD with `library` first, before what was there."""
    # The dynamic loader splits LD_PRELOAD at spaces and colons.
    if any(separator in library for separator in " :"):
        raise RuntimeError(
            f"the library's path {library!r} contains a space or colon, "
            "which LD_PRELOAD cannot express: install the package elsewhere"
        )
    return f"{library}:{existing}" if existing else library


def interpreter_flags() -> list[str]:
    """The options this interpreter was started with, for the next one."""
    # sys.flags, -W and the common -X options, as the standard library
    # passes them to the interpreters it starts (multiprocessing does).
    flags = subprocess._args_from_interpreter_flags()
    # It leaves out -i and the other -X options (int_max_str_digits,
    # pycache_prefix, ...): add them. -u leaves no trace in sys.flags (the
    # environment's PYTHONUNBUFFERED does pass).
    carried = {flags[i + 1].split("=")[0] for i, flag in enumerate(flags[:-1]) if flag == "-X"}
    for name, value in sys._xoptions.items():
        if name not in carried:
            flags += ["-X", name if value is True else f"{name}={value}"]
    if sys.flags.inspect:
        flags.append("-i")
    return flags


def main() -> None:
    if not sys.platform.startswith("linux"):
        sys.exit(
            f"{PROG}: pymalloc-rs runs on Linux only (it is preloaded with LD_PRELOAD); "
            f"this is {sys.platform}"
        )
    try:
        settings, program = parse(sys.argv[1:])
    except UsageError as error:
        print(f"{USAGE}\n{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    if not sys.executable:
        sys.exit(f"{PROG}: sys.executable is empty: the interpreter cannot be started again")
    try:
        preload = preload_value(library_path(), os.environ.get("LD_PRELOAD"))
    except (FileNotFoundError, RuntimeError) as error:
        sys.exit(f"{PROG}: {error}")
    environment = dict(os.environ)
    environment.update(settings)
    environment["LD_PRELOAD"] = preload
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *interpreter_flags(), *program], environment)


if __name__ == "__main__":
    main()
