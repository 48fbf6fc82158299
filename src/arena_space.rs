//! The arena space: one span of address space, reserved up front (no
//! memory, no commit charge), out of which arenas are carved. Its point is
//! the free path: "is this block ours?" becomes one subtraction and one
//! compare against the span, instead of the two dependent loads of the
//! address map's radix tree.
//!
//! The answer is exact for every pointer a caller may pass to free: a live
//! block of ours is inside the span, and a live block of any other
//! allocator cannot be, because the span stays reserved for the life of
//! the process (arenas given back are decommitted in place, never
//! unmapped, so the kernel never reuses their addresses). For arbitrary
//! pointer values (`PyCore_IsPooled`) the address map stays the exact
//! answer: it also knows which slots hold a live arena.
//!
//! Arenas are mapped on their own, outside the span, and found through
//! the address map alone (a cold call on free), when:
//! * the span is full, or its reservation was refused (too little
//!   address space, or `PYMALLOC_ARENA_SPACE=0`);
//! * the process has a finite address-space limit (`RLIMIT_AS`, `ulimit
//!   -v`): committing inside a reservation does not count against it, so
//!   the kernel could not hold our arenas to the limit. Mapped one by one
//!   they count, and allocation fails when the limit is reached.
//!
//! All bookkeeping happens under the arena lock: the [`ArenaSpace`] value
//! lives in `arena::Arenas`. Only the span's bounds are global, for the
//! lock-free check.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::ARENA_SIZE;
use crate::os;

/// Address space reserved for arenas unless `PYMALLOC_ARENA_SPACE` says
/// otherwise: more than this machine kind's memory, so that in practice
/// every arena is in the span; small enough for valgrind, which refuses
/// reservations of 64 GiB.
pub const DEFAULT_SPACE_BYTES: u64 = 32 << 30;

/// The largest span accepted (a quarter of the 47-bit user address space).
pub const MAX_SPACE_BYTES: u64 = 1 << 45;

static SPACE_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_SPACE_BYTES);

/// The bounds read by [`contains`]: `[base, base + size)`, the whole
/// span. `base` is written once, before `size` first becomes non-zero
/// (Release); neither changes afterwards. Both in one record, so that the
/// check loads one address.
#[repr(C)]
struct Bounds {
    base: AtomicUsize,
    size: AtomicUsize,
}

static BOUNDS: Bounds = Bounds {
    base: AtomicUsize::new(0),
    size: AtomicUsize::new(0),
};

/// Whether `address` lies in the span. True for every live block in an
/// arena of the span, false for every live block of another allocator and
/// for null: the whole span stays reserved for the life of the process
/// (see the module documentation), so no other allocator can hand out an
/// address inside it.
#[inline(always)]
pub fn contains(address: usize) -> bool {
    // Acquire, then base: a non-zero size implies the base is visible.
    let size = BOUNDS.size.load(Ordering::Acquire);
    address.wrapping_sub(BOUNDS.base.load(Ordering::Relaxed)) < size
}

/// The span's bounds, `(base, size)`: `(0, 0)` until the span is
/// reserved, then fixed for the life of the process. Heaps keep a copy
/// (see `heap::span_offset`), so that the free fast path tests the span
/// without a second global load.
pub fn bounds() -> (usize, usize) {
    let size = BOUNDS.size.load(Ordering::Acquire);
    (BOUNDS.base.load(Ordering::Relaxed), size)
}

/// The span's size for the next reservation (`PYMALLOC_ARENA_SPACE`).
pub fn set_space_bytes(bytes: u64) {
    SPACE_BYTES.store(bytes, Ordering::Relaxed);
}

pub fn space_bytes() -> u64 {
    SPACE_BYTES.load(Ordering::Relaxed)
}

/// Arena memory in use from which new arenas ask for transparent huge
/// pages, unless `PYMALLOC_HUGE_PAGES` says otherwise. A huge page is
/// resident whole from its first touch, so an arena whose pools are not
/// all carved yet costs its full size: below this, 4 KiB pages keep a
/// small heap small (CPython's baseline is about 10 MiB); above it, the
/// pools not yet carved are at most one arena in 32 of the heap, and a
/// heap that grows or is torn down and built again takes one fault per
/// 2 MiB instead of 512 (docs/tuning.md).
pub const DEFAULT_HUGE_PAGES_FROM: u64 = 64 << 20;

