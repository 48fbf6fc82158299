//! `PyCore_*`: the pooled allocator itself, whatever the domains are
//! configured to use, and its statistics.

use core::ffi::{c_char, c_int, c_void};

use super::general_targets;
use super::routes::{self, Targets};
use crate::allocator;
use crate::cpython::{self, PyMemAllocatorEx};
use crate::domain::{self, Domain};
use crate::stats;

/// Version of `PyCoreStats` this library fills in. Version 1 (without
/// `blocks_in_block_caches`) is still accepted.
pub const PYCORE_STATS_VERSION: u32 = 2;
/// Capacity of `PyCoreStats.classes`; `num_classes` of them are used.
pub const PYCORE_STATS_MAX_CLASSES: usize = 128;

/// One size class in `PyCoreStats`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyCoreClassStats {
    /// Bytes per block.
    pub block_size: usize,
    /// Pools serving this class.
    pub pools: usize,
    /// Blocks allocated.
    pub blocks_in_use: usize,
    /// Blocks free or not yet carved in those pools, including blocks
    /// parked in the threads' block caches.
    pub blocks_available: usize,
}

/// A snapshot of the pooled allocator, filled by `PyCore_GetStats`. Set
/// `version` to `PYCORE_STATS_VERSION` before the call. Later versions
/// only append fields.
#[repr(C)]
pub struct PyCoreStats {
    /// In: the version the caller was compiled against.
    pub version: u32,
    /// Size classes in use by this build (entries of `classes`).
    pub num_classes: u32,
    /// Build configuration.
    pub alignment: usize,
    pub small_request_threshold: usize,
    pub pool_size: usize,
    pub arena_size: usize,
    /// Pools at the start of each arena holding the records (headers) of
    /// its pools; the others hold blocks, from their first byte.
    pub metadata_pools_per_arena: usize,
    pub classes: [PyCoreClassStats; PYCORE_STATS_MAX_CLASSES],
    /// Arenas (CPython's `# arenas ...` lines).
    pub arenas_allocated_total: u64,
    pub arenas_reclaimed: u64,
    pub arenas_highwater: u64,
    pub arenas_current: u64,
    /// Bytes (CPython's `# bytes ...` lines).
    pub bytes_in_allocated_blocks: usize,
    pub bytes_in_available_blocks: usize,
    pub unused_pools: usize,
    pub cached_pools: usize,
    pub bytes_lost_to_pool_headers: usize,
    pub bytes_lost_to_quantization: usize,
    /// The address map's own memory.
    pub address_map_leaves: usize,
    pub address_map_bytes: usize,
    /// Thread heaps.
    pub heaps_live: usize,
    pub heaps_abandoned: usize,
    pub heaps_free: usize,
    pub abandoned_pools: usize,
    pub cross_thread_frees: u64,
    pub pools_taken: u64,
    pub pools_given_back: u64,
    pub bytes_returned_to_os: u64,
    pub metadata_bytes: usize,
    /// Version 2: freed blocks parked in the threads' block caches, ready
    /// for their next allocations (counted in `blocks_available`).
    pub blocks_in_block_caches: usize,
}

/// Allocate `size` bytes from the pooled allocator (requests above the
/// small-request threshold go to malloc). Zero bytes give a distinct
/// non-NULL pointer. Returns NULL when out of memory or when `size`
/// exceeds `PY_SSIZE_T_MAX`. Release with `PyCore_Free`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyCore_Malloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Core, size)
}

/// Allocate `nelem * elsize` zeroed bytes; NULL if the product overflows
/// `PY_SSIZE_T_MAX` or memory is exhausted.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyCore_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Core, nelem, elsize)
}

/// Resize a block from `PyCore_Malloc`/`Calloc`/`Realloc`; `ptr == NULL`
/// allocates. On failure returns NULL and leaves `ptr` valid.
///
/// # Safety
/// `ptr` is NULL or a live block of this allocator.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyCore_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Core, ptr, new_size)
}

/// Release a block; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live block of this allocator.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyCore_Free(ptr: *mut c_void) {
    routes::jump!(free, Domain::Core, ptr)
}

/// `PyCore_*`'s general targets (see `routes`): with the debug hooks or
/// the profiler on.
pub(crate) const CORE_GENERAL: Targets = general_targets!(Domain::Core, "PyCore_");

/// 1 if `ptr` points into one of the pooled allocator's arenas, else 0.
/// Exact for any pointer value; never dereferences it.
#[unsafe(no_mangle)]
pub extern "C" fn PyCore_IsPooled(ptr: *const c_void) -> c_int {
    allocator::owns(ptr.cast()) as c_int
}

