//! Serving a CPython interpreter: allocator hook tables in CPython's
//! `PyMemAllocatorEx` layout, their installation into the runtime present
//! in the process, and the rule that keeps our CPython-named exports from
//! taking over CPython's own dispatch.
//!
//! * A hook table serves blocks of up to the threshold from the pools and
//!   hands everything else — larger requests, and every pointer the
//!   address map does not know — to the allocator it replaced. So a table
//!   installed while the interpreter runs frees blocks allocated before it
//!   was installed correctly (CPython's documented requirement).
//! * The library never links against libpython: the runtime's
//!   `PyMem_GetAllocator`/`PyMem_SetAllocator` are looked up with `dlsym`,
//!   so programs without Python (e.g. `sh`, `timeout` under LD_PRELOAD)
//!   are unaffected.
//! * libpython exports the same names as we do (`PyObject_Malloc`, …) and
//!   calls them through its PLT. Preloaded, our definitions would win and
//!   silently bypass CPython's dispatch (tracemalloc, `PYTHONMALLOC=debug`,
//!   `PyMem_SetupDebugHooks`). So when libpython is found after us in the
//!   lookup order, each CPython-named export forwards to libpython's own
//!   function, and our allocator is reached through the installed tables,
//!   as when libpython comes first. For the memory functions that is one
//!   indirect jump: their routes lead straight to libpython's function
//!   ([`crate::ffi::routes`]). (Exports that dispatched through CPython's
//!   live tables themselves, found in libpython's data, measured more
//!   whole-program instructions on Python workloads than this: the figures
//!   are in docs/cpython.md and BENCHMARKS.md.)

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_uint, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::allocator::{self, Fallback};
use crate::domain::{self, Backend, Domain};
use crate::profile;
use crate::setting::{CallocFn, FreeFn, MallocFn, ReallocFn, Targets};
use crate::sync::Locked;
use crate::system;

/// CPython's `PyMemAllocatorEx` (identical in 3.5 … 3.13).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyMemAllocatorEx {
    pub ctx: *mut c_void,
    pub malloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    pub calloc: Option<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>,
    pub realloc: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void>,
    pub free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
}

impl PyMemAllocatorEx {
    /// A table of nulls (what CPython gives for an unknown domain).
    pub(crate) const EMPTY: PyMemAllocatorEx = PyMemAllocatorEx {
        ctx: core::ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };

    /// Our tables are recognised by their context, which points into
    /// `WRAPPED` (function addresses are not reliably comparable).
    fn is_ours(&self) -> bool {
        let start = WRAPPED.0.get() as usize;
        let end = start + core::mem::size_of::<[PyMemAllocatorEx; WRAPPED_ENTRIES]>();
        (start..end).contains(&(self.ctx as usize))
    }

    fn is_complete(&self) -> bool {
        self.malloc.is_some()
            && self.calloc.is_some()
            && self.realloc.is_some()
            && self.free.is_some()
    }
}

/// The allocator a hook table replaced, used as the pools' fallback.
#[derive(Clone, Copy)]
struct Previous<'a>(&'a PyMemAllocatorEx);

impl Fallback for Previous<'_> {
    #[inline]
    fn malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: tables are complete before they are installed (`capture`).
        unsafe { (self.0.malloc.unwrap_unchecked())(self.0.ctx, size).cast() }
    }
    #[inline]
    fn calloc(&self, count: usize, size: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe { (self.0.calloc.unwrap_unchecked())(self.0.ctx, count, size).cast() }
    }
    #[inline]
    unsafe fn realloc(&self, block: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: as above; `block` belongs to this allocator (caller).
        unsafe { (self.0.realloc.unwrap_unchecked())(self.0.ctx, block.cast(), size).cast() }
    }
    #[inline]
    unsafe fn free(&self, block: *mut u8) {
        // SAFETY: as above.
        unsafe { (self.0.free.unwrap_unchecked())(self.0.ctx, block.cast()) }
    }
}

/// Per domain, the allocator our table wraps: entry `domain` is the
/// context of the table we install. Written only under `INSTALL_LOCK` and
/// before any table pointing at it is handed out; afterwards only read.
struct Wrapped(UnsafeCell<[PyMemAllocatorEx; WRAPPED_ENTRIES]>);
// SAFETY: see `Wrapped`: writes happen before publication, under a lock.
unsafe impl Sync for Wrapped {}
const WRAPPED_ENTRIES: usize = Domain::ALL.len();
static WRAPPED: Wrapped = Wrapped(UnsafeCell::new([PyMemAllocatorEx::EMPTY; WRAPPED_ENTRIES]));
static INSTALL_LOCK: Locked<()> = Locked::new(());

