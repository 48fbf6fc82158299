//! The record slab: fixed-size records for the allocator's own
//! bookkeeping (arena records, heaps), carved from chunks mapped from the
//! OS ([`os`]). The records cannot come from the pools (the pools are made
//! of them) nor from malloc (which may be us).
//!
//! Invariants, which the users of the records rely on:
//!
//! * **Records are never unmapped.** A chunk, once mapped, stays mapped
//!   for the life of the process. A thread may therefore follow a pointer
//!   to a record it read earlier (a pool's `owner` heap, the heap registry's
//!   list of every heap, the address map's arena) without a lock keeping
//!   the record alive: at worst it finds a record reused for something
//!   else of the same type, never unmapped memory.
//! * **Addresses are stable.** A record stays where it was carved; chunks
//!   are never moved or grown in place, so records can be linked into
//!   lists and named by other structures.
//! * **A slab is used under its owner's lock.** A `Slab` is a field of a
//!   structure behind a [`Locked`](crate::sync::Locked) (the arena set, the
//!   heap registry), and every operation takes `&mut self`: the slab adds
//!   no lock of its own, so it adds nothing to the lock order around
//!   `fork()` ([`fork`](crate::fork)).
//!
//! [`Slab::take`] hands out uninitialised memory: recycled records first
//! (most recently recycled first), then the next record of the current
//! chunk, then the first of a new chunk. [`Slab::recycle`] takes back a
//! record nothing refers to any more; its first word links it to the next
//! recycled record. The records' memory is counted as metadata in the
//! statistics ([`Slab::mapped_bytes`]).

use core::mem::{align_of, size_of};
use core::ptr::{null_mut, NonNull};

use crate::os;

/// Bytes per chunk of records.
const CHUNK_BYTES: usize = 64 * 1024;

/// Records of type `T`, carved from chunks of `CHUNK_BYTES` bytes.
pub struct Slab<T> {
    /// Recycled records, linked through their first word.
    spare: *mut T,
    /// The next record never handed out in the current chunk, and the end
    /// of that chunk (both null before the first chunk).
    cursor: *mut T,
    end: *mut T,
    /// Bytes mapped for chunks so far (never given back).
    mapped_bytes: usize,
}

impl<T> Slab<T> {
    /// Records per chunk.
    const PER_CHUNK: usize = {
        // A recycled record holds a link in its first word; chunks are
        // page-aligned, so a record's alignment is met if it is at most a
        // page's (4 KiB, the smallest page of the supported targets).
        assert!(size_of::<T>() >= size_of::<*mut T>());
        assert!(align_of::<T>() >= align_of::<*mut T>() && align_of::<T>() <= 4096);
        assert!(CHUNK_BYTES / size_of::<T>() >= 1);
        CHUNK_BYTES / size_of::<T>()
    };

    pub const fn new() -> Self {
        Slab {
            spare: null_mut(),
            cursor: null_mut(),
            end: null_mut(),
            mapped_bytes: 0,
        }
    }

    /// Memory for one record (uninitialised, or a recycled record's
    /// leftovers); `None` when the OS refuses a new chunk.
    pub fn take(&mut self) -> Option<NonNull<T>> {
        if !self.spare.is_null() {
            let record = self.spare;
            // SAFETY: recycled records are mapped memory holding the link
            // to the next one in their first word (see `recycle`).
            self.spare = unsafe { *record.cast::<*mut T>() };
            return NonNull::new(record);
        }
        if self.cursor == self.end {
            let bytes = Self::PER_CHUNK * size_of::<T>();
            let chunk = os::map(bytes)?;
            self.mapped_bytes += bytes;
            self.cursor = chunk.as_ptr().cast();
            // SAFETY: the chunk holds exactly PER_CHUNK records.
            self.end = unsafe { self.cursor.add(Self::PER_CHUNK) };
        }
        let record = self.cursor;
        // SAFETY: cursor < end, inside the current chunk.
        self.cursor = unsafe { record.add(1) };
        NonNull::new(record)
    }

    /// Take back a record for a later [`Slab::take`]. Its memory stays
    /// mapped (see the module invariants).
    ///
    /// # Safety
    /// `record` came from this slab's `take`, and nothing will use it as a
    /// `T` any more (its first word is overwritten).
    pub unsafe fn recycle(&mut self, record: *mut T) {
        // SAFETY: the record is ours, mapped and sized for the link.
        unsafe { *record.cast::<*mut T>() = self.spare };
        self.spare = record;
    }

    /// Bytes mapped for this slab's chunks.
    pub fn mapped_bytes(&self) -> usize {
        self.mapped_bytes
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Record {
        words: [usize; 9],
    }

    #[test]
    fn records_are_distinct_aligned_and_recycled_newest_first() {
        let mut slab = Slab::<Record>::new();
        let per_chunk = Slab::<Record>::PER_CHUNK;
        let records: Vec<*mut Record> = (0..per_chunk + 2)
            .map(|_| slab.take().unwrap().as_ptr())
            .collect();
        assert_eq!(slab.mapped_bytes(), 2 * per_chunk * size_of::<Record>());
        let mut sorted: Vec<usize> = records.iter().map(|&r| r as usize).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), records.len(), "distinct");
        for &record in &records {
            assert_eq!(record as usize % align_of::<Record>(), 0, "aligned");
            // SAFETY: a record of this slab, ours to write.
            unsafe { record.write(Record { words: [7; 9] }) };
        }
        // SAFETY: records of this slab, no longer used.
        unsafe {
            slab.recycle(records[3]);
            slab.recycle(records[5]);
        }
        assert_eq!(slab.take().unwrap().as_ptr(), records[5]);
        assert_eq!(slab.take().unwrap().as_ptr(), records[3]);
        let fresh = slab.take().unwrap().as_ptr();
        assert!(!records.contains(&fresh), "then carved after the last");
        assert_eq!(slab.mapped_bytes(), 2 * per_chunk * size_of::<Record>());
    }

    #[test]
    fn a_refused_chunk_is_reported_and_retried() {
        let mut slab = Slab::<Record>::new();
        os::inject_map_failures(1);
        assert!(slab.take().is_none());
        assert_eq!(slab.mapped_bytes(), 0);
        assert!(slab.take().is_some());
    }
}
