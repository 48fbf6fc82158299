//! Debug hooks: guard bytes, fill patterns, API-family ids and serial
//! numbers around every block, checked when the block is freed or resized
//! (and on request), with CPython's byte values and report layout.
//!
//! A debug block, for a request of `n` bytes (`p` is what the caller gets):
//!
//! ```text
//! p-32  live-list links (2 words)     every live debug block is on a list,
//!                                     for the leak report
//! p-16  n, big-endian (1 word)        CPython's layout from here on
//! p-8   API id: 'r' raw, 'm' mem, 'o' object, 'c' PyCore
//! p-7   7 × FORBIDDENBYTE (0xFD)
//! p     n bytes of data: CLEANBYTE (0xCD) when new, DEADBYTE (0xDD) once freed
//! p+n   8 × FORBIDDENBYTE
//! p+n+8 serial number, big-endian (1 word): which debug allocation made it
//! ```
//!
//! So the underlying request is `n + 48` bytes and `p` keeps the 16-byte
//! alignment. Detected: freeing or resizing with another family than the
//! one that allocated (bad ID), writes before the block (leading pads),
//! writes past its end (trailing pads), double free and realloc of a freed
//! block (the id byte reads DEADBYTE), and pointers never allocated (no
//! valid id). The report goes to stderr; then the process aborts, or with
//! `PYMALLOC_DEBUG_ACTION=warn` continues, leaking the bad block.

use core::fmt::Write as _;
use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::allocator;
use crate::report;
use crate::setting::{Backend, Domain};
use crate::sync::Locked;
use crate::system;

pub const CLEAN_BYTE: u8 = 0xCD;
pub const DEAD_BYTE: u8 = 0xDD;
pub const FORBIDDEN_BYTE: u8 = 0xFD;

const WORD: usize = core::mem::size_of::<usize>();
/// Bytes before the data: links, size, id and pads.
pub const HEAD: usize = core::mem::size_of::<Header>();
/// Bytes after the data: pads and serial number.
pub const TAIL: usize = 2 * WORD;
pub const OVERHEAD: usize = HEAD + TAIL;

#[repr(C)]
struct Header {
    prev: *mut Header,
    next: *mut Header,
    size: [u8; WORD],
    id: u8,
    pads: [u8; WORD - 1],
}

const _: () = assert!(HEAD == 32 && HEAD.is_multiple_of(16));

/// API-family id of a domain, as stored in the block.
pub fn api_id(domain: Domain) -> u8 {
    match domain {
        Domain::Raw => b'r',
        Domain::Mem => b'm',
        Domain::Obj => b'o',
        Domain::Core => b'c',
    }
}

static SERIAL: AtomicU64 = AtomicU64::new(0);
static WARN_ONLY: AtomicBool = AtomicBool::new(false);

/// `PYMALLOC_DEBUG_ACTION=warn`: report and continue instead of aborting.
pub fn set_warn_only(warn: bool) {
    WARN_ONLY.store(warn, Ordering::Relaxed);
}

struct LiveBlocks {
    head: *mut Header,
    count: usize,
    /// A corrupted link was seen: the list can no longer be trusted.
    broken: bool,
}

// SAFETY: the list links live debug blocks, touched only under the lock.
unsafe impl Send for LiveBlocks {}

static LIVE: Locked<LiveBlocks> = Locked::new(LiveBlocks {
    head: null_mut(),
    count: 0,
    broken: false,
});

/// Take the live-block lock before `fork()` (see [`fork`](crate::fork)
/// for the order of all the locks).
pub(crate) fn lock_for_fork() {
    LIVE.acquire_for_fork();
}

/// Release the live-block lock after `fork()`, in the parent or the child.
pub(crate) fn unlock_after_fork(in_child: bool) {
    LIVE.release_after_fork(in_child);
}

fn base_malloc(base: Backend, size: usize) -> *mut u8 {
    match base {
        Backend::Pymalloc => allocator::malloc(size),
        Backend::Malloc => system::malloc(size),
    }
}

fn base_calloc(base: Backend, size: usize) -> *mut u8 {
    match base {
        Backend::Pymalloc => allocator::calloc(1, size),
        Backend::Malloc => system::calloc(1, size),
    }
}

/// # Safety
/// `header` is the start of a block from `base_malloc`/`base_calloc`.
unsafe fn base_free(header: *mut Header) {
    // SAFETY: guaranteed by the caller; free decides the owner by address.
    unsafe { allocator::free(header.cast()) }
}

