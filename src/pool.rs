//! Pools: `POOL_SIZE` bytes of one arena, holding blocks of one size class,
//! and their 64-byte records (CPython's `pool_header`, reshaped for threads).
//!
//! Unlike CPython, the record is not at the start of the pool: the records
//! of all the pools of an arena sit side by side in the arena's first pool
//! (or first few, `METADATA_POOLS`). Pools are 16 KiB-aligned, so headers
//! at their starts would all fall into the same few cache sets and evict
//! each other; side by side they do not, and every byte of a pool holds
//! blocks. The record of the pool containing an address is still found by
//! arithmetic on the address alone. A record fills one cache line of its
//! own: pools side by side belong to different threads' heaps, and two
//! records sharing a line would bounce it between the cores on every pool
//! update (48 bytes of fields would fit, at the cost of that sharing).
//!
//! A pool belongs to at most one heap at a time (`owner`). Only the owning
//! heap's thread touches `free`, `next_offset`, `next` and `prev`; other
//! threads read `owner` (to decide whether a free is local) and statistics
//! read `used`, `class` and `state`, which are atomics for that reason —
//! written with plain relaxed stores, never read-modify-write.
//!
//! The rule for records other threads use at the same time (pools here,
//! and likewise heaps and their block caches): no reference to the whole
//! record, `&` or `&mut`, while another thread may write or read it. A
//! `&Pool` would promise that no byte of the record outside its atomics
//! changes while it lives, and a `&mut Pool` that nothing else reads it,
//! even its atomics. So a thread that does not own a record reads it only
//! through raw pointers to single fields (`ptr::addr_of!((*pool).used)`),
//! and only its atomics (or fields that the lock it holds keeps still), as
//! [`observe`] does; and the owner writes its plain fields through the raw
//! pointer (`(*pool).free = ...`), never through a `&mut` to the record,
//! as [`prepare`] and [`carve`] do.
//!
//! Blocks are carved lazily: `next_offset` marks the first block never
//! handed out, and the fresh blocks starting in one page (`CARVE_BYTES`)
//! are threaded onto the free list at a time (the heap then moves most of
//! them to its block cache: `heap::pools`).

use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU8, Ordering::Relaxed};

use crate::config::{ARENA_SIZE, CARVE_BYTES, POOL_SHIFT, POOL_SIZE};
use crate::heap::Heap;
use crate::size_class::block_size;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
}

/// What a pool is doing; read by statistics.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PoolState {
    /// In its arena's free list, or never carved: no owner.
    Unused = 0,
    /// Owned, on its heap's list for its class (has, or may get, free blocks).
    Available = 1,
    /// Owned, every block allocated; on no list until a block comes back.
    Full = 2,
    /// Owned, no block allocated, kept in the heap's empty-pool cache.
    Cached = 3,
}

#[repr(C, align(64))]
pub struct Pool {
    /// Head of the free list (owner only).
    pub free: *mut Block,
    /// Allocated blocks (owner writes, statistics read).
    pub used: AtomicU32,
    /// Size class of the blocks (written when the pool is (re)initialised).
    pub class: AtomicU16,
    pub state: AtomicU8,
    _reserved: u8,
    /// Offset of the first never-carved block (owner only).
    pub next_offset: u32,
    /// Bytes per block, cached so that carving needs no table.
    pub block_size: u32,
    /// Heap that owns the pool; null when the pool is unused.
    pub owner: AtomicPtr<Heap>,
    /// Links in the owner's class list, the heap's empty cache or the
    /// arena's free-pool list (owner or arena-lock holder only).
    pub next: *mut Pool,
    pub prev: *mut Pool,
}

const RECORD: usize = core::mem::size_of::<Pool>();
const _: () = assert!(RECORD == 64, "build.rs POOL_RECORD_BYTES");

/// The record of the pool a block belongs to: the pool's index in its
/// arena selects a record in the arena's metadata pools. Only meaningful
/// for addresses the address map says are ours.
#[inline(always)]
pub fn pool_of(address: usize) -> *mut Pool {
    let arena = address & !(ARENA_SIZE - 1);
    let index = (address & (ARENA_SIZE - 1)) >> POOL_SHIFT;
    (arena + index * RECORD) as *mut Pool
}

/// In `used`: the pool is full (state `Full`, on no class list). Set and
/// cleared by its owner with the state ([`Pool::mark_full`],
/// [`Pool::clear_full`]), so that [`release_one`] learns from one
/// decrement both whether the pool was full and whether it is now empty.
const FULL_MARK: u32 = 1 << 31;

