//! The address map: answers "is this pointer inside one of our arenas, and
//! which?" exactly and in O(1) for any pointer value, without touching the
//! memory the pointer points to.
//!
//! It plays the part of CPython's radix tree (`arena_map_is_used`). Because
//! our arenas are aligned to their size, an arena is identified by the bits
//! of an address above `ARENA_SHIFT`, and one leaf slot per arena suffices
//! (CPython needs head/tail coverage records for unaligned arenas). Two
//! levels cover the `ADDRESS_BITS`-bit user address space: a static root
//! and leaves mapped on demand. Lookups are lock-free (two dependent loads);
//! leaves are only ever added, and slots change only under the arena lock.
//!
//! Free paths try the arena space's one-compare check first
//! ([`crate::arena_space::contains`]) and the tree only for arenas mapped
//! outside it (see [`is_ours`]).

use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::arena::Arena;
use crate::config::{ADDRESS_BITS, ARENA_SHIFT};
use crate::os;

const KEY_BITS: u32 = ADDRESS_BITS - ARENA_SHIFT;
const ROOT_BITS: u32 = KEY_BITS / 2;
const LEAF_BITS: u32 = KEY_BITS - ROOT_BITS;
const LEAF_SLOTS: usize = 1 << LEAF_BITS;

/// One leaf: a slot per arena-sized stretch of address space.
struct Leaf {
    slots: [AtomicPtr<Arena>; LEAF_SLOTS],
}

/// Bytes of one leaf node, as mapped.
pub const LEAF_BYTES: usize = core::mem::size_of::<Leaf>();
/// Bytes of the static root.
pub const ROOT_BYTES: usize = core::mem::size_of::<[AtomicPtr<Leaf>; 1 << ROOT_BITS]>();

static ROOT: [AtomicPtr<Leaf>; 1 << ROOT_BITS] =
    [const { AtomicPtr::new(null_mut()) }; 1 << ROOT_BITS];
static LEAVES_MAPPED: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn split(address: usize) -> Option<(usize, usize)> {
    if address >> ADDRESS_BITS != 0 {
        return None;
    }
    let key = address >> ARENA_SHIFT;
    Some((key >> LEAF_BITS, key & (LEAF_SLOTS - 1)))
}

/// The arena containing `address`, or `None` when the address is not ours.
#[inline(always)]
pub fn arena_of(address: usize) -> Option<NonNull<Arena>> {
    let (root_index, leaf_index) = split(address)?;
    let leaf = ROOT[root_index].load(Ordering::Acquire);
    if leaf.is_null() {
        return None;
    }
    // SAFETY: a non-null root entry points to a leaf mapped by `insert` and
    // never unmapped; `leaf_index < LEAF_SLOTS` by construction.
    let slot = unsafe { (*leaf).slots.get_unchecked(leaf_index) };
    NonNull::new(slot.load(Ordering::Acquire))
}

/// Whether `address` lies inside one of our arenas: exact for any value.
#[inline(always)]
pub fn contains(address: usize) -> bool {
    arena_of(address).is_some()
}

/// Whether `address`, null or a live block of ours or of another
/// allocator, is ours. Not for arbitrary values: an address in the arena
/// space where no arena lives now answers true (use [`contains`]).
#[inline]
pub fn is_ours(address: usize) -> bool {
    crate::arena_space::contains(address) || in_arena_outside_space(address)
}

/// Whether `address`, outside the arena space, is in one of our arenas
/// mapped on their own. Exact for any value outside the space.
#[inline]
pub fn in_arena_outside_space(address: usize) -> bool {
    ARENAS_OUTSIDE_SPACE.load(Ordering::Acquire) && contains(address)
}

/// Whether an arena was ever mapped outside the arena space (on its own):
/// until then, an address outside the space is not ours, and `is_ours`
/// answers with the space's one compare, without walking the tree. The
/// free and realloc of every block above the threshold (libc's) ask it.
static ARENAS_OUTSIDE_SPACE: AtomicBool = AtomicBool::new(false);

