//! Per-thread heaps: the allocation and free fast paths, and everything a
//! thread does with the pools it owns.
//!
//! Each thread that allocates gets a heap. A heap owns pools: for each size
//! class a list of pools that have (or may carve) free blocks, headed by
//! `avail[class]`; full pools are on no list; empty pools are kept in a
//! small cache. Only the heap's thread touches these, so the owner-local
//! paths use no atomic read-modify-write and no lock:
//!
//! * allocate: pop the class's block cache; else `avail[class]` → pool,
//!   pop its free list, `used += 1`;
//! * free: push onto the calling thread's block cache for the class,
//!   whichever heap owns the block's pool (no ownership test); when that
//!   is full, a block of a pool this heap owns goes onto its pool's free
//!   list (push, `used -= 1`).
//!
//! A cached block counts as allocated in its pool, wherever it is cached.
//! A block that another thread frees past its full cache (or flushes
//! from it) is pushed onto its owner heap's `remote_free` stack with one
//! compare-and-swap; the owner takes the whole stack with one swap when it
//! runs out of blocks. Pool ownership never changes while a pool has live
//! or cached blocks, so the freeing thread can trust the `owner` it reads.
//!
//! When a thread exits, its heap is abandoned (not destroyed): empty pools
//! go back to the arenas, and the heap with its remaining pools is adopted
//! whole by the next new thread. Until then, threads that need a pool
//! reclaim blocks freed into abandoned heaps, so their memory is reused.

use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::arena::ARENAS;
use crate::block_cache::{self, BlockCache};
use crate::config::{ALIGNMENT, HEAP_EMPTY_POOL_CACHE, NUM_SIZE_CLASSES};
use crate::os;
use crate::pool::{self, Block, Pool, PoolState, EMPTY_POOL};
use crate::size_class::block_size;
use crate::sync::Locked;
use crate::system;
use crate::thread;

#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeapState {
    /// The current heap of a running thread.
    Live = 1,
    /// Its thread exited while it still owned pools with live blocks.
    Abandoned = 2,
    /// Owns no pool; ready for the next thread.
    Free = 3,
    /// In a child of `fork()`: the heap of a thread that does not exist in
    /// the child. That thread may have been in the middle of updating it,
    /// so nobody adopts, reclaims or trims it; blocks freed into it stay
    /// on its remote-free stack (a leak confined to the child).
    Orphaned = 4,
}

