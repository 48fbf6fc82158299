"""ctypes access to a libpymalloc that is already in this process.

Nothing here loads the library: loading it would run its constructor, and
a process must get pymalloc-rs from its start (`python -m pymalloc`, the
runner, an embedder), not from an import. The library is looked up in the
process's global symbol scope (LD_PRELOAD, a linked runner or embedder),
then, with RTLD_NOLOAD (a handle only to a loaded file), at the package's
copy and the libpymalloc files /proc/self/maps lists (a copy opened with
ctypes by someone else).
"""
from __future__ import annotations

import ctypes
import os

# include/pymalloc/pymem.h: PYCORE_STATS_VERSION and PYCORE_STATS_MAX_CLASSES.
PYCORE_STATS_VERSION = 2
PYCORE_STATS_MAX_CLASSES = 128


class PyCoreClassStats(ctypes.Structure):
    """include/pymalloc/pymem.h's PyCoreClassStats."""

    _fields_ = [
        ("block_size", ctypes.c_size_t),
        ("pools", ctypes.c_size_t),
        ("blocks_in_use", ctypes.c_size_t),
        ("blocks_available", ctypes.c_size_t),
    ]


class PyCoreStats(ctypes.Structure):
    """include/pymalloc/pymem.h's PyCoreStats, version 2."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("num_classes", ctypes.c_uint32),
        ("alignment", ctypes.c_size_t),
        ("small_request_threshold", ctypes.c_size_t),
        ("pool_size", ctypes.c_size_t),
        ("arena_size", ctypes.c_size_t),
        ("metadata_pools_per_arena", ctypes.c_size_t),
        ("classes", PyCoreClassStats * PYCORE_STATS_MAX_CLASSES),
        ("arenas_allocated_total", ctypes.c_uint64),
        ("arenas_reclaimed", ctypes.c_uint64),
        ("arenas_highwater", ctypes.c_uint64),
        ("arenas_current", ctypes.c_uint64),
        ("bytes_in_allocated_blocks", ctypes.c_size_t),
        ("bytes_in_available_blocks", ctypes.c_size_t),
        ("unused_pools", ctypes.c_size_t),
        ("cached_pools", ctypes.c_size_t),
        ("bytes_lost_to_pool_headers", ctypes.c_size_t),
        ("bytes_lost_to_quantization", ctypes.c_size_t),
        ("address_map_leaves", ctypes.c_size_t),
        ("address_map_bytes", ctypes.c_size_t),
        ("heaps_live", ctypes.c_size_t),
        ("heaps_abandoned", ctypes.c_size_t),
        ("heaps_free", ctypes.c_size_t),
        ("abandoned_pools", ctypes.c_size_t),
        ("cross_thread_frees", ctypes.c_uint64),
        ("pools_taken", ctypes.c_uint64),
        ("pools_given_back", ctypes.c_uint64),
        ("bytes_returned_to_os", ctypes.c_uint64),
        ("metadata_bytes", ctypes.c_size_t),
        ("blocks_in_block_caches", ctypes.c_size_t),
    ]


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """Give the functions this package calls their C signatures."""
    library.PyCore_IsPooled.argtypes = [ctypes.c_void_p]
    library.PyCore_IsPooled.restype = ctypes.c_int
    library.PyCore_GetStats.argtypes = [ctypes.POINTER(PyCoreStats)]
    library.PyCore_GetStats.restype = ctypes.c_int
    library.PyCore_Trim.argtypes = []
    library.PyCore_Trim.restype = None
    return library


def _has_core_api(library: ctypes.CDLL) -> bool:
    try:
        library.PyCore_IsPooled
    except AttributeError:
        return False
    return True


def _candidate_copies(packaged: str) -> list[str]:
    """Paths of the libpymalloc files this process may have loaded: the
    packaged one, and those /proc/self/maps shows (without /proc, only the
    packaged one can be asked for)."""
    paths = [packaged]
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return paths
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) == 6:
            path = fields[5].strip()
            name = os.path.basename(path)
            if name.startswith("libpymalloc") and ".so" in name and path not in paths:
                paths.append(path)
    return paths


def find_loaded(packaged: str) -> ctypes.CDLL | None:
    """The libpymalloc of this process, or None if none is loaded; `packaged`
    is the package's copy. Never loads one."""
    # dlopen(NULL): the global scope, where LD_PRELOAD and linked copies are.
    global_scope = ctypes.CDLL(None)
    if _has_core_api(global_scope):
        return _declare(global_scope)
    for path in _candidate_copies(packaged):
        try:
            # RTLD_NOLOAD: a handle only if the file is loaded already.
            copy = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
        if _has_core_api(copy):
            return _declare(copy)
    return None