/// Count one block of `pool` as no longer allocated: false when the pool
/// must change lists, because it was full (marked, [`FULL_MARK`]) or is
/// now empty. On x86-64 one `sub` on memory whose flags are the test
/// (result zero, or negative with the mark set), where a load, a
/// decrement, a store and two tests would be five: every free that
/// reaches a pool (a teardown's, past the full block cache) takes this
/// path.
///
/// # Safety
/// The calling thread owns `pool` (the only writer of `used`), which has
/// at least one allocated block.
#[inline(always)]
pub unsafe fn release_one(pool: *mut Pool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `used` is a valid, aligned 4-byte atomic written only by
        // the owner, the caller: a plain read-modify-write of it is as good
        // as the relaxed load and store it replaces (statistics only load
        // it, and an aligned 4-byte access is never torn).
        unsafe {
            core::arch::asm!(
                // Signed "less or equal": the count reached zero, or the
                // mark (the sign bit) is set. A marked count is at least
                // 1, so the decrement never crosses the sign boundary.
                "sub dword ptr [{pool} + {used}], 1",
                "jle {changes_list}",
                pool = in(reg) pool,
                used = const core::mem::offset_of!(Pool, used),
                changes_list = label { return false; },
                options(nostack),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as guaranteed by the caller; an atomic field.
        let used = unsafe { &*ptr::addr_of!((*pool).used) };
        let left = used.load(Relaxed) - 1;
        used.store(left, Relaxed);
        (left as i32) > 0
    }
}

/// The record of the pool holding `address` (as [`pool_of`]), given its
/// offset into the arena space (`address - base`, the space's base a
/// multiple of `ARENA_SIZE`, so that both share their low bits). The free
/// fast path has the offset from its span test, a copy it no longer needs,
/// and takes the pool's index from it instead of copying the address once
/// more: one instruction fewer on every free.
#[inline(always)]
pub fn pool_of_span_offset(address: usize, offset: usize) -> *mut Pool {
    debug_assert_eq!(address & (ARENA_SIZE - 1), offset & (ARENA_SIZE - 1));
    let arena = address & !(ARENA_SIZE - 1);
    let index = (offset & (ARENA_SIZE - 1)) >> POOL_SHIFT;
    (arena + index * RECORD) as *mut Pool
}

/// The record of pool number `index` of the arena at `arena`.
#[inline(always)]
pub fn pool_record(arena: usize, index: usize) -> *mut Pool {
    (arena + index * RECORD) as *mut Pool
}

/// First byte of the memory whose record is `pool`.
#[inline(always)]
pub fn pool_memory(pool: *const Pool) -> usize {
    let arena = pool as usize & !(ARENA_SIZE - 1);
    arena + (pool as usize - arena) / RECORD * POOL_SIZE
}

/// A pool header with no free blocks that no heap owns, placed in every
/// empty class slot of a heap so that the allocation fast path needs no
/// "is there a pool?" test: popping from it always falls into the slow path.
/// It is never written.
pub static EMPTY_POOL: SentinelPool = SentinelPool(Pool {
    free: null_mut(),
    used: AtomicU32::new(0),
    class: AtomicU16::new(0),
    state: AtomicU8::new(PoolState::Unused as u8),
    _reserved: 0,
    next_offset: POOL_SIZE as u32,
    block_size: 0,
    owner: AtomicPtr::new(null_mut()),
    next: null_mut(),
    prev: null_mut(),
});

pub struct SentinelPool(Pool);
// SAFETY: the sentinel is never written; its raw-pointer fields are null.
unsafe impl Sync for SentinelPool {}

impl SentinelPool {
    #[inline(always)]
    pub const fn as_ptr(&'static self) -> *mut Pool {
        ptr::addr_of!(self.0).cast_mut()
    }
}

impl PoolState {
    #[inline(always)]
    fn from_bits(bits: u8) -> PoolState {
        match bits {
            1 => PoolState::Available,
            2 => PoolState::Full,
            3 => PoolState::Cached,
            _ => PoolState::Unused,
        }
    }
}

impl Pool {
    #[inline(always)]
    pub fn state(&self) -> PoolState {
        PoolState::from_bits(self.state.load(Relaxed))
    }

    #[inline(always)]
    pub fn set_state(&self, state: PoolState) {
        self.state.store(state as u8, Relaxed);
    }

    /// Allocated blocks (cached ones included).
    #[inline(always)]
    pub fn used(&self) -> u32 {
        self.used.load(Relaxed) & !FULL_MARK
    }

    /// Count `blocks` more blocks as allocated in a pool that is not full
    /// (one on its class list): its count carries no mark, so the count
    /// is read, added to and stored as is (on x86-64 one `add` on memory).
    #[inline(always)]
    pub fn count_allocated(&self, blocks: u32) {
        let used = self.used.load(Relaxed);
        debug_assert!(used & FULL_MARK == 0);
        self.used.store(used + blocks, Relaxed);
    }

    /// Set the count of a pool that is not full.
    #[inline(always)]
    pub fn set_used(&self, used: u32) {
        debug_assert!(self.used.load(Relaxed) & FULL_MARK == 0 && used & FULL_MARK == 0);
        self.used.store(used, Relaxed);
    }

    /// The pool's every block is allocated: state `Full`, and the mark in
    /// `used` that sends its next free to the slow path ([`release_one`]).
    #[inline(always)]
    pub fn mark_full(&self) {
        self.set_state(PoolState::Full);
        self.used
            .store(self.used.load(Relaxed) | FULL_MARK, Relaxed);
    }

    /// A full pool got a block back: state `Available`, mark cleared.
    #[inline(always)]
    pub fn clear_full(&self) {
        self.set_state(PoolState::Available);
        self.used
            .store(self.used.load(Relaxed) & !FULL_MARK, Relaxed);
    }

    #[inline(always)]
    pub fn class(&self) -> usize {
        self.class.load(Relaxed) as usize
    }
}

/// What another thread (statistics) may see of a pool record.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub state: PoolState,
    pub class: usize,
    pub used: u32,
}