/// Counters kept per heap, written only by the owning thread (plain
/// relaxed stores) and summed on request by statistics.
#[derive(Default)]
pub struct HeapCounters {
    pub remote_frees_received: AtomicU64,
    pub pools_taken: AtomicU64,
    pub pools_given_back: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// Cache-line aligned: heaps lie side by side in their chunks, and one
/// thread's hot fields must not share a line with another's.
#[repr(C, align(64))]
pub struct Heap {
    /// Per class, blocks this thread freed, handed out first (see
    /// [`block_cache`]). First in the struct: both fast paths use it.
    cache: [BlockCache; NUM_SIZE_CLASSES],
    /// Per class, the first pool that may have free blocks, or the empty
    /// sentinel.
    avail: [*mut Pool; NUM_SIZE_CLASSES],
    /// Blocks freed by other threads (lock-free stack through `Block::next`).
    remote_free: AtomicPtr<Block>,
    /// Cache of empty pools, linked through `Pool::next`.
    empty: *mut Pool,
    empty_count: usize,
    /// Pools owned: on class lists, full, or cached.
    pools_owned: AtomicUsize,
    state: AtomicU8,
    /// Every heap ever created, for statistics and fork (never unlinked).
    all_next: *mut Heap,
    /// Link in the registry's abandoned or free list.
    list_next: *mut Heap,
    /// This heap's copy of the arena space's bounds (`arena_space::bounds`),
    /// read by free's ownership test next to the thread slot it reads
    /// anyway, instead of a second global record. `(0, 0)`, containing
    /// nothing, until a free of a block of the space finds the copy
    /// missing (`learn_span`); the bounds never change after. Plain
    /// fields, so that the test folds them into its operands: only the
    /// heap's thread reads or writes them, and the placeholder heaps keep
    /// `(0, 0)` (their threads' frees ask the space itself).
    span_base: usize,
    span_size: usize,
    pub counters: HeapCounters,
}

/// A heap that owns nothing: every class cache is empty and every class
/// slot is the empty sentinel, so allocations fall into the slow path, and
/// no pool names it as owner, so frees take the cross-thread path.
const fn placeholder_heap() -> Heap {
    Heap {
        cache: [const { BlockCache::empty() }; NUM_SIZE_CLASSES],
        avail: [EMPTY_POOL.as_ptr(); NUM_SIZE_CLASSES],
        remote_free: AtomicPtr::new(null_mut()),
        empty: null_mut(),
        empty_count: 0,
        pools_owned: AtomicUsize::new(0),
        state: AtomicU8::new(HeapState::Free as u8),
        all_next: null_mut(),
        list_next: null_mut(),
        span_base: 0,
        span_size: 0,
        counters: HeapCounters {
            remote_frees_received: AtomicU64::new(0),
            pools_taken: AtomicU64::new(0),
            pools_given_back: AtomicU64::new(0),
        },
    }
}

/// The heap in every thread's slot until its first allocation (the slot's
/// initial value, see [`thread`]): the fast paths need no "has this thread
/// a heap?" test; the allocation slow path attaches one. Never written.
pub(crate) static UNATTACHED: StaticHeap = StaticHeap(placeholder_heap());

/// The heap a thread sees after its exit destructor ran: its allocations
/// (from TLS destructors that run after ours) are served by the system
/// allocator. Never written.
static EXITED: StaticHeap = StaticHeap(placeholder_heap());

#[repr(transparent)]
pub(crate) struct StaticHeap(Heap);
// SAFETY: the placeholder heaps are never written (see `UNATTACHED`).
unsafe impl Sync for StaticHeap {}

pub(crate) fn unattached_heap() -> *mut Heap {
    ptr::addr_of!(UNATTACHED.0).cast_mut()
}

fn exited_heap() -> *mut Heap {
    ptr::addr_of!(EXITED.0).cast_mut()
}

/// Whether `heap` is a real heap rather than one of the placeholders.
fn is_attached(heap: *mut Heap) -> bool {
    heap != unattached_heap() && heap != exited_heap()
}

// ---------------------------------------------------------------------------
// Fast paths

/// Allocate one block of `class`.
#[inline(always)]
pub fn alloc(class: usize) -> *mut u8 {
    debug_assert!(class < NUM_SIZE_CLASSES);
    let heap = thread::current_heap();
    {
        // SAFETY: the slot holds this thread's heap or a never-written
        // placeholder, whose caches are empty (so only read here, never
        // borrowed mutably) and whose class slots are the sentinel; cached
        // blocks are blocks given up to the cache (of any heap's pools,
        // still counted as allocated there); `avail` entries are
        // pools it owns or the sentinel; `class` is in range; a non-null
        // free block lies inside its pool.
        unsafe {
            let cache = ptr::addr_of_mut!((*heap).cache)
                .cast::<BlockCache>()
                .add(class);
            if (*cache).has_blocks() {
                return (*cache).pop().cast();
            }
            let pool = *(*heap).avail.get_unchecked(class);
            let block = (*pool).free;
            if !block.is_null() {
                let next = (*block).next;
                (*pool).free = next;
                (*pool).set_used((*pool).used() + 1);
                if next.is_null() {
                    // As in CPython: deal with the exhausted pool now, so
                    // that the next allocation finds a block at once.
                    pool_exhausted(heap, pool);
                }
                return block.cast();
            }
        }
    }
    alloc_slow(class)
}

/// The allocation just took the last free block of `pool`, the first pool
/// of its class: thread the next page of never-used blocks onto its free
/// list, or, if it has none, take it off the list until a block comes back.
/// Pools on a class list therefore always have a free block.
///
/// # Safety
/// `heap` is this thread's heap and owns `pool`, the head of its class list.
#[inline(never)]
unsafe fn pool_exhausted(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        // The class allocates from its pools again: a cache closed by a
        // burst of frees takes blocks again (see `pool_changed_list`).
        (*heap).cache[(*pool).class()].open();
        if !pool::carve(pool) {
            unlink(heap, pool);
            (*pool).set_state(PoolState::Full);
        }
    }
}

