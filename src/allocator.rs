//! The pooled allocator's entry points, with CPython's semantics for
//! `_PyObject_Malloc`/`Calloc`/`Realloc`/`Free` (the functions behind
//! `PyCore_*` and every domain configured as `pymalloc`):
//!
//! * 1..=threshold bytes come from the calling thread's pools; zero bytes
//!   get a distinct block of the smallest class (CPython asks `malloc(1)`;
//!   either way the pointer is distinct and non-NULL);
//! * larger requests go to the system allocator;
//! * free and realloc decide ownership with the address map, so a pointer
//!   from the system allocator is handed back to it;
//! * realloc keeps a pooled block when the new size still fits its class
//!   and would not waste a quarter of it; otherwise it moves the data.
//!   A block from the system allocator stays there (its length is unknown).

use core::ptr;

use crate::address_map;
use crate::arena_space;
use crate::heap::{self, Heap};
use crate::size_class::class_of;
use crate::system;
use crate::thread;

/// The allocator behind the pools: serves requests above the threshold
/// and owns every pointer the address map does not know. The standalone
/// library uses libc (`System`); hook tables installed into CPython use
/// the allocator they replaced. `Copy` (a unit or a reference), so that
/// the free path hands it to its out-of-line part in a register rather
/// than through the stack.
pub trait Fallback: Copy {
    fn malloc(&self, size: usize) -> *mut u8;
    fn calloc(&self, count: usize, size: usize) -> *mut u8;
    /// # Safety
    /// `block` is a live block of this fallback.
    unsafe fn realloc(&self, block: *mut u8, size: usize) -> *mut u8;
    /// # Safety
    /// `block` is a live block of this fallback.
    unsafe fn free(&self, block: *mut u8);
}

/// libc malloc.
#[derive(Clone, Copy)]
pub struct System;

impl Fallback for System {
    #[inline]
    fn malloc(&self, size: usize) -> *mut u8 {
        system::malloc(size)
    }
    #[inline]
    fn calloc(&self, count: usize, size: usize) -> *mut u8 {
        system::calloc(count, size)
    }
    #[inline]
    unsafe fn realloc(&self, block: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: guaranteed by the caller.
        unsafe { system::realloc(block, size) }
    }
    #[inline]
    unsafe fn free(&self, block: *mut u8) {
        // SAFETY: guaranteed by the caller.
        unsafe { system::free(block) }
    }
}

#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    malloc_with(&System, size)
}

pub fn calloc(count: usize, size: usize) -> *mut u8 {
    calloc_with(&System, count, size)
}

/// # Safety
/// `block` is null, or a live block of this allocator or of the system
/// allocator.
#[inline(always)]
pub unsafe fn free(block: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { free_with(&System, block) }
}

/// # Safety
/// As for `free`.
pub unsafe fn realloc(block: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    unsafe { realloc_with(&System, block, size) }
}

#[inline(always)]
pub fn malloc_with<F: Fallback>(fallback: &F, size: usize) -> *mut u8 {
    match class_of(size) {
        Some(class) => heap::alloc(class),
        None => malloc_unpooled_size(fallback, size),
    }
}

/// A block for a small request (1..=threshold bytes); `None` for any
/// other size.
#[inline(always)]
pub fn malloc_small(size: usize) -> Option<*mut u8> {
    class_of(size).map(heap::alloc)
}

/// A zeroed block for `count * size` bytes when that is a small request
/// (1..=threshold bytes); `None` for any other product, overflow included.
#[inline(always)]
pub fn calloc_small(count: usize, size: usize) -> Option<*mut u8> {
    let total = count.checked_mul(size)?;
    let class = class_of(total)?;
    let block = heap::alloc(class);
    if !block.is_null() {
        // SAFETY: the block has at least `total` bytes.
        unsafe { ptr::write_bytes(block, 0, total) };
    }
    Some(block)
}

#[cold]
#[inline(never)]
fn malloc_unpooled_size<F: Fallback>(fallback: &F, size: usize) -> *mut u8 {
    if size == 0 {
        heap::alloc(0)
    } else {
        fallback.malloc(size)
    }
}

pub fn calloc_with<F: Fallback>(fallback: &F, count: usize, size: usize) -> *mut u8 {
    match calloc_small(count, size) {
        Some(block) => block,
        None => calloc_unpooled(fallback, count, size),
    }
}

