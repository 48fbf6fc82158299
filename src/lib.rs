//! # pymalloc-rs
//!
//! CPython's small-object allocator ("pymalloc", `Objects/obmalloc.c`)
//! rebuilt in Rust as a C library, and made thread-safe without a global
//! lock on its fast paths. It exports the memory API of the 2002
//! "Activating pymalloc" proposal as CPython grew it: the raw domain
//! (`PyMem_Raw*`), the memory domain (`PyMem_*`), the object domain
//! (`PyObject_*`), typed object creation (`PyObject_New`, `..._GC_New`, …)
//! and the pooled allocator itself (`PyCore_*`).
//!
//! ## Where blocks come from
//!
//! ```text
//!   PyMem_Raw*  PyMem_*  PyObject_*  PyCore_*   (domains)
//!        \         |        |         /
//!         routes: one jump per call to plain (the pools, below),
//!         general (debug, profiler, malloc) or libpython's own
//!                  |                         |
//!        1..=512 bytes (and 0)        > 512 bytes, foreign pointers
//!                  |                         |
//!   thread slot -> Heap (one per thread)   libc malloc / free
//!                  |  from the heap registry, which hands an exited
//!                  |    thread's heap to the next new thread
//!                  |  cache[class]: blocks it freed (any heap's) and  }
//!                  |    batches from its pools: the only tier inline  }
//!                  |  avail[class] -> Pool -> free list of blocks     } no lock, no
//!                  |  remote_free <- blocks freed by other threads    } atomic RMW
//!                  |                           (one CAS per free)     } on the owner
//!                  v  pool exhausted / empty                          } paths
//!           Arenas (global, locked): 1 MiB, aligned, 64 pools each
//!                  |
//!           Arena space: 32 GiB reserved      free: "ours?" = one compare
//!           up front, slots committed and     against the heap's copy of
//!           decommitted in place              the space's bounds; arenas
//!                                             outside it: address map
//!                  |                          (pointer -> arena, lock-free)
//!                 OS (mmap / mprotect / munmap)  <- record slab: arena
//!                                                    records and heaps,
//!                                                    never unmapped
//! ```
//!
//! * A **block** is what a caller gets: `ALIGNMENT`-spaced size classes
//!   (16, 32, …, 512 bytes by default; [`size_class`]).
//! * A **pool** (16 KiB) holds blocks of one class behind a 64-byte header
//!   and is owned by one heap at a time ([`pool`]).
//! * An **arena** (1 MiB, aligned to its size) is carved into pools; arenas
//!   are the unit taken from and returned to the OS ([`arena`], [`os`]).
//!   They come from the **arena space**, address space reserved once, so
//!   that free tells our blocks from malloc's with one compare (against
//!   the bounds each heap keeps a copy of, next to its block cache;
//!   [`arena_space`]); an arena the space cannot hold is mapped on its own.
//! * The **address map** tells, for any pointer, whether it is in one of
//!   our arenas, so a pointer from malloc freed through this API goes back
//!   to malloc ([`address_map`]).
//! * A **heap** belongs to one thread ([`heap`], [`thread`]). Allocation
//!   and owner-local free touch only the heap and its pools: no lock, no
//!   atomic read-modify-write. Blocks the thread frees wait in the heap's
//!   **block cache** for the next allocation of their class, so their
//!   pools' lists are not touched ([`block_cache`]). A block freed by another thread goes onto
//!   its owner heap's lock-free stack; the owner takes the stack back when
//!   it runs out of blocks. Behind the fast paths, a heap's pools and slow
//!   paths (taking and giving back pools, frees from other threads) and the
//!   **heap registry**: an exiting thread's heap is abandoned, then
//!   adopted by the next new thread; meanwhile other threads reclaim the
//!   memory freed into it.
//! * The records of arenas and heaps come from a **record slab**, chunks
//!   from the OS that are never unmapped, so a pointer to a record stays
//!   valid for good ([`slab`]).
//!
//! Locks are taken only when a heap needs a pool from, or gives one back
//! to, the arenas, when threads start and end, when a domain's state
//! changes, when the CPython hooks are installed, and by the debug hooks'
//! list of live blocks ([`sync`]). `fork()` takes them all first, in the
//! one order [`fork`] documents, so the child never inherits a held lock.
//!
//! ## Modules
//!
//! Build-time configuration ([`config`], from `build.rs`), the pieces
//! above (the heap's fast paths in [`heap`], its pools and slow paths and
//! the heap registry in its submodules, the record slab that arena and
//! heap records come from in [`slab`]), the lock order around `fork()`
//! ([`fork`]), the system allocator ([`system`]), the domains and what can
//! serve them (a leaf, [`setting`]), each domain's state and the general
//! path's per-call dispatch on it ([`domain`]), every environment variable
//! the library reads, with its parsing and checks ([`options`]), typed
//! objects ([`object`]), the debug hooks ([`debug`]), statistics
//! ([`stats`]), the allocation profiler ([`profile`]), the CPython hook
//! tables, their installation and the forwarding of CPython-named exports
//! to libpython ([`cpython`]), messages to the user ([`report`]) and the C
//! ABI ([`ffi`]). Each memory function of the C ABI is one indirect jump
//! through its domain's route: to the pooled fast path for a plain domain,
//! to libpython's function of the same name when a libpython comes after
//! us, to the general path otherwise. Every change of a domain's state
//! (its setting, the debug hooks, the profiler, forwarding) goes through
//! the routes, which store the new state in [`domain`] and rewrite the
//! domain's routes under one lock ([`ffi::routes`]); `domain` itself does
//! not know the C ABI. The other functions validate their arguments and
//! call the core. Rust programs can make the pools their global allocator
//! with [`PyMalloc`] ([`global_alloc`]).
//!
//! Only the C ABI ([`ffi`]: its exports, also callable from Rust) and
//! [`PyMalloc`] are public; every other module is internal to the crate,
//! and the tests, benchmarks and fuzz target use the public surface alone.
//! `cargo doc --document-private-items` renders this map with its links.

