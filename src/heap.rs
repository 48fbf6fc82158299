//! Per-thread heaps: what a heap is, and the allocation and free fast
//! paths.
//!
//! Each thread that allocates gets a heap. A heap owns pools: for each size
//! class a list of pools that have (or may carve) free blocks, headed by
//! `avail[class]`; full pools are on no list; empty pools are kept in a
//! small cache. Only the heap's thread touches these, so the owner-local
//! paths use no atomic read-modify-write and no lock:
//!
//! * allocate: pop the class's block cache, the one tier inline; when it
//!   is empty, out of line, take a block from the `avail[class]` pool and
//!   move the rest of its free list (as far as the cache has room) into
//!   the cache, counting them all allocated (`used += n`);
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
//!
//! This module holds the heap record and the fast paths, which are
//! `#[inline(always)]` so that the exports inline them; its submodules
//! hold the rest:
//!
//! * `pools`: the slow paths, everything a heap does with the pools it
//!   owns: taking a pool, the class lists, full and emptied pools, frees
//!   from other threads and taking them back, trimming;
//! * `registry`: every heap ever made (records from a
//!   [`slab`](crate::slab), never unmapped), giving a thread a heap,
//!   abandoning, adopting and reclaiming heaps, and the registry's part of
//!   `fork()` handling (whose lock order [`fork`](crate::fork) owns).
//!
//! Threads other than a heap's own read it only through raw pointers to
//! its atomic fields (`observe`), never through a `&Heap` to the whole
//! record (the rule of `pool`'s module essay); statistics sum what the
//! registry's walk reads so ([`stats`](crate::stats)).

use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::block_cache::{self, BlockCache};
use crate::config::{ALIGNMENT, NUM_SIZE_CLASSES};
use crate::pool::{self, Block, Pool, EMPTY_POOL};
use crate::thread;

mod pools;
mod registry;

pub use registry::trim_all;
pub(crate) use registry::{lock_for_fork, unlock_after_fork, walk};

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
    /// Per class, its block cache. First in the struct: both fast paths
    /// use it.
    classes: [ClassSlot; NUM_SIZE_CLASSES],
    /// Per class, the first pool that may have free blocks, or the empty
    /// sentinel: where the slow path refills the cache from.
    avail: [ListHead; NUM_SIZE_CLASSES],
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

/// One size class's part of a heap that both fast paths use: its block
/// cache. With the default 16-byte class spacing a slot is as large as the
/// spacing, so that the slot's offset is `class * ALIGNMENT`, which an
/// allocation gets from the request size with one `and` and a free reads
/// from its pool's block size (less a constant folded into the address;
/// see [`class_offset`]). The class lists' heads (`Heap::avail`) lie
/// apart: keeping them in the slot made it 32 bytes and cost the
/// allocation an instruction to scale the offset (pair 44.0 to 43.0 in
/// `make bench-instructions` when they moved out), while only an
/// allocation that finds its cache empty reads them.
#[repr(C, align(16))]
pub(super) struct ClassSlot {
    /// Blocks this thread freed, handed out first (see [`block_cache`]).
    cache: BlockCache,
}

const _: () = assert!(core::mem::size_of::<ClassSlot>() == 16);
const _: () = assert!(core::mem::size_of::<ClassSlot>().is_multiple_of(ALIGNMENT));

impl ClassSlot {
    const fn new(cache: BlockCache) -> ClassSlot {
        ClassSlot { cache }
    }
}

/// The head of a class's list of pools with free blocks, padded to the
/// class spacing so that, like a [`ClassSlot`], its offset in `Heap::avail`
/// is `class * ALIGNMENT`: the allocation that finds its cache empty
/// reaches it from the offset it already holds, with no shift.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub(super) struct ListHead(*mut Pool);

const _: () = assert!(core::mem::size_of::<ListHead>() == ALIGNMENT);