fn write_word(bytes: &mut [u8; WORD], value: usize) {
    *bytes = value.to_be_bytes();
}

/// Lay out a fresh debug block for `size` bytes at `header`; returns `p`.
///
/// # Safety
/// `header` points to `size + OVERHEAD` writable bytes.
unsafe fn decorate(header: *mut Header, domain: Domain, size: usize, fill: bool) -> *mut u8 {
    // SAFETY: the block is `size + OVERHEAD` bytes (caller).
    unsafe {
        let h = &mut *header;
        write_word(&mut h.size, size);
        h.id = api_id(domain);
        h.pads = [FORBIDDEN_BYTE; WORD - 1];
        let data = header.cast::<u8>().add(HEAD);
        if fill {
            ptr::write_bytes(data, CLEAN_BYTE, size);
        }
        ptr::write_bytes(data.add(size), FORBIDDEN_BYTE, WORD);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed) + 1;
        ptr::copy_nonoverlapping(
            (serial as usize).to_be_bytes().as_ptr(),
            data.add(size + WORD),
            WORD,
        );
        let mut live = LIVE.lock();
        let list = &mut *live;
        h.prev = null_mut();
        h.next = list.head;
        if !list.head.is_null() {
            (*list.head).prev = header;
        }
        list.head = header;
        list.count += 1;
        data
    }
}

pub fn malloc(domain: Domain, base: Backend, size: usize) -> *mut u8 {
    let Some(total) = size
        .checked_add(OVERHEAD)
        .filter(|&t| t <= isize::MAX as usize)
    else {
        return null_mut();
    };
    let header = base_malloc(base, total).cast::<Header>();
    if header.is_null() {
        return null_mut();
    }
    // SAFETY: a fresh block of `total` bytes.
    unsafe { decorate(header, domain, size, true) }
}

pub fn calloc(domain: Domain, base: Backend, count: usize, size: usize) -> *mut u8 {
    let Some(bytes) = count.checked_mul(size) else {
        return null_mut();
    };
    let Some(total) = bytes
        .checked_add(OVERHEAD)
        .filter(|&t| t <= isize::MAX as usize)
    else {
        return null_mut();
    };
    let header = base_calloc(base, total).cast::<Header>();
    if header.is_null() {
        return null_mut();
    }
    // SAFETY: a fresh zeroed block of `total` bytes; the data stays zero.
    unsafe { decorate(header, domain, bytes, false) }
}

/// What is wrong with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    BadId { found: u8 },
    LeadingPad,
    TrailingPad,
}

/// Check the block at `p` for `domain` (None: accept any family).
///
/// # Safety
/// `p` must be readable from `p - HEAD` (the caller's promise that it is a
/// debug block; a wild pointer may fault, as in CPython).
unsafe fn verify(p: *mut u8, domain: Option<Domain>) -> Result<(), Fault> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let header = &*p.sub(HEAD).cast::<Header>();
        let valid_id = matches!(header.id, b'r' | b'm' | b'o' | b'c');
        let expected_ok = match domain {
            Some(domain) => header.id == api_id(domain),
            None => valid_id,
        };
        if !expected_ok {
            return Err(Fault::BadId { found: header.id });
        }
        if header.pads.iter().any(|&b| b != FORBIDDEN_BYTE) {
            return Err(Fault::LeadingPad);
        }
        let size = usize::from_be_bytes(header.size);
        let tail = core::slice::from_raw_parts(p.add(size), WORD);
        if tail.iter().any(|&b| b != FORBIDDEN_BYTE) {
            return Err(Fault::TrailingPad);
        }
        Ok(())
    }
}

fn fault_message(fault: Fault, domain: Option<Domain>) -> String {
    match fault {
        Fault::BadId { found } => {
            let verified = domain.map(api_id).unwrap_or(b'?');
            let mut text = format!(
                "bad ID: Allocated using API '{}', verified using API '{}'",
                printable(found),
                verified as char
            );
            if found == DEAD_BYTE {
                text.push_str(" (the block was already freed: double free or use after free)");
            } else if !matches!(found, b'r' | b'm' | b'o' | b'c') {
                text.push_str(" (not a block of the debug allocator: never allocated, or an interior pointer)");
            }
            text
        }
        Fault::LeadingPad => "bad leading pad byte".to_string(),
        Fault::TrailingPad => "bad trailing pad byte".to_string(),
    }
}

