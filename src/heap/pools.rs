//! A heap's pools and its slow paths: everything a heap does with the
//! pools it owns beyond the fast paths of [`heap`](super).
//!
//! * Allocation that finds its class's block cache empty (`alloc_slow`):
//!   a thread's first allocation gets it a heap (from the [`registry`]);
//!   the class's first pool gives a block and refills the cache with the
//!   rest of its free list (`refill_cache`); with no pool on the list, the
//!   heap takes back the blocks other threads freed into it, and failing
//!   that takes a pool, from its cache of empty pools or from the arenas.
//! * Pools changing lists: a pool whose last free block was taken leaves
//!   its class list (`pool_exhausted`), a full pool freed into goes back to
//!   its front, and a pool emptied goes to the heap's cache of empty pools
//!   or back to its arena (`pool_changed_list`).
//! * Frees from other threads: pushed onto the owner's remote-free stack
//!   with one compare-and-swap (`free_remote`), taken back whole by the
//!   owner (`collect_remote_frees`).
//! * Trimming: the cached blocks back to their pools, every empty pool
//!   back to the arenas (`trim`).
//!
//! Everything here runs on the heap's own thread, or on a thread that has
//! exclusive use of a heap no thread owns (abandoning or reclaiming it),
//! except `free_remote`, which touches only the owner's stack (an atomic).

use core::ptr::null_mut;
use core::sync::atomic::Ordering;

use super::{
    avail_of, bump, cache_of, exited_heap, free_local, free_uncached, registry, set_avail,
    unattached_heap, Heap,
};
use crate::arena::ARENAS;
use crate::block_cache::BlockCache;
use crate::config::{ALIGNMENT, HEAP_EMPTY_POOL_CACHE, NUM_SIZE_CLASSES};
use crate::pool::{self, Block, Pool, PoolState, EMPTY_POOL};
use crate::size_class::block_size;
use crate::system;

/// The allocation just took the last free block of `pool`, the first pool
/// of its class: thread the next page of never-used blocks onto its free
/// list, or, if it has none, take it off the list until a block comes back.
/// Pools on a class list therefore always have a free block.
///
/// # Safety
/// `heap` is this thread's heap and owns `pool`, the head of its class list.
#[inline(never)]
pub(super) unsafe fn pool_exhausted(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        // The class allocates from its pools again: a cache closed by a
        // burst of frees takes blocks again (see `pool_changed_list`).
        BlockCache::open(cache_of(heap, (*pool).class()));
        match pool::carve(pool) {
            0 => {
                unlink(heap, pool);
                (*pool).mark_full();
            }
            carved => carved_to_cache(heap, pool, carved),
        }
    }
}

/// Places of a block cache that carving and refills leave free (see
/// `carved_to_cache`). One: with four, a class of 64-byte blocks (a cache
/// of 64) took a page's blocks in two calls instead of one; sixteen places
/// cost 0.5-0.8 % more of the allocator's instructions on containers and
/// json_roundtrip, half the cache 1.7 % (BENCHMARKS.md, 2026-12-05
/// afternoon).
const KEPT_ROOM: usize = 1;

/// Hand the `carved` blocks `pool` just threaded onto its free list (all
/// but one at most) to the class's block cache, as far as it has room
/// beyond `KEPT_ROOM`:
/// the class's next allocations pop them from the cache (the allocation
/// fast path's first tier) instead of the pool, which a program building a
/// structure would otherwise do for every fresh block. They count as
/// allocated in the pool from now on, as every cached block does. The one
/// left keeps the rule that a pool on its class list has a free block;
/// the place kept free keeps a block freed meanwhile in the cache (a
/// temporary freed, then its successor allocated), to serve the next
/// allocation while it is still in the processor's caches.
///
/// # Safety
/// Exclusive use of `heap`, which owns `pool`, whose free list holds the
/// `carved` fresh blocks, in address order, and nothing else.
unsafe fn carved_to_cache(heap: *mut Heap, pool: *mut Pool, carved: usize) {
    // SAFETY: guaranteed by the caller; carved blocks lie `block_size`
    // apart from the first, so the last one moved is found by arithmetic.
    unsafe {
        let cache = cache_of(heap, (*pool).class());
        let moved = (BlockCache::room(cache) as usize)
            .saturating_sub(KEPT_ROOM)
            .min(carved - 1);
        if moved == 0 {
            return;
        }
        let first = (*pool).free;
        let last = first.byte_add((moved - 1) * (*pool).block_size as usize);
        (*pool).free = (*last).next;
        (*pool).count_allocated(moved as u32);
        BlockCache::push_list(cache, first, last, moved as u32);
    }
}