// Every unsafe operation sits in an `unsafe` block of its own, also inside
// `unsafe fn`s, and every such block says why it holds (`// SAFETY:`).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Only the C ABI ([`ffi`]) and [`PyMalloc`] are public; the rest is
// internal (`mod`). These docs are also the contributor's map of the
// internal modules, and link to them: `cargo doc --document-private-items`
// renders the links (and checks them), plain `cargo doc` shows their names.
#![allow(rustdoc::private_intra_doc_links)]

mod address_map;
mod allocator;
mod arena;
mod arena_space;
mod block_cache;
mod config;
mod cpython;
mod debug;
mod domain;
pub mod ffi;
mod fork;
mod global_alloc;
mod heap;
mod object;
mod options;
mod os;
mod pool;
mod profile;
mod report;
mod setting;
mod size_class;
mod slab;
mod stats;
mod sync;
mod system;
mod thread;

pub use global_alloc::PyMalloc;

/// Runs when the library is loaded (ELF constructor): reads the
/// environment, registers the fork handlers before any thread can
/// allocate, and connects to a CPython in the process (see [`cpython`]).
// Under Miri the constructor is not registered (see `ON_LOAD`), which
// would leave it, and what only it calls, unused.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn on_load() {
    options::configure_from_env();
    fork::install_handlers();
    // The CPython-named exports go to libpython's own functions when a
    // libpython comes after this library in lookup order.
    cpython::resolve_forwards();
    for domain in setting::Domain::ALL {
        if let Some(libpython) = cpython::forward_targets(domain) {
            ffi::routes::forward(domain, libpython);
        }
    }
    ffi::objimpl::bind_object_routes();
    cpython::on_load();
    if options::profile_requested() {
        // SAFETY: registering a plain C function to run at exit.
        unsafe { libc::atexit(write_profile_at_exit) };
    }
    if options::leak_report_requested() {
        // SAFETY: registering a plain C function to run at exit.
        unsafe { libc::atexit(report_leaks_at_exit) };
    }
    if options::stats_to_stderr() || options::stats_file().is_some() {
        // SAFETY: registering a plain C function to run at exit.
        unsafe { libc::atexit(report_stats_at_exit) };
    }
}

/// `PYMALLOC_PROFILE=FILE`: the allocation profile. A `%p` in the name is
/// replaced by the process id, so that every process of a run keeps its own.
extern "C" fn write_profile_at_exit() {
    let Some(path) = options::profile_file() else {
        return;
    };
    if let Err(error) = std::fs::write(&path, profile::render()) {
        report::message(format_args!("PYMALLOC_PROFILE={path}: {error}"));
    }
}

/// `PYMALLOC_LEAKS=1`: the live debug blocks at exit, by family and class.
extern "C" fn report_leaks_at_exit() {
    report::write_stderr(debug::leak_report().as_bytes());
}

/// `PYMALLOC_STATS=1`: the full report on stderr. `PYMALLOC_STATS_FILE=path`:
/// one summary line appended to `path` (for runs with many processes, such
/// as a test suite). Processes that never used the pools (a shell started
/// with the library preloaded, say) report nothing.
extern "C" fn report_stats_at_exit() {
    let snap = stats::snapshot();
    if snap.arenas.allocated_total == 0 {
        return;
    }
    if options::stats_to_stderr() {
        report::write_stderr(stats::render(&snap).as_bytes());
    }
    if let Some(path) = options::stats_file() {
        use std::io::Write;
        let line = stats::summary_line(&snap);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = written {
            report::message(format_args!(
                "PYMALLOC_STATS_FILE={}: {error}",
                path.to_string_lossy()
            ));
        }
    }
}

// Not under Miri, which interprets the unit tests of the pure modules and
// has no fork handlers or dlsym to offer the constructor.
#[cfg(not(miri))]
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
