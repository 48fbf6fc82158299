//! The heap registry: every heap ever made, and the heaps no thread is
//! using.
//!
//! Heaps are records of a [`Slab`]: never unmapped and never moved, so a
//! pointer to a heap (a pool's `owner`, a thread's slot) stays valid for
//! good, and a heap is never destroyed, only handed from thread to thread.
//! Every heap is on the list of all heaps (`all`, never unlinked: for
//! statistics and `fork()`); one that no thread uses is also on one of two
//! lists: `free` if it owns no pool, `abandoned` if it still does.
//!
//! * A thread's first allocation attaches a heap to it
//!   (`attach_thread`): an abandoned one, adopted with its pools, else a
//!   free one, else a new one.
//! * At thread exit (a pthread key destructor) the heap takes back the
//!   blocks other threads freed into it, gives back its empty pools and is
//!   parked on the list its remaining pools call for (`abandon`).
//! * Meanwhile, a thread about to take a pool from the arenas, or one
//!   calling `PyCore_Trim`, reclaims an abandoned heap whose remote-free
//!   stack has blocks: takes it off the list, takes the blocks back, gives
//!   its empty pools back and parks it again (`reclaim_abandoned`).
//!
//! The registry's lock is taken only for these list operations and for
//! walks over every heap ([`walk`], statistics), never together with
//! another lock of the crate. Around `fork()` it is taken with the others
//! (in the order [`fork`](crate::fork) documents), and in the child the
//! heaps of the threads that did not survive the fork are orphaned
//! ([`unlock_after_fork`]).

use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::pools::{collect_remote_frees, trim};
use super::{
    exited_heap, is_attached, observe, placeholder_heap, ClassSlot, Heap, HeapState, HeapView,
};
use crate::arena::ARENAS;
use crate::block_cache::{self, BlockCache};
use crate::config::NUM_SIZE_CLASSES;
use crate::slab::Slab;
use crate::sync::Locked;
use crate::thread;

struct Registry {
    /// Every heap ever created, newest first, linked through `all_next`.
    all: *mut Heap,
    /// Heaps no thread uses that own pools, linked through `list_next`.
    abandoned: *mut Heap,
    /// Heaps no thread uses that own no pool, linked through `list_next`.
    free: *mut Heap,
    /// Where heap records come from (they never go back).
    records: Slab<Heap>,
    created: usize,
}

// SAFETY: the registry's pointers are to heap records that are only
// linked and unlinked under the REGISTRY lock.
unsafe impl Send for Registry {}

static REGISTRY: Locked<Registry> = Locked::new(Registry {
    all: null_mut(),
    abandoned: null_mut(),
    free: null_mut(),
    records: Slab::new(),
    created: 0,
});

/// Abandoned heaps on the registry list (cheap test on the pool-taking path).
static ABANDONED_WITH_POOLS: AtomicUsize = AtomicUsize::new(0);

impl Registry {
    fn pop_abandoned(&mut self) -> *mut Heap {
        let heap = self.abandoned;
        if !heap.is_null() {
            // SAFETY: listed heaps are live records.
            self.abandoned = unsafe { (*heap).list_next };
            ABANDONED_WITH_POOLS.fetch_sub(1, Ordering::Relaxed);
        }
        heap
    }

