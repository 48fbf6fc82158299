//! Arenas: `ARENA_SIZE`-aligned stretches of address space from the OS,
//! each split into `POOLS_PER_ARENA` pools. This is the only shared,
//! locked level of the allocator: heaps come here to take a pool when
//! theirs are full and to give back pools they no longer need.
//!
//! Policy (CPython's, in O(1)): pools are taken from the arena with the
//! fewest free pools, so that lightly used arenas drain and can be
//! returned to the OS. Arenas sit in buckets by free-pool count with a
//! bitmap of non-empty buckets; finding the fullest usable arena is one
//! trailing-zeros count.
//!
//! Wholly free arenas decay rather than go back at once: they stay mapped
//! until they have been free for the decay time (`PYMALLOC_ARENA_DECAY_MS`, default
//! `DEFAULT_DECAY_MS`). A program that frees a large structure and builds
//! the next one soon after (a loop over requests, a rebuilt table) reuses
//! pages that are already faulted in instead of paying munmap, mmap and a
//! page fault per page again; a program whose peak has passed gets the
//! memory back to the OS at the next arena operation after the delay, or at
//! once with `PyCore_Trim()`. Decay 0 returns them at once, as CPython does.
//!
//! The decay time adapts to reuse. `PYMALLOC_ARENA_DECAY_MS` is the base;
//! when a decay pass gave arenas back and a new arena is wanted within one
//! decay time after (keeping them twice as long would have served it), the
//! decay doubles, up to `MAX_DECAY_MS`; when the arenas given back are not
//! wanted again within that time, it halves, down to the base. A pass that
//! finds free arenas past their time because the program left its pools
//! alone for a while (no pass ran) takes the program's return for that
//! reuse and lengthens the decay before it gives them back
//! (`Arenas::keep_for_a_return`). A program that rebuilds a large
//! structure every 50 ms pays the page faults once rather than every
//! round, and one whose peak has passed still gets its memory back within
//! about a second (jemalloc purges along a fixed decay curve,
//! `dirty_decay_ms`, and mimalloc after a fixed delay; neither lengthens
//! it for reuse). The verdicts are in wall
//! time, like the decay itself: a count of arena operations would not
//! advance while a program works without taking or giving back pools, and
//! the memory of its freed peak would stay for good.
//!
//! Free pools of arenas that stay in use decay the same way: a pool given
//! back keeps its pages for the decay time, for the next heap that needs a
//! pool; then its pages are purged (`madvise(MADV_DONTNEED)`; the pool is
//! handed out again after the unpurged ones). Without this, a single live
//! pool kept a whole arena's faulted-in pages resident: after a freed
//! peak, the resident set depended on where the survivors happened to lie.
//!
//! Arena memory comes from the arena space ([`arena_space`](crate::arena_space)), a span
//! reserved up front so that the free path recognises our blocks with one
//! compare; given-back arenas are decommitted in place. When the span
//! cannot serve (full, refused, or an address-space limit in force), an
//! arena is mapped on its own and found through the address map.
//!
//! Arena records live outside the arenas (so that whole arenas can be
//! given back), in a record slab ([`slab`](crate::slab)): never unmapped,
//! recycled when their arena goes back to the OS.

use core::ptr::{self, null_mut, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::address_map;
use crate::arena_space::{ArenaSpace, SpaceView, Taken};
use crate::config::{ARENA_SIZE, BLOCK_POOLS_PER_ARENA, METADATA_POOLS};
use crate::os;
use crate::pool::{self, Pool, PoolState};
use crate::slab::Slab;
use crate::sync::Locked;

/// The record of one arena.
pub struct Arena {
    base: usize,
    /// Pools not owned by any heap: in `free_pools` or never carved.
    free_count: usize,
    /// Index of the next pool never used: pools below `METADATA_POOLS` hold
    /// the records, those from here on were never touched.
    carved: usize,
    /// Returned pools whose pages are still resident, linked through
    /// `Pool::next`; handed out first.
    free_pools: *mut Pool,
    /// Returned pools whose pages were purged.
    purged_pools: *mut Pool,
    /// When `free_pools` last became non-empty (`os::now_ms`).
    dirty_since_ms: u64,
    /// Links in the list of arenas with unpurged free pools (`dirty`) while
    /// `free_pools` is non-empty and the arena is not wholly free.
    dirty_prev: *mut Arena,
    dirty_next: *mut Arena,
    on_dirty_list: bool,
    /// Links in the bucket for `free_count` (or the list of full arenas).
    prev: *mut Arena,
    next: *mut Arena,
    /// When the arena last became wholly free (`os::now_ms`).
    free_since_ms: u64,
}

/// How long a wholly free arena stays mapped, unless
/// `PYMALLOC_ARENA_DECAY_MS` says otherwise. Long enough for the reuse
/// cycles of a program (a rebuilt table, a batch of requests), short
/// enough that a freed peak is returned within a blink, and that memory
/// kept for reuse does not add to the peak of a program whose next
/// structure comes from malloc (the peak each decay time costs is measured
/// in docs/tuning.md, "Arena decay").
pub const DEFAULT_DECAY_MS: u64 = 30;

/// The longest the adapted decay time grows to (a base set above it stays
/// in force): a program's memory past a freed peak is back with the OS
/// within about a second, however much it reused before.
pub const MAX_DECAY_MS: u64 = 1000;

static DECAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_DECAY_MS);