/// Free a list of cached blocks: into their pools when `heap` owns them,
/// to their owners' remote-free stacks otherwise.
///
/// # Safety
/// Exclusive use of `heap`; the list holds live (cached) blocks.
unsafe fn release_to_pools(heap: *mut Heap, mut block: *mut Block) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        while !block.is_null() {
            let next = (*block).next;
            free_uncached(heap, pool::pool_of(block as usize), block);
            block = next;
        }
    }
}

/// Give every cached block of `heap` back to its pool.
///
/// # Safety
/// Exclusive use of `heap`.
unsafe fn flush_caches(heap: *mut Heap) {
    for class in 0..NUM_SIZE_CLASSES {
        // SAFETY: exclusive use (caller).
        unsafe { release_to_pools(heap, BlockCache::take_all(cache_of(heap, class))) };
    }
}

#[cold]
#[inline(never)]
pub(super) fn alloc_slow(heap: *mut Heap, class_bytes: usize) -> *mut u8 {
    // The fast path passes the thread's heap slot as it read it, and
    // `class * ALIGNMENT`, which it has at hand (`heap::alloc`): the
    // request's size register becomes this second argument with no move,
    // leaving the first argument's register to the heap, so that a hook
    // called with a context first (CPython's) keeps it there for its own
    // cold path without a copy.
    let class = class_bytes / ALIGNMENT;
    // SAFETY: `heap` is the thread slot's heap: this thread's, or a
    // placeholder, whose lists hold only the sentinel, which has no free
    // block, so that only this thread's own heap passes the test; it then
    // owns the pool.
    unsafe {
        // The common case first: the class's first pool has a free block
        // and the cache is open (a closed one is opened on the general
        // path below).
        let pool = avail_of(heap, class);
        if !(*pool).free.is_null() && !BlockCache::is_closed(cache_of(heap, class)) {
            return take_from_pool(heap, pool, class);
        }
    }
    alloc_general(heap, class)
}

/// `alloc_slow` past its common case, out of line so that the common case
/// saves no registers.
#[inline(never)]
fn alloc_general(heap: *mut Heap, class: usize) -> *mut u8 {
    let mut heap = heap;
    if heap == unattached_heap() {
        heap = registry::attach_thread();
        if heap.is_null() {
            return null_mut();
        }
    }
    if heap == exited_heap() {
        // Allocations from TLS destructors that run after ours: the system
        // allocator serves them, and free() recognises them as foreign.
        return system::malloc(block_size(class));
    }
    // SAFETY: `heap` is this thread's live heap.
    unsafe { alloc_from_pools(heap, class) }
}

/// # Safety
/// The caller has exclusive use of `heap`.
unsafe fn alloc_from_pools(heap: *mut Heap, class: usize) -> *mut u8 {
    let sentinel = EMPTY_POOL.as_ptr();
    // SAFETY: exclusive use of the heap and its pools (caller).
    unsafe {
        BlockCache::open(cache_of(heap, class));
        loop {
            let pool = avail_of(heap, class);
            if pool != sentinel {
                // Pools on the list have a free block (see `pool_exhausted`).
                return take_from_pool(heap, pool, class);
            }
            if collect_remote_frees(heap) {
                continue;
            }
            let Some(pool) = take_pool(heap) else {
                return null_mut();
            };
            pool::prepare(pool, class, heap);
            // Its first page carved onto its free list, which the next
            // turn of the loop hands to the cache.
            if (*pool).free.is_null() && pool::carve(pool) == 0 {
                // Cannot happen: a fresh pool holds at least two blocks.
                return null_mut();
            }
            (*pool).set_state(PoolState::Available);
            link_front(heap, pool, class);
        }
    }
}

