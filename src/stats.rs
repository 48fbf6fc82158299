//! Statistics: a snapshot of the pools, arenas, address map and heaps,
//! computed on request by walking the arenas and the heaps (nothing is
//! counted on the fast paths), and its report in the layout of CPython's
//! `sys._debugmallocstats()`, followed by what a threaded allocator adds.
//!
//! The walks read records that their owners update meanwhile (pools,
//! heaps, block caches): only their atomics, through raw field pointers
//! (`pool::observe`, the heap registry's walk), never a reference to a
//! whole record (see `pool`'s module essay).

use core::fmt::Write;

use crate::address_map;
use crate::arena::{ArenaCounters, ARENAS};
use crate::arena_space::SpaceView;
use crate::config::{
    ALIGNMENT, ARENA_SIZE, METADATA_POOLS, NUM_SIZE_CLASSES, POOLS_PER_ARENA, POOL_SIZE,
    SMALL_REQUEST_THRESHOLD,
};
use crate::heap::{self, HeapState, HeapView};
use crate::os;
use crate::pool::{self, PoolState};
use crate::size_class::{block_size, blocks_per_pool, quantization_loss};

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ClassStats {
    pub block_size: usize,
    pub pools: usize,
    pub blocks_in_use: usize,
    pub blocks_available: usize,
    /// Of `blocks_available`, those parked in the heaps' block caches.
    pub blocks_cached: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub classes: Vec<ClassStats>,
    pub arenas: ArenaCounters,
    pub bytes_in_allocated_blocks: usize,
    pub bytes_in_available_blocks: usize,
    /// Pools in no heap's use: free in their arena, or never carved.
    pub unused_pools: usize,
    /// Empty pools kept by heaps for reuse.
    pub cached_pools: usize,
    pub bytes_lost_to_pool_headers: usize,
    pub bytes_lost_to_quantization: usize,
    pub address_map_leaves: usize,
    pub address_map_bytes: usize,
    pub arena_space: SpaceView,
    pub heaps: HeapTotals,
    pub bytes_returned_to_os: u64,
    pub metadata_bytes: usize,
}

impl Snapshot {
    pub fn blocks_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.blocks_in_use).sum()
    }
}

pub fn snapshot() -> Snapshot {
    let mut snap = Snapshot {
        classes: (0..NUM_SIZE_CLASSES)
            .map(|class| ClassStats {
                block_size: block_size(class),
                ..ClassStats::default()
            })
            .collect(),
        ..Snapshot::default()
    };
    {
        let arenas = ARENAS.lock();
        snap.arenas = arenas.counters;
        snap.metadata_bytes += arenas.metadata_bytes();
        snap.arena_space = arenas.space_view();
        snap.metadata_bytes += snap.arena_space.bookkeeping_bytes;
        for view in arenas.views() {
            snap.unused_pools += POOLS_PER_ARENA - view.carved;
            for index in METADATA_POOLS..view.carved {
                let pool = pool::pool_record(view.base, index);
                // SAFETY: carved pools lie inside a mapped arena (we hold
                // the arena lock, so it cannot be unmapped). Their owners
                // update the records meanwhile: `observe` reads only the
                // atomic fields, through raw field pointers.
                let pool = unsafe { pool::observe(pool) };
                match pool.state {
                    PoolState::Unused => snap.unused_pools += 1,
                    PoolState::Cached => snap.cached_pools += 1,
                    PoolState::Available | PoolState::Full => {
                        let class = pool.class.min(NUM_SIZE_CLASSES - 1);
                        let used = (pool.used as usize).min(blocks_per_pool(class));
                        let entry = &mut snap.classes[class];
                        entry.pools += 1;
                        entry.blocks_in_use += used;
                        entry.blocks_available += blocks_per_pool(class) - used;
                        snap.bytes_lost_to_quantization += quantization_loss(class);
                    }
                }
            }
        }
    }
    // Blocks parked in the heaps' block caches are free for the program's
    // purposes, though their pools count them as allocated.
    let (totals, cached) = heap_totals();
    for (entry, cached) in snap.classes.iter_mut().zip(cached) {
        let cached = cached.min(entry.blocks_in_use);
        entry.blocks_in_use -= cached;
        entry.blocks_available += cached;
        entry.blocks_cached = cached;
    }
    // The pool records of each arena fill its metadata pools.
    snap.bytes_lost_to_pool_headers = snap.arenas.current as usize * METADATA_POOLS * POOL_SIZE;
    for c in &snap.classes {
        snap.bytes_in_allocated_blocks += c.blocks_in_use * c.block_size;
        snap.bytes_in_available_blocks += c.blocks_available * c.block_size;
    }
    snap.address_map_leaves = address_map::leaves_mapped();
    snap.address_map_bytes =
        address_map::ROOT_BYTES + snap.address_map_leaves * address_map::LEAF_BYTES;
    snap.heaps = totals;
    snap.metadata_bytes += snap.heaps.metadata_bytes;
    snap.bytes_returned_to_os = os::bytes_unmapped();
    snap
}