/// When the next decay pass is due (`os::now_ms`), or `u64::MAX` when
/// nothing decays: read without the lock by [`decay_if_due`].
static DECAY_DUE_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Run the decay pass if it is due. Heaps call this where they already
/// leave their fast paths for their own pool bookkeeping (a pool emptied
/// into, or taken from, a heap's empty-pool cache): a program that freed
/// a peak and then works within the pools it keeps never takes the arena
/// lock otherwise, and would keep the freed arenas mapped for good. When
/// nothing decays this is one load; it never waits for the lock.
pub fn decay_if_due() {
    let due = DECAY_DUE_MS.load(Ordering::Relaxed);
    if due == u64::MAX {
        return;
    }
    let now = os::now_ms();
    if now < due {
        return;
    }
    if let Some(mut arenas) = ARENAS.try_lock() {
        arenas.release_decayed(now);
    }
}

/// The base decay time in milliseconds, from which reuse lengthens it
/// (see the module documentation and [`Arenas::decay_in_force`]).
pub fn decay_ms() -> u64 {
    DECAY_MS.load(Ordering::Relaxed)
}

/// Set the base decay time; 0 returns free arenas at once.
pub fn set_decay_ms(ms: u64) {
    DECAY_MS.store(ms, Ordering::Relaxed);
}

const BUCKETS: usize = BLOCK_POOLS_PER_ARENA + 1;
const BITMAP_WORDS: usize = BUCKETS.div_ceil(64);

/// Counters for statistics (CPython's `# arenas ...` lines).
#[derive(Clone, Copy, Default, Debug)]
pub struct ArenaCounters {
    pub allocated_total: u64,
    pub reclaimed: u64,
    pub highwater: u64,
    pub current: u64,
}

pub struct Arenas {
    /// `buckets[n]`: arenas with exactly `n` free pools (n >= 1).
    buckets: [*mut Arena; BUCKETS],
    nonempty: [u64; BITMAP_WORDS],
    /// Wholly free arenas currently mapped (decaying, or new and unused).
    /// None stays for good: a process past its peak gets back to CPython's
    /// footprint (one arena kept for good measured 0.7 MiB more RSS).
    free_arenas: usize,
    /// Earliest time the next decay pass may run (`os::now_ms`).
    next_decay_pass_ms: u64,
    /// The decay time as reuse adapted it (see the module documentation);
    /// [`Arenas::decay_in_force`] bounds it by the base and `MAX_DECAY_MS`.
    adapted_decay_ms: u64,
    /// When a decay pass last gave back wholly free arenas whose verdict is
    /// pending (`os::now_ms`), or `u64::MAX`.
    released_at_ms: u64,
    /// The decay time in force at that release: a new arena wanted within
    /// that long after it would have been served by a decay twice as long.
    released_window_ms: u64,
    /// Arenas in use with free pools not yet purged.
    dirty: *mut Arena,
    /// Where arena records come from and go back to.
    records: Slab<Arena>,
    pub counters: ArenaCounters,
    /// Arenas with no free pool (in no bucket), linked like a bucket.
    full: *mut Arena,
    /// Where arena memory comes from first.
    space: ArenaSpace,
}

// SAFETY: the raw pointers refer to arena records and pools that are only
// touched under the `ARENAS` lock, from whichever thread holds it.
unsafe impl Send for Arenas {}

pub static ARENAS: Locked<Arenas> = Locked::new(Arenas {
    buckets: [null_mut(); BUCKETS],
    nonempty: [0; BITMAP_WORDS],
    free_arenas: 0,
    next_decay_pass_ms: 0,
    adapted_decay_ms: 0,
    released_at_ms: u64::MAX,
    released_window_ms: 0,
    dirty: null_mut(),
    records: Slab::new(),
    counters: ArenaCounters {
        allocated_total: 0,
        reclaimed: 0,
        highwater: 0,
        current: 0,
    },
    full: null_mut(),
    space: ArenaSpace::new(),
});

/// Take the arena lock before `fork()` (see [`fork`](crate::fork) for the
/// order of all the locks).
pub(crate) fn lock_for_fork() {
    ARENAS.acquire_for_fork();
}

/// Release the arena lock after `fork()`, in the parent or the child.
pub(crate) fn unlock_after_fork(in_child: bool) {
    ARENAS.release_after_fork(in_child);
}

/// A summary of one mapped arena for statistics.
pub struct ArenaView {
    pub base: usize,
    pub carved: usize,
}