/// Take the install lock before `fork()` (see [`fork`](crate::fork) for
/// the order of all the locks).
pub(crate) fn lock_for_fork() {
    INSTALL_LOCK.acquire_for_fork();
}

/// Release the install lock after `fork()`, in the parent or the child.
pub(crate) fn unlock_after_fork(in_child: bool) {
    INSTALL_LOCK.release_after_fork(in_child);
}

/// The domain whose `WRAPPED` entry `ctx` points to.
fn domain_of(ctx: *mut c_void) -> Domain {
    let offset = ctx as usize - WRAPPED.0.get() as usize;
    let entry = offset / core::mem::size_of::<PyMemAllocatorEx>();
    Domain::ALL[entry]
}

unsafe extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // The common case without a stack frame: a small request.
    if let Some(block) = allocator::malloc_small(size) {
        return block.cast();
    }
    // `size - 1` is what the size test left in the size's register
    // (`size` itself would have to be kept in another).
    // SAFETY: as below.
    unsafe { hook_malloc_other(ctx, size.wrapping_sub(1)) }
}

/// `size_less_one` is the request size minus one, wrapping for 0.
///
/// # Safety
/// `ctx` is the address of this domain's entry in WRAPPED.
#[cold]
#[inline(never)]
unsafe fn hook_malloc_other(ctx: *mut c_void, size_less_one: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    let previous = unsafe { &*(ctx as *const PyMemAllocatorEx) };
    allocator::malloc_with(&Previous(previous), size_less_one.wrapping_add(1)).cast()
}

/// `hook_malloc` for tables made while the profiler is on (the profiler
/// is switched on at load, before any table is made, so the unprofiled
/// table need not test it on every allocation).
unsafe extern "C" fn hook_malloc_profiled(ctx: *mut c_void, size: usize) -> *mut c_void {
    profile::record(profile::Event::Malloc, domain_of(ctx), size);
    // SAFETY: as in `hook_malloc`.
    unsafe { hook_malloc_other(ctx, size.wrapping_sub(1)) }
}

/// The allocation hook of [`arming_table`]: `hook_malloc`, after, at the
/// first call, [`follow_live_tables`] with arming.
///
/// # Safety
/// As for `hook_malloc`.
unsafe extern "C" fn hook_malloc_arming(ctx: *mut c_void, size: usize) -> *mut c_void {
    let domain = domain_of(ctx);
    if !ARMED[domain as usize].load(Ordering::Relaxed) {
        arm(domain);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { hook_malloc(ctx, size) }
}

/// Per domain, whether its arming hook has run [`arm`] (once: a table
/// set over the arming table, tracemalloc's say, calls the hook without
/// testing again).
static ARMED: [AtomicBool; WRAPPED_ENTRIES] = [const { AtomicBool::new(false) }; WRAPPED_ENTRIES];

#[cold]
fn arm(domain: Domain) {
    if !ARMED[domain as usize].swap(true, Ordering::AcqRel) {
        follow_live_tables(true);
    }
}

unsafe extern "C" fn hook_calloc(ctx: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // The common case without a stack frame: a small request.
    if let Some(block) = allocator::calloc_small(count, size) {
        return block.cast();
    }
    // SAFETY: as in `hook_malloc`.
    unsafe { hook_calloc_other(ctx, count, size) }
}

/// # Safety
/// `ctx` is the address of this domain's entry in WRAPPED.
#[cold]
#[inline(never)]
unsafe fn hook_calloc_other(ctx: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    let previous = unsafe { &*(ctx as *const PyMemAllocatorEx) };
    allocator::calloc_unpooled(&Previous(previous), count, size).cast()
}

/// `hook_calloc` for tables made while the profiler is on.
unsafe extern "C" fn hook_calloc_profiled(
    ctx: *mut c_void,
    count: usize,
    size: usize,
) -> *mut c_void {
    let bytes = count.saturating_mul(size);
    profile::record(profile::Event::Calloc, domain_of(ctx), bytes);
    // SAFETY: guaranteed by the caller, as for `hook_calloc`.
    unsafe { hook_calloc(ctx, count, size) }
}

unsafe extern "C" fn hook_realloc(
    ctx: *mut c_void,
    block: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: as in `hook_malloc`; CPython passes a live block of this
    // domain, which is ours or the wrapped allocator's.
    unsafe {
        let previous = &*(ctx as *const PyMemAllocatorEx);
        allocator::realloc_with(&Previous(previous), block.cast(), size).cast()
    }
}

/// `hook_realloc` for tables made while the profiler is on.
unsafe extern "C" fn hook_realloc_profiled(
    ctx: *mut c_void,
    block: *mut c_void,
    size: usize,
) -> *mut c_void {
    let old_size = if block.is_null() {
        Some(0)
    } else if allocator::owns(block.cast()) {
        // SAFETY: a live pooled block (CPython passes live blocks).
        Some(unsafe { crate::heap::block_usable_size(block.cast()) })
    } else {
        None // the wrapped allocator's: its size is not known here
    };
    profile::record_realloc(domain_of(ctx), old_size, size);
    // SAFETY: guaranteed by the caller, as for `hook_realloc`.
    unsafe { hook_realloc(ctx, block, size) }
}

unsafe extern "C" fn hook_free(ctx: *mut c_void, block: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { free_through(ctx, block) }
}

/// The body of `hook_free`, also inlined into the direct targets' free.
///
/// # Safety
/// `ctx` is the address of a domain's entry in WRAPPED; `block` is null
/// or a live block of that domain, ours or the wrapped allocator's.
#[inline(always)]
unsafe fn free_through(ctx: *mut c_void, block: *mut c_void) {
    // SAFETY: as in `hook_realloc`.
    unsafe {
        let previous = &*(ctx as *const PyMemAllocatorEx);
        allocator::free_with(&Previous(previous), block.cast())
    }
}

unsafe extern "C" fn libc_malloc(_: *mut c_void, size: usize) -> *mut c_void {
    system::malloc(size).cast()
}
unsafe extern "C" fn libc_calloc(_: *mut c_void, count: usize, size: usize) -> *mut c_void {
    system::calloc(count, size).cast()
}
unsafe extern "C" fn libc_realloc(_: *mut c_void, block: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: a live libc block (the hook's caller).
    unsafe { system::realloc(block.cast(), size).cast() }
}
unsafe extern "C" fn libc_free(_: *mut c_void, block: *mut c_void) {
    // SAFETY: a live libc block (the hook's caller).
    unsafe { system::free(block.cast()) }
}

const LIBC_TABLE: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: core::ptr::null_mut(),
    malloc: Some(libc_malloc),
    calloc: Some(libc_calloc),
    realloc: Some(libc_realloc),
    free: Some(libc_free),
};

type GetSetAllocator = unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx);