/// The slot of `class` in `heap`.
///
/// # Safety
/// `heap` points to a heap record; `class < NUM_SIZE_CLASSES`.
#[inline(always)]
unsafe fn slot_of(heap: *mut Heap, class: usize) -> *mut ClassSlot {
    debug_assert!(class < NUM_SIZE_CLASSES);
    // SAFETY: guaranteed by the caller: inside the record's array.
    unsafe {
        ptr::addr_of_mut!((*heap).classes)
            .cast::<ClassSlot>()
            .add(class)
    }
}

/// The block cache of `class` in `heap`.
///
/// # Safety
/// As for [`slot_of`].
#[inline(always)]
unsafe fn cache_of(heap: *mut Heap, class: usize) -> *mut BlockCache {
    // SAFETY: as guaranteed by the caller.
    unsafe { ptr::addr_of_mut!((*slot_of(heap, class)).cache) }
}

/// The first pool of `class`'s list in `heap` (the empty sentinel when
/// none has a free block).
///
/// # Safety
/// As for [`slot_of`]; the caller has exclusive use of `heap` or reads a
/// placeholder (never written).
#[inline(always)]
unsafe fn avail_of(heap: *mut Heap, class: usize) -> *mut Pool {
    // SAFETY: as guaranteed by the caller.
    unsafe { *avail_slot(heap, class) }
}

/// Set the first pool of `class`'s list in `heap`.
///
/// # Safety
/// As for [`slot_of`]; exclusive use of `heap`, which owns `pool` (or it
/// is the sentinel).
#[inline(always)]
unsafe fn set_avail(heap: *mut Heap, class: usize, pool: *mut Pool) {
    // SAFETY: as guaranteed by the caller.
    unsafe { *avail_slot(heap, class) = pool }
}

/// Where `heap` keeps the first pool of `class`'s list.
///
/// # Safety
/// As for [`slot_of`].
#[inline(always)]
unsafe fn avail_slot(heap: *mut Heap, class: usize) -> *mut *mut Pool {
    debug_assert!(class < NUM_SIZE_CLASSES);
    // SAFETY: guaranteed by the caller: inside the record's array, whose
    // entries hold the pointer first.
    unsafe {
        ptr::addr_of_mut!((*heap).avail)
            .cast::<ListHead>()
            .add(class)
            .cast::<*mut Pool>()
    }
}