impl Arenas {
    /// Take a pool for a heap, mapping a new arena if none has a free pool.
    /// `None` when the OS refuses memory.
    pub fn take_pool(&mut self) -> Option<NonNull<Pool>> {
        if self.free_arenas > 0 || !self.dirty.is_null() {
            let now = os::now_ms();
            if self.free_arenas > 0 {
                self.keep_for_a_return(now, true);
            }
            self.release_decayed(now);
        }
        let arena = match self.fullest_usable() {
            Some(arena) => arena,
            None => {
                if self.released_at_ms != u64::MAX {
                    self.judge_release(os::now_ms(), true);
                }
                self.new_arena()?
            }
        };
        // SAFETY: `arena` is a live record in a bucket, under the lock.
        unsafe {
            let a = &mut *arena;
            if a.free_count == BLOCK_POOLS_PER_ARENA {
                self.free_arenas -= 1;
            }
            let pool = if !a.free_pools.is_null() {
                let pool = a.free_pools;
                a.free_pools = (*pool).next;
                if a.free_pools.is_null() {
                    self.unlink_dirty(arena);
                }
                pool
            } else if !a.purged_pools.is_null() {
                let pool = a.purged_pools;
                a.purged_pools = (*pool).next;
                pool
            } else {
                debug_assert!(a.carved < METADATA_POOLS + BLOCK_POOLS_PER_ARENA);
                let pool = pool::pool_record(a.base, a.carved);
                a.carved += 1;
                pool
            };
            self.move_bucket(arena, a.free_count - 1);
            NonNull::new(pool)
        }
    }

    /// Give back a pool no heap owns any more (no block allocated).
    ///
    /// # Safety
    /// `pool` was obtained from `take_pool`, holds no allocated block, and
    /// its last owner no longer refers to it.
    pub unsafe fn give_back_pool(&mut self, pool: *mut Pool) {
        let Some(arena) = address_map::arena_of(pool as usize) else {
            debug_assert!(false, "pool {pool:p} outside every arena");
            return;
        };
        let arena = arena.as_ptr();
        // SAFETY: the pool is ours to link; the arena record is live.
        unsafe {
            (*pool)
                .owner
                .store(null_mut(), core::sync::atomic::Ordering::Relaxed);
            (*pool).set_state(PoolState::Unused);
            (*pool).set_used(0);
            let now = os::now_ms();
            if (*arena).free_pools.is_null() {
                (*arena).dirty_since_ms = now;
            }
            (*pool).next = (*arena).free_pools;
            (*arena).free_pools = pool;
            let free_count = (*arena).free_count + 1;
            self.move_bucket(arena, free_count);
            if free_count == BLOCK_POOLS_PER_ARENA {
                // Wholly free: forget the order in which its pools came
                // back and hand them out again in address order, as from a
                // fresh arena (see `Arenas::take_pool`). It decays whole.
                self.unlink_dirty(arena);
                (*arena).free_pools = null_mut();
                (*arena).purged_pools = null_mut();
                (*arena).carved = METADATA_POOLS;
                (*arena).free_since_ms = now;
                if decay_ms() == 0 {
                    self.release_arena(arena);
                } else {
                    self.free_arenas += 1;
                    self.release_decayed(now);
                }
            } else {
                self.link_dirty(arena);
                self.release_decayed(now);
            }
        }
    }

    /// # Safety
    /// `arena` is live and has unpurged free pools.
    unsafe fn link_dirty(&mut self, arena: *mut Arena) {
        // SAFETY: guaranteed by the caller; list heads are live records.
        unsafe {
            if (*arena).on_dirty_list {
                return;
            }
            (*arena).on_dirty_list = true;
            (*arena).dirty_prev = null_mut();
            (*arena).dirty_next = self.dirty;
            if !self.dirty.is_null() {
                (*self.dirty).dirty_prev = arena;
            }
            self.dirty = arena;
        }
    }

    /// # Safety
    /// `arena` is live.
    unsafe fn unlink_dirty(&mut self, arena: *mut Arena) {
        // SAFETY: guaranteed by the caller; neighbours are live records.
        unsafe {
            let a = &mut *arena;
            if !a.on_dirty_list {
                return;
            }
            if a.dirty_prev.is_null() {
                self.dirty = a.dirty_next;
            } else {
                (*a.dirty_prev).dirty_next = a.dirty_next;
            }
            if !a.dirty_next.is_null() {
                (*a.dirty_next).dirty_prev = a.dirty_prev;
            }
            a.dirty_prev = null_mut();
            a.dirty_next = null_mut();
            a.on_dirty_list = false;
        }
    }

    /// Purge the pages of the free pools of `arena` (in use, not wholly
    /// free) and keep the pools for after the unpurged ones.
    ///
    /// # Safety
    /// `arena` is live and on the dirty list.
    unsafe fn purge_free_pools(&mut self, arena: *mut Arena) {
        // SAFETY: free pools are owned by no heap and nothing refers to
        // their memory; their records (in the metadata pools) stay.
        unsafe {
            self.unlink_dirty(arena);
            let a = &mut *arena;
            while !a.free_pools.is_null() {
                let pool = a.free_pools;
                a.free_pools = (*pool).next;
                os::purge(pool::pool_memory(pool), crate::config::POOL_SIZE);
                (*pool).next = a.purged_pools;
                a.purged_pools = pool;
            }
        }
    }