/// The running CPython's allocator API, if a CPython is in the process.
struct Runtime {
    get: GetSetAllocator,
    set: GetSetAllocator,
}

fn symbol(handle: *mut c_void, name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with a valid handle pseudo-value and a C string.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

/// The running CPython's allocator API: libpython's own functions,
/// never our exports of the same names.
fn runtime() -> Option<Runtime> {
    libpython_runtime().or_else(|| {
        runtime_from(
            cpython_symbol(c"PyMem_GetAllocator"),
            cpython_symbol(c"PyMem_SetAllocator"),
        )
    })
}

/// libpython's allocator API when a libpython comes after us in lookup
/// order (found at load, `FORWARDS`).
fn libpython_runtime() -> Option<Runtime> {
    runtime_from(
        FORWARDS.PyMem_GetAllocator.load(Ordering::Relaxed),
        FORWARDS.PyMem_SetAllocator.load(Ordering::Relaxed),
    )
}

/// `name` as another object than this library defines it: the first
/// definition in lookup order, or, when that is our own export, the next
/// one (a libpython after us, possibly loaded since).
fn cpython_symbol(name: &CStr) -> *mut c_void {
    let first = symbol(libc::RTLD_DEFAULT, name);
    if first.is_null() || !defined_here(first) {
        return first;
    }
    symbol(libc::RTLD_NEXT, name)
}

/// Whether `address` lies in this library.
fn defined_here(address: *mut c_void) -> bool {
    let mut there = empty_dl_info();
    let mut here = empty_dl_info();
    // SAFETY: dladdr fills the records for any address.
    unsafe {
        libc::dladdr(address, &mut there) != 0
            && libc::dladdr(defined_here as *const c_void, &mut here) != 0
            && there.dli_fbase == here.dli_fbase
    }
}

fn runtime_from(get: *mut c_void, set: *mut c_void) -> Option<Runtime> {
    if get.is_null() || set.is_null() {
        return None;
    }
    // SAFETY: these CPython functions have had this signature since 3.4.
    unsafe {
        Some(Runtime {
            get: core::mem::transmute::<*mut c_void, GetSetAllocator>(get),
            set: core::mem::transmute::<*mut c_void, GetSetAllocator>(set),
        })
    }
}

/// Record, once per domain, the allocator our table will wrap: the one
/// the runtime has installed now, or libc when there is no runtime; or,
/// with `large_to_raw` (see [`Install::BeforeCPython`]), for the mem and
/// object domains, libpython's raw domain.
///
/// # Safety
/// `INSTALL_LOCK` is held.
unsafe fn capture(domain: Domain, runtime: Option<&Runtime>, large_to_raw: bool) {
    // SAFETY: writes to WRAPPED happen under INSTALL_LOCK (caller); a table
    // pointing at the entry is only handed out after it is complete.
    let wrapped = unsafe { &mut (*WRAPPED.0.get())[domain as usize] };
    if wrapped.is_complete() {
        return;
    }
    let mut current = LIBC_TABLE;
    if let Some(runtime) = runtime {
        // SAFETY: a valid out-parameter for CPython's getter.
        unsafe { (runtime.get)(domain as c_int, &mut current) };
    }
    *wrapped = if current.is_complete() && !current.is_ours() {
        current
    } else {
        LIBC_TABLE
    };
    // CPython's pymalloc (the default table, whose context is null) hands
    // every request above its threshold to PyMem_RawMalloc; so do we then,
    // directly, instead of through pymalloc, whose free first looks the
    // block up in its own arenas (profiled: 44 M instructions of 1,876 M
    // on the mixed_sizes workload under LD_PRELOAD). Only when nothing can
    // have been allocated from pymalloc yet: every block not in our pools
    // is then a raw-domain block.
    if large_to_raw && domain != Domain::Raw && wrapped.ctx.is_null() && find_raw_domain() {
        *wrapped = RAW_DOMAIN_TABLE;
    }
}

/// libpython's own raw-domain functions (`PyMem_RawMalloc`, `…Calloc`,
/// `…Realloc`, `…Free`, in that order), once [`find_raw_domain`] found them
/// (never changed after).
static RAW_DOMAIN: [AtomicPtr<c_void>; 4] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 4];