/// `HUGE_PAGES_FROM` when huge pages are off.
const HUGE_PAGES_OFF: u64 = u64::MAX;

static HUGE_PAGES_FROM: AtomicU64 = AtomicU64::new(DEFAULT_HUGE_PAGES_FROM);

/// The arena memory in use from which new arenas ask for huge pages
/// (`None`: never).
pub fn set_huge_pages_from(bytes: Option<u64>) {
    HUGE_PAGES_FROM.store(bytes.unwrap_or(HUGE_PAGES_OFF), Ordering::Relaxed);
}

pub fn huge_pages_from() -> Option<u64> {
    Some(HUGE_PAGES_FROM.load(Ordering::Relaxed)).filter(|&bytes| bytes != HUGE_PAGES_OFF)
}

/// What [`ArenaSpace::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// A committed, zeroed arena-sized slot at this address.
    Slot(NonNull<u8>),
    /// No slot to be had here: map the arena on its own.
    Unavailable,
    /// The OS refused to commit memory for the slot.
    OutOfMemory,
}

/// Where the span stands in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotYetReserved,
    Reserved,
    /// Refused, or configured off: never asked for again.
    Absent,
}

/// The span's slot bookkeeping (under the arena lock).
pub struct ArenaSpace {
    state: State,
    base: usize,
    slots: usize,
    /// Slots below this were handed out at some time (the global extent).
    handed_out: usize,
    /// Given-back slots: one bit each, set while decommitted and free.
    given_back: *mut u64,
    /// Whether this is the process's span, whose bounds [`contains`] reads
    /// (set by [`Self::reserve`]; the tests' private spans are not).
    publishes_bounds: bool,
    /// Arena memory in use from which slots ask for huge pages (read when
    /// the span is reserved; `None`: never).
    huge_pages_from: Option<u64>,
    /// Slots committed with huge-page advice, over the span's life.
    huge_page_commits: usize,
    given_back_count: usize,
    /// No word below this one has a bit set.
    first_candidate_word: usize,
}

// SAFETY: the bitmap is owned by the value and only touched through
// `&mut self`, which the arena lock serialises.
unsafe impl Send for ArenaSpace {}

/// What the statistics show of the span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceView {
    pub reserved_bytes: usize,
    pub slots_handed_out: usize,
    pub slots_given_back: usize,
    /// Slots committed with huge-page advice, over the span's life.
    pub huge_page_commits: usize,
    /// The given-back bitmap's own memory.
    pub bookkeeping_bytes: usize,
}

impl ArenaSpace {
    pub const fn new() -> Self {
        ArenaSpace {
            state: State::NotYetReserved,
            base: 0,
            slots: 0,
            handed_out: 0,
            given_back: core::ptr::null_mut(),
            publishes_bounds: false,
            huge_pages_from: None,
            huge_page_commits: 0,
            given_back_count: 0,
            first_candidate_word: 0,
        }
    }

    /// A committed slot for a new arena, reserving the span on first use.
    pub fn take(&mut self) -> Taken {
        if os::address_space_limited() {
            return Taken::Unavailable;
        }
        if self.state == State::NotYetReserved {
            self.reserve(space_bytes() as usize);
        }
        if self.state != State::Reserved {
            return Taken::Unavailable;
        }
        let (slot, fresh) = match self.lowest_given_back() {
            Some(slot) => (slot, false),
            None if self.handed_out < self.slots => (self.handed_out, true),
            None => return Taken::Unavailable,
        };
        let address = self.base + slot * ARENA_SIZE;
        if !os::commit(address, ARENA_SIZE) {
            return Taken::OutOfMemory;
        }
        if self.wants_huge_pages() && os::advise_huge_pages(address, ARENA_SIZE) {
            self.huge_page_commits += 1;
        }
        if fresh {
            self.handed_out += 1;
        } else {
            self.clear_given_back(slot);
        }
        Taken::Slot(NonNull::new(address as *mut u8).expect("the span is not at address 0"))
    }