/// Whether `address` lies in the arena space as `heap` knows it (false
/// until the heap has learnt the bounds, see [`learn_span`]). Frees test
/// this first, so that a block of ours costs no global load; a false
/// answer sends the block to the cold path, which asks the space itself.
///
/// # Safety
/// `heap` is [`thread::current_heap`].
#[inline(always)]
pub unsafe fn span_contains(heap: *mut Heap, address: usize) -> bool {
    // SAFETY: `heap` is the calling thread's heap (or a never-written
    // placeholder): never unmapped, and its span fields are only written by
    // its own thread (`learn_span`), so this read races with nothing.
    let (base, size) = unsafe { ((*heap).span_base, (*heap).span_size) };
    address.wrapping_sub(base) < size
}

/// Copy the arena space's bounds into `heap`, the calling thread's, after
/// the space said it contains a block that [`span_contains`] did not know
/// of. The placeholder heaps, which are never written, keep `(0, 0)`.
///
/// # Safety
/// `heap` is [`thread::current_heap`].
#[cold]
pub unsafe fn learn_span(heap: *mut Heap) {
    if !is_attached(heap) {
        return;
    }
    let (base, size) = crate::arena_space::bounds();
    // SAFETY: the calling thread's own heap; only it uses these fields.
    unsafe {
        (*heap).span_base = base;
        (*heap).span_size = size;
    }
}

/// Free a block that the address map says is ours, from the calling
/// thread, whether it has a heap or not.
///
/// # Safety
/// `block` was returned by `alloc` and not freed since.
#[inline]
pub unsafe fn free(block: *mut u8) {
    let heap = thread::current_heap();
    if is_attached(heap) {
        // SAFETY: guaranteed by the caller; the calling thread's heap.
        unsafe { free_in(heap, block) }
    } else {
        // A thread without a heap caches nothing (the placeholders are
        // never written): the block goes to its owner.
        // SAFETY: guaranteed by the caller.
        unsafe { free_uncached(heap, pool::pool_of(block as usize), block.cast()) }
    }
}

/// Free a block that the address map says is ours, given the calling
/// thread's heap.
///
/// The block goes into the calling thread's block cache for its class,
/// whichever heap owns its pool: the free needs no ownership test, and a
/// thread that frees another thread's blocks reuses them for its own next
/// allocations of the class (tcmalloc's thread caches work the same way).
/// A cached block counts as allocated in its pool, so a pool with a block
/// in any thread's cache is not empty. Only a free that finds the cache
/// full asks who owns the pool: its owner frees it into the pool, anyone
/// else hands it over through the owner's remote-free stack.
///
/// # Safety
/// `heap` is [`thread::current_heap`] and a real heap, not a placeholder
/// (whose caches must not be written: see [`cache_take_room`]); `block`
/// was returned by `alloc` and not freed since.
#[inline(always)]
pub unsafe fn free_in(heap: *mut Heap, block: *mut u8) {
    let pool = pool::pool_of(block as usize);
    // SAFETY: `block` is live, so its pool's record is initialised and its
    // block size fixed until the pool empties; the placeholder heaps'
    // caches have no room, so they are never written.
    unsafe {
        let block_size = (*pool).block_size;
        if !cache_take_room(heap, block_size) {
            free_uncached(heap, pool, block.cast());
            return;
        }
        (*cache_of_class_size(heap, block_size)).push_counted(block.cast());
    }
}

/// Take a place in `heap`'s block cache for blocks of `block_size` bytes
/// ([`BlockCache::take_room`]). On x86-64, with the default 16-byte class
/// spacing, the cache's `room` is addressed as heap + block size + a
/// constant inside the one `sub` instruction (see [`class_offset`]): no
/// address arithmetic on the free fast path.
///
/// # Safety
/// `heap` is the calling thread's heap, not a placeholder: the decrement
/// in place writes `room` before it knows there was none, and a
/// placeholder is shared by threads; `block_size` is a class's.
#[inline(always)]
unsafe fn cache_take_room(heap: *mut Heap, block_size: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if core::mem::size_of::<BlockCache>() == ALIGNMENT {
        // The cache of blocks of `block_size` bytes starts at
        // `class_offset(block_size) = block_size - ALIGNMENT` into `cache`.
        const ROOM: isize = (core::mem::offset_of!(Heap, cache) + block_cache::ROOM_OFFSET)
            as isize
            - ALIGNMENT as isize;
        // SAFETY: the address is `room` of the class's cache in `heap`
        // (above), written only by the heap's thread, the caller; as in
        // `BlockCache::take_room`, a borrow means it held 0, restored.
        unsafe {
            core::arch::asm!(
                "sub dword ptr [{heap} + {block_size} + {room}], 1",
                "jb {full}",
                heap = in(reg) heap,
                block_size = in(reg) block_size as usize,
                room = const ROOM,
                full = label {
                    // SAFETY: as above.
                    unsafe { block_cache::clear_room(cache_of_class_size(heap, block_size)) };
                    return false;
                },
                options(nostack),
            );
        }
        return true;
    }
    // SAFETY: as guaranteed by the caller.
    unsafe { BlockCache::take_room(cache_of_class_size(heap, block_size)) }
}