/// Find libpython's definitions of the raw-domain functions, wherever
/// libpython stands in lookup order: after this library (`FORWARDS`, the
/// preload) or before it (a program linked with both, as the runner is,
/// where the names resolve to libpython's and our exports are not called).
/// They are looked up in the object that defines libpython's
/// `PyMem_SetAllocator` (not our export of the name). Whether all four
/// were found.
///
/// `INSTALL_LOCK` is held (the statics are written once, before the table
/// that reads them is installed).
fn find_raw_domain() -> bool {
    const NAMES: [&CStr; 4] = [
        c"PyMem_RawMalloc",
        c"PyMem_RawCalloc",
        c"PyMem_RawRealloc",
        c"PyMem_RawFree",
    ];
    if RAW_DOMAIN
        .iter()
        .all(|function| !function.load(Ordering::Relaxed).is_null())
    {
        return true;
    }
    let f = &FORWARDS;
    let forwards = [
        &f.PyMem_RawMalloc,
        &f.PyMem_RawCalloc,
        &f.PyMem_RawRealloc,
        &f.PyMem_RawFree,
    ]
    .map(|function| function.load(Ordering::Relaxed));
    if forwards.iter().all(|function| !function.is_null()) {
        publish_raw_domain(forwards);
        return true;
    }
    let set_allocator = cpython_symbol(c"PyMem_SetAllocator");
    if set_allocator.is_null() {
        return false;
    }
    let mut info = empty_dl_info();
    // SAFETY: dladdr fills `info` for a symbol's address.
    if unsafe { libc::dladdr(set_allocator, &mut info) } == 0 || info.dli_fname.is_null() {
        return false;
    }
    let libpython_base = info.dli_fbase;
    // SAFETY: the loader's own path of an object it has loaded; RTLD_NOLOAD
    // only takes a reference to it, released below.
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return false;
    }
    let mut found = [core::ptr::null_mut(); 4];
    for (slot, name) in found.iter_mut().zip(NAMES) {
        let function = symbol(handle, name);
        let mut info = empty_dl_info();
        // SAFETY: as above.
        let defined_there = !function.is_null()
            && unsafe { libc::dladdr(function, &mut info) } != 0
            && info.dli_fbase == libpython_base;
        if defined_there {
            *slot = function;
        }
    }
    // SAFETY: the reference taken by dlopen above; libpython stays loaded
    // (the program loaded it), so the addresses stay valid.
    unsafe { libc::dlclose(handle) };
    if found.iter().any(|function| function.is_null()) {
        return false;
    }
    publish_raw_domain(found);
    true
}

fn publish_raw_domain(functions: [*mut c_void; 4]) {
    for (slot, function) in RAW_DOMAIN.iter().zip(functions) {
        slot.store(function, Ordering::Release);
    }
}

