//! The block cache: a few blocks of each size class that the owning thread
//! freed, kept in its heap for its next allocations of that class.
//!
//! Why: CPython's pools are kept nearly full on purpose (allocation takes
//! the pool most recently freed into), so when a program frees blocks at
//! random among many pools, as one with a large, changing set of live
//! objects does, almost every free lands in a full pool (which must go back
//! on its class list) and the next allocation exhausts it again (off the
//! list). Measured on the churn workload of `benches/c/pairs.c` (100,000
//! live blocks, random replacement; callgrind), operations take markedly
//! fewer instructions with the cache than without, and fewer than CPython's
//! pymalloc (the figures: BENCHMARKS.md, "Instructions per operation").
//! A freed block parked here is handed out again by the next allocation of
//! its class without its pool being touched; pools see only the overflow.
//!
//! A cache holds at most `limit` blocks (from a byte budget per class,
//! `PYMALLOC_BLOCK_CACHE_BYTES`, default [`DEFAULT_BYTES_PER_CLASS`]).
//! Once it is full, frees go straight to their pools, inline, so a burst of
//! frees (a teardown, a garbage collection) costs what it would without a
//! cache: the cache keeps the first blocks of the burst, for the next
//! allocations. Cached blocks still count as allocated in their pool (a
//! pool with a cached block is not empty and is not returned), so when a
//! free past the full cache empties a pool, the class's cached blocks go
//! back to their pools as well (`heap`): blocks kept from before the burst
//! would otherwise pin pools scattered over the heap, and the class's next
//! allocations would be spread over them. The few pools the cache keeps
//! are all a burst leaves behind, and their arenas' free pools are purged
//! after the decay time (see `arena`). Statistics report
//! cached blocks as available, and `PyCore_Trim` and thread exit give them
//! all back to their pools. A budget of 0 turns the caches off.
//!
//! A thread caches every block it frees, whichever heap owns the block's
//! pool (so the free path needs no ownership test): a thread that frees
//! another's objects, as a consumer does, serves its next allocations
//! with them. Blocks of other heaps' pools leave the cache through their
//! owners' remote-free stacks (`heap`).
//!
//! Only the thread whose heap holds a cache writes it (plain stores to its
//! atomics, or, on the free fast path, one `sub` on `room` in place, never
//! a read-modify-write another thread could interleave with); statistics
//! read `room` and `limit` to count the blocks held, through raw field
//! pointers ([`BlockCache::held_at`]). Every operation takes the cache by
//! raw pointer, never `&mut`, for that reason.

use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use crate::pool::Block;
use crate::size_class::block_size;

/// Bytes of blocks each class's cache may hold, unless
/// `PYMALLOC_BLOCK_CACHE_BYTES` says otherwise.
pub const DEFAULT_BYTES_PER_CLASS: usize = 4096;

/// However large its blocks, a class caches at least this many (when the
/// budget is not 0), so that a workload of large blocks is served too.
const MIN_BLOCKS: usize = 8;

/// However small its blocks, a class caches at most this many: a page of
/// the smallest class (4096 / 16), so that the default budget takes a
/// whole carved page of any class in one refill (`heap::pools`).
const MAX_BLOCKS: usize = 256;

static BYTES_PER_CLASS: AtomicUsize = AtomicUsize::new(DEFAULT_BYTES_PER_CLASS);

/// Set the byte budget per class for heaps created from now on.
pub fn set_bytes_per_class(bytes: usize) {
    BYTES_PER_CLASS.store(bytes, Relaxed);
}

pub fn bytes_per_class() -> usize {
    BYTES_PER_CLASS.load(Relaxed)
}

/// How many blocks of `class` a cache holds with `budget` bytes per class.
pub fn limit_for(class: usize, budget: usize) -> u32 {
    if budget == 0 {
        return 0;
    }
    (budget / block_size(class)).clamp(MIN_BLOCKS, MAX_BLOCKS) as u32
}

/// One class's cache: a stack of free blocks linked through their first
/// word, holding at most `limit`. Frees push onto it and allocations pop
/// from it; a free that finds it full goes straight to its pool. 16 bytes,
/// one per class side by side in the heap, so that a class's entry is
/// found from its block size with no arithmetic.
#[repr(C)]
pub struct BlockCache {
    head: *mut Block,
    /// Blocks the stack may still take (0 while closed).
    room: AtomicU32,
    /// Most blocks the stack holds, with `CLOSED` set while the cache is
    /// closed (see [`BlockCache::close`]). Atomic for statistics' reads.
    limit: AtomicU32,
}