/// A free that found its cache full (or off): into the pool if this heap
/// owns it (inline: a burst of frees, a teardown, takes this path for
/// every block past the cache's limit), else onto the owner's stack.
///
/// # Safety
/// `heap` is the calling thread's heap; `block` is a live block of `pool`.
#[inline(always)]
unsafe fn free_uncached(heap: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: a live block's pool keeps its owner (see the module essay).
    let owner = unsafe { (*pool).owner.load(Ordering::Relaxed) };
    // A placeholder heap owns no pool, so it never matches.
    if owner == heap {
        // SAFETY: this thread owns the pool.
        unsafe { free_local(heap, pool, block) }
    } else {
        free_remote(owner, block);
    }
}

/// The block cache of `heap` for blocks of `block_size` bytes. The pool
/// record's block size (next to its owner, which free reads anyway) gives
/// the cache's address with no table and, with the default 16-byte
/// spacing and 16-byte entries, no arithmetic: class `c` has blocks of
/// `(c + 1) * ALIGNMENT` bytes.
///
/// # Safety
/// `block_size` is the block size of one of the size classes.
#[inline(always)]
unsafe fn cache_of_class_size(heap: *mut Heap, block_size: u32) -> *mut BlockCache {
    // SAFETY: guaranteed by the caller; the offset selects entry `class`.
    unsafe {
        let first = ptr::addr_of_mut!((*heap).cache).cast::<BlockCache>();
        first.byte_add(class_offset::<BlockCache>(block_size))
    }
}

/// Byte offset of the entry for blocks of `block_size` bytes in an array
/// of `T` indexed by class: `class * size_of::<T>()`, where
/// `block_size - ALIGNMENT` is `class * ALIGNMENT`.
#[inline(always)]
fn class_offset<T>(block_size: u32) -> usize {
    let class_times_alignment = block_size as usize - ALIGNMENT;
    let entry = core::mem::size_of::<T>();
    if entry.is_multiple_of(ALIGNMENT) {
        class_times_alignment * (entry / ALIGNMENT)
    } else {
        class_times_alignment / ALIGNMENT * entry
    }
}

/// Bytes usable in the block at `block` (its class size).
///
/// # Safety
/// `block` is a live block of ours.
#[inline]
pub unsafe fn block_usable_size(block: *mut u8) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { (*pool::pool_of(block as usize)).block_size as usize }
}

/// Push `block` onto its pool's free list.
///
/// # Safety
/// `heap` is the calling thread's heap (or a heap it has exclusive use of)
/// and owns `pool`, which contains the live block `block`.
#[inline(always)]
unsafe fn free_local(heap: *mut Heap, pool: *mut Pool, block: *mut Block) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let old = (*pool).free;
        (*block).next = old;
        (*pool).free = block;
        if !pool::release_one(pool) || old.is_null() {
            pool_changed_list(heap, pool);
        }
    }
}

// ---------------------------------------------------------------------------
// Slow paths

/// Block caches for a new heap, sized from the current byte budget.
fn new_caches() -> [BlockCache; NUM_SIZE_CLASSES] {
    let budget = block_cache::bytes_per_class();
    core::array::from_fn(|class| BlockCache::with_limit(block_cache::limit_for(class, budget)))
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
        unsafe { release_to_pools(heap, (*heap).cache[class].take_all()) };
    }
}

#[cold]
#[inline(never)]
fn alloc_slow(class: usize) -> *mut u8 {
    let mut heap = thread::current_heap();
    if heap == unattached_heap() {
        heap = attach_thread();
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
        (*heap).cache[class].open();
        loop {
            let pool = (*heap).avail[class];
            if pool != sentinel {
                // Pools on the list have a free block (see `pool_exhausted`).
                let block = (*pool).free;
                let next = (*block).next;
                (*pool).free = next;
                (*pool).set_used((*pool).used() + 1);
                if next.is_null() {
                    pool_exhausted(heap, pool);
                }
                return block.cast();
            }
            if collect_remote_frees(heap) {
                continue;
            }
            let Some(pool) = take_pool(heap) else {
                return null_mut();
            };
            pool::prepare(pool, class, heap);
            if (*pool).free.is_null() && !pool::carve(pool) {
                // Cannot happen: a fresh pool holds at least two blocks.
                return null_mut();
            }
            (*pool).set_state(PoolState::Available);
            link_front(heap, pool, class);
        }
    }
}