/// Name of the allocator serving domain `domain` (0 raw, 1 mem, 2 object,
/// CPython's `PYMEM_DOMAIN_*` values), with CPython's `PYTHONMALLOC` names:
/// "pymalloc", "malloc", "pymalloc_debug" or "malloc_debug"; NULL for an
/// unknown domain. The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn PyCore_GetBackendName(domain: c_int) -> *const c_char {
    let Some(&domain) = usize::try_from(domain)
        .ok()
        .and_then(|d| Domain::ALL.get(d))
    else {
        return core::ptr::null();
    };
    let setting = domain::setting(domain);
    match (setting.backend, setting.debug) {
        (domain::Backend::Pymalloc, false) => c"pymalloc".as_ptr(),
        (domain::Backend::Malloc, false) => c"malloc".as_ptr(),
        (domain::Backend::Pymalloc, true) => c"pymalloc_debug".as_ptr(),
        (domain::Backend::Malloc, true) => c"malloc_debug".as_ptr(),
    }
}

/// This library's version: the `version` of the Cargo.toml it was built
/// from, e.g. "0.1.0". A wrapper built for one version (the Python
/// package's ctypes mirror of `PyCoreStats`, say) checks it before it
/// reads the structures of another. The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn PyCore_GetVersion() -> *const c_char {
    const VERSION: &core::ffi::CStr = match core::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(version) => version,
        Err(_) => panic!("the crate version contains a NUL byte"),
    };
    VERSION.as_ptr()
}

/// Give back to the arenas (and, for wholly free arenas, to the OS) the
/// empty pools the calling thread's heap keeps, and recover blocks other
/// threads freed into the heaps of exited threads.
#[unsafe(no_mangle)]
pub extern "C" fn PyCore_Trim() {
    crate::heap::trim_all();
}

/// Fill `*stats` with a snapshot of the allocator. The caller sets
/// `stats->version = PYCORE_STATS_VERSION` first. Returns 0, or -1 (and
/// leaves `*stats` untouched) if `stats` is NULL or the version unknown.
///
/// # Safety
/// `stats` is NULL or points to a writable `PyCoreStats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyCore_GetStats(stats: *mut PyCoreStats) -> c_int {
    if stats.is_null() {
        return -1;
    }
    // SAFETY: `stats` points to a writable PyCoreStats of some version,
    // which starts with its version number.
    let version = unsafe { (*stats).version };
    // A version-1 caller's struct ends before the fields version 2 added.
    let bytes = match version {
        1 => core::mem::offset_of!(PyCoreStats, blocks_in_block_caches),
        PYCORE_STATS_VERSION => core::mem::size_of::<PyCoreStats>(),
        _ => return -1,
    };
    let snap = stats::snapshot();
    // SAFETY: PyCoreStats is plain integers, for which all-zero is valid.
    let mut full: PyCoreStats = unsafe { core::mem::zeroed() };
    full.version = version;
    fill(&mut full, &snap);
    // SAFETY: the caller's struct of `version` holds at least `bytes`
    // bytes, and a local cannot overlap it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (&full as *const PyCoreStats).cast::<u8>(),
            stats.cast::<u8>(),
            bytes,
        )
    };
    0
}

fn fill(out: &mut PyCoreStats, snap: &stats::Snapshot) {
    use crate::config::*;
    out.num_classes = NUM_SIZE_CLASSES as u32;
    out.alignment = ALIGNMENT;
    out.small_request_threshold = SMALL_REQUEST_THRESHOLD;
    out.pool_size = POOL_SIZE;
    out.arena_size = ARENA_SIZE;
    out.metadata_pools_per_arena = METADATA_POOLS;
    let empty = PyCoreClassStats {
        block_size: 0,
        pools: 0,
        blocks_in_use: 0,
        blocks_available: 0,
    };
    out.classes = [empty; PYCORE_STATS_MAX_CLASSES];
    for (slot, class) in out.classes.iter_mut().zip(&snap.classes) {
        *slot = PyCoreClassStats {
            block_size: class.block_size,
            pools: class.pools,
            blocks_in_use: class.blocks_in_use,
            blocks_available: class.blocks_available,
        };
    }
    out.arenas_allocated_total = snap.arenas.allocated_total;
    out.arenas_reclaimed = snap.arenas.reclaimed;
    out.arenas_highwater = snap.arenas.highwater;
    out.arenas_current = snap.arenas.current;
    out.bytes_in_allocated_blocks = snap.bytes_in_allocated_blocks;
    out.bytes_in_available_blocks = snap.bytes_in_available_blocks;
    out.unused_pools = snap.unused_pools;
    out.cached_pools = snap.cached_pools;
    out.bytes_lost_to_pool_headers = snap.bytes_lost_to_pool_headers;
    out.bytes_lost_to_quantization = snap.bytes_lost_to_quantization;
    out.address_map_leaves = snap.address_map_leaves;
    out.address_map_bytes = snap.address_map_bytes;
    out.heaps_live = snap.heaps.live;
    out.heaps_abandoned = snap.heaps.abandoned;
    out.heaps_free = snap.heaps.free;
    out.abandoned_pools = snap.heaps.abandoned_pools;
    out.cross_thread_frees = snap.heaps.remote_frees;
    out.pools_taken = snap.heaps.pools_taken;
    out.pools_given_back = snap.heaps.pools_given_back;
    out.bytes_returned_to_os = snap.bytes_returned_to_os;
    out.metadata_bytes = snap.metadata_bytes;
    out.blocks_in_block_caches = snap.classes.iter().map(|c| c.blocks_cached).sum();
}