/// What statistics report about heaps.
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

/// The heaps' totals, and the blocks held in the block caches of all heaps
/// per class (a cached block counts as allocated in its pool; statistics
/// count it as available).
fn heap_totals() -> (HeapTotals, [usize; NUM_SIZE_CLASSES]) {
    let mut totals = HeapTotals::default();
    let mut cached = [0; NUM_SIZE_CLASSES];
    let registered = heap::walk(|heap: &HeapView| {
        match heap.state {
            HeapState::Live => totals.live += 1,
            // Orphaned heaps (fork children) hold their pools for good.
            HeapState::Abandoned | HeapState::Orphaned => {
                totals.abandoned += 1;
                totals.abandoned_pools += heap.pools_owned;
            }
            HeapState::Free => totals.free += 1,
        }
        totals.remote_frees += heap.remote_frees_received;
        totals.pools_taken += heap.pools_taken;
        totals.pools_given_back += heap.pools_given_back;
        for (count, held) in cached.iter_mut().zip(heap.cached_blocks) {
            *count += held;
        }
    });
    totals.created = registered.created;
    totals.metadata_bytes = registered.metadata_bytes;
    (totals, cached)
}

/// CPython's `printone`: the label padded to column 35, `=`, the value
/// right-aligned with thousands separators in 21 columns.
fn line(out: &mut String, label: &str, value: u64) {
    let _ = writeln!(out, "{label:<35}={:>21}", grouped(value));
}

fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Small block threshold = {SMALL_REQUEST_THRESHOLD}, in {NUM_SIZE_CLASSES} size classes.\n"
    );
    out.push_str("class   size   num pools   blocks in use  avail blocks\n");
    out.push_str("-----   ----   ---------   -------------  ------------\n");
    for (class, c) in snap.classes.iter().enumerate() {
        if c.pools > 0 {
            let _ = writeln!(
                out,
                "{class:5} {:6} {:11} {:15} {:13}",
                c.block_size, c.pools, c.blocks_in_use, c.blocks_available
            );
        }
    }
    out.push('\n');
    let a = &snap.arenas;
    line(&mut out, "# arenas allocated total", a.allocated_total);
    line(&mut out, "# arenas reclaimed", a.reclaimed);
    line(&mut out, "# arenas highwater mark", a.highwater);
    line(&mut out, "# arenas allocated current", a.current);
    let arena_bytes = a.current * ARENA_SIZE as u64;
    line(
        &mut out,
        &format!("{} arenas * {ARENA_SIZE} bytes/arena", a.current),
        arena_bytes,
    );
    out.push('\n');
    line(
        &mut out,
        "# bytes in allocated blocks",
        snap.bytes_in_allocated_blocks as u64,
    );
    line(
        &mut out,
        "# bytes in available blocks",
        snap.bytes_in_available_blocks as u64,
    );
    let unused = snap.unused_pools + snap.cached_pools;
    line(
        &mut out,
        &format!("{unused} unused pools * {POOL_SIZE} bytes"),
        (unused * POOL_SIZE) as u64,
    );
    line(
        &mut out,
        "# bytes lost to pool headers",
        snap.bytes_lost_to_pool_headers as u64,
    );
    line(
        &mut out,
        "# bytes lost to quantization",
        snap.bytes_lost_to_quantization as u64,
    );
    line(&mut out, "# bytes lost to arena alignment", 0);
    let total = snap.bytes_in_allocated_blocks
        + snap.bytes_in_available_blocks
        + unused * POOL_SIZE
        + snap.bytes_lost_to_pool_headers
        + snap.bytes_lost_to_quantization;
    line(&mut out, "Total", total as u64);
    out.push_str("\narena map counts\n");
    line(
        &mut out,
        "# arena map leaf nodes",
        snap.address_map_leaves as u64,
    );
    out.push('\n');
    line(
        &mut out,
        "# bytes lost to arena map root",
        address_map::ROOT_BYTES as u64,
    );
    line(
        &mut out,
        "# bytes lost to arena map leaves",
        (snap.address_map_leaves * address_map::LEAF_BYTES) as u64,
    );
    line(&mut out, "Total", snap.address_map_bytes as u64);
    out.push_str("\narena space\n");
    let space = &snap.arena_space;
    line(&mut out, "# bytes reserved", space.reserved_bytes as u64);
    let in_space = space.slots_handed_out - space.slots_given_back;
    line(&mut out, "# arenas in the space", in_space as u64);
    line(
        &mut out,
        "# arenas mapped outside it",
        snap.arenas.current.saturating_sub(in_space as u64),
    );
    line(
        &mut out,
        "# slots given back, reusable",
        space.slots_given_back as u64,
    );
    line(
        &mut out,
        "# arenas committed with huge pages",
        space.huge_page_commits as u64,
    );
    out.push_str("\nthread heaps\n");
    let h = &snap.heaps;
    line(&mut out, "# heaps live", h.live as u64);
    line(&mut out, "# heaps abandoned", h.abandoned as u64);
    line(&mut out, "# heaps free for reuse", h.free as u64);
    line(
        &mut out,
        "# pools held by abandoned heaps",
        h.abandoned_pools as u64,
    );
    line(
        &mut out,
        "# empty pools cached by heaps",
        snap.cached_pools as u64,
    );
    line(
        &mut out,
        "# blocks in heaps' block caches",
        snap.classes.iter().map(|c| c.blocks_cached as u64).sum(),
    );
    line(&mut out, "# cross-thread frees", h.remote_frees);
    line(&mut out, "# pools taken from arenas", h.pools_taken);
    line(&mut out, "# pools given back to arenas", h.pools_given_back);
    line(
        &mut out,
        "# bytes returned to the OS",
        snap.bytes_returned_to_os,
    );
    line(
        &mut out,
        "# bytes of allocator metadata",
        snap.metadata_bytes as u64,
    );
    let forwarded: Vec<_> = crate::domain::Domain::ALL
        .into_iter()
        .filter(|&domain| crate::domain::forwarding(domain))
        .collect();
    if !forwarded.is_empty() {
        out.push_str(
            "\nCPython-named exports: libpython comes after this library; \
             \"forwarded\": to libpython's functions (which call CPython's allocator \
             tables; ours serve the pools); \"direct\": to the pools, while CPython's \
             table is ours\n",
        );
        for domain in forwarded {
            let how = if crate::domain::serving_directly(domain) {
                "direct"
            } else {
                "forwarded"
            };
            let _ = writeln!(out, "{:<10}{how}", format!("{}:", domain.name()));
        }
    }
    let _ = writeln!(
        out,
        "\nconfiguration: alignment {ALIGNMENT}, pool {POOL_SIZE} bytes, arena {ARENA_SIZE} bytes"
    );
    out
}