fn printable(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        (byte as char).to_string()
    } else {
        format!("\\x{byte:02x}")
    }
}

/// CPython's `_PyObject_DebugDumpAddress` layout.
///
/// # Safety
/// As for `verify`.
unsafe fn dump(p: *mut u8) -> String {
    let mut out = String::new();
    // SAFETY: guaranteed by the caller.
    unsafe {
        let header = &*p.sub(HEAD).cast::<Header>();
        let _ = writeln!(
            out,
            "Debug memory block at address p={p:p}: API '{}'",
            printable(header.id)
        );
        let size = usize::from_be_bytes(header.size);
        if header.id != DEAD_BYTE {
            let _ = writeln!(out, "    {size} bytes originally requested");
        }
        let _ = write!(out, "    The {} pad bytes at p-{} are ", WORD - 1, WORD - 1);
        let leading_ok = header.pads.iter().all(|&b| b == FORBIDDEN_BYTE);
        if leading_ok {
            out.push_str("FORBIDDENBYTE, as expected.\n");
        } else {
            let _ = writeln!(out, "not all FORBIDDENBYTE (0x{FORBIDDEN_BYTE:02x}):");
            for back in (1..WORD).rev() {
                let byte = *p.sub(back);
                let _ = write!(out, "        at p-{back}: 0x{byte:02x}");
                out.push_str(if byte != FORBIDDEN_BYTE {
                    " *** OUCH\n"
                } else {
                    "\n"
                });
            }
            out.push_str(
                "    Because memory is corrupted at the start, the count of bytes requested\n       \
                 may be bogus, and checking the trailing pad bytes may segfault.\n",
            );
        }
        if !matches!(header.id, b'r' | b'm' | b'o' | b'c') {
            let state = if header.id == DEAD_BYTE {
                "the block was freed (its bytes are DEADBYTE, 0xdd)"
            } else {
                "this is not the start of a debug block"
            };
            let _ = writeln!(
                out,
                "    The API id byte at p-{WORD} is 0x{:02x}: {state}; the size, the trailing pad \
                 bytes and the data are not read.",
                header.id
            );
            return out;
        }
        let tail = p.add(size);
        let _ = write!(out, "    The {WORD} pad bytes at tail={tail:p} are ");
        let tail_bytes = core::slice::from_raw_parts(tail, WORD);
        if tail_bytes.iter().all(|&b| b == FORBIDDEN_BYTE) {
            out.push_str("FORBIDDENBYTE, as expected.\n");
        } else {
            let _ = writeln!(out, "not all FORBIDDENBYTE (0x{FORBIDDEN_BYTE:02x}):");
            for (i, &byte) in tail_bytes.iter().enumerate() {
                let _ = write!(out, "        at tail+{i}: 0x{byte:02x}");
                out.push_str(if byte != FORBIDDEN_BYTE {
                    " *** OUCH\n"
                } else {
                    "\n"
                });
            }
        }
        let mut serial = [0u8; WORD];
        ptr::copy_nonoverlapping(tail.add(WORD), serial.as_mut_ptr(), WORD);
        let _ = writeln!(
            out,
            "    The block was made by call #{} to debug malloc/realloc.",
            usize::from_be_bytes(serial)
        );
        if size > 0 {
            out.push_str("    Data at p:");
            let data = core::slice::from_raw_parts(p, size);
            let head = &data[..size.min(8)];
            for byte in head {
                let _ = write!(out, " {byte:02x}");
            }
            let rest = &data[head.len()..];
            if !rest.is_empty() {
                let shown = if rest.len() > 8 {
                    out.push_str(" ...");
                    &rest[rest.len() - 8..]
                } else {
                    rest
                };
                for byte in shown {
                    let _ = write!(out, " {byte:02x}");
                }
            }
            out.push('\n');
        }
    }
    out
}

