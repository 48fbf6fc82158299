//! The pooled allocator as Rust's global allocator ([`PyMalloc`], whose
//! documentation says what it serves and how).
//!
//! The library itself never allocates through Rust's allocator on the paths
//! that create heaps or arenas, so installing it globally cannot recurse.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::allocator;
use crate::config::ALIGNMENT;
use crate::size_class::class_of;
use crate::system;

/// Alignment every `malloc` result has on the supported 64-bit platforms.
const MALLOC_ALIGNMENT: usize = 16;

/// pymalloc-rs as a [`GlobalAlloc`]:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: pymalloc::PyMalloc = pymalloc::PyMalloc;
///
/// fn main() {
///     let name = String::from("a small string");
///     let pooled = pymalloc::ffi::core::PyCore_IsPooled(name.as_ptr().cast());
///     assert_eq!(pooled, 1);
/// }
/// ```
///
/// Requests of 1..=threshold bytes whose alignment the size classes
/// guarantee (`ALIGNMENT`) come from the calling thread's pools, exactly
/// as `PyCore_Malloc` serves them; everything else goes to libc
/// (`posix_memalign` when the alignment is above what malloc guarantees).
/// Deallocation asks the address map, not the layout, which block is whose:
/// a thread that allocates after its heap was retired gets libc memory for
/// a small layout too, and that block must go back to libc.
#[derive(Clone, Copy, Debug, Default)]
pub struct PyMalloc;

/// The pool class for `layout`, when the pools can serve it.
#[inline(always)]
fn pooled_class(layout: Layout) -> Option<usize> {
    if layout.align() <= ALIGNMENT {
        class_of(layout.size())
    } else {
        None
    }
}

#[cold]
fn system_alloc(layout: Layout) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGNMENT {
        return system::malloc(layout.size());
    }
    let mut block = ptr::null_mut();
    // SAFETY: the alignment is a power of two (Layout) and a multiple of
    // the pointer size (it exceeds 16); `block` is a valid out-pointer.
    let failed = unsafe { libc::posix_memalign(&mut block, layout.align(), layout.size()) };
    if failed != 0 {
        return ptr::null_mut();
    }
    block.cast()
}

// SAFETY: every block returned is either a pooled block of at least
// `layout.size()` bytes aligned to ALIGNMENT >= layout.align(), or a libc
// block of the requested size and alignment; `dealloc` and `realloc` find
// the owner through the address map, which never mistakes one for the
// other.
unsafe impl GlobalAlloc for PyMalloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match pooled_class(layout) {
            Some(class) => crate::heap::alloc(class),
            None => system_alloc(layout),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if pooled_class(layout).is_some() {
            return allocator::calloc(1, layout.size());
        }
        if layout.align() <= MALLOC_ALIGNMENT {
            return system::calloc(1, layout.size());
        }
        let block = system_alloc(layout);
        if !block.is_null() {
            // SAFETY: a fresh block of `layout.size()` bytes.
            unsafe { ptr::write_bytes(block, 0, layout.size()) };
        }
        block
    }

    #[inline(always)]
    unsafe fn dealloc(&self, block: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a live block of this allocator, which
        // came from the pools or from libc; `free` tells them apart.
        unsafe { allocator::free(block) }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout_pooled = layout.align() <= ALIGNMENT && class_of(new_size).is_some();
        let old_is_pooled = allocator::owns(block);
        if layout.align() <= MALLOC_ALIGNMENT && (old_is_pooled || !new_layout_pooled) {
            // The C realloc keeps the alignment guarantee (16 bytes from
            // both the pools and malloc) and moves between pools and libc
            // as the size requires.
            // SAFETY: a live block of ours or of libc (caller).
            return unsafe { allocator::realloc(block, new_size) };
        }
        // Over-aligned, or a libc block growing back into the pools: move.
        // SAFETY: `new_size` is non-zero and, rounded up to the alignment,
        // fits isize (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live, distinct and hold `min` bytes.
            unsafe {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SMALL_REQUEST_THRESHOLD;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_layouts_are_pooled_and_others_are_not() {
        for (size, align, pooled) in [
            (1, 1, true),
            (24, 8, true),
            (SMALL_REQUEST_THRESHOLD, ALIGNMENT, true),
            (SMALL_REQUEST_THRESHOLD + 1, 8, false),
            (64, 64, false),
            (64, 4096, false),
        ] {
            let l = layout(size, align);
            // SAFETY: non-zero sizes; freed below with the same layout.
            let block = unsafe { PyMalloc.alloc_zeroed(l) };
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0, "size {size} align {align}");
            assert_eq!(allocator::owns(block), pooled, "size {size} align {align}");
            // SAFETY: the block has `size` bytes, zeroed.
            unsafe {
                assert!(core::slice::from_raw_parts(block, size)
                    .iter()
                    .all(|&b| b == 0));
                PyMalloc.dealloc(block, l);
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_across_pools_and_libc_and_alignment() {
        for align in [8, 16, 64] {
            let mut l = layout(8, align);
            // SAFETY: a non-zero layout.
            let mut block = unsafe { PyMalloc.alloc(l) };
            // SAFETY: 8 bytes are ours.
            unsafe { ptr::write_bytes(block, 0x5A, 8) };
            for new_size in [40, 500, 600, 5000, 100, 8] {
                // SAFETY: `block` is live with layout `l`.
                block = unsafe { PyMalloc.realloc(block, l, new_size) };
                assert!(!block.is_null());
                assert_eq!(block as usize % align, 0);
                // SAFETY: at least 8 bytes survive every step.
                let head = unsafe { core::slice::from_raw_parts(block, 8) };
                assert!(
                    head.iter().all(|&b| b == 0x5A),
                    "align {align} size {new_size}"
                );
                l = layout(new_size, align);
            }
            // SAFETY: live with layout `l`.
            unsafe { PyMalloc.dealloc(block, l) };
        }
    }
}