/// Calls libpython's raw-domain function `RAW_DOMAIN[$index]`, with `$ty`
/// its signature.
macro_rules! call_libpython {
    ($index:literal as $ty:ty, $($arg:expr),*) => {{
        let function = RAW_DOMAIN[$index].load(Ordering::Acquire);
        // SAFETY: `RAW_DOMAIN_TABLE` is only installed when the functions
        // were found (`find_raw_domain`), and the table's installation
        // publishes them; `$ty` is the C signature of that entry's
        // function; the caller's guarantees are the hook's.
        unsafe { core::mem::transmute::<*mut c_void, $ty>(function)($($arg),*) }
    }};
}

unsafe extern "C" fn raw_domain_malloc(_: *mut c_void, size: usize) -> *mut c_void {
    call_libpython!(0 as unsafe extern "C" fn(usize) -> *mut c_void, size)
}
unsafe extern "C" fn raw_domain_calloc(_: *mut c_void, count: usize, size: usize) -> *mut c_void {
    call_libpython!(
        1 as unsafe extern "C" fn(usize, usize) -> *mut c_void,
        count,
        size
    )
}
unsafe extern "C" fn raw_domain_realloc(
    _: *mut c_void,
    block: *mut c_void,
    size: usize,
) -> *mut c_void {
    call_libpython!(
        2 as unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
        block,
        size
    )
}
unsafe extern "C" fn raw_domain_free(_: *mut c_void, block: *mut c_void) {
    call_libpython!(3 as unsafe extern "C" fn(*mut c_void), block)
}

/// The fallback of the mem and object domains' tables installed before
/// CPython started: libpython's raw domain, through its exported
/// functions, so that whatever serves the raw domain at the time of each
/// call (its debug hooks, tracemalloc) serves these blocks, as under
/// pymalloc.
const RAW_DOMAIN_TABLE: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: core::ptr::null_mut(),
    malloc: Some(raw_domain_malloc),
    calloc: Some(raw_domain_calloc),
    realloc: Some(raw_domain_realloc),
    free: Some(raw_domain_free),
};

/// A hook table serving `domain` from the pools, wrapping the domain's
/// current allocator (see `capture`).
pub fn allocator_for(domain: Domain) -> PyMemAllocatorEx {
    let _guard = INSTALL_LOCK.lock();
    // SAFETY: lock held.
    unsafe { capture(domain, runtime().as_ref(), false) };
    table(domain)
}

fn table(domain: Domain) -> PyMemAllocatorEx {
    table_with_context(context(domain))
}

/// The table installed before CPython starts when a libpython comes after
/// us: `table(domain)` with an allocation hook that, at its first call,
/// points the domain's exports at the pools directly ([`arm`]).
fn arming_table(domain: Domain) -> PyMemAllocatorEx {
    PyMemAllocatorEx {
        malloc: Some(hook_malloc_arming),
        ..table(domain)
    }
}

/// Which of our tables `live` (CPython's table for `domain`) is: our
/// contexts are unique to our tables, and the allocation hook tells the
/// variants apart (a profiled table is neither).
fn table_kind(domain: Domain, live: &PyMemAllocatorEx) -> Option<TableKind> {
    if live.ctx != context(domain) {
        return None;
    }
    let malloc = live.malloc.map(|f| f as *const ());
    if malloc == Some(hook_malloc as *const ()) {
        Some(TableKind::Normal)
    } else if malloc == Some(hook_malloc_arming as *const ()) {
        Some(TableKind::Arming)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Normal,
    Arming,
}

/// The context of the table we install for `domain`: its `WRAPPED` entry.
fn context(domain: Domain) -> *mut c_void {
    // SAFETY: the address of an entry of the static; nothing is read.
    unsafe { (WRAPPED.0.get() as *mut PyMemAllocatorEx).add(domain as usize) }.cast()
}

fn table_with_context(ctx: *mut c_void) -> PyMemAllocatorEx {
    // The profiler is switched on at load, before any table is made, so
    // the tables made without it need not test it on every call.
    let profiled = profile::enabled();
    PyMemAllocatorEx {
        ctx,
        malloc: Some(if profiled {
            hook_malloc_profiled
        } else {
            hook_malloc
        }),
        calloc: Some(if profiled {
            hook_calloc_profiled
        } else {
            hook_calloc
        }),
        realloc: Some(if profiled {
            hook_realloc_profiled
        } else {
            hook_realloc
        }),
        free: Some(hook_free),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum InstallError {
    NoRuntime,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::NoRuntime => write!(
                f,
                "no CPython runtime in this process (PyMem_SetAllocator not found): \
                 link or load libpython first"
            ),
        }
    }
}

/// Install our tables into the CPython runtime of the process, for every
/// domain configured as `pymalloc` (by default: mem and object). Domains
/// already served by our tables are left alone. Returns how many domains
/// were newly installed. Before the interpreter is initialised (an
/// embedder's `main`, the runner), CPython's contract for
/// `PyMem_SetAllocator` lets a table replace the allocator rather than
/// wrap it: nothing of the mem and object domains is allocated before
/// `Py_InitializeFromConfig` (pre-initialisation uses the raw domain), so
/// the tables are installed as by the preload's constructor.
pub fn install_hooks() -> Result<usize, InstallError> {
    if interpreter_initialized() {
        install(Install::Any)
    } else {
        install(Install::BeforeCPython)
    }
}

/// When the hook tables are installed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Install {
    /// At any time (`PyCore_InstallHooks`): CPython's allocator may have
    /// blocks live, which our tables hand back to it.
    Any,
    /// Before the interpreter is initialised: by the library constructor
    /// under `LD_PRELOAD`, before the program's `main`, or by
    /// `PyCore_InstallHooks` before `Py_Initialize`. CPython has allocated
    /// nothing of the mem and object domains yet, so its pymalloc will
    /// never hold a block, and the requests above our threshold go straight
    /// to the raw domain, as pymalloc would send them (see `capture`).
    BeforeCPython,
}

