//! The OS layer: address space for arenas and for the allocator's own
//! metadata, straight from `mmap`, and its return with `munmap`; and the
//! arena space's reservation, commit and decommit (`PROT_NONE` address
//! space, `mprotect` to use it, a fresh `PROT_NONE` mapping over it to drop
//! its pages).
//!
//! Everything the allocator keeps comes through here, so this is also where
//! the unit tests inject out-of-memory (`inject_map_failures`, compiled
//! only into them: a build of the library has no injection and no
//! thread-local read on its mappings).

#[cfg(test)]
use core::cell::Cell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(test)]
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
#[cfg(test)]
pub fn inject_map_failures(count: usize) {
    INJECTED_FAILURES.with(|n| n.set(count));
}

/// Outside the unit tests, no mapping fails on purpose.
#[cfg(not(test))]
#[inline(always)]
fn injected_failure() -> bool {
    false
}

#[cfg(test)]
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
    debug_assert!(align.is_power_of_two() && size.is_multiple_of(page_size()));
    let span = size.checked_add(align)?;
    let raw = map(span)?.as_ptr() as usize;
    // SAFETY: `raw` is a fresh mapping of `span` bytes, referred to by nothing.
    unsafe { trim_to_alignment(raw, span, size, align) }
}

/// Keep the `align`-aligned `size` bytes of the fresh mapping `[raw, raw +
/// span)`, `span = size + align`, and unmap both ends.
///
/// # Safety
/// The mapping is ours and nothing refers to it.
unsafe fn trim_to_alignment(
    raw: usize,
    span: usize,
    size: usize,
    align: usize,
) -> Option<NonNull<u8>> {
    let start = (raw + align - 1) & !(align - 1);
    let head = start - raw;
    let tail = span - head - size;
    // SAFETY: both trimmed ranges lie inside the mapping (caller) and
    // outside [start, start + size), which is what the caller receives.
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

/// Reserve `size` bytes of address space aligned to `align`: no access,
/// no memory, no commit charge until [`commit`]. Not subject to injected
/// failures (it is address space, not memory).
pub fn reserve_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && size.is_multiple_of(page_size()));
    let span = size.checked_add(align)?;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's
    // choosing cannot alias anything; failure is reported as MAP_FAILED.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `raw` is a fresh reservation of `span` bytes, referred to by nothing.
    unsafe { trim_to_alignment(raw as usize, span, size, align) }
}

/// Make `[address, address + size)` of a reservation readable and
/// writable. Its pages read as zero (they were never touched, or were
/// dropped by [`decommit`]). False when the OS refuses (strict overcommit
/// accounting) or a failure is injected.
pub fn commit(address: usize, size: usize) -> bool {
    if injected_failure() {
        return false;
    }
    // SAFETY: the caller passes a range of a reservation of ours, which
    // nothing else refers to.
    unsafe {
        libc::mprotect(
            address as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}

/// The size of a transparent huge page (x86_64 and aarch64 with 4 KiB
/// pages: one page-middle-directory entry).
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Ask the kernel to back the committed range with transparent huge pages
/// when it is first touched (`MADV_HUGEPAGE`): one fault and one zeroing per
/// 2 MiB instead of 512 faults. Advice only: a kernel without transparent
/// huge pages, or with them set to `never`, refuses or ignores it, and the
/// range works as before. The advice lives on the mapping, so a range
/// replaced by [`decommit`] loses it.
pub fn advise_huge_pages(address: usize, size: usize) -> bool {
    debug_assert!(address.is_multiple_of(HUGE_PAGE_SIZE) && size.is_multiple_of(HUGE_PAGE_SIZE));
    // SAFETY: advice on a range of ours; it does not change its contents.
    unsafe { libc::madvise(address as *mut libc::c_void, size, libc::MADV_HUGEPAGE) == 0 }
}

/// Give the pages of a committed range back to the OS and make it
/// inaccessible again, keeping the addresses reserved: a fresh `PROT_NONE`
/// mapping replaces the old one in a single call (it also returns the
/// commit charge, which `madvise(MADV_DONTNEED)` would not).
///
/// # Safety
/// `[address, address + size)` is a committed range of a reservation of
/// ours that nothing refers to any more.
pub unsafe fn decommit(address: usize, size: usize) {
    // SAFETY: MAP_FIXED replaces only the caller's range, which is ours.
    let replaced = unsafe {
        libc::mmap(
            address as *mut libc::c_void,
            size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if replaced != libc::MAP_FAILED {
        BYTES_UNMAPPED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

/// Give the pages of `[address, address + size)` back to the OS; the range
/// stays mapped and reads as zero when touched again.
///
/// # Safety
/// The range is mapped read-write by us and nothing refers to its contents.
pub unsafe fn purge(address: usize, size: usize) {
    // SAFETY: guaranteed by the caller.
    let status = unsafe { libc::madvise(address as *mut libc::c_void, size, libc::MADV_DONTNEED) };
    if status == 0 {
        BYTES_UNMAPPED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

/// Whether the process has a finite address-space limit (`RLIMIT_AS`).
pub fn address_space_limited() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-parameter.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    status == 0 && limit.rlim_cur != libc::RLIM_INFINITY
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
    fn reserved_space_commits_decommits_and_commits_again_zeroed() {
        let size = 1 << 20;
        let base = reserve_aligned(4 * size, size).expect("reserve").as_ptr() as usize;
        assert_eq!(base % size, 0);
        let slot = base + size;
        assert!(commit(slot, size));
        // SAFETY: committed just above.
        unsafe {
            *((slot + 8) as *mut u64) = 42;
            decommit(slot, size);
        }
        assert!(commit(slot, size));
        // SAFETY: committed again; decommit dropped the page.
        assert_eq!(unsafe { *((slot + 8) as *const u64) }, 0);
        inject_map_failures(1);
        assert!(!commit(base, size), "an injected failure refuses a commit");
        // SAFETY: the whole reservation is ours and unused.
        unsafe { unmap(NonNull::new(base as *mut u8).unwrap(), 4 * size) };
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