/// Byte offset of `room` in a cache, for the free fast path's one-instruction
/// room test (`heap::cache_take_room`), which decrements it in place: a
/// borrow (it held 0) means no room, and it is set back with
/// [`clear_room`].
pub const ROOM_OFFSET: usize = core::mem::offset_of!(BlockCache, room);

/// Set `room` back to 0 after a decrement in place found it at 0.
///
/// # Safety
/// `cache` is a cache of the calling thread's heap.
#[cold]
pub unsafe fn clear_room(cache: *mut BlockCache) {
    // SAFETY: valid pointer (caller); an atomic field.
    unsafe { (*ptr::addr_of!((*cache).room)).store(0, Relaxed) };
}

/// In `limit`: the cache is closed, empty and takes nothing.
const CLOSED: u32 = 1 << 31;

const _: () = assert!(core::mem::size_of::<BlockCache>() == 16);

impl BlockCache {
    pub const fn empty() -> BlockCache {
        BlockCache::with_limit(0)
    }

    pub const fn with_limit(limit: u32) -> BlockCache {
        BlockCache {
            head: null_mut(),
            room: AtomicU32::new(limit),
            limit: AtomicU32::new(limit),
        }
    }

    // Every operation below takes the cache by raw pointer, never `&` or
    // `&mut`: statistics read `room` and `limit` from other threads while
    // the owner works on the cache (the rule of `pool`'s module essay).

    /// Whether the stack holds a block (a read only: the placeholder
    /// heaps' caches, which are never written, are only ever read so).
    ///
    /// # Safety
    /// `cache` is a cache of the calling thread's heap, or a placeholder's.
    #[inline(always)]
    pub unsafe fn has_blocks(cache: *const BlockCache) -> bool {
        // SAFETY: valid pointer (caller); `head` is the owner's field.
        unsafe { !(*cache).head.is_null() }
    }

    /// Blocks held by the cache at `cache`, read from any thread (by
    /// statistics) through raw field pointers to its two atomics, `room`
    /// and `limit`, while the owner may write `head`.
    ///
    /// # Safety
    /// `cache` points to a live cache of a heap whose creation the caller
    /// has seen (statistics hold the heap registry's lock).
    pub unsafe fn held_at(cache: *const BlockCache) -> usize {
        // SAFETY: valid pointer (caller); both fields are atomics.
        let (limit, room) = unsafe {
            (
                (*ptr::addr_of!((*cache).limit)).load(Relaxed),
                (*ptr::addr_of!((*cache).room)).load(Relaxed),
            )
        };
        if limit & CLOSED != 0 {
            return 0;
        }
        limit.saturating_sub(room) as usize
    }

    /// Take the most recently cached block, or null.
    ///
    /// # Safety
    /// `cache` is a cache of the calling thread's heap; the cached blocks
    /// are blocks given up to the cache, so their first words are links.
    #[inline(always)]
    pub unsafe fn pop(cache: *mut BlockCache) -> *mut Block {
        // SAFETY: the owner's cache (caller); a cached block is free and
        // its first word links on; `room` is an atomic field.
        unsafe {
            let block = (*cache).head;
            if !block.is_null() {
                (*cache).head = (*block).next;
                let room = &*ptr::addr_of!((*cache).room);
                room.store(room.load(Relaxed) + 1, Relaxed);
            }
            block
        }
    }

    /// Park `block`; false (and nothing done) when the stack is full. The
    /// free fast path does the same in two steps (`heap::cache_take_room`,
    /// then [`Self::push_counted`]).
    ///
    /// # Safety
    /// `cache` is a cache of the calling thread's heap; `block` is a live
    /// block of this cache's class that it gives up (from any heap's pool).
    #[cfg(test)]
    pub unsafe fn push(cache: *mut BlockCache, block: *mut Block) -> bool {
        // SAFETY: as guaranteed by the caller; room is taken first.
        unsafe {
            if !Self::take_room(cache) {
                return false;
            }
            Self::push_counted(cache, block);
        }
        true
    }

    /// Park `block` in the place [`Self::take_room`] took for it.
    ///
    /// # Safety
    /// As for [`Self::push`], and room was taken for this block.
    #[inline(always)]
    pub unsafe fn push_counted(cache: *mut BlockCache, block: *mut Block) {
        // SAFETY: the caller gives up the block, so its first word is
        // ours; the owner's cache.
        unsafe {
            (*block).next = (*cache).head;
            (*cache).head = block;
        }
    }

