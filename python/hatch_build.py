"""Hatchling build hook of the pymalloc-rs wheel (pyproject.toml).

Builds libpymalloc.so with cargo (the release profile, as `make` does) and
puts it, with the C headers of include/, into the wheel's `pymalloc`
package: pymalloc/libpymalloc.so.0 (under its SONAME, so that a program
linked against it finds it by the name it records) and pymalloc/include/.
The library does
not link libpython, so one wheel serves every CPython 3: the wheel is
tagged py3-none-manylinux_2_N_<arch>, where 2.N is the newest glibc symbol
version the library needs, after checking that it needs no library beyond
manylinux's base set (the check auditwheel would make for this one file).
"""
import json
import os
import platform
import re
import subprocess
import sys

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The libraries a manylinux wheel may need without bundling them (PEP 600's
# base set, as in auditwheel's policy), restricted to those a Rust cdylib
# links. libpython is not among them, on purpose: see the module docstring.
MANYLINUX_LIBRARIES = {
    "libc.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "libm.so.6",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
# The oldest glibc any manylinux tag for x86-64 names (manylinux2014).
OLDEST_MANYLINUX_GLIBC_MINOR = 17


class CargoLibraryHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        if version != "standard":
            raise RuntimeError(
                f"pymalloc-rs: {version} wheels are not supported (the package needs "
                "libpymalloc.so beside its modules); install the built wheel instead"
            )
        if sys.platform != "linux":
            raise RuntimeError(
                f"pymalloc-rs: wheels are built on Linux only (this is {sys.platform}): "
                "the package preloads the library with LD_PRELOAD"
            )
        library = self._stripped_copy(self._build_library())
        glibc_minor = self._check_library(library)
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-manylinux_2_{glibc_minor}_{platform.machine()}"
        build_data["force_include"][library] = "pymalloc/libpymalloc.so.0"
        build_data["force_include"][os.path.join(self.root, "include")] = "pymalloc/include"

    def _build_library(self):
        """`cargo build --release` of the crate; the path of its cdylib."""
        cargo = os.environ.get("CARGO", "cargo")
        manifest = os.path.join(self.root, "Cargo.toml")
        run([cargo, "build", "--release", "--lib", "--manifest-path", manifest])
        metadata = json.loads(
            run([cargo, "metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest])
        )
        library = os.path.join(metadata["target_directory"], "release", "libpymalloc.so")
        if not os.path.isfile(library):
            raise RuntimeError(f"pymalloc-rs: cargo built no {library}")
        return library

    def _stripped_copy(self, library):
        """A copy of `library` without its debug information (the release
        profile keeps it for profilers: 4.8 MB, 0.5 MB without),
        beside it in the target directory; the wheel ships the copy."""
        stripped = os.path.join(os.path.dirname(library), "wheel", "libpymalloc.so")
        os.makedirs(os.path.dirname(stripped), exist_ok=True)
        try:
            run(["strip", "--strip-debug", "-o", stripped, library])
        except FileNotFoundError:
            raise RuntimeError(
                "pymalloc-rs: strip (binutils) is needed to build the wheel's library"
            ) from None
        return stripped

    def _check_library(self, library):
        """Reject a library that needs more than manylinux's base libraries
        (libpython above all); return the minor version of the newest glibc
        symbol version it needs."""
        try:
            dump = run(["readelf", "--wide", "--dynamic", "--version-info", library])
        except FileNotFoundError:
            raise RuntimeError(
                "pymalloc-rs: readelf (binutils) is needed to check and tag the wheel's library"
            ) from None
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dump))
        foreign = sorted(needed - MANYLINUX_LIBRARIES)
        if foreign:
            raise RuntimeError(
                f"pymalloc-rs: {library} needs {', '.join(foreign)}, beyond manylinux's base "
                "libraries; the wheel must not depend on them (libpython least of all: "
                "one wheel serves every CPython)"
            )
        glibc_minors = [int(minor) for minor in re.findall(r"Name: GLIBC_2\.(\d+)", dump)]
        return max([OLDEST_MANYLINUX_GLIBC_MINOR] + glibc_minors)


def run(command):
    """Run `command`, its output on our stderr; return its stdout."""
    result = subprocess.run(command, stdout=subprocess.PIPE, universal_newlines=True)
    if result.returncode != 0:
        raise RuntimeError(f"pymalloc-rs: {' '.join(command)} failed (exit status {result.returncode})")
    return result.stdout