    /// Unmap the wholly free arenas that have been free for the decay
    /// time, and purge the free pools of arenas in use that have been free
    /// as long. Runs at most a few times per decay period, so that walking
    /// the lists stays off the common path.
    fn release_decayed(&mut self, now: u64) {
        if now < self.next_decay_pass_ms {
            self.publish_decay_due();
            return;
        }
        self.judge_release(now, false);
        self.keep_for_a_return(now, false);
        let decay = self.decay_in_force();
        self.next_decay_pass_ms = now + (decay / 4).max(1);
        let mut released = false;
        let mut arena = self.dirty;
        while !arena.is_null() {
            // SAFETY: records on the dirty list are live, under the lock;
            // `dirty_next` is read before purging unlinks the record.
            unsafe {
                let next = (*arena).dirty_next;
                if now.saturating_sub((*arena).dirty_since_ms) >= decay {
                    self.purge_free_pools(arena);
                }
                arena = next;
            }
        }
        let mut arena = self.buckets[BLOCK_POOLS_PER_ARENA];
        while !arena.is_null() {
            // SAFETY: records on the bucket list are live, under the lock;
            // `next` is read before the record may be recycled.
            unsafe {
                let next = (*arena).next;
                if now.saturating_sub((*arena).free_since_ms) >= decay {
                    self.free_arenas -= 1;
                    self.release_arena(arena);
                    released = true;
                }
                arena = next;
            }
        }
        if released {
            self.released_at_ms = now;
            self.released_window_ms = decay;
        }
        self.publish_decay_due();
    }

    /// The decay time now: the base (`PYMALLOC_ARENA_DECAY_MS`), or longer
    /// as reuse adapted it, up to `MAX_DECAY_MS`; 0 stays 0 (returned at
    /// once, as CPython does).
    pub fn decay_in_force(&self) -> u64 {
        let base = decay_ms();
        if base == 0 {
            return 0;
        }
        base.max(self.adapted_decay_ms.min(MAX_DECAY_MS))
    }

    /// Lengthen the decay before a pass that would give back arenas the
    /// program is coming back for. Passes come every quarter of the decay
    /// time while the program takes or gives back pools; the youngest
    /// wholly free arena (the head of its bucket) having outlived the decay
    /// time says that none ran since it expired: the program left its
    /// pools alone for a while. Now it is back, and most often to do again
    /// what it did before (rebuild the structure it freed): the reuse that
    /// [`Arenas::judge_release`] lengthens the decay for, seen before the
    /// arenas are lost rather than after. The sign is taken once the
    /// decay time is past when a pool is wanted (`taking_pool`) and only
    /// wholly free arenas have one, otherwise once the pass is late by half
    /// the decay time; and only while the youngest arena is within twice
    /// the decay time (a longer pause says nothing about what comes next).
    ///
    /// The decay becomes twice the age of the oldest free arena, at least
    /// twice what it was: the arenas freed early in a long teardown are
    /// older than the last by the teardown's length, and the rebuild takes
    /// the youngest first, so a decay that only kept the youngest would
    /// lose the others to the next pass. The oldest went free before the
    /// pause began, while passes still ran, so its age is bounded: about
    /// the decay time plus the pause. If the program wants none of them
    /// after all, their release and the verdict on it halve the decay.
    fn keep_for_a_return(&mut self, now: u64, taking_pool: bool) {
        let mut arena = self.buckets[BLOCK_POOLS_PER_ARENA];
        if arena.is_null() {
            return;
        }
        // SAFETY: the head of the wholly free bucket is a live record.
        let youngest = now.saturating_sub(unsafe { (*arena).free_since_ms });
        let decay = self.decay_in_force();
        // The common case (`take_pool` with arenas freed recently) ends
        // here, before the bucket scan below.
        if youngest < decay || youngest > decay.saturating_mul(2) || decay == 0 {
            return;
        }
        let pool_wanted = taking_pool && self.fullest_usable() == Some(arena);
        if !pool_wanted && youngest < decay + decay / 2 {
            return;
        }
        let mut oldest = youngest;
        while !arena.is_null() {
            // SAFETY: records on the bucket list are live, under the lock.
            unsafe {
                oldest = oldest.max(now.saturating_sub((*arena).free_since_ms));
                arena = (*arena).next;
            }
        }
        self.adapted_decay_ms = oldest.max(decay).saturating_mul(2).min(MAX_DECAY_MS);
    }

    /// The verdict on the last release of decayed arenas, at `now`: a new
    /// arena wanted (`new_arena_wanted`) within one decay time after it
    /// would have been served by a decay twice as long, so the decay
    /// doubles; released arenas not wanted within that time were rightly
    /// given back, so it halves toward the base. No verdict yet while a
    /// release is recent and nothing was wanted.
    fn judge_release(&mut self, now: u64, new_arena_wanted: bool) {
        if self.released_at_ms == u64::MAX {
            return;
        }
        let decay = self.decay_in_force();
        if now.saturating_sub(self.released_at_ms) > self.released_window_ms {
            self.adapted_decay_ms = decay / 2;
        } else if new_arena_wanted {
            self.adapted_decay_ms = decay.saturating_mul(2).min(MAX_DECAY_MS);
        } else {
            return;
        }
        self.released_at_ms = u64::MAX;
    }