    /// Places left: how many blocks the cache takes before it is full.
    ///
    /// # Safety
    /// As for [`Self::pop`].
    #[inline]
    pub unsafe fn room(cache: *const BlockCache) -> u32 {
        // SAFETY: as guaranteed by the caller; an atomic field.
        unsafe { (*ptr::addr_of!((*cache).room)).load(Relaxed) }
    }

    /// Park the `count` blocks of the list `first` ..= `last` (linked
    /// through their first words), which must fit ([`Self::room`]).
    ///
    /// # Safety
    /// As for [`Self::push`], for every block of the list; `count` is its
    /// length and at most the cache's room.
    pub unsafe fn push_list(
        cache: *mut BlockCache,
        first: *mut Block,
        last: *mut Block,
        count: u32,
    ) {
        // SAFETY: as guaranteed by the caller.
        unsafe {
            let room = &*ptr::addr_of!((*cache).room);
            debug_assert!(count <= room.load(Relaxed));
            (*last).next = (*cache).head;
            (*cache).head = first;
            room.store(room.load(Relaxed) - count, Relaxed);
        }
    }

    /// Make `first`, a null-terminated list of `count` blocks, the
    /// contents of this empty cache, with no walk to its end.
    ///
    /// # Safety
    /// As for [`Self::push_list`]; the cache holds no block.
    pub unsafe fn fill_empty(cache: *mut BlockCache, first: *mut Block, count: u32) {
        // SAFETY: as guaranteed by the caller.
        unsafe {
            debug_assert!((*cache).head.is_null());
            let room = &*ptr::addr_of!((*cache).room);
            debug_assert!(count <= room.load(Relaxed));
            (*cache).head = first;
            room.store(room.load(Relaxed) - count, Relaxed);
        }
    }

    /// Take one unit of `room` (a place for one block): false, and `room`
    /// left at 0, when there was none.
    ///
    /// # Safety
    /// `cache` is a cache whose owning thread is the caller.
    #[inline(always)]
    pub unsafe fn take_room(cache: *mut BlockCache) -> bool {
        // SAFETY: valid pointer (caller) to an atomic field.
        let room = unsafe { &*ptr::addr_of!((*cache).room) };
        let left = room.load(Relaxed);
        if left == 0 {
            return false;
        }
        room.store(left - 1, Relaxed);
        true
    }

    /// The most recently cached block (tests walk the stack from it).
    ///
    /// # Safety
    /// As for [`Self::pop`].
    #[cfg(test)]
    pub unsafe fn head_for_tests(cache: *const BlockCache) -> *mut Block {
        // SAFETY: as guaranteed by the caller.
        unsafe { (*cache).head }
    }

    /// Empty the cache: its blocks, a null-terminated list for the pools.
    /// A closed cache opens again.
    ///
    /// # Safety
    /// As for [`Self::pop`].
    pub unsafe fn take_all(cache: *mut BlockCache) -> *mut Block {
        // SAFETY: as guaranteed by the caller.
        unsafe {
            let blocks = (*cache).head;
            (*cache).head = null_mut();
            Self::open(cache);
            blocks
        }
    }

    /// Empty the cache and take no block until [`Self::open`]: frees
    /// go straight to their pools meanwhile. For a burst of frees that
    /// empties pools (a teardown, a collection): the cache is emptied
    /// once, not each time it would fill again and another pool empties.
    ///
    /// # Safety
    /// As for [`Self::pop`].
    pub unsafe fn close(cache: *mut BlockCache) -> *mut Block {
        // SAFETY: as guaranteed by the caller; atomics through field
        // pointers.
        unsafe {
            let blocks = (*cache).head;
            (*cache).head = null_mut();
            (*ptr::addr_of!((*cache).room)).store(0, Relaxed);
            let limit = &*ptr::addr_of!((*cache).limit);
            limit.store(limit.load(Relaxed) | CLOSED, Relaxed);
            blocks
        }
    }

    /// Whether the cache is closed (see [`Self::close`]).
    ///
    /// # Safety
    /// As for [`Self::pop`].
    #[inline(always)]
    pub unsafe fn is_closed(cache: *const BlockCache) -> bool {
        // SAFETY: valid pointer (caller) to an atomic field.
        unsafe { (*ptr::addr_of!((*cache).limit)).load(Relaxed) & CLOSED != 0 }
    }

