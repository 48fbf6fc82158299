//! CPython's live allocator tables: where libpython keeps them, and the
//! exports' dispatch through them.
//!
//! libpython calls `PyObject_Malloc` and the rest of the memory API through
//! its PLT, so when this library comes first in the lookup order
//! (`LD_PRELOAD`, or linked before libpython) every allocation CPython
//! makes lands in our exports. They must still honour CPython's dispatch
//! (tracemalloc, `PYTHONMALLOC=debug`, hooks installed at run time), which
//! [`crate::cpython`] does by forwarding each call to libpython's own
//! function, which then calls the domain's current table: our hook, two
//! calls and an indirect call later. Measured with callgrind on the
//! `containers` workload: 3.5 % more instructions than stock CPython under
//! `LD_PRELOAD`, where the runner (libpython first) has 1.3 % fewer.
//!
//! libpython's functions do nothing but check the size and call the
//! domain's current `PyMemAllocatorEx`. Knowing where that table lives, an
//! export does the same itself: it reads the table on every call, as
//! libpython does, and when the table is ours it serves the pools inline;
//! otherwise it calls the table's function. CPython's semantics stay
//! exact, whatever CPython installs later and by whichever path.
//!
//! Finding the table. `PyMem_SetAllocator` copies the table it is given
//! into CPython's static storage (`_PyObject` and its siblings in 3.8 to
//! 3.11, `_PyRuntime.allocators` from 3.12). When we install our table for
//! a domain, [`locate`] first installs an alias of it (the same functions,
//! a different context word pointing to an identical copy of the wrapped
//! allocator, so it behaves the same for anyone allocating meanwhile),
//! searches the writable segments of the object that defines
//! `PyMem_SetAllocator` for its five words, requires exactly one match,
//! installs our table, and requires the match to hold it now. Only then is
//! the address used; otherwise the exports keep forwarding, and the
//! statistics report says why.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

use crate::arena_space;
use crate::cpython::PyMemAllocatorEx;
use crate::domain::{self, Domain};
use crate::heap;

/// Why the table of a domain was not found, for the statistics report:
/// 0 if it was not looked for, else a `NotFound` code.
static NOT_FOUND: [AtomicU8; 3] = [AtomicU8::new(0), AtomicU8::new(0), AtomicU8::new(0)];

/// Why a search for the live table failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum NotFound {
    NoWritableSegment = 1,
    NotExactlyOnce = 2,
    DidNotFollow = 3,
    /// Not looked for: the profiler counts requests in our hook functions,
    /// which the exports' inline path would pass by.
    Profiling = 4,
}

impl NotFound {
    const ALL: [NotFound; 4] = [
        NotFound::NoWritableSegment,
        NotFound::NotExactlyOnce,
        NotFound::DidNotFollow,
        NotFound::Profiling,
    ];

    fn text(self) -> &'static str {
        match self {
            NotFound::NoWritableSegment => {
                "forwarded to libpython (table not found: PyMem_SetAllocator's object has no writable segment)"
            }
            NotFound::NotExactlyOnce => {
                "forwarded to libpython (table not found: no single copy of it in libpython's data)"
            }
            NotFound::DidNotFollow => {
                "forwarded to libpython (table not found: it did not follow PyMem_SetAllocator)"
            }
            NotFound::Profiling => "forwarded to libpython (the profiler is on)",
        }
    }
}

/// How `domain`'s CPython-named exports reach CPython, in one word for
/// the statistics summary line: `table` (dispatched in place), `libpython`
/// (forwarded) or `none` (no libpython after us: the exports serve alone).
pub fn short(domain: Domain) -> &'static str {
    match describe(domain) {
        None => "none",
        Some(_) if domain::state(domain) & domain::LIVE_TABLE != 0 => "table",
        Some(_) => "libpython",
    }
}

/// How `domain`'s CPython-named exports reach CPython's table, for the
/// statistics report; `None` when they do not forward at all.
pub fn describe(domain: Domain) -> Option<&'static str> {
    if !domain::forwarding(domain) {
        return None;
    }
    if domain::state(domain) & domain::LIVE_TABLE != 0 {
        return Some("dispatched in place through CPython's table");
    }
    let code = NOT_FOUND[domain as usize].load(Relaxed);
    Some(
        match NotFound::ALL
            .into_iter()
            .find(|&reason| reason as u8 == code)
        {
            Some(reason) => reason.text(),
            None => "forwarded to libpython (our table is not installed)",
        },
    )
}