fn install(when: Install) -> Result<usize, InstallError> {
    let runtime = runtime().ok_or(InstallError::NoRuntime)?;
    // Before CPython starts, with a libpython after us (whose calls reach
    // our exports), the arming table: see `follow_live_tables`.
    let arming = when == Install::BeforeCPython && libpython_runtime().is_some();
    let mut installed = 0;
    {
        let _guard = INSTALL_LOCK.lock();
        for domain in Domain::ALL {
            if domain::backend(domain) != Backend::Pymalloc {
                continue;
            }
            let mut current = PyMemAllocatorEx::EMPTY;
            // SAFETY: valid out-parameter.
            unsafe { (runtime.get)(domain as c_int, &mut current) };
            if current.is_ours() {
                continue;
            }
            // SAFETY: lock held.
            unsafe { capture(domain, Some(&runtime), when == Install::BeforeCPython) };
            let mut hooks = if arming {
                arming_table(domain)
            } else {
                table(domain)
            };
            // SAFETY: CPython copies the table; its functions stay valid for
            // the life of the process (this library is never unloaded while
            // they are installed: see docs/cpython.md).
            unsafe { (runtime.set)(domain as c_int, &mut hooks) };
            installed += 1;
        }
    }
    // With PYMALLOC=debug, CPython's own debug hooks go over our tables:
    // CPython's report format and its GIL checks, in front of our pools.
    // (Outside the install lock: libpython's function calls
    // `PyMem_SetAllocator`, which may be our export, which takes it.)
    let debug = Domain::ALL.iter().any(|&d| domain::setting(d).debug);
    let setup_debug_hooks = cpython_symbol(c"PyMem_SetupDebugHooks");
    if debug && installed > 0 && !setup_debug_hooks.is_null() {
        // SAFETY: `void PyMem_SetupDebugHooks(void)`, idempotent in CPython.
        unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(setup_debug_hooks)() };
    }
    follow_live_tables(when == Install::Any);
    Ok(installed)
}

// ---------------------------------------------------------------------------
// Forwarding of CPython-named exports to libpython.

macro_rules! forwards {
    ($($name:ident),* $(,)?) => {
        /// libpython's own definitions of the names we export, when a
        /// libpython comes after us in symbol lookup order.
        #[allow(non_snake_case)]
        pub struct Forwards { $(pub $name: AtomicPtr<c_void>,)* }

        pub static FORWARDS: Forwards = Forwards {
            $($name: AtomicPtr::new(core::ptr::null_mut()),)*
        };

        /// Find libpython's definitions of our CPython-named exports (those
        /// after this library in lookup order); the library constructor
        /// then forwards the exports to them.
        pub fn resolve_forwards() {
            $(
                let found = symbol(libc::RTLD_NEXT, {
                    const NAME: &CStr = match CStr::from_bytes_with_nul(
                        concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => panic!("symbol name"),
                    };
                    NAME
                });
                FORWARDS.$name.store(found, Ordering::Relaxed);
            )*
        }
    };
}

forwards!(
    PyMem_RawMalloc,
    PyMem_RawCalloc,
    PyMem_RawRealloc,
    PyMem_RawFree,
    PyMem_Malloc,
    PyMem_Calloc,
    PyMem_Realloc,
    PyMem_Free,
    PyObject_Malloc,
    PyObject_Calloc,
    PyObject_Realloc,
    PyObject_Free,
    PyObject_Init,
    PyObject_InitVar,
    _PyObject_New,
    _PyObject_NewVar,
    _PyObject_GC_New,
    _PyObject_GC_NewVar,
    PyObject_GC_Del,
    PyMem_SetupDebugHooks,
    PyMem_GetAllocator,
    PyMem_SetAllocator,
);