/// The calloc requests `calloc_small` declines: overflow (null), zero
/// bytes (a distinct block of the smallest class) and products above the
/// threshold (the fallback's).
#[cold]
#[inline(never)]
pub fn calloc_unpooled<F: Fallback>(fallback: &F, count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        None => ptr::null_mut(),
        Some(0) => {
            let block = heap::alloc(0);
            if !block.is_null() {
                // SAFETY: a block of the smallest class has at least 1 byte.
                unsafe { ptr::write_bytes(block, 0, 1) };
            }
            block
        }
        Some(_) => fallback.calloc(count, size),
    }
}

/// # Safety
/// `block` is null, or a live block of this allocator or of `fallback`.
#[inline(always)]
pub unsafe fn free_with<F: Fallback>(fallback: &F, block: *mut u8) {
    let heap = thread::current_heap();
    // SAFETY: the calling thread's heap.
    if let Some(span_offset) = unsafe { heap::span_offset(heap, block as usize) } {
        // SAFETY: a live block (caller) in the arena space is in one of
        // our arenas; `heap` is the calling thread's.
        unsafe { heap::free_in(heap, block, span_offset) }
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { free_outside_span(*fallback, block, heap) }
    }
}

/// Null, a block of an arena mapped outside the arena space, the
/// fallback's, or a block of the space that the calling thread's heap did
/// not know the space's bounds for yet: out of line, so that the fast path
/// above needs no frame.
///
/// # Safety
/// As for `free_with`; `heap` is the calling thread's.
#[cold]
#[inline(never)]
unsafe fn free_outside_span<F: Fallback>(fallback: F, block: *mut u8, heap: *mut Heap) {
    let address = block as usize;
    if arena_space::contains(address) {
        // SAFETY: the calling thread's heap (caller); a live block (caller)
        // in the arena space is ours.
        unsafe {
            heap::learn_span(heap);
            heap::free(block)
        }
    } else if address_map::in_arena_outside_space(address) {
        // SAFETY: the address map says the live block is in one of our arenas.
        unsafe { heap::free(block) }
    } else if !block.is_null() {
        // SAFETY: not ours, so (caller) a live block of the fallback.
        unsafe { fallback.free(block) }
    }
}

/// # Safety
/// As for `free_with`.
///
/// A realloc in the arena space takes the ownership test, the class and the
/// pool record from the calling thread's span, as a free does, and keeps
/// the frame of its move to the moving case: CPython's lists grow by
/// `PyMem_Realloc` (from NULL for a list's first item, then across classes
/// as they grow), so both cases are common.
#[inline(always)]
pub unsafe fn realloc_with<F: Fallback>(fallback: &F, block: *mut u8, size: usize) -> *mut u8 {
    if block.is_null() {
        return malloc_with(fallback, size);
    }
    let heap = thread::current_heap();
    // SAFETY: the calling thread's heap.
    let Some(span_offset) = (unsafe { heap::span_offset(heap, block as usize) }) else {
        // SAFETY: guaranteed by the caller.
        return unsafe { realloc_outside_span(*fallback, block, size) };
    };
    // SAFETY: a live block (caller) in the arena space is in one of our
    // arenas, and `span_offset` is its offset.
    let capacity = unsafe { heap::usable_size_in_span(block, span_offset) };
    if stays_in_place(size, capacity) {
        return block;
    }
    // SAFETY: as above; a heap that knows the span is a real heap (the
    // placeholders' span is empty).
    unsafe { realloc_move(*fallback, block, capacity, size) }
}

/// Whether a realloc to `size` bytes keeps a pooled block of `capacity`
/// usable bytes: it fits, and would not waste a quarter of the block.
#[inline(always)]
fn stays_in_place(size: usize, capacity: usize) -> bool {
    size <= capacity && size * 4 > capacity * 3
}