/// Read the atomic fields of `pool` from any thread, through raw field
/// pointers: never a reference to the record, whose plain fields its owner
/// may be writing (see the module's rule).
///
/// # Safety
/// `pool` is the record of a carved pool of a mapped arena, and stays
/// mapped during the call.
pub unsafe fn observe(pool: *const Pool) -> Observed {
    // SAFETY: the record is mapped (caller); each read goes through a raw
    // pointer to one atomic field, so it creates no reference to the
    // record and races only with relaxed atomic stores.
    unsafe {
        Observed {
            state: PoolState::from_bits((*ptr::addr_of!((*pool).state)).load(Relaxed)),
            class: (*ptr::addr_of!((*pool).class)).load(Relaxed) as usize,
            used: (*ptr::addr_of!((*pool).used)).load(Relaxed) & !FULL_MARK,
        }
    }
}

/// Prepare the pool at `pool` to serve `class` for `owner`: every pool,
/// whatever it served last, starts empty and is carved lazily from its
/// first block (see the comment inside for why).
///
/// # Safety
/// `pool` is a pool of one of our arenas with no allocated block, owned by
/// the caller (taken from an arena or the caller's empty cache).
pub unsafe fn prepare(pool: *mut Pool, class: usize, owner: *mut Heap) {
    // Even a pool that last held this class starts over from its first
    // block (CPython keeps the old free list then): the blocks of an empty
    // pool went back in whatever order the program freed them, and handing
    // them out in that order scatters objects allocated one after the
    // other, which the GC and every container walk in allocation order
    // (measured on the demo's container rounds: docs/memory-api.md).
    // SAFETY: the caller owns the pool, so no other thread writes its
    // plain fields; statistics may read its atomics at the same time, so
    // every write goes through the raw pointer, one field at a time, and
    // no `&mut Pool` is formed (module essay).
    unsafe {
        (*pool).free = null_mut();
        (*pool).next_offset = 0;
        (*pool).block_size = block_size(class) as u32;
        (*pool).class.store(class as u16, Relaxed);
        (*pool).used.store(0, Relaxed);
        (*pool).owner.store(owner, Relaxed);
        (*pool).next = null_mut();
        (*pool).prev = null_mut();
    }
}