/// Print the statistics to `out` (stderr if NULL) in the layout of
/// CPython's `sys._debugmallocstats()`, plus the thread-heap section.
///
/// # Safety
/// `out` is NULL or an open `FILE *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyCore_PrintStats(out: *mut libc::FILE) {
    let text = stats::render(&stats::snapshot());
    if out.is_null() {
        crate::report::write_stderr(text.as_bytes());
    } else {
        // SAFETY: `out` is an open stream (caller); the buffer is valid.
        unsafe {
            libc::fwrite(text.as_ptr().cast(), 1, text.len(), out);
            libc::fflush(out);
        }
    }
}

/// Fill `*allocator` with a hook table in CPython's `PyMemAllocatorEx`
/// layout that serves `domain` (0 raw, 1 mem, 2 object) from the pooled
/// allocator, for `PyMem_SetAllocator(domain, allocator)`. The table wraps
/// the allocator the domain has now (read with CPython's
/// `PyMem_GetAllocator` when a CPython is in the process; libc malloc
/// otherwise): requests above the threshold and pointers the pools do not
/// own go to it, so the table may be installed while the interpreter runs.
/// Returns 0, or -1 for an unknown domain or a NULL `allocator`.
///
/// # Safety
/// `allocator` is NULL or points to a writable `PyMemAllocatorEx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyCore_GetAllocator(
    domain: c_int,
    allocator: *mut PyMemAllocatorEx,
) -> c_int {
    let Some(&domain) = usize::try_from(domain)
        .ok()
        .and_then(|d| Domain::ALL.get(d))
    else {
        return -1;
    };
    // SAFETY: guaranteed by the caller.
    let Some(out) = (unsafe { allocator.as_mut() }) else {
        return -1;
    };
    *out = cpython::allocator_for(domain);
    0
}

/// Install the hook tables into the CPython runtime of this process for
/// every domain configured as "pymalloc" (by default: mem and object).
/// Call it before `Py_Initialize`: the tables then replace CPython's
/// allocator, as CPython's contract for `PyMem_SetAllocator` allows before
/// initialisation, and requests above 512 bytes go straight to CPython's
/// raw domain (`PyMem_RawMalloc`), where pymalloc would send them. From a
/// running interpreter it works too (the tables wrap the allocator they
/// replace, which keeps the blocks made before), unless a tool that
/// restores an allocator it saved earlier is active: tracemalloc started
/// before the call puts its saved allocator back at exit, which is then
/// handed our blocks (docs/python.md). Returns 0, or -1 with a message on
/// stderr when no CPython runtime is present. Installing twice is
/// harmless. A program that finalises the interpreter and starts it again
/// calls it before the first start, not between the two: blocks of
/// CPython's own allocator may outlive the first run.
#[unsafe(no_mangle)]
pub extern "C" fn PyCore_InstallHooks() -> c_int {
    match cpython::install_hooks() {
        Ok(_) => 0,
        Err(error) => {
            crate::report::message(format_args!("PyCore_InstallHooks: {error}"));
            -1
        }
    }
}

/// With the debug hooks on (`PYMALLOC=debug`, `PyMem_SetupDebugHooks`):
/// check the guard bytes and family id of the live block `ptr` now, as a
/// free would. Returns 1 when the block is intact; otherwise reports it
/// like a failed free (and aborts unless `PYMALLOC_DEBUG_ACTION=warn`) and
/// returns 0. Returns -1 when the debug hooks are off for every domain.
///
/// # Safety
/// `ptr` is a block returned by one of this library's allocation functions
/// while the debug hooks were on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyCore_CheckBlock(ptr: *const c_void) -> c_int {
    let any_debug = [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core]
        .into_iter()
        .any(|d| domain::setting(d).debug);
    if !any_debug || ptr.is_null() {
        return -1;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { crate::debug::check(ptr.cast_mut().cast()) as c_int }
}