/// A heap that owns nothing: every class cache is empty and every class
/// slot is the empty sentinel, so allocations fall into the slow path, and
/// no pool names it as owner, so frees take the cross-thread path.
const fn placeholder_heap() -> Heap {
    Heap {
        classes: [const { ClassSlot::new(BlockCache::empty()) }; NUM_SIZE_CLASSES],
        avail: [ListHead(EMPTY_POOL.as_ptr()); NUM_SIZE_CLASSES],
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
    // The slot is found from `class * ALIGNMENT`, which a request size
    // gives with one `and` (`(size - 1) & !(ALIGNMENT - 1)`) and which is
    // the slot's offset itself (16-byte slots); the class itself is only
    // needed past the cache, which takes it back from that offset.
    let class_bytes = class * ALIGNMENT;
    let heap = thread::current_heap();
    // SAFETY: the slot holds this thread's heap or a never-written
    // placeholder, whose caches are empty (so only read here, never
    // borrowed mutably); cached blocks are blocks given up to the cache
    // (of any heap's pools, still counted as allocated there); `class` is
    // in range, so the offset selects its slot.
    unsafe {
        let slot = ptr::addr_of_mut!((*heap).classes)
            .cast::<ClassSlot>()
            .byte_add(class_bytes * (core::mem::size_of::<ClassSlot>() / ALIGNMENT));
        let cache = ptr::addr_of_mut!((*slot).cache);
        if BlockCache::has_blocks(cache) {
            return BlockCache::pop(cache).cast();
        }
    }
    pools::alloc_slow(heap, class_bytes)
}

/// Where `address` lies in the arena space as `heap` knows it: its offset
/// from the space's base, or `None` outside it (always, until the heap
/// has learnt the bounds, see [`learn_span`]). Frees test this first, so
/// that a block of ours costs no global load; `None` sends the block to
/// the cold path, which asks the space itself. The offset locates the
/// block's pool record ([`free_in`]).
///
/// # Safety
/// `heap` is [`thread::current_heap`].
#[inline(always)]
pub unsafe fn span_offset(heap: *mut Heap, address: usize) -> Option<usize> {
    // SAFETY: `heap` is the calling thread's heap (or a never-written
    // placeholder): never unmapped, and its span fields are only written by
    // its own thread (`learn_span`), so this read races with nothing.
    let (base, size) = unsafe { ((*heap).span_base, (*heap).span_size) };
    let offset = address.wrapping_sub(base);
    (offset < size).then_some(offset)
}

/// Copy the arena space's bounds into `heap`, the calling thread's, after
/// the space said it contains a block that [`span_offset`] did not know
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
        unsafe { free_to_cache(heap, pool::pool_of(block as usize), block) }
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
/// was returned by `alloc` and not freed since; `span_offset` is what
/// [`span_offset`] gave for it.
#[inline(always)]
pub unsafe fn free_in(heap: *mut Heap, block: *mut u8, span_offset: usize) {
    let pool = pool::pool_of_span_offset(block as usize, span_offset);
    // SAFETY: guaranteed by the caller; `pool` is the block's.
    unsafe { free_to_cache(heap, pool, block) }
}

/// [`free_in`], given the block's pool.
///
/// # Safety
/// As for [`free_in`]; `pool` is the record of the pool holding `block`.
#[inline(always)]
unsafe fn free_to_cache(heap: *mut Heap, pool: *mut Pool, block: *mut u8) {
    // SAFETY: `block` is live, so its pool's record is initialised and its
    // block size fixed until the pool empties; `heap` is the calling
    // thread's real heap (caller), the only writer of its caches.
    unsafe {
        let block_size = (*pool).block_size;
        if !cache_take_room(heap, block_size) {
            free_uncached(heap, pool, block.cast());
            return;
        }
        BlockCache::push_counted(cache_of_class_size(heap, block_size), block.cast());
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
    if core::mem::size_of::<ClassSlot>() == ALIGNMENT {
        // The slot of blocks of `block_size` bytes starts at
        // `class_offset(block_size) = block_size - ALIGNMENT` into
        // `classes`.
        const ROOM: isize = (core::mem::offset_of!(Heap, classes)
            + core::mem::offset_of!(ClassSlot, cache)
            + block_cache::ROOM_OFFSET) as isize
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
    // A plain read, which the compare can take from memory (an atomic load
    // is not folded into it): `owner` is only written while the pool has
    // no live block, before its blocks are handed out or after all came
    // back, and the caller holds a live block of it, so no write can race
    // with this read (see the module essay).
    // SAFETY: a live block's pool record, and its owner field unchanging.
    let owner = unsafe { *ptr::addr_of!((*pool).owner).cast::<*mut Heap>() };
    // A placeholder heap owns no pool, so it never matches.
    if owner == heap {
        // SAFETY: this thread owns the pool.
        unsafe { free_local(heap, pool, block) }
    } else {
        // The owner is read again there, so that the test here compares
        // with the record in memory and keeps no register for it.
        // SAFETY: as above.
        unsafe { pools::free_remote(block, pool) };
    }
}

/// The block cache of `heap` for blocks of `block_size` bytes. The pool
/// record's block size (next to its owner, which free reads anyway) gives
/// the cache's address with no table and, with the default 16-byte
/// spacing and 16-byte slots, no arithmetic beyond the addressing mode:
/// class `c` has blocks of `(c + 1) * ALIGNMENT` bytes.
///
/// # Safety
/// `block_size` is the block size of one of the size classes.
#[inline(always)]
unsafe fn cache_of_class_size(heap: *mut Heap, block_size: u32) -> *mut BlockCache {
    // SAFETY: guaranteed by the caller; the offset selects entry `class`.
    unsafe {
        let first = ptr::addr_of_mut!((*heap).classes).cast::<ClassSlot>();
        let slot = first.byte_add(class_offset::<ClassSlot>(block_size));
        ptr::addr_of_mut!((*slot).cache)
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

/// [`block_usable_size`] of a block of the arena space, given its offset
/// there (from [`span_offset`]).
///
/// # Safety
/// `block` is a live block of ours at `span_offset` in the arena space.
#[inline(always)]
pub unsafe fn usable_size_in_span(block: *mut u8, span_offset: usize) -> usize {
    // SAFETY: a live block's pool record is initialised and its block size
    // fixed until the pool empties.
    unsafe { (*pool::pool_of_span_offset(block as usize, span_offset)).block_size as usize }
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
        // A pool whose free list was empty is full: `release_one` tells
        // (see `pool::FULL_MARK`).
        (*block).next = (*pool).free;
        (*pool).free = block;
        if !pool::release_one(pool) {
            pools::pool_changed_list(heap, pool);
        }
    }
}

// ---------------------------------------------------------------------------
// What other threads may read

/// What a thread other than its owner may read of a heap, for statistics:
/// its atomics, each read on its own (the owner may change them between
/// two reads).
#[derive(Clone, Copy, Debug)]
pub struct HeapView {
    pub state: HeapState,
    /// Pools the heap owns: on class lists, full, or cached empty.
    pub pools_owned: usize,
    pub remote_frees_received: u64,
    pub pools_taken: u64,
    pub pools_given_back: u64,
    /// Per class, the blocks waiting in the heap's block cache.
    pub cached_blocks: [usize; NUM_SIZE_CLASSES],
}

/// Read what other threads may of the heap at `heap` while its owner
/// updates it: only atomic fields, each through a raw field pointer, never
/// a reference to the whole heap or a whole block cache (see `pool`'s
/// module essay).
///
/// # Safety
/// `heap` is a heap record whose creation the caller has seen (the
/// registry's walk visits such records; they are never unmapped).
unsafe fn observe(heap: *const Heap) -> HeapView {
    // SAFETY: a created, never unmapped record (caller); every field read
    // is an atomic, reached through raw pointers.
    unsafe {
        let counters = ptr::addr_of!((*heap).counters);
        let slots = ptr::addr_of!((*heap).classes).cast::<ClassSlot>();
        HeapView {
            state: match (*ptr::addr_of!((*heap).state)).load(Ordering::Relaxed) {
                1 => HeapState::Live,
                2 => HeapState::Abandoned,
                4 => HeapState::Orphaned,
                _ => HeapState::Free,
            },
            pools_owned: (*ptr::addr_of!((*heap).pools_owned)).load(Ordering::Relaxed),
            remote_frees_received: (*ptr::addr_of!((*counters).remote_frees_received))
                .load(Ordering::Relaxed),
            pools_taken: (*ptr::addr_of!((*counters).pools_taken)).load(Ordering::Relaxed),
            pools_given_back: (*ptr::addr_of!((*counters).pools_given_back))
                .load(Ordering::Relaxed),
            cached_blocks: core::array::from_fn(|class| {
                BlockCache::held_at(ptr::addr_of!((*slots.add(class)).cache))
            }),
        }
    }
}

/// The heap owning the pool of the live block `block` (tests).
#[cfg(test)]
fn owner_of(block: *mut u8) -> *mut Heap {
    // SAFETY: a live block's pool header is initialised.
    unsafe {
        (*pool::pool_of(block as usize))
            .owner
            .load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::pools::{collect_remote_frees, trim};
    use super::*;
    use crate::allocator;
    use crate::block_cache;
    use crate::pool::pool_of;

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
            let cached = || unsafe { BlockCache::held_at(cache_of(heap, class)) };
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