/// Thread up to `CARVE_BYTES` of never-used blocks onto the free list of
/// `pool` (whose free list is empty), in address order. Returns how many:
/// 0 when the pool has none left.
///
/// # Safety
/// The caller owns `pool`, an initialised pool of one of our arenas.
pub unsafe fn carve(pool: *mut Pool) -> usize {
    // SAFETY: the caller owns the pool, so no other thread writes its
    // plain fields; these reads and the writes below go through the raw
    // pointer, one field at a time, never a `&mut Pool`, because
    // statistics may read the record's atomics meanwhile (module essay).
    let (size, start) = unsafe {
        debug_assert!((*pool).free.is_null());
        ((*pool).block_size as usize, (*pool).next_offset as usize)
    };
    if start + size > POOL_SIZE {
        return 0;
    }
    // Thread only the blocks that start in the page (CARVE_BYTES) where
    // carving resumes: writing their links touches no page the program
    // has not reached yet, so a pool's memory is faulted in as it is used.
    // The last one threaded starts in that page and fits in the pool.
    let page_end = (start | (CARVE_BYTES - 1)) + 1;
    let last_start = (page_end - 1).min(POOL_SIZE - size);
    let count = (last_start - start) / size + 1;
    let base = pool_memory(pool);
    let first = base + start;
    let mut block = first;
    for _ in 1..count {
        // SAFETY: each of the first `count - 1` blocks is followed by
        // another fresh block inside this pool (`last_start + size <=
        // POOL_SIZE`), so the link written stays inside the pool.
        unsafe { (*(block as *mut Block)).next = (block + size) as *mut Block };
        block += size;
    }
    let last = block;
    // SAFETY: as above, for the last carved block; then the owner's
    // plain fields, through the raw pointer (see above).
    unsafe {
        (*(last as *mut Block)).next = null_mut();
        (*pool).free = first as *mut Block;
        (*pool).next_offset = (last - base + size) as u32;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{METADATA_POOLS, NUM_SIZE_CLASSES};
    use crate::os;
    use crate::size_class::blocks_per_pool;

    #[test]
    fn records_and_memory_map_to_each_other() {
        let arena = 64 * ARENA_SIZE; // arithmetic only: never dereferenced
        for index in [
            METADATA_POOLS,
            METADATA_POOLS + 1,
            crate::config::POOLS_PER_ARENA - 1,
        ] {
            let record = pool_record(arena, index);
            let memory = arena + index * POOL_SIZE;
            assert_eq!(pool_memory(record), memory);
            assert_eq!(pool_of(memory), record);
            assert_eq!(pool_of(memory + POOL_SIZE - 1), record);
            assert!((record as usize) + RECORD <= arena + METADATA_POOLS * POOL_SIZE);
        }
    }

    #[test]
    fn carving_yields_every_block_once_in_bounds_and_aligned() {
        let arena = os::map_aligned(ARENA_SIZE, ARENA_SIZE).unwrap();
        let base = arena.as_ptr() as usize;
        let pool = pool_record(base, METADATA_POOLS);
        let memory = pool_memory(pool);
        for class in 0..NUM_SIZE_CLASSES {
            // SAFETY: the arena is exclusively ours; reset the record.
            unsafe {
                ptr::write_bytes(pool.cast::<u8>(), 0, RECORD);
                prepare(pool, class, null_mut());
            }
            let mut seen = std::collections::HashSet::new();
            loop {
                // SAFETY: the pool is exclusively ours.
                let count = unsafe { carve(pool) };
                if count == 0 {
                    break;
                }
                // SAFETY: walking the free list `carve` just built.
                unsafe {
                    let mut block = (*pool).free;
                    let page = (block as usize - memory) / crate::config::CARVE_BYTES;
                    let mut threaded = 0;
                    while !block.is_null() {
                        let address = block as usize;
                        // Each carve stays in the page where it resumed.
                        assert_eq!((address - memory) / crate::config::CARVE_BYTES, page);
                        threaded += 1;
                        assert!(address >= memory);
                        assert!(address + block_size(class) <= memory + POOL_SIZE);
                        assert_eq!(address % crate::config::ALIGNMENT, 0);
                        assert!(seen.insert(address));
                        block = (*block).next;
                    }
                    assert_eq!(threaded, count);
                    (*pool).free = null_mut();
                }
            }
            assert_eq!(seen.len(), blocks_per_pool(class));
        }
        // SAFETY: mapped above.
        unsafe { os::unmap(arena, ARENA_SIZE) };
    }

    #[test]
    fn empty_pool_sentinel_has_nothing_to_give() {
        // SAFETY: reading the static sentinel.
        unsafe { assert!((*EMPTY_POOL.as_ptr()).free.is_null()) };
    }
}
