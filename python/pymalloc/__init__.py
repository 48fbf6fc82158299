"""pymalloc-rs, CPython's small-object allocator rebuilt in Rust, for Python.

Run a program on it with ``python -m pymalloc app.py`` (``python -m pymalloc
--help``). In that program, or any interpreter that has the library:

    pymalloc.active()        True when this interpreter's object domain is served by pymalloc-rs
    pymalloc.stats()         the allocator's statistics (PyCore_GetStats) as a Stats dataclass
    pymalloc.trim()          give free memory back (PyCore_Trim)
    pymalloc.library_path()  the packaged libpymalloc.so.0 (LD_PRELOAD, ctypes, linking)
    pymalloc.include_dir()   the packaged C headers (pymalloc.h, for -I)

Importing this package never loads the library: a process gets pymalloc-rs
from its start or not at all (docs/python.md says why). The module is
ctypes over the library's C API, include/pymalloc/pymem.h.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
from importlib import metadata

from . import _library

__all__ = [
    "active",
    "stats",
    "trim",
    "library_path",
    "include_dir",
    "Stats",
    "ClassStats",
    "NotLoadedError",
    "VersionMismatchError",
]

DISTRIBUTION = "pymalloc-rs"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class NotLoadedError(RuntimeError):
    """pymalloc-rs is not in this process, so it has nothing to report."""


class VersionMismatchError(RuntimeError):
    """The library in this process is not the version of this module."""


def _dataclass_of(structure: type, name: str, doc: str, replace: dict | None = None) -> type:
    """A frozen dataclass with the fields of a ctypes structure, by their C
    names and in their C order (types overridden by `replace`)."""
    replace = replace or {}
    fields = [(field, replace.get(field, int)) for field, _ in structure._fields_]
    cls = dataclasses.make_dataclass(name, fields, frozen=True, namespace={"__doc__": doc})
    cls.__module__ = __name__
    return cls


ClassStats = _dataclass_of(
    _library.PyCoreClassStats,
    "ClassStats",
    "One size class of the pooled allocator (PyCoreClassStats in pymalloc/pymem.h).",
)
Stats = _dataclass_of(
    _library.PyCoreStats,
    "Stats",
    "A snapshot of the pooled allocator (PyCoreStats in pymalloc/pymem.h): every field "
    "by its C name; `classes` holds the `num_classes` size classes in use.",
    replace={"classes": tuple},
)


def _packaged_library() -> str:
    return os.path.join(_PACKAGE_DIR, "libpymalloc.so.0")


def library_path() -> str:
    """The packaged library, libpymalloc.so.0 (its SONAME), for LD_PRELOAD,
    ctypes or linking a program against it. Does not load it."""
    path = _packaged_library()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: this pymalloc package was not installed from a "
            "pymalloc-rs wheel (pip install pymalloc-rs, or make wheel)"
        )
    return path


def include_dir() -> str:
    """The packaged C headers (pymalloc.h and pymalloc/), for C extensions
    that use the PyCore_* API: pass it to the compiler with -I."""
    path = os.path.join(_PACKAGE_DIR, "include")
    if not os.path.isfile(os.path.join(path, "pymalloc.h")):
        raise FileNotFoundError(
            f"{path}/pymalloc.h is missing: this pymalloc package was not installed "
            "from a pymalloc-rs wheel (pip install pymalloc-rs, or make wheel)"
        )
    return path


def _module_version() -> str:
    """The version of the installed pymalloc-rs distribution (Cargo.toml's)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the {DISTRIBUTION} distribution is not installed (no metadata for it): "
            "install the wheel rather than importing the package from a source tree"
        ) from None


def __getattr__(name: str):
    if name == "__version__":
        return _module_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def active() -> bool:
    """True when this interpreter's object domain is served by pymalloc-rs.

    The test is the truth itself: the library must be in the process, and
    an object made now must lie in its pools. So the answer is True under
    ``python -m pymalloc``, the runner and an embedder that installed the
    hooks (tracemalloc on top does not change it), and False in a plain
    interpreter, where the library is not loaded, as well as when
    PYTHONMALLOC, -X dev or PYMALLOC_CPYTHON=0 kept CPython's allocator
    although the library is in the process."""
    library = _library.find_loaded(_packaged_library())
    if library is None:
        return False
    probe = object()  # made through the object domain now; object() has no free list
    return library.PyCore_IsPooled(id(probe)) == 1


def _checked_library() -> ctypes.CDLL:
    """The library of this process, checked to be this module's version."""
    library = _library.find_loaded(_packaged_library())
    if library is None:
        raise NotLoadedError(
            "pymalloc-rs is not loaded in this process: run the program under "
            "`python -m pymalloc` (or the runner, or with "
            "LD_PRELOAD=<pymalloc.library_path()>)"
        )
    module_version = _module_version()
    try:
        get_version = library.PyCore_GetVersion
    except AttributeError:
        raise VersionMismatchError(
            f"the pymalloc-rs library in this process predates PyCore_GetVersion "
            f"(older than this module, pymalloc-rs {module_version}): its statistics "
            "layout cannot be checked"
        ) from None
    get_version.argtypes = []
    get_version.restype = ctypes.c_char_p
    library_version = get_version().decode()
    if library_version != module_version:
        raise VersionMismatchError(
            f"the pymalloc-rs library in this process is version {library_version}, "
            f"this pymalloc module is version {module_version}: use the library of "
            "the installed package (python -m pymalloc does)"
        )
    return library


def stats() -> Stats:
    """The allocator's statistics now (PyCore_GetStats), as a Stats
    dataclass. Raises NotLoadedError in a process without pymalloc-rs."""
    library = _checked_library()
    raw = _library.PyCoreStats()
    raw.version = _library.PYCORE_STATS_VERSION
    if library.PyCore_GetStats(ctypes.byref(raw)) != 0:
        raise VersionMismatchError(
            f"PyCore_GetStats rejected PyCoreStats version {_library.PYCORE_STATS_VERSION}"
        )
    values = {}
    for field, _ in raw._fields_:
        if field == "classes":
            values[field] = tuple(
                ClassStats(**{name: getattr(entry, name) for name, _ in entry._fields_})
                for entry in raw.classes[: raw.num_classes]
            )
        else:
            values[field] = getattr(raw, field)
    return Stats(**values)


def trim() -> None:
    """Give empty pools back to the arenas and wholly free arenas to the OS
    (PyCore_Trim). Raises NotLoadedError in a process without pymalloc-rs."""
    _checked_library().PyCore_Trim()