/// The moving part of `realloc_with` for a block of the arena space: a
/// new block, the copy, and the old block freed as `free_in` frees it.
/// The heap and the block's offset are read again after the copy rather
/// than kept across the call: fewer registers to save on every move.
///
/// # Safety
/// `block` is a live block of the arena space of `capacity` usable bytes,
/// inside the calling thread's span (so its heap is a real one).
#[inline(never)]
unsafe fn realloc_move<F: Fallback>(
    fallback: F,
    block: *mut u8,
    capacity: usize,
    size: usize,
) -> *mut u8 {
    let copied = size.min(capacity);
    let moved = malloc_with(&fallback, size);
    if moved.is_null() {
        return moved;
    }
    // SAFETY: both blocks are live and distinct; `copied` bytes fit both.
    unsafe { ptr::copy_nonoverlapping(block, moved, copied) };
    let heap = thread::current_heap();
    // SAFETY: the calling thread's heap, whose span holds `block` (caller):
    // an allocation may attach a heap only to a thread that had none.
    unsafe {
        let span_offset = heap::span_offset(heap, block as usize).unwrap_unchecked();
        heap::free_in(heap, block, span_offset);
    }
    moved
}

/// A realloc of a block outside the calling thread's span: the C
/// library's (or the wrapped allocator's) blocks, our arenas mapped on
/// their own, and blocks of the space before the thread learnt its bounds.
///
/// # Safety
/// As for `realloc_with`, with `block` not null.
#[cold]
#[inline(never)]
unsafe fn realloc_outside_span<F: Fallback>(fallback: F, block: *mut u8, size: usize) -> *mut u8 {
    let address = block as usize;
    if !address_map::is_ours(address) {
        // SAFETY: not ours, so (caller) a live block of the fallback.
        return unsafe { fallback.realloc(block, size) };
    }
    if arena_space::contains(address) {
        // SAFETY: the calling thread's heap.
        unsafe { heap::learn_span(thread::current_heap()) };
    }
    // SAFETY: a live block of ours (caller, address map).
    let capacity = unsafe { heap::block_usable_size(block) };
    if stays_in_place(size, capacity) {
        return block;
    }
    let moved = malloc_with(&fallback, size);
    if !moved.is_null() {
        // SAFETY: both blocks are live and distinct; `min` bytes fit both.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, size.min(capacity));
            heap::free(block);
        }
    }
    moved
}