    /// Whether the arena at `base` came from this span.
    pub fn holds(&self, base: usize) -> bool {
        self.state == State::Reserved && base.wrapping_sub(self.base) < self.slots * ARENA_SIZE
    }

    /// Decommit the slot of the arena at `base` (its pages go back to the
    /// OS; the addresses stay reserved) and keep it for the next arena.
    ///
    /// # Safety
    /// `holds(base)`, and nothing refers to the arena's memory any more.
    pub unsafe fn give_back(&mut self, base: usize) {
        debug_assert!(self.holds(base) && (base - self.base).is_multiple_of(ARENA_SIZE));
        // SAFETY: guaranteed by the caller.
        unsafe { os::decommit(base, ARENA_SIZE) };
        let slot = (base - self.base) / ARENA_SIZE;
        // SAFETY: `slot < self.slots`, so its word is inside the bitmap.
        unsafe { *self.given_back.add(slot / 64) |= 1 << (slot % 64) };
        self.given_back_count += 1;
        self.first_candidate_word = self.first_candidate_word.min(slot / 64);
    }

    pub fn view(&self) -> SpaceView {
        SpaceView {
            reserved_bytes: self.slots * ARENA_SIZE,
            slots_handed_out: self.handed_out,
            slots_given_back: self.given_back_count,
            huge_page_commits: self.huge_page_commits,
            bookkeeping_bytes: self.slots.div_ceil(64) * 8,
        }
    }

    /// Whether the slot being committed should ask for huge pages: arenas
    /// made of whole huge pages, and enough of them in use already.
    fn wants_huge_pages(&self) -> bool {
        let in_use = (self.handed_out - self.given_back_count) * ARENA_SIZE;
        ARENA_SIZE.is_multiple_of(os::HUGE_PAGE_SIZE)
            && self
                .huge_pages_from
                .is_some_and(|from| in_use as u64 >= from)
    }

    fn reserve(&mut self, bytes: usize) {
        self.state = State::Absent;
        if bytes == 0 {
            return;
        }
        let slots = bytes / ARENA_SIZE;
        let Some(bitmap) = os::map(slots.div_ceil(64) * 8) else {
            return;
        };
        let Some(span) = os::reserve_aligned(bytes, ARENA_SIZE) else {
            // SAFETY: mapped just above, referred to by nothing.
            unsafe { os::unmap(bitmap, slots.div_ceil(64) * 8) };
            return;
        };
        self.base = span.as_ptr() as usize;
        self.slots = slots;
        self.given_back = bitmap.as_ptr().cast();
        self.huge_pages_from = huge_pages_from();
        BOUNDS.base.store(self.base, Ordering::Relaxed);
        BOUNDS
            .size
            .store(self.slots * ARENA_SIZE, Ordering::Release);
        self.publishes_bounds = true;
        self.state = State::Reserved;
    }

    /// The lowest given-back slot, lowest first so that the handed-out part
    /// stays dense.
    fn lowest_given_back(&mut self) -> Option<usize> {
        if self.given_back_count == 0 {
            return None;
        }
        for word_index in self.first_candidate_word..self.slots.div_ceil(64) {
            // SAFETY: `word_index` is inside the bitmap.
            let word = unsafe { *self.given_back.add(word_index) };
            if word != 0 {
                self.first_candidate_word = word_index;
                return Some(word_index * 64 + word.trailing_zeros() as usize);
            }
        }
        debug_assert!(false, "given_back_count disagrees with the bitmap");
        None
    }

    fn clear_given_back(&mut self, slot: usize) {
        // SAFETY: `slot < self.slots`, so its word is inside the bitmap.
        unsafe { *self.given_back.add(slot / 64) &= !(1 << (slot % 64)) };
        self.given_back_count -= 1;
    }
}