    /// Put a heap that no thread uses on the list its pools call for.
    ///
    /// # Safety
    /// Nobody else uses `heap`, and it is on no list.
    unsafe fn park(&mut self, heap: *mut Heap) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if (*heap).pools_owned.load(Ordering::Relaxed) == 0 {
                (*heap)
                    .state
                    .store(HeapState::Free as u8, Ordering::Relaxed);
                (*heap).list_next = self.free;
                self.free = heap;
            } else {
                (*heap)
                    .state
                    .store(HeapState::Abandoned as u8, Ordering::Relaxed);
                (*heap).list_next = self.abandoned;
                self.abandoned = heap;
                ABANDONED_WITH_POOLS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A heap for a new thread: an abandoned one (adopted with its pools),
    /// a free one, or a new one.
    fn heap_for_new_thread(&mut self) -> *mut Heap {
        let mut heap = self.pop_abandoned();
        if heap.is_null() && !self.free.is_null() {
            heap = self.free;
            // SAFETY: listed heaps are live records.
            self.free = unsafe { (*heap).list_next };
        }
        if heap.is_null() {
            heap = self.new_heap();
        }
        heap
    }

    fn new_heap(&mut self) -> *mut Heap {
        let Some(heap) = self.records.take() else {
            return null_mut();
        };
        let heap = heap.as_ptr();
        // SAFETY: `heap` is a record of the slab that nothing uses, sized
        // and aligned for a Heap.
        unsafe {
            ptr::write(
                heap,
                Heap {
                    classes: new_classes(),
                    all_next: self.all,
                    ..placeholder_heap()
                },
            );
        }
        self.all = heap;
        self.created += 1;
        heap
    }
}

/// Class slots for a new heap: no pool yet, block caches sized from the
/// current byte budget.
fn new_classes() -> [ClassSlot; NUM_SIZE_CLASSES] {
    let budget = block_cache::bytes_per_class();
    core::array::from_fn(|class| {
        ClassSlot::new(BlockCache::with_limit(block_cache::limit_for(
            class, budget,
        )))
    })
}

/// Give the calling thread a heap; null when none can be made.
#[cold]
pub(super) fn attach_thread() -> *mut Heap {
    // A program linking the library statically may not run its load-time
    // constructor, which registers the handlers: register them (once)
    // before this thread can hold a heap.
    crate::fork::install_handlers();
    let heap = REGISTRY.lock().heap_for_new_thread();
    if heap.is_null() {
        return null_mut();
    }
    // SAFETY: the heap came off the registry, so this thread has it alone.
    unsafe {
        (*heap)
            .state
            .store(HeapState::Live as u8, Ordering::Relaxed)
    };
    thread::set_current_heap(heap);
    // Without a pthread key the heap is simply never abandoned: it stays
    // owned by this thread's id-less slot, its memory is not lost.
    thread::register_exit(heap, on_thread_exit);
    heap
}

/// pthread key destructor: the thread is exiting.
unsafe extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    let heap = value.cast::<Heap>();
    thread::set_current_heap(exited_heap());
    if !heap.is_null() && is_attached(heap) {
        // SAFETY: `heap` was this thread's heap; the thread is ending, so
        // it has exclusive use of it for the last time.
        unsafe { abandon(heap) };
    }
}

/// # Safety
/// Exclusive use of `heap`, which no thread will use afterwards.
unsafe fn abandon(heap: *mut Heap) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        collect_remote_frees(heap);
        trim(heap);
        REGISTRY.lock().park(heap);
    }
}

/// Recover memory from one abandoned heap that has blocks waiting in its
/// remote-free stack: take them back and give its empty pools to the arenas.
#[cold]
fn reclaim_abandoned() {
    let heap = {
        let Some(mut registry) = REGISTRY.try_lock() else {
            return;
        };
        // Find an abandoned heap with remote frees pending, and unlink it.
        let mut link: *mut *mut Heap = &mut registry.abandoned;
        let mut found = null_mut();
        // SAFETY: walking and unlinking listed heap records under the lock.
        unsafe {
            while !(*link).is_null() {
                let heap = *link;
                if !(*heap).remote_free.load(Ordering::Relaxed).is_null() {
                    *link = (*heap).list_next;
                    ABANDONED_WITH_POOLS.fetch_sub(1, Ordering::Relaxed);
                    found = heap;
                    break;
                }
                link = &mut (*heap).list_next;
            }
        }
        found
    };
    if heap.is_null() {
        return;
    }
    // SAFETY: the heap is off every list and belongs to no thread, so this
    // thread has exclusive use of it until it parks it again.
    unsafe {
        collect_remote_frees(heap);
        trim(heap);
        REGISTRY.lock().park(heap);
    }
}

/// Process-wide: release memory that heaps hold but do not need: empty
/// pools in the calling thread's heap and blocks freed into abandoned
/// heaps. (Exported as `PyCore_Trim`.)
pub fn trim_all() {
    let heap = thread::current_heap();
    if is_attached(heap) {
        // SAFETY: the calling thread's own heap.
        unsafe {
            collect_remote_frees(heap);
            trim(heap);
        }
    }
    let pending = ABANDONED_WITH_POOLS.load(Ordering::Relaxed);
    for _ in 0..pending {
        reclaim_abandoned();
    }
    ARENAS.lock().release_free_arenas();
}