/// Find CPython's live table for `domain` (see the module documentation)
/// and, if found, switch the domain's exports to dispatch through it
/// (not while the profiler is on: see `NotFound::Profiling`).
/// `primary` is the table just installed, and is installed again on
/// return; `set` installs a table; `set_address` is the address of
/// CPython's `PyMem_SetAllocator`. Called under the installation lock.
pub fn locate(
    domain: Domain,
    set_address: *const c_void,
    primary: &PyMemAllocatorEx,
    alias: &PyMemAllocatorEx,
    set: impl Fn(&PyMemAllocatorEx),
) {
    if crate::profile::enabled() {
        NOT_FOUND[domain as usize].store(NotFound::Profiling as u8, Relaxed);
        return;
    }
    match find_live_table(set_address, primary, alias, set) {
        Ok(address) => domain::enable_live_dispatch(
            domain,
            address as *const AtomicUsize,
            primary.ctx as usize,
        ),
        Err(reason) => NOT_FOUND[domain as usize].store(reason as u8, Relaxed),
    }
}

/// The address where `set` stores a table: install `alias`, find its one
/// copy in the writable segments of the object holding `set_address`,
/// install `primary` and check that the copy followed.
fn find_live_table(
    set_address: *const c_void,
    primary: &PyMemAllocatorEx,
    alias: &PyMemAllocatorEx,
    set: impl Fn(&PyMemAllocatorEx),
) -> Result<usize, NotFound> {
    let segments = writable_segments_of(set_address as usize);
    if segments.is_empty() {
        return Err(NotFound::NoWritableSegment);
    }
    set(alias);
    let mut matches = [0usize; 2];
    // SAFETY: the segments of a loaded object are mapped as long as it is.
    let found = unsafe { find_words(&segments, &alias.words(), &mut matches) };
    set(primary);
    if found != 1 {
        return Err(NotFound::NotExactlyOnce);
    }
    // SAFETY: the match lies in a mapped segment of the object.
    if unsafe { read_words(matches[0]) } != primary.words() {
        return Err(NotFound::DidNotFollow);
    }
    Ok(matches[0])
}

/// The writable `PT_LOAD` segments (start, end) of the loaded object that
/// contains `address`; empty if there is none.
fn writable_segments_of(address: usize) -> Vec<(usize, usize)> {
    struct Search {
        address: usize,
        segments: Vec<(usize, usize)>,
    }
    const PF_X: u32 = 1;
    const PF_W: u32 = 2;

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid description of one object, whose
        // program headers it keeps mapped; `data` is the `Search` below.
        unsafe {
            let search = &mut *data.cast::<Search>();
            let info = &*info;
            let headers = core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let range = |h: &libc::Elf64_Phdr| {
                let start = info.dlpi_addr as usize + h.p_vaddr as usize;
                (start, start + h.p_memsz as usize)
            };
            let loads = headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
            let holds_it = loads.clone().any(|h| {
                let (start, end) = range(h);
                h.p_flags & PF_X != 0 && (start..end).contains(&search.address)
            });
            if !holds_it {
                return 0;
            }
            search.segments = loads.filter(|h| h.p_flags & PF_W != 0).map(range).collect();
            1
        }
    }

    let mut search = Search {
        address,
        segments: Vec::new(),
    };
    // SAFETY: `visit` matches the callback's C signature and only uses
    // `search` for the duration of the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    search.segments
}

/// Count the word-aligned places in `segments` that hold `words`; the
/// first two are written to `found`.
///
/// # Safety
/// Every segment is mapped readable from start to end.
unsafe fn find_words(
    segments: &[(usize, usize)],
    words: &[usize; 5],
    found: &mut [usize; 2],
) -> usize {
    let word = core::mem::size_of::<usize>();
    let mut count = 0;
    for &(start, end) in segments {
        let mut at = start.next_multiple_of(word);
        while at + words.len() * word <= end {
            // SAFETY: `at` is word-aligned and its five words lie inside
            // a mapped segment (caller); they are read atomically, as
            // CPython may write them.
            if unsafe { read_word(at) } == words[0] && unsafe { read_words(at) } == *words {
                if count < found.len() {
                    found[count] = at;
                }
                count += 1;
            }
            at += word;
        }
    }
    count
}