/// Take the first free block of `pool`, the first pool of its class's
/// list, refill the class's block cache with the blocks after it
/// ([`refill_cache`]), count them all allocated, and deal with the pool if
/// that emptied its list.
///
/// # Safety
/// Exclusive use of `heap`, which owns `pool`, whose free list is not
/// empty.
#[inline(always)]
unsafe fn take_from_pool(heap: *mut Heap, pool: *mut Pool, class: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let block = (*pool).free;
        let moved = refill_cache(heap, pool, class, (*block).next);
        (*pool).count_allocated(1 + moved);
        if (*pool).free.is_null() {
            pool_exhausted(heap, pool);
        }
        block.cast()
    }
}

/// Refill the class's block cache from `pool`, whose first free block the
/// caller takes: `rest`, the blocks after it, go to the cache as far as it
/// has room beyond `KEPT_ROOM`, and what remains stays the pool's free
/// list. Returns how many moved (to be counted as allocated with the
/// caller's block).
///
/// So that the allocation fast path has one tier: it pops the cache or
/// calls out here, and never alternates between the cache and a pool's
/// list, a branch no predictor learns when the classes requested vary
/// (the C benchmark's burst: 3.1 M of 10 M allocations mispredicted that
/// branch under cachegrind's branch model when the pool tier was inline).
/// A pool's whole list moves with no walk when the cache can take it: its
/// length is the blocks carved less those counted as allocated.
///
/// # Safety
/// Exclusive use of `heap`, which owns `pool`; `rest` is the pool's free
/// list after its first block, which the caller takes.
unsafe fn refill_cache(heap: *mut Heap, pool: *mut Pool, class: usize, rest: *mut Block) -> u32 {
    // SAFETY: exclusive use of heap and pool (caller); the blocks of the
    // list are free blocks of the pool.
    unsafe {
        let cache = cache_of(heap, class);
        // Places kept free, as when carving (`carved_to_cache`): a block
        // freed right after this allocation stays in the cache to serve
        // the next one.
        let room = (BlockCache::room(cache) as usize).saturating_sub(KEPT_ROOM);
        if rest.is_null() || room == 0 {
            (*pool).free = rest;
            return 0;
        }
        // Every carved block not counted as allocated is on the free list
        // (blocks freed by other threads stay counted until collected);
        // the caller's block is still on it.
        let carved = (*pool).next_offset as usize / (*pool).block_size as usize;
        let listed = carved - (*pool).used() as usize - 1;
        debug_assert_eq!(listed, list_length(rest));
        if listed <= room && !BlockCache::has_blocks(cache) {
            BlockCache::fill_empty(cache, rest, listed as u32);
            (*pool).free = null_mut();
            return listed as u32;
        }
        let moved = listed.min(room);
        let mut last = rest;
        for _ in 1..moved {
            last = (*last).next;
        }
        (*pool).free = (*last).next;
        BlockCache::push_list(cache, rest, last, moved as u32);
        moved as u32
    }
}

/// Blocks on the list at `first` (debug checks).
///
/// # Safety
/// `first` is null or a null-terminated list of blocks.
unsafe fn list_length(mut first: *mut Block) -> usize {
    let mut length = 0;
    while !first.is_null() {
        length += 1;
        // SAFETY: a block of the list (caller).
        first = unsafe { (*first).next };
    }
    length
}

/// A free made the pool leave the "full" state or become empty.
///
/// # Safety
/// As for `free_local`.
#[cold]
#[inline(never)]
pub(super) unsafe fn pool_changed_list(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: exclusive use of heap and pool (caller).
    unsafe {
        let class = (*pool).class();
        if (*pool).state() == PoolState::Full {
            // Front of the list, as CPython does: the pool most recently
            // freed into is the one most likely to be in cache.
            (*pool).clear_full();
            link_front(heap, pool, class);
        }
        if (*pool).used() == 0 {
            // The only pool of its class stays put, so that a program
            // allocating and freeing one block does not cycle a pool.
            if avail_of(heap, class) != pool || !(*pool).next.is_null() {
                unlink(heap, pool);
                retire_pool(heap, pool);
            }
            // A pool just emptied (by a free past the full cache, or by
            // frees collected from other threads): the frees are giving
            // memory back, and the blocks the cache kept from before them
            // (often scattered over pools that would otherwise empty too)
            // would pin their pools, and later
            // allocations of the class would be spread over them instead
            // of packed into few. Measured: the C benchmark's class sweep
            // after the churn ran at 0.57x CPython's speed with the cache
            // kept, at 0.96x with the caches off (BENCHMARKS.md). The
            // cache stays closed until the class next takes blocks from
            // its pools (`pool_exhausted`): the rest of the burst goes
            // straight to the pools instead of filling the cache again,
            // to be emptied again at the next pool it empties.
            release_to_pools(heap, BlockCache::close(cache_of(heap, class)));
        }
    }
}

