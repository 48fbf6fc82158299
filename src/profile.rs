//! The allocation profiler (`PYMALLOC_PROFILE=FILE`): a histogram of
//! requested sizes per API family for the whole run, and of realloc
//! transitions, written at exit for tuning the size classes, the
//! threshold and the pool size by measurement (the 2002 proposal's
//! "reviving the profiler").
//!
//! Off by default; when on, allocations leave the fast path for a
//! counting one (relaxed atomic increments).
//!
//! File format (text; `#` lines are comments):
//!
//! ```text
//! event,api,size_min,size_max,count
//! malloc,o,24,24,1532            one row per (event, family, size) seen
//! transition,api,from_min,from_max,to_min,to_max,count
//! transition,m,17,32,513,1024,12 realloc from a block in one size range to another
//! ```
//!
//! `event` is `malloc`, `calloc` (size = nelem × elsize) or `realloc`
//! (size = the new size); `api` is `r` (PyMem_Raw*), `m` (PyMem_*), `o`
//! (PyObject_*) or `c` (PyCore_*). Sizes up to 4096 are exact
//! (`size_min == size_max`); larger ones are counted in power-of-two
//! ranges. In transitions, sizes are grouped by this build's size classes
//! up to the threshold, then in power-of-two ranges; an old block whose
//! size is not known (one the allocator does not own) has `from_min` and
//! `from_max` empty.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::config::{ALIGNMENT, NUM_SIZE_CLASSES, SMALL_REQUEST_THRESHOLD};
use crate::setting::Domain;

static ENABLED: AtomicBool = AtomicBool::new(false);

const EXACT: usize = 4096;
const SIZE_BUCKETS: usize = EXACT + 1 + 52;
const COARSE_BUCKETS: usize = NUM_SIZE_CLASSES + 64;
const UNKNOWN: usize = COARSE_BUCKETS - 1;
const FAMILIES: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    Malloc = 0,
    Calloc = 1,
    Realloc = 2,
}

const EVENT_NAMES: [&str; 3] = ["malloc", "calloc", "realloc"];

static SIZES: [[[AtomicU64; SIZE_BUCKETS]; FAMILIES]; 3] =
    [const { [const { [const { AtomicU64::new(0) }; SIZE_BUCKETS] }; FAMILIES] }; 3];
static TRANSITIONS: [[[AtomicU64; COARSE_BUCKETS]; COARSE_BUCKETS]; FAMILIES] =
    [const { [const { [const { AtomicU64::new(0) }; COARSE_BUCKETS] }; COARSE_BUCKETS] }; FAMILIES];

pub fn enable() {
    ENABLED.store(true, Relaxed);
}

#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

fn size_bucket(size: usize) -> usize {
    if size <= EXACT {
        size
    } else {
        // (2^(k-1), 2^k] for k = 13 .. 64
        let k = usize::BITS - (size - 1).leading_zeros();
        EXACT + 1 + (k as usize - 13)
    }
}

fn size_range(bucket: usize) -> (u128, u128) {
    if bucket <= EXACT {
        (bucket as u128, bucket as u128)
    } else {
        let k = (bucket - EXACT - 1 + 13) as u32;
        ((1u128 << (k - 1)) + 1, 1u128 << k)
    }
}

fn coarse_bucket(size: usize) -> usize {
    if size <= SMALL_REQUEST_THRESHOLD {
        size.saturating_sub(1) / ALIGNMENT
    } else {
        let k = usize::BITS - (size - 1).leading_zeros();
        let threshold_bits = usize::BITS - (SMALL_REQUEST_THRESHOLD - 1).leading_zeros();
        (NUM_SIZE_CLASSES + (k - threshold_bits) as usize).min(UNKNOWN - 1)
    }
}