/// # Safety
/// `address` is word-aligned and mapped readable.
unsafe fn read_word(address: usize) -> usize {
    // SAFETY: guaranteed by the caller; an atomic read, because the word
    // may be written by another thread (CPython gives no ordering).
    unsafe { (*(address as *const AtomicUsize)).load(Relaxed) }
}

/// # Safety
/// Five words from `address` are word-aligned and mapped readable.
unsafe fn read_words(address: usize) -> [usize; 5] {
    let word = core::mem::size_of::<usize>();
    // SAFETY: guaranteed by the caller.
    core::array::from_fn(|i| unsafe { read_word(address + i * word) })
}

/// CPython's live table of `domain`, read now (each word atomically; a
/// table being replaced at this moment may be read half old, half new, as
/// CPython's own functions would).
///
/// # Safety
/// The domain's state has `LIVE_TABLE` set (so its address is known).
#[inline(always)]
unsafe fn live(domain: Domain) -> PyMemAllocatorEx {
    let address = domain::live_table(domain).0 as usize;
    // SAFETY: guaranteed by the caller: the address of CPython's table,
    // in static storage of the loaded libpython; each field one word.
    unsafe {
        // Five words in `PyMemAllocatorEx`'s C layout; a null function
        // word is `None`.
        core::mem::transmute::<[usize; 5], PyMemAllocatorEx>(read_words(address))
    }
}

/// Whether CPython's live table of `domain` is the one we installed
/// (false while it is not known).
#[inline(always)]
pub fn table_is_ours(domain: Domain) -> bool {
    let (context, ours) = domain::live_table(domain);
    // SAFETY: `context` is a word of ours, or the context word of CPython's
    // table in libpython's static storage (`domain::live_table`).
    unsafe { (*context).load(Relaxed) == ours }
}

/// The inline part of a free: when CPython's live table is ours and the
/// block lies in the arena space, straight back to the pools. False when
/// the caller must call the table (or CPython is not involved).
///
/// # Safety
/// `block` is null or a live block of the domain.
#[inline(always)]
pub unsafe fn free_if_ours(domain: Domain, block: *mut u8) -> bool {
    // SAFETY: guaranteed by the caller; our table frees such a block
    // exactly so (`cpython::hook_free`).
    unsafe {
        if table_is_ours(domain) && arena_space::contains(block as usize) {
            heap::free(block);
            return true;
        }
    }
    false
}

/// What libpython's `PyMem_RawMalloc`/`PyMem_Malloc`/`PyObject_Malloc` do
/// after checking the size: call the domain's table.
///
/// # Safety
/// As for `live`.
pub unsafe fn malloc(domain: Domain, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    let table = unsafe { live(domain) };
    match table.malloc {
        // SAFETY: CPython's table: its function takes its context.
        Some(malloc) => unsafe { malloc(table.ctx, size).cast() },
        None => incomplete(domain),
    }
}

/// As `malloc`, for calloc.
///
/// # Safety
/// As for `live`.
pub unsafe fn calloc(domain: Domain, count: usize, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    let table = unsafe { live(domain) };
    match table.calloc {
        // SAFETY: as in `malloc`.
        Some(calloc) => unsafe { calloc(table.ctx, count, size).cast() },
        None => incomplete(domain),
    }
}

/// As `malloc`, for realloc.
///
/// # Safety
/// As for `live`; `block` is null or a live block of the domain.
pub unsafe fn realloc(domain: Domain, block: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    let table = unsafe { live(domain) };
    match table.realloc {
        // SAFETY: as in `malloc`; the block is the domain's (caller).
        Some(realloc) => unsafe { realloc(table.ctx, block.cast(), size).cast() },
        None => incomplete(domain),
    }
}

/// As `malloc`, for free.
///
/// # Safety
/// As for `live`; `block` is null or a live block of the domain.
pub unsafe fn free(domain: Domain, block: *mut u8) {
    // SAFETY: guaranteed by the caller.
    let table = unsafe { live(domain) };
    match table.free {
        // SAFETY: as in `malloc`; the block is the domain's (caller).
        Some(free) => unsafe { free(table.ctx, block.cast()) },
        None => incomplete(domain),
    }
}

