//! The block cache: a few blocks of each size class that the owning thread
//! freed, kept in its heap for its next allocations of that class.
//!
//! Why: CPython's pools are kept nearly full on purpose (allocation takes
//! the pool most recently freed into), so when a program frees blocks at
//! random among many pools, as one with a large, changing set of live
//! objects does, almost every free lands in a full pool (which must go back
//! on its class list) and the next allocation exhausts it again (off the
//! list). Measured on the churn workload of `benches/c/pairs.c` (100,000
//! live blocks, random replacement; callgrind): 183.9 instructions per
//! operation without the cache, 119.3 with it (CPython's pymalloc: 133.4).
//! A freed block parked here is handed out again by the next allocation of
//! its class without its pool being touched; pools see only the overflow.
//! Bursts of frees (a teardown, a garbage collection) pay for it: each
//! block passes through the cache on its way back to its pool.
//!
//! A cache holds at most `limit` blocks (from a byte budget per class,
//! `PYMALLOC_BLOCK_CACHE_BYTES`, default [`DEFAULT_BYTES_PER_CLASS`]), in
//! two halves (see [`BlockCache`]). When it is full, its older half goes
//! back to the pools. Cached blocks still count as allocated in their
//! pool (a pool with a cached block is not empty and is not returned);
//! statistics report them as available, and `PyCore_Trim` and thread exit
//! give them all back to their pools. A budget of 0 turns the caches off.
//!
//! Only the owning thread touches a cache; statistics read `room` (an
//! atomic written with plain stores) to count the blocks held.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use crate::pool::Block;
use crate::size_class::block_size;

/// Bytes of blocks each class's cache may hold, unless
/// `PYMALLOC_BLOCK_CACHE_BYTES` says otherwise.
pub const DEFAULT_BYTES_PER_CLASS: usize = 4096;

/// However large its blocks, a class caches at least this many (when the
/// budget is not 0), so that a workload of large blocks is served too.
const MIN_BLOCKS: usize = 8;

/// However small its blocks, a class caches at most this many: beyond
/// it, longer runs of frees only delay the pools' bookkeeping.
const MAX_BLOCKS: usize = 64;

static BYTES_PER_CLASS: AtomicUsize = AtomicUsize::new(DEFAULT_BYTES_PER_CLASS);

/// Set the byte budget per class for heaps created from now on.
pub fn set_bytes_per_class(bytes: usize) {
    BYTES_PER_CLASS.store(bytes, Relaxed);
}

pub fn bytes_per_class() -> usize {
    BYTES_PER_CLASS.load(Relaxed)
}

/// `PYMALLOC_BLOCK_CACHE_BYTES`: bytes per class, 0 turns the caches off.
pub fn bytes_from_env(value: Option<&str>) -> Result<usize, String> {
    match value {
        None => Ok(DEFAULT_BYTES_PER_CLASS),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(bytes) if bytes <= 1 << 20 => Ok(bytes),
            _ => Err(format!(
                "PYMALLOC_BLOCK_CACHE_BYTES={text:?}: expected a whole number of bytes per size class, 0 to 1048576 (0 turns the block caches off)"
            )),
        },
    }
}

/// How many blocks of `class` a cache holds with `budget` bytes per class.
pub fn limit_for(class: usize, budget: usize) -> u32 {
    if budget == 0 {
        return 0;
    }
    (budget / block_size(class)).clamp(MIN_BLOCKS, MAX_BLOCKS) as u32
}

/// One class's cache: two stacks of free blocks linked through their first
/// word, each holding at most half the limit. Frees push onto the hot
/// stack and allocations pop from it. When the hot stack is full it
/// becomes the reserve, and the previous reserve (the older half) goes
/// back to the pools; when the hot stack is empty, the reserve becomes it.
/// So a flush touches only the blocks it gives back (no walk to find the
/// half to keep), and the blocks kept are the most recently freed.
///
/// The hot stack (`BlockCache`, 16 bytes, one per class side by side in the
/// heap, so that a class's entry is found from its block size with no
/// arithmetic) is what the fast paths touch; the reserve (`Reserve`) lives
/// in a second array, read when the hot stack runs dry.
#[repr(C)]
pub struct BlockCache {
    head: *mut Block,
    /// Blocks the hot stack may still take.
    room: AtomicU32,
    /// Capacity of each stack: half the limit.
    half: u32,
}

const _: () = assert!(core::mem::size_of::<BlockCache>() == 16);

/// The reserve half of a class's cache.
#[repr(C)]
pub struct Reserve {
    blocks: *mut Block,
    /// Blocks in `blocks` (for statistics).
    len: AtomicU32,
}

impl Reserve {
    pub const fn empty() -> Reserve {
        Reserve {
            blocks: null_mut(),
            len: AtomicU32::new(0),
        }
    }

    /// Whether the reserve holds blocks (a shared read, as `has_blocks`).
    #[inline(always)]
    pub fn has_blocks(&self) -> bool {
        !self.blocks.is_null()
    }
}

impl BlockCache {
    pub const fn empty() -> BlockCache {
        BlockCache::with_limit(0)
    }

    pub const fn with_limit(limit: u32) -> BlockCache {
        let half = limit / 2;
        BlockCache {
            head: null_mut(),
            room: AtomicU32::new(half),
            half,
        }
    }

    /// Whether the hot stack holds a block (a shared read: the placeholder
    /// heaps' caches, which are never written, are only ever read so).
    #[inline(always)]
    pub fn has_blocks(&self) -> bool {
        !self.head.is_null()
    }

    /// Whether the cache takes no blocks at all (a budget of 0).
    pub fn is_off(&self) -> bool {
        self.half == 0
    }