/// libpython's own memory functions for `domain`, when a libpython comes
/// after us in lookup order: `on_load` forwards the domain's exports to
/// them (`ffi::routes::forward`).
pub fn forward_targets(domain: Domain) -> Option<Targets> {
    let f = &FORWARDS;
    let [malloc, calloc, realloc, free] = match domain {
        Domain::Raw => [
            &f.PyMem_RawMalloc,
            &f.PyMem_RawCalloc,
            &f.PyMem_RawRealloc,
            &f.PyMem_RawFree,
        ],
        Domain::Mem => [
            &f.PyMem_Malloc,
            &f.PyMem_Calloc,
            &f.PyMem_Realloc,
            &f.PyMem_Free,
        ],
        Domain::Obj => [
            &f.PyObject_Malloc,
            &f.PyObject_Calloc,
            &f.PyObject_Realloc,
            &f.PyObject_Free,
        ],
        Domain::Core => return None,
    }
    .map(|found| found.load(Ordering::Relaxed));
    if [malloc, calloc, realloc, free].iter().any(|p| p.is_null()) {
        return None;
    }
    // SAFETY: libpython's functions of these names, whose C signatures are
    // those of our exports of the same names.
    unsafe {
        Some(Targets {
            malloc: core::mem::transmute::<*mut c_void, MallocFn>(malloc),
            calloc: core::mem::transmute::<*mut c_void, CallocFn>(calloc),
            realloc: core::mem::transmute::<*mut c_void, ReallocFn>(realloc),
            free: core::mem::transmute::<*mut c_void, FreeFn>(free),
        })
    }
}

/// Return what libpython's definition of an exported function returns,
/// when a libpython comes after us in lookup order; otherwise go on.
/// `$f` is a field of `FORWARDS`, `$ty` its C signature.
macro_rules! return_via_libpython {
    ($f:ident as $ty:ty, $($arg:expr),*) => {
        let target = $crate::cpython::FORWARDS.$f.load(core::sync::atomic::Ordering::Relaxed);
        if !target.is_null() {
            // SAFETY: `target` is libpython's function of the same name,
            // whose C signature is `$ty`.
            #[allow(unused_unsafe)]
            return unsafe { core::mem::transmute::<*mut core::ffi::c_void, $ty>(target)($($arg),*) };
        }
    };
}
pub(crate) use return_via_libpython;

// ---------------------------------------------------------------------------
// Direct routes: the exports serve the pools while CPython's table is ours.

/// The targets of `$domain`'s exports while CPython's table for the domain
/// is ours ([`follow_live_tables`]): our hook functions with the domain's
/// context bound, the very code CPython's table would reach, without
/// libpython's wrapper in between (a call, a load of the table, the size
/// test CPython makes, which the pools' own size test makes again).
macro_rules! direct_targets {
    ($module:ident, $domain:expr) => {
        mod $module {
            use super::*;

            unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
                if let Some(block) = allocator::malloc_small(size) {
                    return block.cast();
                }
                // The size as received, in the register it came in (the
                // size test computes `size - 1` in another, as for
                // `plain_malloc`).
                // SAFETY: the domain's context.
                unsafe { malloc_other(size) }
            }

            /// # Safety
            /// None beyond the domain's table being installed.
            #[cold]
            #[inline(never)]
            unsafe fn malloc_other(size: usize) -> *mut c_void {
                // SAFETY: the domain's context.
                unsafe { hook_malloc_other(context($domain), size.wrapping_sub(1)) }
            }

            unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                if let Some(block) = allocator::calloc_small(count, size) {
                    return block.cast();
                }
                // SAFETY: the domain's context.
                unsafe { hook_calloc_other(context($domain), count, size) }
            }

            /// # Safety
            /// As for `hook_realloc`.
            unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
                // SAFETY: guaranteed by the caller; the domain's context.
                unsafe { hook_realloc(context($domain), block, size) }
            }

            /// # Safety
            /// As for `hook_free`.
            unsafe extern "C" fn free(block: *mut c_void) {
                // SAFETY: guaranteed by the caller; the domain's context.
                unsafe { free_through(context($domain), block) }
            }

            pub(super) const TARGETS: Targets = Targets {
                malloc,
                calloc,
                realloc,
                free,
            };
        }
    };
}

direct_targets!(direct_mem, Domain::Mem);
direct_targets!(direct_obj, Domain::Obj);

