//! Size classes: how a request size maps to a class and back.
//!
//! Classes are spaced `ALIGNMENT` bytes apart, so every block of every class
//! is aligned (pools start on a pool boundary and the pool header is rounded
//! up to the alignment). With the defaults: 32 classes of 16, 32, ..., 512.

use crate::config::SMALL_REQUEST_THRESHOLD;
use crate::config::{ALIGNMENT, ALIGNMENT_SHIFT, NUM_SIZE_CLASSES, POOL_OVERHEAD, POOL_SIZE};

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

/// Blocks that fit in one pool of `class`, after the pool header.
pub const fn blocks_per_pool(class: usize) -> usize {
    (POOL_SIZE - POOL_OVERHEAD) / block_size(class)
}

/// Bytes of a pool of `class` that no block can use ("lost to quantization").
pub const fn quantization_loss(class: usize) -> usize {
    (POOL_SIZE - POOL_OVERHEAD) % block_size(class)
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
    fn default_geometry_matches_cpython() {
        if (ALIGNMENT, SMALL_REQUEST_THRESHOLD, POOL_SIZE) != (16, 512, 16384) {
            return; // a non-default build: CPython's figures do not apply
        }
        assert_eq!(NUM_SIZE_CLASSES, 32);
        assert_eq!(POOL_OVERHEAD, 48);
        // NUMBLOCKS() of CPython 3.11 for a few classes.
        for (size, blocks) in [
            (16, 1021),
            (32, 510),
            (48, 340),
            (64, 255),
            (128, 127),
            (256, 63),
            (512, 31),
        ] {
            assert_eq!(
                blocks_per_pool(class_of(size).unwrap()),
                blocks,
                "class of {size}"
            );
        }
    }
}