    /// Blocks held with `reserve` (read by statistics from any thread).
    pub fn len(&self, reserve: &Reserve) -> usize {
        (self.half.saturating_sub(self.room.load(Relaxed)) + reserve.len.load(Relaxed)) as usize
    }

    /// Take the most recently cached block of the hot stack, or null.
    ///
    /// # Safety
    /// Only the owning thread calls this; the cached blocks are free blocks
    /// of its pools, so their first words are links.
    #[inline(always)]
    pub unsafe fn pop(&mut self) -> *mut Block {
        let block = self.head;
        if !block.is_null() {
            // SAFETY: a cached block is free and its first word links on.
            self.head = unsafe { (*block).next };
            self.room.store(self.room.load(Relaxed) + 1, Relaxed);
        }
        block
    }

    /// The hot stack is empty: make the reserve the hot stack and pop from
    /// it. Null when the reserve is empty too.
    ///
    /// # Safety
    /// As for `pop`; `reserve` is this cache's.
    #[inline]
    pub unsafe fn pop_reserve(&mut self, reserve: &mut Reserve) -> *mut Block {
        if reserve.blocks.is_null() {
            return null_mut();
        }
        debug_assert!(self.head.is_null());
        self.head = reserve.blocks;
        self.room
            .store(self.half - reserve.len.load(Relaxed), Relaxed);
        reserve.blocks = null_mut();
        reserve.len.store(0, Relaxed);
        // SAFETY: guaranteed by the caller.
        unsafe { self.pop() }
    }

    /// Park `block` on the hot stack; false (and nothing done) when it is
    /// full.
    ///
    /// # Safety
    /// Only the owning thread calls this; `block` is a block it just freed
    /// from one of its own pools, of this cache's class.
    #[inline(always)]
    pub unsafe fn push(&mut self, block: *mut Block) -> bool {
        let room = self.room.load(Relaxed);
        if room == 0 {
            return false;
        }
        // SAFETY: the caller gives up the block; its first word is ours.
        unsafe { (*block).next = self.head };
        self.head = block;
        self.room.store(room - 1, Relaxed);
        true
    }

    /// The hot stack is full: it becomes the reserve, and the previous
    /// reserve (the older half) is returned, a null-terminated list for
    /// the pools. The hot stack is then empty, with room for `half` blocks
    /// (none when the cache is off).
    pub fn rotate(&mut self, reserve: &mut Reserve) -> *mut Block {
        let older = reserve.blocks;
        reserve.blocks = self.head;
        reserve
            .len
            .store(self.half - self.room.load(Relaxed), Relaxed);
        self.head = null_mut();
        self.room.store(self.half, Relaxed);
        older
    }

    /// Empty the cache: its two lists, for the pools.
    pub fn take_all(&mut self, reserve: &mut Reserve) -> [*mut Block; 2] {
        let lists = [self.head, reserve.blocks];
        self.head = null_mut();
        reserve.blocks = null_mut();
        self.room.store(self.half, Relaxed);
        reserve.len.store(0, Relaxed);
        lists
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

    #[test]
    fn environment_values_are_checked() {
        assert_eq!(bytes_from_env(None), Ok(DEFAULT_BYTES_PER_CLASS));
        assert_eq!(bytes_from_env(Some("0")), Ok(0));
        assert_eq!(bytes_from_env(Some(" 8192 ")), Ok(8192));
        assert!(bytes_from_env(Some("lots"))
            .unwrap_err()
            .contains("PYMALLOC_BLOCK_CACHE_BYTES"));
        assert!(bytes_from_env(Some("2000000")).is_err());
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
    fn the_full_hot_stack_becomes_the_reserve_and_the_older_half_leaves() {
        let mut storage = [[0usize; 2]; 12];
        let blocks: Vec<*mut Block> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
        let mut cache = BlockCache::with_limit(6);
        let mut reserve = Reserve::empty();
        // SAFETY: the "blocks" are this test's own words, used as links.
        unsafe {
            for &block in &blocks[..3] {
                assert!(cache.push(block));
            }
            assert!(!cache.push(blocks[3]), "the hot stack holds half the limit");
            assert!(cache.rotate(&mut reserve).is_null(), "no older reserve yet");
            assert_eq!(cache.len(&reserve), 3);
            for &block in &blocks[3..6] {
                assert!(cache.push(block));
            }
            assert_eq!(cache.len(&reserve), 6);
            assert!(!cache.push(blocks[6]));
            // The oldest three come back, most recent first.
            assert_eq!(
                list(cache.rotate(&mut reserve)),
                vec![blocks[2], blocks[1], blocks[0]]
            );
            assert_eq!(cache.len(&reserve), 3);
            assert!(cache.push(blocks[6]));
            assert_eq!(cache.pop(), blocks[6]);
            assert!(cache.pop().is_null(), "hot stack empty");
            assert_eq!(
                cache.pop_reserve(&mut reserve),
                blocks[5],
                "the reserve takes over"
            );
            assert_eq!(cache.pop(), blocks[4]);
            assert_eq!(cache.len(&reserve), 1);
            assert!(cache.push(blocks[7]));
            let [hot, older] = cache.take_all(&mut reserve);
            assert_eq!(list(hot), vec![blocks[7], blocks[3]]);
            assert!(older.is_null());
            assert_eq!(cache.len(&reserve), 0);
            assert!(cache.pop().is_null());
            assert!(cache.pop_reserve(&mut reserve).is_null());
        }
    }

    #[test]
    fn a_cache_without_room_takes_nothing() {
        let mut word = [0usize; 2];
        let mut cache = BlockCache::empty();
        // SAFETY: a local word used as a link.
        unsafe { assert!(!cache.push(word.as_mut_ptr().cast())) };
        assert_eq!(cache.len(&Reserve::empty()), 0);
    }
}