/// Report `fault` for the block at `p` found by `function`; abort unless
/// warnings were asked for.
///
/// # Safety
/// As for `verify`.
unsafe fn report_fault(p: *mut u8, fault: Fault, domain: Option<Domain>, function: &str) {
    // SAFETY: guaranteed by the caller.
    let mut text = unsafe { dump(p) };
    let _ = writeln!(
        text,
        "\nFatal pymalloc error: {function}: {}",
        fault_message(fault, domain)
    );
    report::write_stderr(text.as_bytes());
    if !WARN_ONLY.load(Ordering::Relaxed) {
        std::process::abort();
    }
    report::write_stderr(
        b"pymalloc: PYMALLOC_DEBUG_ACTION=warn: continuing; the block is leaked\n",
    );
}

/// Take the block off the live list and mark it dead; returns its header.
///
/// # Safety
/// `p` is a verified live debug block.
unsafe fn retire(p: *mut u8) -> *mut Header {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let header = p.sub(HEAD).cast::<Header>();
        let size = usize::from_be_bytes((*header).size);
        {
            let mut live = LIVE.lock();
            let list = &mut *live;
            let (prev, next) = ((*header).prev, (*header).next);
            let links_ok = (prev.is_null() && list.head == header
                || !prev.is_null() && (*prev).next == header)
                && (next.is_null() || (*next).prev == header);
            if !links_ok || list.broken {
                list.broken = true;
            } else {
                if prev.is_null() {
                    list.head = next;
                } else {
                    (*prev).next = next;
                }
                if !next.is_null() {
                    (*next).prev = prev;
                }
                list.count -= 1;
            }
        }
        ptr::write_bytes(header.cast::<u8>(), DEAD_BYTE, size + OVERHEAD);
        header
    }
}

/// # Safety
/// `p` is null or a block of the debug allocator for `domain` (checked).
pub unsafe fn free(domain: Domain, p: *mut u8, function: &str) {
    if p.is_null() {
        return;
    }
    // SAFETY: guaranteed by the caller; faults are reported, not trusted.
    unsafe {
        if let Err(fault) = verify(p, Some(domain)) {
            report_fault(p, fault, Some(domain), function);
            return;
        }
        base_free(retire(p));
    }
}

/// # Safety
/// As for `free`.
pub unsafe fn realloc(
    domain: Domain,
    base: Backend,
    p: *mut u8,
    size: usize,
    function: &str,
) -> *mut u8 {
    if p.is_null() {
        return malloc(domain, base, size);
    }
    // SAFETY: guaranteed by the caller; faults are reported, not trusted.
    unsafe {
        if let Err(fault) = verify(p, Some(domain)) {
            report_fault(p, fault, Some(domain), function);
            return null_mut();
        }
        let old_size = usize::from_be_bytes((*p.sub(HEAD).cast::<Header>()).size);
        let moved = malloc(domain, base, size);
        if moved.is_null() {
            return null_mut();
        }
        ptr::copy_nonoverlapping(p, moved, old_size.min(size));
        base_free(retire(p));
        moved
    }
}

/// `PyCore_CheckBlock`: verify a live debug block of any family; reports
/// like a failed free. Returns whether the block is intact.
///
/// # Safety
/// As for `verify`.
pub unsafe fn check(p: *mut u8) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match verify(p, None) {
            Ok(()) => true,
            Err(fault) => {
                report_fault(p, fault, None, "PyCore_CheckBlock");
                false
            }
        }
    }
}

/// Live debug blocks grouped by family and size class, for the leak report.
pub fn leak_report() -> String {
    use std::collections::BTreeMap;
    let live = LIVE.lock();
    let list = &*live;
    let mut out = String::new();
    if list.broken {
        out.push_str(
            "pymalloc leak report: the live-block list was corrupted by a fault; no report\n",
        );
        return out;
    }
    let mut groups: BTreeMap<(u8, usize), (usize, usize, usize)> = BTreeMap::new();
    let mut header = list.head;
    // SAFETY: listed headers are live debug blocks, under the lock.
    unsafe {
        while !header.is_null() {
            let h = &*header;
            let size = usize::from_be_bytes(h.size);
            let class = crate::size_class::class_of(size.max(1))
                .map(crate::size_class::block_size)
                .unwrap_or(0);
            let data = header.cast::<u8>().add(HEAD);
            let mut serial = [0u8; WORD];
            ptr::copy_nonoverlapping(data.add(size + WORD), serial.as_mut_ptr(), WORD);
            let entry = groups.entry((h.id, class)).or_insert((0, 0, usize::MAX));
            entry.0 += 1;
            entry.1 += size;
            entry.2 = entry.2.min(usize::from_be_bytes(serial));
            header = h.next;
        }
    }
    let _ = writeln!(
        out,
        "pymalloc leak report: {} live debug blocks at exit",
        list.count
    );
    if list.count > 0 {
        out.push_str("API  size class      blocks           bytes  first serial\n");
        for ((id, class), (blocks, bytes, first)) in groups {
            let class = if class == 0 {
                "large".to_string()
            } else {
                class.to_string()
            };
            let _ = writeln!(
                out,
                "'{}'  {class:>10} {blocks:>11} {bytes:>15} {first:>13}",
                id as char
            );
        }
    }
    out
}

