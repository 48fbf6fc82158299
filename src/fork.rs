//! `fork()`: every lock of the crate is taken before the fork and handed
//! over released in both processes, so that the child never inherits a
//! lock held by a thread that does not exist in it (it would wait for it
//! forever).
//!
//! This module owns the order in which the locks are taken. Each module
//! that has a lock exposes only `lock_for_fork` and
//! `unlock_after_fork(in_child)`; none of them knows about another's lock.
//! The prepare handler takes them outermost first:
//!
//! 1. **CPython hook installation** ([`cpython`]): held
//!    while calling into the CPython runtime (its allocator getter and
//!    setter, its debug hooks' setup), which may allocate, from us too.
//! 2. **The debug hooks' live blocks** ([`debug`]): the
//!    leak report builds its text under it, with the Rust global allocator,
//!    which may be these pools ([`PyMalloc`](crate::PyMalloc)), so it comes
//!    before the allocator's own locks.
//! 3. **The heap registry** ([`heap`]): never held together
//!    with another lock of the allocator.
//! 4. **The arenas** ([`arena`]): nothing of the allocator is taken under
//!    it.
//! 5. **Domain state changes** ([`routes`]): a leaf (routes are rewritten
//!    under it, nothing is taken), so last: whoever holds it waits for no
//!    other lock, whatever that thread held before taking it.
//!
//! A thread that holds one of these locks and waits for another only ever
//! waits for one later in this list, so the forking thread, which takes
//! them in this order, cannot deadlock with it. Both after-fork handlers
//! release them innermost first; in the child, the registry orphans the
//! heaps of the threads that did not survive the fork as it releases its
//! lock (see [`heap`]), and every mutex is re-initialised
//! rather than unlocked ([`Locked::release_after_fork`](crate::sync::Locked::release_after_fork)).
//!
//! The handlers are registered once, by the library's load-time
//! constructor or, when that did not run (a static link), when the first
//! thread gets a heap.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::ffi::routes;
use crate::{arena, cpython, debug, heap};

static HANDLERS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Register the fork handlers with `pthread_atfork`, once per process.
pub fn install_handlers() {
    if HANDLERS_INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: registering plain C functions; pthread_atfork keeps them.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        )
    };
}

/// Take every lock, in the order of the module documentation.
extern "C" fn before_fork() {
    cpython::lock_for_fork();
    debug::lock_for_fork();
    heap::lock_for_fork();
    arena::lock_for_fork();
    routes::lock_for_fork();
}

/// Release every lock, innermost first.
fn unlock_all(in_child: bool) {
    routes::unlock_after_fork(in_child);
    arena::unlock_after_fork(in_child);
    heap::unlock_after_fork(in_child);
    debug::unlock_after_fork(in_child);
    cpython::unlock_after_fork(in_child);
}

extern "C" fn after_fork_parent() {
    unlock_all(false);
}

extern "C" fn after_fork_child() {
    unlock_all(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handlers' work without a fork: every lock taken, then released
    /// as in the parent, leaves every lock free for the next user.
    #[test]
    fn the_handlers_take_and_release_every_lock() {
        let block = heap::alloc(3);
        before_fork();
        after_fork_parent();
        // SAFETY: a live block of this thread.
        unsafe { heap::free(block) };
        heap::trim_all();
        let _ = crate::stats::snapshot();
        let _ = debug::leak_report();
    }

    /// In a child of `fork()`, the heap of a thread that did not survive
    /// the fork is orphaned, and the forking thread allocates and frees.
    #[test]
    fn the_child_orphans_other_threads_heaps_and_allocates() {
        use std::sync::mpsc;
        let (attached, wait_attached) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let block = heap::alloc(1) as usize;
            attached.send(()).unwrap();
            wait_release.recv().unwrap();
            // SAFETY: this thread's live block.
            unsafe { heap::free(block as *mut u8) };
        });
        wait_attached.recv().unwrap();
        install_handlers();
        let mut orphaned_before = 0;
        heap::walk(|heap| orphaned_before += (heap.state == heap::HeapState::Orphaned) as usize);
        // SAFETY: the child only reads the heaps, allocates from its own
        // heap and leaves with `_exit`, without unwinding or running the
        // parent's destructors.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut orphaned = 0;
            heap::walk(|heap| orphaned += (heap.state == heap::HeapState::Orphaned) as usize);
            let blocks: [*mut u8; 64] = core::array::from_fn(|i| heap::alloc(i % 8));
            let allocated = blocks.iter().all(|block| !block.is_null());
            for block in blocks {
                // SAFETY: live blocks of this thread.
                unsafe { heap::free(block) };
            }
            let ok = allocated && orphaned > orphaned_before;
            // SAFETY: leaving the child without running anything of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        release.send(()).unwrap();
        other.join().unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw no orphaned heap or could not allocate (status {status})"
        );
    }
}