/// Someone installed a table with a missing function (CPython would call
/// through a null pointer): say so and stop.
#[cold]
fn incomplete(domain: Domain) -> ! {
    crate::report::message(format_args!(
        "CPython's allocator table for domain {} has a NULL function (PyMem_SetAllocator was \
         given an incomplete PyMemAllocatorEx)",
        domain as usize
    ));
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_found_once_twice_or_not_at_all() {
        let pattern = [11usize, 22, 33, 44, 55];
        let mut memory = vec![0usize; 64];
        let segment = |m: &Vec<usize>| {
            let start = m.as_ptr() as usize;
            [(start, start + m.len() * core::mem::size_of::<usize>())]
        };
        let mut found = [0; 2];
        // SAFETY (every call): the segments lie inside `memory`.
        let count = |segments: &[(usize, usize)], found: &mut [usize; 2]| unsafe {
            find_words(segments, &pattern, found)
        };
        assert_eq!(count(&segment(&memory), &mut found), 0);
        memory[10..15].copy_from_slice(&pattern);
        assert_eq!(count(&segment(&memory), &mut found), 1);
        assert_eq!(found[0], &memory[10] as *const usize as usize);
        // A pattern that ends at the segment's end is found; one that would
        // run past it is not looked at.
        memory[59..64].copy_from_slice(&pattern);
        assert_eq!(count(&segment(&memory), &mut found), 2);
        let short = [(segment(&memory)[0].0, segment(&memory)[0].1 - 8)];
        assert_eq!(count(&short, &mut found), 1);
    }

    unsafe extern "C" fn never_called(_: *mut c_void, _: usize) -> *mut c_void {
        unreachable!()
    }

    fn tables() -> (PyMemAllocatorEx, PyMemAllocatorEx) {
        let primary = PyMemAllocatorEx {
            ctx: 0x5eed_0001 as *mut c_void,
            malloc: Some(never_called),
            calloc: None,
            realloc: None,
            free: None,
        };
        let alias = PyMemAllocatorEx {
            ctx: 0x5eed_0002 as *mut c_void,
            ..primary
        };
        (primary, alias)
    }

    /// Storage standing in for CPython's static table, in this binary's
    /// writable data, as libpython's is in libpython's.
    static STORAGE: [AtomicUsize; 10] = [const { AtomicUsize::new(0) }; 10];

    fn store(at: usize, table: &PyMemAllocatorEx) {
        for (slot, word) in STORAGE[at..at + 5].iter().zip(table.words()) {
            slot.store(word, Relaxed);
        }
    }

    #[test]
    fn the_table_a_setter_writes_is_found_and_checked() {
        let (primary, alias) = tables();
        let here = writable_segments_of as *const c_void;
        // A setter that writes one place: found, and it holds the primary.
        let found = find_live_table(here, &primary, &alias, |t| store(0, t));
        assert_eq!(found, Ok(&STORAGE[0] as *const AtomicUsize as usize));
        // SAFETY: the address of `STORAGE`'s first five words.
        assert_eq!(unsafe { read_words(found.unwrap()) }, primary.words());
        // A setter that keeps a second copy: ambiguous, refused.
        let twice = find_live_table(here, &primary, &alias, |t| {
            store(0, t);
            store(5, t);
        });
        assert_eq!(twice, Err(NotFound::NotExactlyOnce));
        STORAGE[5..].iter().for_each(|slot| slot.store(0, Relaxed));
        // A setter whose copy does not follow the next call: refused.
        let stuck = find_live_table(here, &primary, &alias, |t| {
            if t.ctx == alias.ctx {
                store(0, t)
            }
        });
        assert_eq!(stuck, Err(NotFound::DidNotFollow));
        // No object holds the setter's address.
        let nowhere = find_live_table(core::ptr::null(), &primary, &alias, |t| store(0, t));
        assert_eq!(nowhere, Err(NotFound::NoWritableSegment));
    }

    #[test]
    fn the_writable_segments_of_this_library_hold_its_statics() {
        static MARKER: AtomicUsize = AtomicUsize::new(0x5eed);
        let segments = writable_segments_of(writable_segments_of as *const () as usize);
        assert!(!segments.is_empty());
        let marker = &MARKER as *const AtomicUsize as usize;
        assert!(segments
            .iter()
            .any(|&(start, end)| (start..end).contains(&marker)));
        assert!(
            writable_segments_of(0).is_empty(),
            "no object holds address 0"
        );
    }
}