/// A free made the pool leave the "full" state or become empty.
///
/// # Safety
/// As for `free_local`.
#[cold]
#[inline(never)]
unsafe fn pool_changed_list(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: exclusive use of heap and pool (caller).
    unsafe {
        let class = (*pool).class();
        if (*pool).state() == PoolState::Full {
            // Front of the list, as CPython does: the pool most recently
            // freed into is the one most likely to be in cache.
            (*pool).set_state(PoolState::Available);
            link_front(heap, pool, class);
        }
        if (*pool).used() == 0 {
            // The only pool of its class stays put, so that a program
            // allocating and freeing one block does not cycle a pool.
            if (*heap).avail[class] != pool || !(*pool).next.is_null() {
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
            release_to_pools(heap, (*heap).cache[class].close());
        }
    }
}

/// Push `block` onto the remote-free stack of `owner`.
#[cold]
#[inline(never)]
fn free_remote(owner: *mut Heap, block: *mut Block) {
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
unsafe fn collect_remote_frees(heap: *mut Heap) -> bool {
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
        let head = (*heap).avail[class];
        (*pool).prev = null_mut();
        if head == EMPTY_POOL.as_ptr() {
            (*pool).next = null_mut();
        } else {
            (*pool).next = head;
            (*head).prev = pool;
        }
        (*heap).avail[class] = pool;
    }
}

/// # Safety
/// Exclusive use of `heap`; `pool` is on its class list.
unsafe fn unlink(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let (prev, next) = ((*pool).prev, (*pool).next);
        if prev.is_null() {
            (*heap).avail[(*pool).class()] = if next.is_null() {
                EMPTY_POOL.as_ptr()
            } else {
                next
            };
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
    if ABANDONED_WITH_POOLS.load(Ordering::Relaxed) > 0 {
        reclaim_abandoned();
    }
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
unsafe fn trim(heap: *mut Heap) {
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
            let mut pool = (*heap).avail[class];
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

// ---------------------------------------------------------------------------
// The heap registry: creating, adopting, abandoning and reclaiming heaps.

struct Registry {
    all: *mut Heap,
    abandoned: *mut Heap,
    free: *mut Heap,
    cursor: *mut Heap,
    end: *mut Heap,
    created: usize,
    metadata_bytes: usize,
}

// SAFETY: the registry's pointers are to heap records that are only
// linked and unlinked under the REGISTRY lock.
unsafe impl Send for Registry {}

static REGISTRY: Locked<Registry> = Locked::new(Registry {
    all: null_mut(),
    abandoned: null_mut(),
    free: null_mut(),
    cursor: null_mut(),
    end: null_mut(),
    created: 0,
    metadata_bytes: 0,
});

/// Abandoned heaps on the registry list (cheap test on the pool-taking path).
static ABANDONED_WITH_POOLS: AtomicUsize = AtomicUsize::new(0);

const HEAPS_PER_CHUNK: usize = 64 * 1024 / core::mem::size_of::<Heap>();

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
        if self.cursor == self.end {
            let bytes = HEAPS_PER_CHUNK * core::mem::size_of::<Heap>();
            let Some(chunk) = os::map(bytes) else {
                return null_mut();
            };
            self.metadata_bytes += bytes;
            self.cursor = chunk.as_ptr().cast();
            // SAFETY: the chunk holds HEAPS_PER_CHUNK heaps.
            self.end = unsafe { self.cursor.add(HEAPS_PER_CHUNK) };
        }
        let heap = self.cursor;
        // SAFETY: `heap` is unused memory inside the current chunk, sized
        // and aligned for a Heap (chunks are page-aligned, Heap 64-aligned).
        unsafe {
            self.cursor = heap.add(1);
            ptr::write(
                heap,
                Heap {
                    cache: new_caches(),
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

/// Give the calling thread a heap; null when none can be made.
#[cold]
fn attach_thread() -> *mut Heap {
    install_fork_handlers();
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

// ---------------------------------------------------------------------------
// fork()

static FORK_HANDLERS: AtomicBool = AtomicBool::new(false);

pub fn install_fork_handlers() {
    if FORK_HANDLERS.swap(true, Ordering::AcqRel) {
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

extern "C" fn before_fork() {
    // Lock order: registry, arenas, debug live list, domain state changes
    // (the order every path uses; the last three are never held together
    // with another).
    REGISTRY.acquire_for_fork();
    ARENAS.acquire_for_fork();
    crate::debug::LIVE.acquire_for_fork();
    crate::domain::STATE_CHANGE.acquire_for_fork();
}

extern "C" fn after_fork_parent() {
    crate::domain::STATE_CHANGE.release_after_fork(false);
    crate::debug::LIVE.release_after_fork(false);
    ARENAS.release_after_fork(false);
    REGISTRY.release_after_fork(false);
}

extern "C" fn after_fork_child() {
    // Only the forking thread exists in the child. Every other live heap
    // belongs to a thread that is gone and may have been caught half-way
    // through an update (a pool popped but not yet unlinked, say): such a
    // heap must never be used again, so it is orphaned, not abandoned.
    let current = thread::current_heap();
    // SAFETY: the registry lock is held by this thread (taken before fork).
    unsafe {
        let registry = REGISTRY.value_while_held();
        let mut heap = registry.all;
        while !heap.is_null() {
            let next = (*heap).all_next;
            if heap != current && (*heap).state.load(Ordering::Relaxed) == HeapState::Live as u8 {
                (*heap)
                    .state
                    .store(HeapState::Orphaned as u8, Ordering::Relaxed);
            }
            heap = next;
        }
    }
    crate::domain::STATE_CHANGE.release_after_fork(true);
    crate::debug::LIVE.release_after_fork(true);
    ARENAS.release_after_fork(true);
    REGISTRY.release_after_fork(true);
}

// ---------------------------------------------------------------------------
// Statistics

/// What statistics need to know about heaps.
#[derive(Default, Debug, Clone, Copy)]
pub struct HeapTotals {
    pub created: usize,
    pub live: usize,
    pub abandoned: usize,
    pub free: usize,
    pub abandoned_pools: usize,
    pub remote_frees: u64,
    pub pools_taken: u64,
    pub pools_given_back: u64,
    pub metadata_bytes: usize,
}

/// Blocks held in the block caches of all heaps, per class. A cached block
/// counts as allocated in its pool; statistics count it as available.
pub fn cached_blocks() -> [usize; NUM_SIZE_CLASSES] {
    let registry = REGISTRY.lock();
    let mut cached = [0; NUM_SIZE_CLASSES];
    let mut heap = registry.all;
    // SAFETY: heap records are never unmapped, and the registry lock keeps
    // `all_next` still. Their owners write their caches meanwhile, so each
    // cache is read through a raw pointer (`held_at`), never a reference.
    unsafe {
        while !heap.is_null() {
            let caches = ptr::addr_of!((*heap).cache).cast::<BlockCache>();
            for (class, count) in cached.iter_mut().enumerate() {
                *count += BlockCache::held_at(caches.add(class));
            }
            heap = (*heap).all_next;
        }
    }
    cached
}

pub fn totals() -> HeapTotals {
    let registry = REGISTRY.lock();
    let mut totals = HeapTotals {
        created: registry.created,
        metadata_bytes: registry.metadata_bytes,
        ..HeapTotals::default()
    };
    let mut heap = registry.all;
    // SAFETY: heap records are never unmapped, and the registry lock keeps
    // `all_next` still. Their owners write them meanwhile, so only atomic
    // fields are read, each through a raw field pointer: never a reference
    // to a whole heap (see `pool`'s module essay).
    unsafe {
        while !heap.is_null() {
            let pools = (*ptr::addr_of!((*heap).pools_owned)).load(Ordering::Relaxed);
            match (*ptr::addr_of!((*heap).state)).load(Ordering::Relaxed) {
                1 => totals.live += 1,
                // Orphaned heaps (fork children) hold their pools for good.
                2 | 4 => {
                    totals.abandoned += 1;
                    totals.abandoned_pools += pools;
                }
                _ => totals.free += 1,
            }
            let counters = ptr::addr_of!((*heap).counters);
            totals.remote_frees +=
                (*ptr::addr_of!((*counters).remote_frees_received)).load(Ordering::Relaxed);
            totals.pools_taken += (*ptr::addr_of!((*counters).pools_taken)).load(Ordering::Relaxed);
            totals.pools_given_back +=
                (*ptr::addr_of!((*counters).pools_given_back)).load(Ordering::Relaxed);
            heap = (*heap).all_next;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator;
    use crate::pool::pool_of;
    use std::sync::mpsc;

    fn owner_of(block: *mut u8) -> *mut Heap {
        // SAFETY: a live block's pool header is initialised.
        unsafe { (*pool_of(block as usize)).owner.load(Ordering::Relaxed) }
    }

    #[test]
    fn blocks_of_one_thread_come_from_its_heap() {
        let blocks: Vec<_> = (0..1000).map(|i| alloc(i % NUM_SIZE_CLASSES)).collect();
        let heap = thread::current_heap();
        assert!(!heap.is_null());
        assert!(blocks.iter().all(|&b| owner_of(b) == heap));
        for block in blocks {
            // SAFETY: live blocks of this thread.
            unsafe { free(block) };
        }
    }

    #[test]
    fn freed_blocks_wait_in_the_block_cache_until_trim() {
        std::thread::spawn(|| {
            let class = 5;
            let first = alloc(class);
            // SAFETY: a live block of this thread.
            unsafe { free(first) };
            assert_eq!(
                alloc(class),
                first,
                "the cached block serves the next allocation"
            );
            let heap = thread::current_heap();
            // SAFETY: this thread's heap; `len` reads an atomic.
            let cached = || unsafe { (*heap).cache[class].held() };
            let limit = block_cache::limit_for(class, block_cache::bytes_per_class()) as usize;
            let blocks: Vec<_> = (0..3 * limit).map(|_| alloc(class)).collect();
            for &block in &blocks {
                // SAFETY: live blocks of this thread.
                unsafe { free(block) };
                assert!((1..=limit).contains(&cached()), "bounded by its limit");
            }
            // SAFETY: this thread's pool record of a live block.
            let used = || unsafe { (*pool_of(first as usize)).used() };
            let used_before = used();
            // SAFETY: this thread's own heap.
            unsafe { trim(heap) };
            assert_eq!(cached(), 0, "trim empties the caches");
            assert!(
                used() < used_before || used() == 1,
                "and the blocks went back to their pools"
            );
            // SAFETY: still live.
            unsafe { free(first) };
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
            // SAFETY: this thread's heap; `held` reads an atomic.
            assert_eq!(unsafe { (*heap).cache[class].held() }, limit, "cached");
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
            let mut cached = unsafe { (*heap).cache[class].head_for_tests() };
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
    fn a_thread_reuses_the_blocks_it_frees_for_another_heap() {
        let class = 6;
        let block = alloc(class) as usize;
        let heap = thread::current_heap();
        // SAFETY: this thread's own heap: take what is pending first.
        unsafe { collect_remote_frees(heap) };
        let owner = heap as usize;
        std::thread::spawn(move || {
            // A thread's first allocation gives it a heap (until then its
            // cache is the placeholder's, which takes nothing). The heap
            // may be an adopted one whose class caches a collection of
            // remote frees closed: a trim empties and opens them all.
            let first = alloc(0);
            // SAFETY: this thread's block and heap, and a live block
            // handed over to it.
            unsafe {
                free(first);
                trim(thread::current_heap());
                free(block as *mut u8);
            }
            let again = alloc(class);
            assert_eq!(again as usize, block, "cached where it was freed, reused");
            assert_eq!(owner_of(again) as usize, owner, "its pool keeps its owner");
            // SAFETY: live again; at exit the thread's cache is flushed.
            unsafe { free(again) };
        })
        .join()
        .unwrap();
        // SAFETY: this thread's own heap.
        unsafe {
            assert!(
                collect_remote_frees(heap),
                "the exiting thread's cache sent the block back to its owner"
            );
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
        let totals = super::totals();
        assert!(totals.pools_given_back > 0);
    }

    #[test]
    fn allocation_after_thread_exit_uses_the_system_allocator() {
        std::thread::spawn(|| {
            let _ = alloc(0); // attach a heap
            thread::set_current_heap(exited_heap());
            let block = alloc(2);
            assert!(!block.is_null());
            assert!(!allocator::owns(block));
            // SAFETY: a system block, freed through the ownership check.
            unsafe { allocator::free(block) };
            // At exit the pthread key destructor still abandons the real heap.
        })
        .join()
        .unwrap();
    }
}