impl Default for ArenaSpace {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private span (not the process's: only `contains` reads the global
    /// bounds, and the global span is the arenas' own).
    fn private_space(slots: usize) -> ArenaSpace {
        let mut space = ArenaSpace::new();
        let bytes = slots * ARENA_SIZE;
        space.base = os::reserve_aligned(bytes, ARENA_SIZE).unwrap().as_ptr() as usize;
        space.slots = slots;
        space.given_back = os::map(slots.div_ceil(64) * 8).unwrap().as_ptr().cast();
        space.state = State::Reserved;
        space
    }

    /// The `VmFlags` line of the mapping that holds `address`, from
    /// /proc/self/smaps (`hg`: huge-page advice).
    fn vm_flags_of(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for entry in smaps.lines() {
            let first = entry.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&address);
                    continue;
                }
            }
            if inside && entry.starts_with("VmFlags:") {
                return entry.to_string();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    fn has_huge_page_advice(address: usize) -> bool {
        vm_flags_of(address)
            .split_whitespace()
            .any(|flag| flag == "hg")
    }

    #[test]
    fn slots_ask_for_huge_pages_once_enough_arena_memory_is_in_use() {
        let whole_huge_pages = ARENA_SIZE.is_multiple_of(os::HUGE_PAGE_SIZE);
        let mut space = private_space(4);
        space.huge_pages_from = Some(2 * ARENA_SIZE as u64);
        let first = take_slot(&mut space);
        let second = take_slot(&mut space);
        let third = take_slot(&mut space);
        assert!(!has_huge_page_advice(first), "{}", vm_flags_of(first));
        assert!(!has_huge_page_advice(second), "{}", vm_flags_of(second));
        assert_eq!(
            has_huge_page_advice(third),
            whole_huge_pages,
            "{}",
            vm_flags_of(third)
        );
        assert_eq!(
            space.view().huge_page_commits,
            usize::from(whole_huge_pages)
        );
        // Given back, the slot loses the advice with its mapping; taken
        // again below the threshold (one arena in use), it does not ask.
        // SAFETY: committed slots of ours that nothing refers to.
        unsafe {
            space.give_back(third);
            space.give_back(second);
        }
        assert!(!has_huge_page_advice(third));
        assert_eq!(take_slot(&mut space), second);
        assert!(!has_huge_page_advice(second));

        let mut never = private_space(2);
        never.huge_pages_from = None;
        let slot = take_slot(&mut never);
        assert!(!has_huge_page_advice(slot));
        assert_eq!(never.view().huge_page_commits, 0);
    }

    fn take_slot(space: &mut ArenaSpace) -> usize {
        match space.take() {
            Taken::Slot(slot) => slot.as_ptr() as usize,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[test]
    fn slots_are_handed_out_densely_reused_lowest_first_and_zeroed() {
        let mut space = private_space(3);
        let first = take_slot(&mut space);
        let second = take_slot(&mut space);
        let third = take_slot(&mut space);
        assert_eq!(first % ARENA_SIZE, 0);
        assert_eq!(
            (second - first, third - first),
            (ARENA_SIZE, 2 * ARENA_SIZE)
        );
        assert_eq!(space.take(), Taken::Unavailable, "full: map on its own");
        // SAFETY: the slots are committed and ours.
        unsafe {
            *(second as *mut u64) = 7;
            space.give_back(third);
            space.give_back(second);
        }
        assert_eq!(space.view().slots_given_back, 2);
        assert_eq!(
            take_slot(&mut space),
            second,
            "lowest given-back slot first"
        );
        // SAFETY: committed again, so readable; decommitting dropped the page.
        assert_eq!(unsafe { *(second as *const u64) }, 0);
        assert_eq!(take_slot(&mut space), third);
        assert_eq!(space.view().slots_handed_out, 3);
    }

    #[test]
    fn a_refused_commit_is_out_of_memory_and_changes_nothing() {
        let mut space = private_space(2);
        os::inject_map_failures(1);
        assert_eq!(space.take(), Taken::OutOfMemory);
        assert_eq!(space.view().slots_handed_out, 0);
        take_slot(&mut space);
    }

    #[test]
    fn a_span_configured_off_is_never_reserved() {
        let mut space = ArenaSpace::new();
        space.reserve(0);
        assert_eq!(space.state, State::Absent);
        assert_eq!(space.take(), Taken::Unavailable);
        assert_eq!(space.view(), SpaceView::default());
    }

    #[test]
    fn null_and_foreign_pointers_are_outside_the_span() {
        let boxed = Box::new(0u64);
        assert!(!contains(0));
        assert!(!contains(&*boxed as *const u64 as usize));
        assert!(!contains(usize::MAX));
    }
}