/// Bytes requested for the live debug block `p`.
///
/// # Safety
/// `p` is a live debug block.
pub unsafe fn requested_size(p: *mut u8) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { usize::from_be_bytes((*p.sub(HEAD).cast::<Header>()).size) }
}

/// Whether the block with this header is on the live list (tests: other
/// tests' threads add and remove blocks meanwhile, so counts do not tell).
#[cfg(test)]
fn is_listed(header: *mut Header) -> bool {
    let live = LIVE.lock();
    let mut at = live.head;
    while !at.is_null() {
        if at == header {
            return true;
        }
        // SAFETY: listed headers are live debug blocks, linked under the lock.
        at = unsafe { (*at).next };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_blocks_are_decorated_like_cpython() {
        let p = malloc(Domain::Mem, Backend::Pymalloc, 24);
        // SAFETY: a live debug block of 24 bytes with its header and tail.
        unsafe {
            assert_eq!(p as usize % 16, 0);
            assert!((0..24).all(|i| *p.add(i) == CLEAN_BYTE));
            assert_eq!(*p.sub(8), b'm');
            assert!((1..8).all(|i| *p.sub(i) == FORBIDDEN_BYTE));
            assert_eq!(usize::from_be_bytes(*p.sub(16).cast::<[u8; 8]>()), 24);
            assert!((24..32).all(|i| *p.add(i) == FORBIDDEN_BYTE));
            assert_eq!(verify(p, Some(Domain::Mem)), Ok(()));
            assert_eq!(
                verify(p, Some(Domain::Obj)),
                Err(Fault::BadId { found: b'm' })
            );
            free(Domain::Mem, p, "test");
        }
    }

    #[test]
    fn overflow_underflow_and_freed_blocks_are_told_apart() {
        // SAFETY: writes stay inside the debug block's guard bytes.
        unsafe {
            let p = malloc(Domain::Obj, Backend::Malloc, 10);
            *p.add(10) = 0;
            assert_eq!(verify(p, Some(Domain::Obj)), Err(Fault::TrailingPad));
            *p.add(10) = FORBIDDEN_BYTE;
            *p.sub(1) = 0;
            assert_eq!(verify(p, Some(Domain::Obj)), Err(Fault::LeadingPad));
            *p.sub(1) = FORBIDDEN_BYTE;
            assert!(dump(p).contains("10 bytes originally requested"));
            free(Domain::Obj, p, "test");
            // The block went back to malloc: only its header is read here,
            // through a second, still-live block made the same way.
            let q = calloc(Domain::Raw, Backend::Malloc, 4, 4);
            assert!((0..16).all(|i| *q.add(i) == 0));
            let header = q.sub(HEAD);
            assert!(is_listed(header.cast()));
            let retired = retire(q);
            assert_eq!(retired.cast::<u8>(), header);
            assert!(!is_listed(header.cast()), "retired: off the live list");
            assert_eq!(
                verify(q, Some(Domain::Raw)),
                Err(Fault::BadId { found: DEAD_BYTE })
            );
            assert!(dump(q).contains("the block was freed"));
            base_free(retired);
        }
    }

    #[test]
    fn realloc_keeps_content_and_fills_growth_with_clean_bytes() {
        // SAFETY: accesses stay inside the blocks' requested sizes.
        unsafe {
            let p = malloc(Domain::Core, Backend::Pymalloc, 8);
            ptr::write_bytes(p, 7, 8);
            let q = realloc(Domain::Core, Backend::Pymalloc, p, 600, "test");
            assert!((0..8).all(|i| *q.add(i) == 7));
            assert!((8..600).all(|i| *q.add(i) == CLEAN_BYTE));
            assert_eq!(verify(q, Some(Domain::Core)), Ok(()));
            free(Domain::Core, q, "test");
        }
    }
}