/// Point the exports of the mem and object domains, where they lead to a
/// libpython after us (`FORWARDS`), at what CPython's live table for the
/// domain calls for: the pools directly while that table is ours (the
/// direct targets above), libpython's own function otherwise, so that
/// tracemalloc, debug hooks or another allocator see every call.
///
/// The table changes only through `PyMem_SetAllocator` (and, from 3.12,
/// `PyMem_SetupDebugHooks` and CPython's pre-initialisation, which write
/// it directly). libpython calls the first two through its PLT, so
/// through our exports, which call this after forwarding. The third
/// happens before CPython's first allocation of these domains, so the
/// table installed before CPython starts is an arming table: it counts as
/// ours only with `arm`, passed by its own allocation hook at its first
/// call (CPython has then finished its pre-initialisation) and by calls
/// made once the interpreter runs, which then install the plain table.
pub fn follow_live_tables(arm: bool) {
    let Some(runtime) = libpython_runtime() else {
        return;
    };
    let _guard = INSTALL_LOCK.lock();
    for domain in [Domain::Mem, Domain::Obj] {
        let Some(libpython) = forward_targets(domain) else {
            continue;
        };
        let mut live = PyMemAllocatorEx::EMPTY;
        // SAFETY: libpython's getter with a valid out-parameter.
        unsafe { (runtime.get)(domain as c_int, &mut live) };
        let direct = match table_kind(domain, &live) {
            Some(TableKind::Normal) => true,
            Some(TableKind::Arming) if arm => {
                let mut normal = table(domain);
                // SAFETY: libpython's setter; it copies the table, whose
                // functions, like the arming one's, serve the same context.
                unsafe { (runtime.set)(domain as c_int, &mut normal) };
                true
            }
            _ => false,
        };
        let targets = if direct {
            match domain {
                Domain::Mem => direct_mem::TARGETS,
                _ => direct_obj::TARGETS,
            }
        } else {
            libpython
        };
        crate::ffi::routes::forward(domain, targets);
        domain::mark_direct(domain, direct);
    }
}

/// `PyMem_SetAllocator` when a libpython comes after us: libpython's, then
/// the exports follow the new table. Whether there was one to call.
///
/// # Safety
/// As for CPython's `PyMem_SetAllocator`.
pub unsafe fn set_allocator_in_libpython(domain: c_uint, allocator: *mut PyMemAllocatorEx) -> bool {
    let Some(runtime) = libpython_runtime() else {
        return false;
    };
    // SAFETY: guaranteed by the caller: CPython's contract.
    unsafe { (runtime.set)(domain as c_int, allocator) };
    follow_live_tables(interpreter_initialized());
    true
}

/// `PyMem_SetupDebugHooks` when a libpython comes after us: libpython's,
/// then the exports follow the tables. Whether there was one to call.
pub fn setup_debug_hooks_in_libpython() -> bool {
    let found = FORWARDS.PyMem_SetupDebugHooks.load(Ordering::Relaxed);
    if found.is_null() {
        return false;
    }
    // SAFETY: libpython's `void PyMem_SetupDebugHooks(void)`.
    unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(found)() };
    follow_live_tables(interpreter_initialized());
    true
}

// ---------------------------------------------------------------------------
// Load time.

/// Whether this library was loaded through `LD_PRELOAD`.
fn preloaded() -> bool {
    let Some(preload) = crate::options::ld_preload() else {
        return false;
    };
    let mut info: libc::Dl_info = empty_dl_info();
    // SAFETY: dladdr fills `info` for an address inside this library.
    if unsafe { libc::dladdr(preloaded as *const c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return false;
    }
    // SAFETY: dli_fname is a C string owned by the dynamic loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let preload = preload.as_encoded_bytes();
    preload
        .split(|&b| b == b' ' || b == b':')
        .any(|entry| entry.rsplit(|&b| b == b'/').next() == Some(name))
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    }
}

fn interpreter_initialized() -> bool {
    let is_initialized = symbol(libc::RTLD_DEFAULT, c"Py_IsInitialized");
    if is_initialized.is_null() {
        return false;
    }
    // SAFETY: `int Py_IsInitialized(void)`, callable at any time.
    unsafe {
        core::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(is_initialized)() != 0
    }
}

/// Called by the library constructor, after [`resolve_forwards`]: when
/// preloaded into a CPython that has not started yet, install the hook
/// tables (unless `PYMALLOC_CPYTHON=0`).
/// CPython's own pre-initialisation then replaces them if `PYTHONMALLOC`,
/// `PYTHONDEVMODE` or `-X dev` ask for another allocator.
pub fn on_load() {
    if !preloaded() || !crate::options::cpython_install_allowed() {
        return;
    }
    if runtime().is_none() || interpreter_initialized() {
        return;
    }
    if let Err(error) = install(Install::BeforeCPython) {
        crate::report::message(format_args!("LD_PRELOAD: {error}"));
    }
}