/// Why an arena could not be recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The arena lies above the address bits the map covers.
    AddressOutOfRange,
    /// The OS refused memory for a new leaf.
    OutOfMemory,
}

/// Record that the arena starting at `base` is `arena`. Called with the arena
/// lock held (so leaves are never mapped twice). On failure the map is
/// unchanged.
pub fn insert(base: usize, arena: NonNull<Arena>) -> Result<(), InsertError> {
    let (root_index, leaf_index) = split(base).ok_or(InsertError::AddressOutOfRange)?;
    let mut leaf = ROOT[root_index].load(Ordering::Acquire);
    if leaf.is_null() {
        leaf = os::map(LEAF_BYTES)
            .ok_or(InsertError::OutOfMemory)?
            .as_ptr()
            .cast();
        LEAVES_MAPPED.fetch_add(1, Ordering::Relaxed);
        // Release: a reader that sees the leaf sees it zeroed (it is fresh
        // anonymous memory, so no stores precede this one anyway).
        ROOT[root_index].store(leaf, Ordering::Release);
    }
    // SAFETY: `leaf` is a live leaf (just mapped, or published earlier).
    unsafe { (*leaf).slots[leaf_index].store(arena.as_ptr(), Ordering::Release) };
    if !crate::arena_space::contains(base) {
        // Before any block of the arena is handed out, so before any free
        // or realloc of one could ask `is_ours`.
        ARENAS_OUTSIDE_SPACE.store(true, Ordering::Release);
    }
    Ok(())
}

/// Forget the arena at `base` (it is being unmapped). Arena lock held.
pub fn remove(base: usize) {
    if let Some((root_index, leaf_index)) = split(base) {
        let leaf = ROOT[root_index].load(Ordering::Acquire);
        if !leaf.is_null() {
            // SAFETY: as in `insert`.
            unsafe { (*leaf).slots[leaf_index].store(null_mut(), Ordering::Release) };
        }
    }
}

/// Leaves mapped so far (statistics: the map's own memory).
pub fn leaves_mapped() -> usize {
    LEAVES_MAPPED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ARENA_SIZE;

    #[test]
    fn foreign_and_extreme_pointers_are_not_ours() {
        let on_stack = 0u8;
        let boxed = Box::new(0u64);
        for address in [
            0,
            1,
            &on_stack as *const u8 as usize,
            &*boxed as *const u64 as usize,
            usize::MAX,
            1 << ADDRESS_BITS,
            (1 << ADDRESS_BITS) - 1,
        ] {
            assert!(!contains(address), "{address:#x}");
        }
    }

    #[test]
    fn a_failed_leaf_mapping_leaves_the_map_unchanged() {
        // An address in a stretch no real arena uses (the top of the range).
        let base = (1usize << ADDRESS_BITS) - ARENA_SIZE;
        os::inject_map_failures(1);
        assert_eq!(
            insert(base, NonNull::dangling()),
            Err(InsertError::OutOfMemory)
        );
        assert!(!contains(base));
        assert_eq!(
            insert(1 << ADDRESS_BITS, NonNull::dangling()),
            Err(InsertError::AddressOutOfRange)
        );
    }

    #[test]
    fn inserted_range_is_exact() {
        // A fake arena: only its address is used as the map's value.
        let arena = NonNull::<Arena>::dangling();
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE).unwrap().as_ptr() as usize;
        insert(base, arena).unwrap();
        assert_eq!(arena_of(base), Some(arena));
        assert_eq!(arena_of(base + ARENA_SIZE - 1), Some(arena));
        // Neighbouring addresses may belong to real arenas of other tests,
        // but never to this one.
        assert_ne!(arena_of(base - 1), Some(arena));
        assert_ne!(arena_of(base + ARENA_SIZE), Some(arena));
        remove(base);
        assert!(!contains(base));
        // SAFETY: mapped above, no longer referenced.
        unsafe { os::unmap(NonNull::new(base as *mut u8).unwrap(), ARENA_SIZE) };
    }
}
