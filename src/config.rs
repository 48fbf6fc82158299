//! Build-time configuration: the tunables of the 2002 proposal (alignment and
//! size-class spacing, small-request threshold, pool size, arena size) and
//! the default backend of each domain. Values come from `build.rs`, which
//! validates them; everything here is derived from them at compile time.

include!(concat!(env!("OUT_DIR"), "/config.rs"));

/// Number of size classes: requests of 1..=ALIGNMENT bytes are class 0,
/// ALIGNMENT+1..=2*ALIGNMENT class 1, and so on up to the threshold.
pub const NUM_SIZE_CLASSES: usize = SMALL_REQUEST_THRESHOLD / ALIGNMENT;

/// Pools in one arena (arenas are aligned to their size, so no pool is lost
/// to alignment). The first `METADATA_POOLS` hold the records ("headers")
/// of all the arena's pools, side by side; the others hold blocks.
pub const POOLS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;

/// Pools per arena that serve blocks.
pub const BLOCK_POOLS_PER_ARENA: usize = POOLS_PER_ARENA - METADATA_POOLS;

/// Bits of a user-space address on the platforms we support (x86-64 with
/// four-level paging, AArch64 with 48-bit VA). The address map covers them;
/// any pointer above is, by construction, not ours.
pub const ADDRESS_BITS: u32 = 48;

/// How many completely empty pools a heap keeps for reuse before handing
/// pools back to their arena (which takes the arena lock).
pub const HEAP_EMPTY_POOL_CACHE: usize = 4;

/// Lazy carving works a page at a time: fresh blocks are threaded onto a
/// pool's free list only for the page being entered, so untouched pages of
/// a pool are never faulted in by the allocator itself.
pub const CARVE_BYTES: usize = 4096;
const _: () = assert!(CARVE_BYTES.is_power_of_two());

const _: () = assert!(NUM_SIZE_CLASSES >= 1 && NUM_SIZE_CLASSES <= 128);
const _: () = assert!(BLOCK_POOLS_PER_ARENA >= 1);