/// Push `block`, a live block of `pool`, which another heap owns (or
/// none, for an invalid free), onto its owner's remote-free stack.
///
/// # Safety
/// `block` is a live block of `pool` that the caller gives up.
#[cold]
#[inline(never)]
pub(super) unsafe fn free_remote(block: *mut Block, pool: *mut Pool) {
    // SAFETY: a live block's pool keeps its owner (caller).
    let owner = unsafe { (*pool).owner.load(Ordering::Relaxed) };
    if owner.is_null() || owner == exited_heap() {
        crate::report::invalid_free(block.cast());
        return;
    }
    // SAFETY: heaps are never unmapped, and `owner` owns the pool of the
    // live block `block`, which this thread may now overwrite.
    unsafe {
        let stack = &(*owner).remote_free;
        let mut head = stack.load(Ordering::Relaxed);
        loop {
            (*block).next = head;
            match stack.compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }
}

/// Take back the blocks other threads freed into `heap`'s pools. Returns
/// whether there were any.
///
/// # Safety
/// The caller has exclusive use of `heap`.
pub(super) unsafe fn collect_remote_frees(heap: *mut Heap) -> bool {
    // SAFETY: exclusive use (caller); the swap hands us the whole stack,
    // whose blocks are all live blocks of pools this heap owns.
    unsafe {
        let mut block = (*heap).remote_free.swap(null_mut(), Ordering::Acquire);
        if block.is_null() {
            return false;
        }
        let mut count = 0;
        while !block.is_null() {
            let next = (*block).next;
            free_local(heap, pool::pool_of(block as usize), block);
            block = next;
            count += 1;
        }
        bump(&(*heap).counters.remote_frees_received, count);
        true
    }
}

/// # Safety
/// Exclusive use of `heap`; `pool` is on no list.
unsafe fn link_front(heap: *mut Heap, pool: *mut Pool, class: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let head = avail_of(heap, class);
        (*pool).prev = null_mut();
        if head == EMPTY_POOL.as_ptr() {
            (*pool).next = null_mut();
        } else {
            (*pool).next = head;
            (*head).prev = pool;
        }
        set_avail(heap, class, pool);
    }
}

/// # Safety
/// Exclusive use of `heap`; `pool` is on its class list.
unsafe fn unlink(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let (prev, next) = ((*pool).prev, (*pool).next);
        if prev.is_null() {
            let first = if next.is_null() {
                EMPTY_POOL.as_ptr()
            } else {
                next
            };
            set_avail(heap, (*pool).class(), first);
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*pool).next = null_mut();
        (*pool).prev = null_mut();
    }
}

/// A pool of `heap` became empty: cache it, or give it back to its arena.
///
/// # Safety
/// Exclusive use of `heap`; `pool` is empty and on no list.
unsafe fn retire_pool(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if (*heap).empty_count < HEAP_EMPTY_POOL_CACHE {
            (*pool).set_state(PoolState::Cached);
            (*pool).next = (*heap).empty;
            (*heap).empty = pool;
            (*heap).empty_count += 1;
            crate::arena::decay_if_due();
        } else {
            give_back(heap, &mut [pool]);
        }
    }
}

/// # Safety
/// Exclusive use of `heap`; the pools are empty, on no list, owned by it.
unsafe fn give_back(heap: *mut Heap, pools: &mut [*mut Pool]) {
    if pools.is_empty() {
        return;
    }
    let mut arenas = ARENAS.lock();
    for &mut pool in pools.iter_mut() {
        // SAFETY: guaranteed by the caller.
        unsafe { arenas.give_back_pool(pool) };
    }
    drop(arenas);
    // SAFETY: exclusive use of the heap.
    unsafe {
        let owned = (*heap).pools_owned.load(Ordering::Relaxed);
        (*heap)
            .pools_owned
            .store(owned - pools.len(), Ordering::Relaxed);
        bump(&(*heap).counters.pools_given_back, pools.len() as u64);
    }
}

