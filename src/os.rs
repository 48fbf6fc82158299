//! The OS layer: address space for arenas and for the allocator's own
//! metadata, straight from `mmap`, and its return with `munmap`.
//!
//! Everything the allocator keeps comes through here, so this is also where
//! out-of-memory is injected in tests (`inject_map_failures`).

use core::cell::Cell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

std::thread_local! {
    /// Number of upcoming `map` calls of this thread that fail as if the OS
    /// were out of memory. Per thread, so that a test injecting failures
    /// does not disturb threads it did not mean to.
    static INJECTED_FAILURES: Cell<usize> = const { Cell::new(0) };
}

/// Bytes handed back to the OS by `unmap` since start-up (statistics).
static BYTES_UNMAPPED: AtomicU64 = AtomicU64::new(0);

/// Make the calling thread's next `count` mappings fail (tests of the
/// out-of-memory paths).
pub fn inject_map_failures(count: usize) {
    INJECTED_FAILURES.with(|n| n.set(count));
}

fn injected_failure() -> bool {
    INJECTED_FAILURES.with(|n| match n.get() {
        0 => false,
        left => {
            n.set(left - 1);
            true
        }
    })
}

/// Milliseconds of a monotonic clock, cheap enough for the arena lock's
/// paths (the coarse clock is read from the vDSO without a system call;
/// its few milliseconds of resolution are plenty for arena decay).
pub fn now_ms() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid out-parameter; the clock always exists on
    // Linux, and on failure `time` stays zero, which only delays decay.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut time) };
    time.tv_sec as u64 * 1000 + time.tv_nsec as u64 / 1_000_000
}

pub fn bytes_unmapped() -> u64 {
    BYTES_UNMAPPED.load(Ordering::Relaxed)
}

/// Map `size` bytes of zeroed, private, read-write memory.
pub fn map(size: usize) -> Option<NonNull<u8>> {
    if injected_failure() {
        return None;
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing cannot alias anything; failure is reported as MAP_FAILED.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(addr.cast())
    }
}

/// Map `size` bytes aligned to `align` (a power of two, a multiple of the
/// page size): over-map by `align` and trim both ends.
pub fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && size % page_size() == 0);
    let span = size.checked_add(align)?;
    let raw = map(span)?.as_ptr() as usize;
    let start = (raw + align - 1) & !(align - 1);
    let head = start - raw;
    let tail = span - head - size;
    // SAFETY: both trimmed ranges lie inside the mapping made just above and
    // are outside [start, start + size), which is what the caller receives.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(start as *mut u8)
}

/// Return a mapping made by `map` or `map_aligned` to the OS.
///
/// # Safety
/// `[addr, addr + size)` must be a mapping obtained from this module that
/// nothing refers to any more.
pub unsafe fn unmap(addr: NonNull<u8>, size: usize) {
    // SAFETY: guaranteed by the caller.
    let status = unsafe { libc::munmap(addr.as_ptr().cast(), size) };
    if status == 0 {
        BYTES_UNMAPPED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_mappings_are_aligned_zeroed_and_writable() {
        let size = 1 << 20;
        let addr = map_aligned(size, size).expect("map");
        assert_eq!(addr.as_ptr() as usize % size, 0);
        // SAFETY: the mapping is `size` bytes long and exclusively ours.
        unsafe {
            assert_eq!(*addr.as_ptr().add(size - 1), 0);
            *addr.as_ptr().add(size - 1) = 7;
            unmap(addr, size);
        }
    }

    #[test]
    fn injected_failures_fail_exactly_that_many_mappings() {
        inject_map_failures(2);
        assert!(map(4096).is_none());
        assert!(map(4096).is_none());
        let ok = map(4096).expect("third mapping succeeds");
        // SAFETY: mapped just above, unused.
        unsafe { unmap(ok, 4096) };
    }
}