    /// Take blocks again (up to the limit) if the cache was closed.
    ///
    /// # Safety
    /// As for [`Self::pop`].
    pub unsafe fn open(cache: *mut BlockCache) {
        // SAFETY: as guaranteed by the caller; atomics through field
        // pointers.
        unsafe {
            let limit_field = &*ptr::addr_of!((*cache).limit);
            let limit = limit_field.load(Relaxed) & !CLOSED;
            limit_field.store(limit, Relaxed);
            if (*cache).head.is_null() {
                (*ptr::addr_of!((*cache).room)).store(limit, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NUM_SIZE_CLASSES;

    #[test]
    fn limits_follow_the_byte_budget_within_bounds() {
        assert_eq!(limit_for(0, 0), 0);
        assert_eq!(limit_for(NUM_SIZE_CLASSES - 1, 0), 0);
        for class in 0..NUM_SIZE_CLASSES {
            let limit = limit_for(class, DEFAULT_BYTES_PER_CLASS) as usize;
            assert!((MIN_BLOCKS..=MAX_BLOCKS).contains(&limit));
            let bytes = limit * block_size(class);
            assert!(bytes <= DEFAULT_BYTES_PER_CLASS || limit == MIN_BLOCKS);
        }
    }

    fn is_full(cache: *const BlockCache) -> bool {
        // SAFETY: the test's own cache.
        unsafe { (*cache).room.load(Relaxed) == 0 }
    }

    fn held(cache: *const BlockCache) -> usize {
        // SAFETY: the test's own cache.
        unsafe { BlockCache::held_at(cache) }
    }

    fn list(mut block: *mut Block) -> Vec<*mut Block> {
        let mut blocks = Vec::new();
        while !block.is_null() {
            blocks.push(block);
            // SAFETY: the test's own words, linked by the cache.
            block = unsafe { (*block).next };
        }
        blocks
    }

    #[test]
    fn the_stack_takes_up_to_its_limit_and_gives_back_newest_first() {
        let mut storage = [[0usize; 2]; 4];
        let blocks: Vec<*mut Block> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
        let cache: *mut BlockCache = &mut BlockCache::with_limit(3);
        // SAFETY: the "blocks" are this test's own words, used as links.
        unsafe {
            for &block in &blocks[..3] {
                assert!(!is_full(cache));
                assert!(BlockCache::push(cache, block));
            }
            assert!(is_full(cache));
            assert!(
                !BlockCache::push(cache, blocks[3]),
                "full: the block goes to its pool"
            );
            assert_eq!(held(cache), 3);
            assert_eq!(BlockCache::pop(cache), blocks[2]);
            assert_eq!(held(cache), 2);
            assert!(BlockCache::push(cache, blocks[3]));
            assert_eq!(
                list(BlockCache::take_all(cache)),
                vec![blocks[3], blocks[1], blocks[0]]
            );
            assert_eq!(held(cache), 0);
            assert!(BlockCache::pop(cache).is_null());
            assert!(!BlockCache::has_blocks(cache) && !is_full(cache));
        }
    }

    #[test]
    fn a_closed_cache_takes_nothing_until_opened() {
        let mut storage = [[0usize; 2]; 3];
        let blocks: Vec<*mut Block> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
        let cache: *mut BlockCache = &mut BlockCache::with_limit(2);
        // SAFETY: the "blocks" are this test's own words, used as links.
        unsafe {
            assert!(BlockCache::push(cache, blocks[0]));
            assert_eq!(list(BlockCache::close(cache)), vec![blocks[0]]);
            assert_eq!(held(cache), 0, "closed: holds nothing");
            assert!(
                !BlockCache::push(cache, blocks[1]),
                "closed: the block goes to its pool"
            );
            assert!(BlockCache::pop(cache).is_null());
            BlockCache::open(cache);
            assert!(BlockCache::push(cache, blocks[1]) && BlockCache::push(cache, blocks[2]));
            assert!(is_full(cache), "open again, with its whole limit");
            assert_eq!(held(cache), 2);
            assert_eq!(
                list(BlockCache::take_all(cache)),
                vec![blocks[2], blocks[1]]
            );
        }
    }

    #[test]
    fn a_cache_without_room_takes_nothing() {
        let mut word = [0usize; 2];
        let cache: *mut BlockCache = &mut BlockCache::empty();
        assert!(is_full(cache));
        // SAFETY: a local word used as a link.
        unsafe { assert!(!BlockCache::push(cache, word.as_mut_ptr().cast())) };
        assert_eq!(held(cache), 0);
    }
}