    /// Unmap every wholly free arena and purge every free pool now
    /// (`PyCore_Trim`).
    pub fn release_free_arenas(&mut self) {
        while !self.dirty.is_null() {
            let arena = self.dirty;
            // SAFETY: the head of the dirty list is a live record on it.
            unsafe { self.purge_free_pools(arena) };
        }
        while !self.buckets[BLOCK_POOLS_PER_ARENA].is_null() {
            let arena = self.buckets[BLOCK_POOLS_PER_ARENA];
            self.free_arenas -= 1;
            // SAFETY: a live, wholly free arena in its bucket.
            unsafe { self.release_arena(arena) };
        }
        self.publish_decay_due();
    }

    /// Tell [`decay_if_due`] when the next pass is worth running.
    fn publish_decay_due(&self) {
        let due = if self.free_arenas > 0 || !self.dirty.is_null() {
            self.next_decay_pass_ms
        } else {
            u64::MAX
        };
        DECAY_DUE_MS.store(due, Ordering::Relaxed);
    }

    /// Wholly free arenas kept mapped.
    #[cfg(test)]
    pub fn free_arenas_kept(&self) -> usize {
        self.free_arenas
    }

    fn fullest_usable(&self) -> Option<*mut Arena> {
        for (word_index, &word) in self.nonempty.iter().enumerate() {
            if word != 0 {
                let bucket = word_index * 64 + word.trailing_zeros() as usize;
                return Some(self.buckets[bucket]);
            }
        }
        None
    }

    /// Move `arena` from the bucket of its current free count to `to`.
    fn move_bucket(&mut self, arena: *mut Arena, to: usize) {
        // SAFETY: `arena` is a live record; list surgery happens under the lock.
        unsafe {
            self.unlink(arena);
            (*arena).free_count = to;
            self.link(arena);
        }
    }

    /// # Safety
    /// `arena` is live and linked according to its `free_count`.
    unsafe fn unlink(&mut self, arena: *mut Arena) {
        // SAFETY: guaranteed by the caller; neighbours are live records.
        unsafe {
            let a = &mut *arena;
            let head = if a.free_count == 0 {
                &mut self.full
            } else {
                &mut self.buckets[a.free_count]
            };
            if a.prev.is_null() {
                *head = a.next;
            } else {
                (*a.prev).next = a.next;
            }
            if !a.next.is_null() {
                (*a.next).prev = a.prev;
            }
            if a.free_count != 0 && head.is_null() {
                self.nonempty[a.free_count / 64] &= !(1 << (a.free_count % 64));
            }
            a.prev = null_mut();
            a.next = null_mut();
        }
    }