/// How `domain`'s CPython-named exports reach CPython, in one word for
/// the summary line: `direct` (a libpython after us, whose table for the
/// domain is ours: the exports serve the pools), `libpython` (forwarded
/// to libpython's functions) or `none` (no libpython after us: the
/// exports serve alone).
fn exports(domain: crate::domain::Domain) -> &'static str {
    if crate::domain::serving_directly(domain) {
        "direct"
    } else if crate::domain::forwarding(domain) {
        "libpython"
    } else {
        "none"
    }
}

/// One line for `PYMALLOC_STATS_FILE`: `key=value` pairs, written with a
/// single `write`, so lines from concurrent processes do not interleave.
pub fn summary_line(snap: &Snapshot) -> String {
    format!(
        "pymalloc pid={} arenas_total={} arenas_current={} blocks_in_use={} pools_taken={} \
         heaps_created={} cross_thread_frees={} mem_exports={} object_exports={}\n",
        std::process::id(),
        snap.arenas.allocated_total,
        snap.arenas.current,
        snap.blocks_in_use(),
        snap.heaps.pools_taken,
        snap.heaps.created,
        snap.heaps.remote_frees,
        exports(crate::domain::Domain::Mem),
        exports(crate::domain::Domain::Obj),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_grouped_like_cpython() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(4_194_304), "4,194,304");
        let mut out = String::new();
        line(&mut out, "# arenas allocated total", 4);
        assert_eq!(
            out,
            "# arenas allocated total           =                    4\n"
        );
    }

    #[test]
    fn live_blocks_show_up_in_their_class() {
        // Blocks of an odd class that other tests rarely use.
        let size = block_size(NUM_SIZE_CLASSES - 2);
        let blocks: Vec<_> = (0..100).map(|_| crate::allocator::malloc(size)).collect();
        let snap = snapshot();
        assert!(snap.classes[NUM_SIZE_CLASSES - 2].blocks_in_use >= 100);
        let text = render(&snap);
        assert!(text.starts_with("Small block threshold = "));
        assert!(text.contains("# arenas allocated current"));
        for block in blocks {
            // SAFETY: live blocks from malloc.
            unsafe { crate::allocator::free(block) };
        }
    }
}