/// Whether the pooled allocator owns `block` (it is inside one of our arenas).
#[inline]
pub fn owns(block: *const u8) -> bool {
    address_map::contains(block as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ALIGNMENT, SMALL_REQUEST_THRESHOLD};

    #[test]
    fn sizes_zero_small_and_large_are_distinct_aligned_and_writable() {
        let mut blocks = Vec::new();
        for size in [
            0,
            0,
            1,
            15,
            16,
            17,
            SMALL_REQUEST_THRESHOLD,
            SMALL_REQUEST_THRESHOLD + 1,
            4096,
        ] {
            let block = malloc(size);
            assert!(!block.is_null());
            assert_eq!(block as usize % ALIGNMENT.min(16), 0);
            // SAFETY: the block has `size` bytes.
            unsafe { ptr::write_bytes(block, 0xAB, size) };
            assert_eq!(owns(block), size <= SMALL_REQUEST_THRESHOLD, "size {size}");
            blocks.push(block);
        }
        let mut sorted = blocks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), blocks.len());
        for block in blocks {
            // SAFETY: live blocks from malloc.
            unsafe { free(block) };
        }
    }

    #[test]
    fn realloc_keeps_content_across_the_threshold_both_ways() {
        let t = SMALL_REQUEST_THRESHOLD;
        let mut block = malloc(10);
        // SAFETY: every access stays inside the block's current size.
        unsafe {
            for i in 0..10 {
                *block.add(i) = i as u8;
            }
            block = realloc(block, t + 100);
            assert!(!owns(block));
            for i in 0..10 {
                assert_eq!(*block.add(i), i as u8);
            }
            for i in 0..t + 100 {
                *block.add(i) = (i % 251) as u8;
            }
            // A system block stays a system block, even when it shrinks.
            block = realloc(block, 8);
            assert!(!owns(block));
            assert_eq!(*block.add(7), 7);
            free(block);

            let small = malloc(t);
            for i in 0..t {
                *small.add(i) = (i % 13) as u8;
            }
            let same = realloc(small, t - 1);
            assert_eq!(
                same, small,
                "shrinking by less than a quarter keeps the block"
            );
            let moved = realloc(same, 16);
            assert_ne!(moved, small, "shrinking a lot moves to a smaller class");
            for i in 0..16 {
                assert_eq!(*moved.add(i), (i % 13) as u8);
            }
            let zero = realloc(moved, 0);
            assert!(!zero.is_null());
            free(zero);
        }
    }

    /// A realloc from a thread that has no heap yet (so no span: the
    /// outside path) and then from the same thread once it has one (the
    /// span path, where the move frees through the block cache) keeps the
    /// content and leaves the pools consistent.
    #[test]
    fn realloc_from_a_new_thread_before_and_after_it_knows_the_span() {
        let block = malloc(40) as usize;
        // SAFETY: a live 40-byte block.
        unsafe { ptr::write_bytes(block as *mut u8, 0x5A, 40) };
        let grown = std::thread::spawn(move || {
            // SAFETY: a live block of ours, handed over whole; every access
            // stays inside the block's current size.
            unsafe {
                let first = realloc(block as *mut u8, 200);
                assert!(owns(first));
                assert_eq!(*first.add(39), 0x5A);
                *first.add(199) = 0xA5;
                let second = realloc(first, 400);
                assert_ne!(second, first, "200 to 400 bytes changes class");
                assert_eq!((*second.add(39), *second.add(199)), (0x5A, 0xA5));
                let kept = realloc(second, 390);
                assert_eq!(kept, second, "a shrink within the class stays");
                let shrunk = realloc(kept, 210);
                assert_ne!(shrunk, kept, "400 to 210 bytes moves");
                assert_eq!((*shrunk.add(39), *shrunk.add(199)), (0x5A, 0xA5));
                shrunk as usize
            }
        })
        .join()
        .unwrap();
        // SAFETY: the live block the thread returned.
        unsafe {
            assert_eq!(*(grown as *mut u8).add(199), 0xA5);
            free(grown as *mut u8);
        }
    }

    #[test]
    fn small_calloc_zeroes_reused_blocks_and_declines_the_rest() {
        let dirty = malloc(48);
        // SAFETY: a live 48-byte block, written then freed.
        unsafe {
            ptr::write_bytes(dirty, 0xFF, 48);
            free(dirty);
        }
        let block = calloc_small(3, 16).expect("48 bytes is a small request");
        // SAFETY: the block holds 48 bytes.
        unsafe {
            assert!((0..48).all(|i| *block.add(i) == 0), "zeroed, reused or not");
            free(block);
        }
        assert_eq!(calloc_small(usize::MAX, 2), None, "overflow");
        assert_eq!(calloc_small(0, 8), None, "zero bytes: the exact path");
        assert_eq!(calloc_small(2, SMALL_REQUEST_THRESHOLD), None, "large");
    }

    #[test]
    fn calloc_zeroes_and_rejects_overflow() {
        assert!(calloc(usize::MAX / 2, 3).is_null());
        for (count, size) in [(0, 0), (1, 0), (0, 7), (3, 5), (8, 64), (10, 1000)] {
            let block = calloc(count, size);
            assert!(!block.is_null());
            // SAFETY: the block holds count * size bytes.
            unsafe {
                for i in 0..count * size {
                    assert_eq!(*block.add(i), 0);
                }
                free(block);
            }
        }
    }

    #[test]
    fn out_of_memory_gives_null_and_allocation_recovers() {
        std::thread::spawn(|| {
            // Exhaust what is already mapped, with every mapping refused:
            // the pools run dry and malloc must say so with NULL.
            crate::os::inject_map_failures(usize::MAX);
            let mut blocks = Vec::new();
            let class_size = SMALL_REQUEST_THRESHOLD;
            loop {
                let block = malloc(class_size);
                if block.is_null() {
                    break;
                }
                // SAFETY: a live block of `class_size` bytes.
                unsafe { ptr::write_bytes(block, 0x5A, class_size) };
                blocks.push(block);
                assert!(
                    blocks.len() < 1 << 22,
                    "mappings are refused, so memory must run out"
                );
            }
            crate::os::inject_map_failures(0);
            let fresh = malloc(class_size);
            assert!(
                !fresh.is_null(),
                "allocation works again once memory is available"
            );
            for block in blocks {
                // SAFETY: live blocks; their content must be intact.
                unsafe {
                    assert!((0..class_size).all(|i| *block.add(i) == 0x5A));
                    free(block);
                }
            }
            // SAFETY: live block.
            unsafe { free(fresh) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn freeing_a_system_pointer_goes_to_the_system() {
        // SAFETY: a libc block freed through our free.
        unsafe {
            let foreign = libc::malloc(64).cast::<u8>();
            assert!(!owns(foreign));
            free(foreign);
            free(ptr::null_mut());
        }
    }
}