    /// # Safety
    /// `arena` is live and on no list.
    unsafe fn link(&mut self, arena: *mut Arena) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let a = &mut *arena;
            let head = if a.free_count == 0 {
                &mut self.full
            } else {
                &mut self.buckets[a.free_count]
            };
            a.prev = null_mut();
            a.next = *head;
            if !head.is_null() {
                (**head).prev = arena;
            }
            *head = arena;
            if a.free_count != 0 {
                self.nonempty[a.free_count / 64] |= 1 << (a.free_count % 64);
            }
        }
    }

    fn new_arena(&mut self) -> Option<*mut Arena> {
        let record = self.records.take()?.as_ptr();
        let memory = match self.space.take() {
            Taken::Slot(slot) => Some(slot),
            Taken::Unavailable => os::map_aligned(ARENA_SIZE, ARENA_SIZE),
            Taken::OutOfMemory => None,
        };
        let Some(memory) = memory else {
            self.recycle_record(record);
            return None;
        };
        let base = memory.as_ptr() as usize;
        // SAFETY: `record` is unused memory sized for an Arena.
        unsafe {
            ptr::write(
                record,
                Arena {
                    base,
                    free_count: BLOCK_POOLS_PER_ARENA,
                    carved: METADATA_POOLS,
                    free_pools: null_mut(),
                    purged_pools: null_mut(),
                    dirty_since_ms: 0,
                    dirty_prev: null_mut(),
                    dirty_next: null_mut(),
                    on_dirty_list: false,
                    prev: null_mut(),
                    next: null_mut(),
                    free_since_ms: os::now_ms(),
                },
            );
        }
        // SAFETY: `record` was just initialised.
        if address_map::insert(base, unsafe { NonNull::new_unchecked(record) }).is_err() {
            // SAFETY: the arena was obtained above and nothing refers to it.
            unsafe { self.give_back_memory(base) };
            self.recycle_record(record);
            return None;
        }
        // SAFETY: the record is initialised and on no list.
        unsafe { self.link(record) };
        self.free_arenas += 1; // wholly free until its first pool is taken
        let c = &mut self.counters;
        c.allocated_total += 1;
        c.current += 1;
        c.highwater = c.highwater.max(c.current);
        Some(record)
    }

    /// # Safety
    /// `arena` is live, wholly free, and linked in its bucket.
    unsafe fn release_arena(&mut self, arena: *mut Arena) {
        // SAFETY: guaranteed by the caller; no pool of it is referenced.
        unsafe {
            self.unlink(arena);
            let base = (*arena).base;
            address_map::remove(base);
            self.give_back_memory(base);
        }
        self.recycle_record(arena);
        self.counters.current -= 1;
        self.counters.reclaimed += 1;
    }

    /// Return an arena's memory to where it came from.
    ///
    /// # Safety
    /// `base` is an arena's memory that nothing refers to any more.
    unsafe fn give_back_memory(&mut self, base: usize) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if self.space.holds(base) {
                self.space.give_back(base);
            } else {
                os::unmap(NonNull::new_unchecked(base as *mut u8), ARENA_SIZE);
            }
        }
    }

    /// The arena space's state, for statistics.
    pub fn space_view(&self) -> SpaceView {
        self.space.view()
    }

    fn recycle_record(&mut self, record: *mut Arena) {
        // SAFETY: the record came from the slab and is no longer used by
        // any list or the map.
        unsafe { self.records.recycle(record) };
    }

    /// Every mapped arena, for statistics.
    pub fn views(&self) -> Vec<ArenaView> {
        let mut views = Vec::new();
        let heads = core::iter::once(self.full).chain(self.buckets.iter().copied());
        for head in heads {
            let mut arena = head;
            while !arena.is_null() {
                // SAFETY: records on the lists are live, under the lock.
                unsafe {
                    let a = &*arena;
                    views.push(ArenaView {
                        base: a.base,
                        carved: a.carved,
                    });
                    arena = a.next;
                }
            }
        }
        views
    }

    pub fn metadata_bytes(&self) -> usize {
        self.records.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that change the process-wide decay time take this first, so
    /// that they do not change it under each other.
    static DECAY_SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Taken by a test before it changes the decay time.
    fn decay_setting() -> std::sync::MutexGuard<'static, ()> {
        DECAY_SETTING.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl Arenas {
        /// Forget what reuse taught the decay: tests that time the decay
        /// start from the base (other tests' pools may have adapted it).
        fn forget_reuse(&mut self) {
            self.adapted_decay_ms = 0;
            self.released_at_ms = u64::MAX;
        }

        /// Set the base decay time, with nothing learnt from reuse.
        fn decay_from_base(&mut self, ms: u64) {
            set_decay_ms(ms);
            self.forget_reuse();
        }
    }

    #[test]
    fn pools_are_aligned_distinct_and_inside_mapped_arenas() {
        let mut taken = Vec::new();
        {
            let mut arenas = ARENAS.lock();
            for _ in 0..BLOCK_POOLS_PER_ARENA + 3 {
                taken.push(arenas.take_pool().unwrap().as_ptr());
            }
        }
        let mut sorted: Vec<usize> = taken.iter().map(|&p| p as usize).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), taken.len());
        for &pool in &taken {
            let memory = pool::pool_memory(pool);
            assert_eq!(memory % crate::config::POOL_SIZE, 0);
            assert_eq!(pool::pool_of(memory), pool);
            assert!(address_map::contains(memory));
            assert!(address_map::contains(memory + crate::config::POOL_SIZE - 1));
        }
        let mut arenas = ARENAS.lock();
        for pool in taken {
            // SAFETY: taken above, never used.
            unsafe { arenas.give_back_pool(pool) };
        }
    }

    /// Take every pool of three arenas, then give them all back.
    fn fill_and_empty_three_arenas(arenas: &mut Arenas) -> u64 {
        // Until three arenas are newly mapped, not a fixed number of pools:
        // other tests running meanwhile keep pools in the arenas already
        // there, which then never become wholly free; the new ones are this
        // test's alone (it holds the lock), and all free once given back.
        let mapped_before = arenas.counters.allocated_total;
        let mut pools = Vec::new();
        while arenas.counters.allocated_total < mapped_before + 3 {
            pools.push(arenas.take_pool().unwrap().as_ptr());
        }
        let during = arenas.counters.current;
        assert!(during >= 3);
        for &pool in &pools {
            // SAFETY: taken above, never used.
            unsafe { arenas.give_back_pool(pool) };
        }
        during
    }

    #[test]
    fn wholly_free_arenas_are_unmapped_after_the_decay_time() {
        let _serial = decay_setting();
        let mut arenas = ARENAS.lock();

        // Decay 0: returned at once, as CPython does, however much reuse
        // lengthened the decay before.
        arenas.decay_from_base(0);
        arenas.adapted_decay_ms = MAX_DECAY_MS;
        assert_eq!(arenas.decay_in_force(), 0);
        let before = arenas.counters;
        let during = fill_and_empty_three_arenas(&mut arenas);
        let after = arenas.counters;
        assert!(
            after.reclaimed >= before.reclaimed + 2,
            "{before:?} {after:?}"
        );
        assert!(after.current <= during - 2);
        assert_eq!(arenas.free_arenas_kept(), 0);

        // With a decay time they stay mapped (a long one here, so that a
        // slow machine cannot reach it during the fill), and go at the first
        // arena operation after it.
        arenas.decay_from_base(60_000);
        let before = arenas.counters;
        fill_and_empty_three_arenas(&mut arenas);
        let kept = arenas.counters;
        assert_eq!(
            kept.reclaimed, before.reclaimed,
            "released before the decay time"
        );
        // At least two of the three are wholly free: the first pools taken
        // may share an arena with other tests' live pools.
        assert!(arenas.free_arenas_kept() >= 2);
        // 60 ms: past twice the decay time, which a program coming back to
        // its arenas may lengthen it to (`Arenas::keep_for_a_return`).
        set_decay_ms(20);
        arenas.next_decay_pass_ms = 0;
        std::thread::sleep(std::time::Duration::from_millis(60));
        let pool = arenas.take_pool().unwrap().as_ptr();
        let decayed = arenas.counters;
        assert!(
            decayed.reclaimed >= kept.reclaimed + 2,
            "{kept:?} {decayed:?}"
        );
        // SAFETY: taken above, never used.
        unsafe { arenas.give_back_pool(pool) };

        // PyCore_Trim's path returns every free arena now.
        fill_and_empty_three_arenas(&mut arenas);
        arenas.release_free_arenas();
        assert_eq!(arenas.free_arenas_kept(), 0);
        arenas.decay_from_base(DEFAULT_DECAY_MS);
    }

    #[test]
    fn free_pools_of_arenas_in_use_are_purged_after_the_decay_time() {
        let _serial = decay_setting();
        let mut arenas = ARENAS.lock();
        arenas.decay_from_base(60_000);
        let pools: Vec<_> = (0..BLOCK_POOLS_PER_ARENA)
            .map(|_| arenas.take_pool().unwrap().as_ptr())
            .collect();
        let marker = |pool: *mut Pool| pool::pool_memory(pool) as *mut u64;
        for &pool in &pools {
            // SAFETY: a taken pool's memory is ours to write.
            unsafe { *marker(pool) = 0x5ca1ab1e };
        }
        // The pools may come from two arenas (other tests' pools fill
        // parts of them). One pool of the arena holding most of ours stays
        // taken, so that arena stays mapped and its other pools can be
        // watched; the other arena may become wholly free and go.
        let arena_of = |pool: *mut Pool| pool as usize & !(ARENA_SIZE - 1);
        let in_arena = |arena: usize| pools.iter().filter(|&&p| arena_of(p) == arena).count();
        let busiest = pools
            .iter()
            .map(|&p| arena_of(p))
            .max_by_key(|&a| in_arena(a))
            .unwrap();
        let kept = *pools.iter().find(|&&p| arena_of(p) == busiest).unwrap();
        let returned: Vec<_> = pools.iter().copied().filter(|&p| p != kept).collect();
        let watched: Vec<_> = returned
            .iter()
            .copied()
            .filter(|&pool| arena_of(pool) == busiest)
            .collect();
        assert!(!watched.is_empty());
        for &pool in &returned {
            // SAFETY: taken above; only the marker was written.
            unsafe { arenas.give_back_pool(pool) };
        }
        for &pool in &watched {
            // SAFETY: the arena holds `kept`, so it is mapped.
            assert_eq!(unsafe { *marker(pool) }, 0x5ca1ab1e, "purged too early");
        }
        set_decay_ms(20);
        arenas.next_decay_pass_ms = 0;
        std::thread::sleep(std::time::Duration::from_millis(60)); // past twice the decay
        let reused = arenas.take_pool().unwrap().as_ptr();
        for &pool in watched.iter().filter(|&&pool| pool != reused) {
            // SAFETY: as above; the lock is held throughout, so no heap
            // took the pool meanwhile.
            assert_eq!(unsafe { *marker(pool) }, 0, "pages not purged");
        }
        // SAFETY: taken above.
        unsafe {
            arenas.give_back_pool(reused);
            arenas.give_back_pool(kept);
        }
        arenas.decay_from_base(DEFAULT_DECAY_MS);
    }

    #[test]
    fn heaps_run_a_due_decay_pass_without_an_arena_operation() {
        let _serial = decay_setting();
        let before = {
            let mut arenas = ARENAS.lock();
            arenas.decay_from_base(20);
            arenas.next_decay_pass_ms = 0;
            fill_and_empty_three_arenas(&mut arenas);
            arenas.counters
        };
        assert_ne!(
            DECAY_DUE_MS.load(Ordering::Relaxed),
            u64::MAX,
            "free arenas make a pass due"
        );
        std::thread::sleep(std::time::Duration::from_millis(60)); // past twice the decay
        let mut reclaimed = before.reclaimed;
        for _ in 0..100 {
            decay_if_due(); // may find the lock taken by another test
            reclaimed = ARENAS.lock().counters.reclaimed;
            if reclaimed >= before.reclaimed + 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        ARENAS.lock().decay_from_base(DEFAULT_DECAY_MS);
        assert!(reclaimed >= before.reclaimed + 2, "{before:?} {reclaimed}");
    }

    #[test]
    fn a_new_arena_wanted_right_after_a_release_lengthens_the_decay() {
        let _serial = decay_setting();
        let mut arenas = ARENAS.lock();
        arenas.decay_from_base(20);
        arenas.next_decay_pass_ms = 0;
        fill_and_empty_three_arenas(&mut arenas);
        assert_eq!(arenas.decay_in_force(), 20, "no reuse seen yet");
        // Past twice the decay time: the arenas go whatever the pass makes
        // of the pause (`Arenas::keep_for_a_return`).
        std::thread::sleep(std::time::Duration::from_millis(60));
        // The next pool taken runs the decay pass, which gives the arenas
        // back; the program then wants arenas again at once (taking pools
        // until one is mapped: others' arenas may have free pools).
        let released_before = arenas.counters.reclaimed;
        let mapped_before = arenas.counters.allocated_total;
        let mut taken = Vec::new();
        while arenas.counters.allocated_total == mapped_before {
            taken.push(arenas.take_pool().unwrap().as_ptr());
        }
        assert!(arenas.counters.reclaimed >= released_before + 2);
        let lengthened = arenas.decay_in_force();
        for pool in taken {
            // SAFETY: taken above, never used.
            unsafe { arenas.give_back_pool(pool) };
        }
        arenas.decay_from_base(DEFAULT_DECAY_MS);
        assert_eq!(lengthened, 40, "a decay twice as long would have served");
    }

    #[test]
    fn a_pass_after_a_pause_keeps_the_arenas_for_a_program_coming_back() {
        let _serial = decay_setting();
        let mut arenas = ARENAS.lock();
        arenas.decay_from_base(20);
        // Only this test's arenas are free, so that their ages are known.
        arenas.release_free_arenas();
        // Passes are given made-up times after the arenas became free, so
        // that a slow machine cannot change what the test sees.
        // On time (a pass a quarter of the decay after it expired): the
        // arenas go, and the decay stays.
        arenas.next_decay_pass_ms = 0;
        let before = arenas.counters;
        fill_and_empty_three_arenas(&mut arenas);
        let emptied = os::now_ms();
        arenas.release_decayed(emptied + 25);
        let on_time = arenas.counters;
        let on_time_decay = arenas.decay_in_force();
        arenas.forget_reuse();
        // Late by more than half the decay (no pass ran: the program left
        // its pools alone), within twice the decay: kept, and the decay is
        // twice the oldest arena's age (35 ms, or a few more if emptying
        // them crossed a tick of the clock).
        arenas.next_decay_pass_ms = 0;
        fill_and_empty_three_arenas(&mut arenas);
        let emptied = os::now_ms();
        arenas.release_decayed(emptied + 35);
        let late = arenas.counters;
        let late_decay = arenas.decay_in_force();
        // Not wanted after all: they go once that decay is past, and the
        // next pass after one more decay time halves it.
        let released_at = emptied + late_decay + 10;
        arenas.next_decay_pass_ms = 0;
        arenas.release_decayed(released_at);
        let expired = arenas.counters;
        arenas.next_decay_pass_ms = 0;
        arenas.release_decayed(released_at + late_decay + 1);
        let idle_decay = arenas.decay_in_force();
        arenas.decay_from_base(DEFAULT_DECAY_MS);
        assert!(
            on_time.reclaimed >= before.reclaimed + 2,
            "{before:?} {on_time:?}"
        );
        assert_eq!(on_time_decay, 20);
        assert_eq!(
            late.reclaimed, on_time.reclaimed,
            "given back after a pause"
        );
        assert!((70..=90).contains(&late_decay), "{late_decay}");
        assert!(
            expired.reclaimed >= late.reclaimed + 2,
            "{late:?} {expired:?}"
        );
        assert_eq!(idle_decay, late_decay / 2);
    }

    #[test]
    fn reuse_lengthens_the_decay_up_to_a_second_and_idleness_shortens_it_to_the_base() {
        let _serial = decay_setting();
        let mut arenas = ARENAS.lock();
        arenas.decay_from_base(30);
        // Releases each followed by a new arena 5 ms later (times made up:
        // the verdicts only compare them).
        let mut now = 1_000_000;
        let mut lengthened = Vec::new();
        for _ in 0..7 {
            arenas.released_at_ms = now;
            arenas.released_window_ms = arenas.decay_in_force();
            arenas.judge_release(now + 5, true);
            lengthened.push(arenas.decay_in_force());
            now += 10_000;
        }
        // A new arena wanted only after the window: not a reuse.
        arenas.released_at_ms = now;
        arenas.released_window_ms = arenas.decay_in_force();
        arenas.judge_release(now + MAX_DECAY_MS + 1, true);
        let late = arenas.decay_in_force();
        // Releases whose arenas nobody wanted within the window; a pass
        // inside the window gives no verdict yet.
        let mut shortened = Vec::new();
        for _ in 0..6 {
            now += 10_000;
            let window = arenas.decay_in_force();
            arenas.released_at_ms = now;
            arenas.released_window_ms = window;
            arenas.judge_release(now + window, false);
            assert_eq!(arenas.decay_in_force(), window, "judged inside the window");
            arenas.judge_release(now + window + 1, false);
            shortened.push(arenas.decay_in_force());
        }
        arenas.decay_from_base(DEFAULT_DECAY_MS);
        assert_eq!(lengthened, [60, 120, 240, 480, 960, 1000, 1000]);
        assert_eq!(late, 500);
        assert_eq!(shortened, [250, 125, 62, 31, 30, 30]);
    }
}
