//! Size classes: how a request size maps to a class and back.
//!
//! Classes are spaced `ALIGNMENT` bytes apart, so every block of every class
//! is aligned (pools start on a pool boundary and the pool header is rounded
//! up to the alignment). With the defaults: 32 classes of 16, 32, ..., 512.

use crate::config::SMALL_REQUEST_THRESHOLD;
use crate::config::{ALIGNMENT, ALIGNMENT_SHIFT, NUM_SIZE_CLASSES, POOL_SIZE};

/// Class of a request of `size` bytes, or `None` when the pools do not serve
/// it (`size == 0` or `size > SMALL_REQUEST_THRESHOLD`). One subtraction and
/// one comparison decide both cases, since `0 - 1` wraps to `usize::MAX`.
#[inline(always)]
pub fn class_of(size: usize) -> Option<usize> {
    let last_byte = size.wrapping_sub(1);
    if last_byte < SMALL_REQUEST_THRESHOLD {
        Some(last_byte >> ALIGNMENT_SHIFT)
    } else {
        None
    }
}

/// Bytes in each block of `class`.
#[inline(always)]
pub const fn block_size(class: usize) -> usize {
    (class + 1) << ALIGNMENT_SHIFT
}

/// Blocks that fit in one pool of `class` (its header is kept elsewhere,
/// in the arena's metadata pools).
pub const fn blocks_per_pool(class: usize) -> usize {
    POOL_SIZE / block_size(class)
}

/// Bytes of a pool of `class` that no block can use ("lost to quantization").
pub const fn quantization_loss(class: usize) -> usize {
    POOL_SIZE % block_size(class)
}

const _: () = assert!(block_size(NUM_SIZE_CLASSES - 1) == SMALL_REQUEST_THRESHOLD);
const _: () = assert!(block_size(0) == ALIGNMENT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_oversized_requests_are_not_pooled() {
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(SMALL_REQUEST_THRESHOLD + 1), None);
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn every_small_size_fits_its_class_and_not_the_one_below() {
        for size in 1..=SMALL_REQUEST_THRESHOLD {
            let class = class_of(size).unwrap();
            assert!(class < NUM_SIZE_CLASSES);
            assert!(block_size(class) >= size, "size {size} class {class}");
            if class > 0 {
                assert!(block_size(class - 1) < size);
            }
            assert_eq!(block_size(class) % ALIGNMENT, 0);
        }
    }

    #[test]
    fn default_geometry_holds_more_than_cpythons_blocks() {
        if (ALIGNMENT, SMALL_REQUEST_THRESHOLD, POOL_SIZE) != (16, 512, 16384) {
            return; // a non-default build: CPython's figures do not apply
        }
        assert_eq!(NUM_SIZE_CLASSES, 32);
        // NUMBLOCKS() of CPython 3.11, whose pools start with a 48-byte
        // header, and ours, whose headers live in the arena's metadata pool.
        for (size, cpython, ours) in [
            (16, 1021, 1024),
            (32, 510, 512),
            (48, 340, 341),
            (64, 255, 256),
            (128, 127, 128),
            (256, 63, 64),
            (512, 31, 32),
        ] {
            let blocks = blocks_per_pool(class_of(size).unwrap());
            assert_eq!(blocks, ours, "class of {size}");
            assert!(blocks > cpython);
        }
    }
}