/// Before a heap takes a pool from the arenas: recover the memory freed
/// into an abandoned heap, if any heap is abandoned (one load otherwise).
pub(super) fn reclaim_from_abandoned_heaps() {
    if ABANDONED_WITH_POOLS.load(Ordering::Relaxed) > 0 {
        reclaim_abandoned();
    }
}

/// Call `visit` with every heap ever created (newest first).
///
/// # Safety
/// The registry lock is held (it keeps `all_next` still); heap records are
/// never unmapped.
unsafe fn for_each_heap(registry: &Registry, mut visit: impl FnMut(*mut Heap)) {
    let mut heap = registry.all;
    while !heap.is_null() {
        // SAFETY: a created record (caller); its link is read before
        // `visit` may change the heap.
        let next = unsafe { (*heap).all_next };
        visit(heap);
        heap = next;
    }
}

/// What the registry counts beyond its heaps (statistics).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Registered {
    /// Heaps ever created.
    pub created: usize,
    /// Bytes mapped for heap records.
    pub metadata_bytes: usize,
}

/// Show `visit` what other threads may read of every heap ever created
/// (see `observe`), under the registry lock; and the registry's counts.
pub(crate) fn walk(mut visit: impl FnMut(&HeapView)) -> Registered {
    let registry = REGISTRY.lock();
    // SAFETY: the lock is held; every heap on the list was created under
    // it, before this thread took it.
    unsafe { for_each_heap(&registry, |heap| visit(&observe(heap))) };
    Registered {
        created: registry.created,
        metadata_bytes: registry.records.mapped_bytes(),
    }
}

// ---------------------------------------------------------------------------
// fork()

/// Take the registry lock before `fork()` (see [`fork`](crate::fork) for
/// the order of all the locks).
pub(crate) fn lock_for_fork() {
    REGISTRY.acquire_for_fork();
}

/// Release the registry lock after `fork()`. In the child, first orphan the
/// heaps of the threads that did not survive the fork.
pub(crate) fn unlock_after_fork(in_child: bool) {
    if in_child {
        // Only the forking thread exists in the child. Every other live
        // heap belongs to a thread that is gone and may have been caught
        // half-way through an update (a pool popped but not yet unlinked,
        // say): such a heap must never be used again, so it is orphaned,
        // not abandoned.
        let current = thread::current_heap();
        // SAFETY: this thread holds the registry lock (taken before the
        // fork) and is the only thread of the child.
        unsafe {
            let registry = REGISTRY.value_while_held();
            for_each_heap(registry, |heap| {
                let state = ptr::addr_of!((*heap).state);
                if heap != current && (*state).load(Ordering::Relaxed) == HeapState::Live as u8 {
                    (*state).store(HeapState::Orphaned as u8, Ordering::Relaxed);
                }
            });
        }
    }
    REGISTRY.release_after_fork(in_child);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator;
    use crate::heap::{alloc, owner_of};

    #[test]
    fn an_exiting_threads_blocks_outlive_it_and_its_heap_is_reused() {
        let (blocks, heap) = std::thread::spawn(|| {
            let blocks: Vec<usize> = (0..3000).map(|i| alloc(i % 4) as usize).collect();
            (blocks, thread::current_heap() as usize)
        })
        .join()
        .unwrap();
        let heap = heap as *mut Heap;
        for &block in &blocks {
            // The heap may already be adopted by another test's thread;
            // either way the pools stay with the same heap record.
            assert_eq!(
                owner_of(block as *mut u8),
                heap,
                "pools stay with their heap"
            );
            // SAFETY: live blocks of the exited thread.
            unsafe { allocator::free(block as *mut u8) };
        }
        // Blocks wait in the abandoned heap's remote stack until reclaimed;
        // a trim (or the next pool request) brings them back.
        trim_all();
        let mut given_back = 0;
        walk(|heap| given_back += heap.pools_given_back);
        assert!(given_back > 0);
    }
}