/// A pool for `heap`: from its empty cache, else from the arenas (after
/// trying to recover memory stuck in abandoned heaps).
///
/// # Safety
/// Exclusive use of `heap`.
unsafe fn take_pool(heap: *mut Heap) -> Option<*mut Pool> {
    // SAFETY: exclusive use of the heap (caller).
    unsafe {
        if !(*heap).empty.is_null() {
            let pool = (*heap).empty;
            (*heap).empty = (*pool).next;
            (*heap).empty_count -= 1;
            crate::arena::decay_if_due();
            return Some(pool);
        }
    }
    registry::reclaim_from_abandoned_heaps();
    let pool = ARENAS.lock().take_pool()?.as_ptr();
    // SAFETY: exclusive use of the heap (caller).
    unsafe {
        (*heap).pools_owned.store(
            (*heap).pools_owned.load(Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        bump(&(*heap).counters.pools_taken, 1);
    }
    Some(pool)
}

/// Pools on their way back to the arenas, handed over a batch per lock.
struct GiveBackBatch {
    pools: [*mut Pool; 64],
    len: usize,
}

impl GiveBackBatch {
    /// # Safety
    /// As for `give_back`, for `pool` and `heap`.
    unsafe fn push(&mut self, heap: *mut Heap, pool: *mut Pool) {
        self.pools[self.len] = pool;
        self.len += 1;
        if self.len == self.pools.len() {
            // SAFETY: guaranteed by the caller.
            unsafe { self.flush(heap) };
        }
    }

    /// # Safety
    /// As for `give_back`.
    unsafe fn flush(&mut self, heap: *mut Heap) {
        // SAFETY: guaranteed by the caller.
        unsafe { give_back(heap, &mut self.pools[..self.len]) };
        self.len = 0;
    }
}

/// Give back every empty pool of `heap` (its cache of empty pools, and
/// empty pools still on class lists), after its cached blocks went back to
/// their pools.
///
/// # Safety
/// Exclusive use of `heap`.
pub(super) unsafe fn trim(heap: *mut Heap) {
    let mut batch = GiveBackBatch {
        pools: [null_mut(); 64],
        len: 0,
    };
    // SAFETY: exclusive use of the heap and its pools (caller).
    unsafe {
        flush_caches(heap);
        while !(*heap).empty.is_null() {
            let pool = (*heap).empty;
            (*heap).empty = (*pool).next;
            batch.push(heap, pool);
        }
        (*heap).empty_count = 0;
        for class in 0..NUM_SIZE_CLASSES {
            let mut pool = avail_of(heap, class);
            while pool != EMPTY_POOL.as_ptr() {
                let next = (*pool).next;
                if (*pool).used() == 0 {
                    unlink(heap, pool);
                    batch.push(heap, pool);
                }
                pool = if next.is_null() {
                    EMPTY_POOL.as_ptr()
                } else {
                    next
                };
            }
        }
        batch.flush(heap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_cache;
    use crate::heap::{alloc, free};
    use crate::thread;
    use std::sync::mpsc;

    /// An allocation that finds the cache empty refills it from its pool,
    /// counting the moved blocks allocated there; the allocations after it
    /// come from the cache alone, the pool's list untouched, until the
    /// cache is empty again.
    #[test]
    fn an_empty_cache_is_refilled_from_a_pool_whole_and_serves_alone() {
        std::thread::spawn(|| {
            for class in [0, NUM_SIZE_CLASSES / 2, NUM_SIZE_CLASSES - 1] {
                let first = alloc(class);
                let heap = thread::current_heap();
                let pool = crate::pool::pool_of(first as usize);
                // SAFETY: this thread's heap and pool records; atomics and
                // plain fields only this thread writes.
                let cached = || unsafe { BlockCache::held_at(cache_of(heap, class)) };
                // SAFETY: as above.
                let used = || unsafe { (*pool).used() as usize };
                // SAFETY: as above.
                let list = || unsafe { (*pool).free };
                let held = cached();
                assert!(held > 0, "class {class}: the cache was refilled");
                assert_eq!(
                    used(),
                    1 + held,
                    "class {class}: moved blocks count as allocated"
                );
                let list_before = list();
                let mut blocks = vec![first];
                for _ in 0..held {
                    let block = alloc(class);
                    assert_eq!(crate::pool::pool_of(block as usize), pool);
                    assert_eq!(
                        (used(), list()),
                        (1 + held, list_before),
                        "served by the cache"
                    );
                    blocks.push(block);
                }
                assert_eq!(cached(), 0);
                for block in blocks {
                    // SAFETY: live blocks of this thread.
                    unsafe { free(block) };
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn frees_past_a_full_cache_go_straight_to_their_pools() {
        std::thread::spawn(|| {
            let class = 29;
            let per_pool = crate::size_class::blocks_per_pool(class);
            let blocks: Vec<_> = (0..4 * per_pool).map(|_| alloc(class)).collect();
            let heap = thread::current_heap();
            // SAFETY: this thread's heap and its own counters.
            let pools_emptied = || unsafe {
                (*heap).empty_count as u64
                    + (*heap).counters.pools_given_back.load(Ordering::Relaxed)
            };
            let emptied_before = pools_emptied();
            let limit = block_cache::limit_for(class, block_cache::bytes_per_class()) as usize;
            for &block in &blocks[..limit] {
                // SAFETY: live blocks of this thread.
                unsafe { free(block) };
            }
            // SAFETY: this thread's heap; `held_at` reads atomics.
            let held = unsafe { BlockCache::held_at(cache_of(heap, class)) };
            assert_eq!(held, limit, "cached");
            for &block in &blocks[limit..] {
                // SAFETY: live blocks of this thread.
                unsafe { free(block) };
            }
            // The first frees were cached; the rest went to their pools, and
            // the first pool they emptied sent the cached blocks back to
            // theirs, so none of the first frees is still cached (each
            // would pin its pool).
            let first_frees = &blocks[..limit];
            // SAFETY: this thread's heap; the cached blocks are free blocks
            // of its pools, linked through their first word.
            let mut cached = unsafe { BlockCache::head_for_tests(cache_of(heap, class)) };
            while !cached.is_null() {
                assert!(!first_frees.contains(&cached.cast()), "released");
                // SAFETY: as above.
                cached = unsafe { (*cached).next };
            }
            assert!(
                pools_emptied() >= emptied_before + 2,
                "the pools the frees covered emptied"
            );
            // SAFETY: this thread's own heap.
            unsafe { trim(heap) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn blocks_freed_by_another_thread_return_to_their_owner() {
        let class = 3;
        let blocks: Vec<usize> = (0..5000).map(|_| alloc(class) as usize).collect();
        let heap = thread::current_heap();
        // SAFETY: this thread's own heap and counters. A heap adopted from
        // an exited thread may come with frees of its blocks pending: take
        // them first, so that only this test's frees are counted.
        let received_before = unsafe {
            collect_remote_frees(heap);
            (*heap)
                .counters
                .remote_frees_received
                .load(Ordering::Relaxed)
        };
        std::thread::spawn(move || {
            for block in blocks {
                // SAFETY: live blocks, handed over to this thread.
                unsafe { free(block as *mut u8) };
            }
        })
        .join()
        .unwrap();
        // SAFETY: this thread owns `heap`.
        unsafe {
            assert!(!(*heap).remote_free.load(Ordering::Relaxed).is_null());
            assert!(collect_remote_frees(heap));
            let received = (*heap)
                .counters
                .remote_frees_received
                .load(Ordering::Relaxed);
            // Other tests' threads may free blocks of this heap meanwhile
            // (it may be an adopted one), so at least ours arrived.
            assert!(received - received_before >= 5000);
        }
    }

    #[test]
    fn remote_frees_race_with_the_owner_without_losing_blocks() {
        let (to_freer, inbox) = mpsc::channel::<Vec<usize>>();
        let freer = std::thread::spawn(move || {
            for batch in inbox {
                for block in batch {
                    // SAFETY: live blocks handed over by the owner.
                    unsafe {
                        assert_eq!(*(block as *const u64), block as u64, "content survived");
                        free(block as *mut u8);
                    }
                }
            }
        });
        for round in 0..200 {
            let batch: Vec<usize> = (0..256)
                .map(|i| {
                    let block = alloc((round + i) % 8);
                    // SAFETY: every class holds at least 16 bytes.
                    unsafe { *(block as *mut u64) = block as u64 };
                    block as usize
                })
                .collect();
            to_freer.send(batch).unwrap();
        }
        drop(to_freer);
        freer.join().unwrap();
    }
}