fn coarse_range(bucket: usize) -> (u128, u128) {
    if bucket < NUM_SIZE_CLASSES {
        let high = ((bucket + 1) * ALIGNMENT) as u128;
        (
            if bucket == 0 {
                0
            } else {
                high - ALIGNMENT as u128 + 1
            },
            high,
        )
    } else {
        // Sizes above the threshold with k significant bits: (2^(k-1), 2^k].
        let threshold_bits = usize::BITS - (SMALL_REQUEST_THRESHOLD - 1).leading_zeros();
        let k = (bucket - NUM_SIZE_CLASSES) as u32 + threshold_bits;
        let low = (1u128 << (k - 1)).max(SMALL_REQUEST_THRESHOLD as u128) + 1;
        (low, 1u128 << k)
    }
}

pub fn record(event: Event, domain: Domain, size: usize) {
    SIZES[event as usize][domain as usize][size_bucket(size)].fetch_add(1, Relaxed);
}

/// A realloc of a block of `old_size` usable bytes (None: unknown) to `size`.
pub fn record_realloc(domain: Domain, old_size: Option<usize>, size: usize) {
    record(Event::Realloc, domain, size);
    let from = old_size.map_or(UNKNOWN, coarse_bucket);
    TRANSITIONS[domain as usize][from][coarse_bucket(size)].fetch_add(1, Relaxed);
}

const API: [char; FAMILIES] = ['r', 'm', 'o', 'c'];

/// The profile in the documented text format.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str("# pymalloc allocation profile, format 1 (see src/profile.rs)\n");
    let _ = writeln!(
        out,
        "# build: alignment {ALIGNMENT}, small request threshold {SMALL_REQUEST_THRESHOLD}"
    );
    out.push_str("event,api,size_min,size_max,count\n");
    for (event, families) in SIZES.iter().enumerate() {
        for (family, buckets) in families.iter().enumerate() {
            for (bucket, count) in buckets.iter().enumerate() {
                let count = count.load(Relaxed);
                if count > 0 {
                    let (low, high) = size_range(bucket);
                    let _ = writeln!(
                        out,
                        "{},{},{low},{high},{count}",
                        EVENT_NAMES[event], API[family]
                    );
                }
            }
        }
    }
    out.push_str("transition,api,from_min,from_max,to_min,to_max,count\n");
    for (family, rows) in TRANSITIONS.iter().enumerate() {
        for (from, row) in rows.iter().enumerate() {
            for (to, count) in row.iter().enumerate() {
                let count = count.load(Relaxed);
                if count == 0 {
                    continue;
                }
                let (to_low, to_high) = coarse_range(to);
                let from_text = if from == UNKNOWN {
                    ",".to_string()
                } else {
                    let (low, high) = coarse_range(from);
                    format!("{low},{high}")
                };
                let _ = writeln!(
                    out,
                    "transition,{},{from_text},{to_low},{to_high},{count}",
                    API[family]
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_then_powers_of_two() {
        assert_eq!(size_range(size_bucket(0)), (0, 0));
        assert_eq!(size_range(size_bucket(4096)), (4096, 4096));
        assert_eq!(size_range(size_bucket(4097)), (4097, 8192));
        assert_eq!(size_range(size_bucket(8192)), (4097, 8192));
        assert_eq!(size_range(size_bucket(8193)), (8193, 16384));
        assert_eq!(
            size_range(size_bucket(usize::MAX)),
            ((1u128 << 63) + 1, 1u128 << 64)
        );
        let t = SMALL_REQUEST_THRESHOLD;
        for size in [1, 16, 17, t, t + 1, 700, 1024, 1025, 5000, 1 << 20] {
            let (low, high) = coarse_range(coarse_bucket(size));
            assert!(
                low <= size as u128 && size as u128 <= high,
                "{size}: {low}..{high}"
            );
        }
        if t == 512 {
            assert_eq!(coarse_range(coarse_bucket(700)), (513, 1024));
            assert_eq!(coarse_range(coarse_bucket(1025)), (1025, 2048));
        }
    }
}
