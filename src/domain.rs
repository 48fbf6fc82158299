//! The heaps of the memory API — raw (`PyMem_Raw*`), memory (`PyMem_*`),
//! object (`PyObject_*`), plus the pooled allocator's own family
//! (`PyCore_*`) — and what serves each.
//!
//! The 2002 proposal's "configure option": each heap is served either by
//! libc malloc or by the pooled allocator, optionally under the debug hooks
//! (see [`crate::debug`]). The build sets the default
//! (`make PYMALLOC_MEM=malloc`); the environment overrides it at load time,
//! with CPython's `PYTHONMALLOC` names in `PYMALLOC`:
//!
//! | `PYMALLOC`       | raw            | mem, object      | PyCore_*        |
//! |------------------|----------------|------------------|-----------------|
//! | `pymalloc`       | malloc         | pymalloc         | pymalloc        |
//! | `malloc`         | malloc         | malloc           | pymalloc        |
//! | `debug`, `pymalloc_debug` | malloc + debug | pymalloc + debug | pymalloc + debug |
//! | `malloc_debug`   | malloc + debug | malloc + debug   | pymalloc + debug |
//!
//! and per heap in `PYMALLOC_RAW`, `PYMALLOC_MEM`, `PYMALLOC_OBJ` (the same
//! four names without `debug`). `PyMem_SetupDebugHooks()` turns the debug
//! hooks on over whatever serves each heap.
//!
//! Without the debug hooks, free and realloc ask the address map who owns
//! a block, so a block always returns to the allocator that made it. With
//! them, each heap checks that its blocks come back through its own family.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::allocator;
use crate::config::{MEM_POOLED_BY_DEFAULT, OBJ_POOLED_BY_DEFAULT, RAW_POOLED_BY_DEFAULT};
use crate::debug;
use crate::ffi::routes::{Choice, PLAIN};
use crate::profile;
use crate::sync::Locked;
use crate::system;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Domain {
    Raw = 0,
    Mem = 1,
    Obj = 2,
    /// `PyCore_*`: always the pooled allocator; has its own debug id.
    Core = 3,
}

impl Domain {
    /// CPython's three domains, in `PYMEM_DOMAIN_*` order.
    pub const ALL: [Domain; 3] = [Domain::Raw, Domain::Mem, Domain::Obj];

    /// The heap's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Raw => "raw",
            Domain::Mem => "mem",
            Domain::Obj => "object",
            Domain::Core => "core",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Domain::Raw => "PYMALLOC_RAW",
            Domain::Mem => "PYMALLOC_MEM",
            Domain::Obj => "PYMALLOC_OBJ",
            Domain::Core => "PYMALLOC",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Malloc = 0,
    Pymalloc = 1,
}

/// What serves a heap: an allocator, and whether the debug hooks wrap it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Setting {
    pub backend: Backend,
    pub debug: bool,
}

const POOLED: u8 = 1;
const DEBUG: u8 = 2;
/// The profiler counts this heap's requests (see [`crate::profile`]).
const PROFILE: u8 = 4;
/// A libpython in the process serves this domain's CPython-named
/// functions: the exports' routes lead to it (see [`crate::cpython`]).
pub const FORWARD: u8 = 8;
/// The state of a domain served by the pools with nothing over them.
pub const PLAIN_POOLED: u8 = POOLED;
/// The bits that take a free off the plain path.
pub const FREE_SLOW: u8 = DEBUG | FORWARD;

impl Setting {
    const fn encode(self) -> u8 {
        (matches!(self.backend, Backend::Pymalloc) as u8) | if self.debug { DEBUG } else { 0 }
    }

    const fn decode(state: u8) -> Setting {
        Setting {
            backend: if state & POOLED != 0 {
                Backend::Pymalloc
            } else {
                Backend::Malloc
            },
            debug: state & DEBUG != 0,
        }
    }

    const fn plain(pooled: bool) -> Setting {
        Setting {
            backend: if pooled {
                Backend::Pymalloc
            } else {
                Backend::Malloc
            },
            debug: false,
        }
    }

    fn parse(text: &str) -> Option<Setting> {
        let (name, debug) = match text.strip_suffix("_debug") {
            Some(name) => (name, true),
            None => (text, false),
        };
        let backend = match name {
            "pymalloc" => Backend::Pymalloc,
            "malloc" => Backend::Malloc,
            _ => return None,
        };
        Some(Setting { backend, debug })
    }
}

/// Each domain's state byte: its setting, and whether the profiler or
/// a libpython serves it. Read by the general routes per call and by
/// statistics; the exports read the routes chosen from it
/// ([`crate::ffi::routes`]).
static STATE: [AtomicU8; 4] = [
    AtomicU8::new(Setting::plain(RAW_POOLED_BY_DEFAULT).encode()),
    AtomicU8::new(Setting::plain(MEM_POOLED_BY_DEFAULT).encode()),
    AtomicU8::new(Setting::plain(OBJ_POOLED_BY_DEFAULT).encode()),
    AtomicU8::new(POOLED),
];

/// Serialises state changes, so that the routes published last are those
/// of the state stored last. A leaf lock: nothing is taken under it.
static STATE_CHANGE: Locked<()> = Locked::new(());

/// Take the state-change lock before `fork()` (see [`fork`](crate::fork)
/// for the order of all the locks).
pub(crate) fn lock_for_fork() {
    STATE_CHANGE.acquire_for_fork();
}

/// Release the state-change lock after `fork()`, in the parent or the child.
pub(crate) fn unlock_after_fork(in_child: bool) {
    STATE_CHANGE.release_after_fork(in_child);
}

/// Everything about how `domain` is served, in one byte: zero bits other
/// than `POOLED` mean the plain pooled fast path.
#[inline(always)]
pub fn state(domain: Domain) -> u8 {
    STATE[domain as usize].load(Ordering::Relaxed)
}

/// Change `domain`'s state to `update(old)` and point its exports'
/// routes at what the new state calls for. Every change goes through here.
fn update_state(domain: Domain, update: impl FnOnce(u8) -> u8) {
    let _serialised = STATE_CHANGE.lock();
    let slot = &STATE[domain as usize];
    let new = update(slot.load(Ordering::Relaxed));
    slot.store(new, Ordering::Relaxed);
    crate::ffi::routes::set(domain as usize, routes_for(domain, new));
}

/// The targets `domain`'s exports call in state `state` (see
/// [`crate::ffi::routes`]).
fn routes_for(domain: Domain, state: u8) -> Choice {
    let general = match domain {
        Domain::Raw => crate::ffi::pymem::RAW_GENERAL,
        Domain::Mem => crate::ffi::pymem::MEM_GENERAL,
        Domain::Obj => crate::ffi::objimpl::OBJECT_GENERAL,
        Domain::Core => crate::ffi::core::CORE_GENERAL,
    };
    if state & FORWARD != 0 {
        if let Some(libpython) = crate::cpython::forward_targets(domain) {
            return Choice {
                allocate: libpython,
                free: libpython.free,
            };
        }
    }
    Choice {
        allocate: if state == PLAIN_POOLED {
            PLAIN
        } else {
            general
        },
        free: if state & FREE_SLOW == 0 {
            PLAIN.free
        } else {
            general.free
        },
    }
}

pub fn setting(domain: Domain) -> Setting {
    Setting::decode(state(domain))
}

pub fn backend(domain: Domain) -> Backend {
    setting(domain).backend
}

pub fn set(domain: Domain, setting: Setting) {
    let backend = match domain {
        Domain::Core => Backend::Pymalloc,
        _ => setting.backend,
    };
    let encoded = Setting { backend, ..setting }.encode();
    update_state(domain, |old| encoded | (old & (PROFILE | FORWARD)));
}

/// The CPython-named exports of the three CPython heaps forward to libpython.
pub fn enable_forwarding() {
    for domain in Domain::ALL {
        update_state(domain, |old| old | FORWARD);
    }
}

/// Whether `domain`'s CPython-named exports forward to libpython.
pub fn forwarding(domain: Domain) -> bool {
    state(domain) & FORWARD != 0
}

/// Route every heap's requests through the profiler from now on.
pub fn enable_profiling() {
    profile::enable();
    for domain in [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core] {
        update_state(domain, |old| old | PROFILE);
    }
}

/// `PyMem_SetupDebugHooks`: the debug hooks over whatever serves each heap.
/// Blocks allocated before have no debug header: call it before allocating.
pub fn enable_debug_hooks() {
    for domain in [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core] {
        set(
            domain,
            Setting {
                debug: true,
                ..setting(domain)
            },
        );
    }
}

#[inline(always)]
pub fn malloc(domain: Domain, size: usize) -> *mut u8 {
    let state = state(domain);
    if state == POOLED {
        allocator::malloc(size)
    } else {
        malloc_other(domain, state, size)
    }
}

#[inline(never)]
fn malloc_other(domain: Domain, state: u8, size: usize) -> *mut u8 {
    if state & PROFILE != 0 {
        profile::record(profile::Event::Malloc, domain, size);
    }
    match Setting::decode(state) {
        Setting {
            debug: true,
            backend,
        } => debug::malloc(domain, backend, size),
        Setting {
            backend: Backend::Pymalloc,
            ..
        } => allocator::malloc(size),
        Setting {
            backend: Backend::Malloc,
            ..
        } => system::malloc(size),
    }
}

#[inline(always)]
pub fn calloc(domain: Domain, count: usize, size: usize) -> *mut u8 {
    if state(domain) & PROFILE != 0 {
        profile::record(profile::Event::Calloc, domain, count.saturating_mul(size));
    }
    let setting = setting(domain);
    match (setting.debug, setting.backend) {
        (false, Backend::Pymalloc) => allocator::calloc(count, size),
        (false, Backend::Malloc) => system::calloc(count, size),
        (true, backend) => debug::calloc(domain, backend, count, size),
    }
}

/// # Safety
/// `block` is null or a live block of `domain`. `function` names the API
/// function for reports.
#[inline(always)]
pub unsafe fn realloc(domain: Domain, block: *mut u8, size: usize, function: &str) -> *mut u8 {
    let state = state(domain);
    if state & PROFILE != 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { record_realloc(domain, state, block, size) };
    }
    let setting = Setting::decode(state);
    if setting.debug {
        // SAFETY: guaranteed by the caller.
        return unsafe { debug::realloc(domain, setting.backend, block, size, function) };
    }
    if block.is_null() {
        return malloc(domain, size);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { allocator::realloc(block, size) }
}

/// # Safety
/// `block` is null or a live block of `domain`.
#[inline(always)]
pub unsafe fn free(domain: Domain, block: *mut u8, function: &str) {
    if state(domain) & DEBUG == 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { allocator::free(block) }
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { debug::free(domain, block, function) }
    }
}

/// # Safety
/// `block` is null or a live block of `domain`.
#[cold]
unsafe fn record_realloc(domain: Domain, state: u8, block: *mut u8, size: usize) {
    let old_size = if block.is_null() {
        Some(0)
    } else if state & DEBUG != 0 {
        // SAFETY: a live debug block (caller).
        Some(unsafe { debug::requested_size(block) })
    } else if allocator::owns(block) {
        // SAFETY: a live pooled block (caller).
        Some(unsafe { crate::heap::block_usable_size(block) })
    } else {
        // SAFETY: not ours, so a live libc block (caller).
        Some(unsafe { libc::malloc_usable_size(block.cast()) })
    };
    profile::record_realloc(domain, old_size, size);
}

/// An invalid setting in the environment.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl core::fmt::Display for EnvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

/// The settings the environment asks for, in `[raw, mem, obj, core]` order.
pub fn choose_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<[Setting; 4], EnvError> {
    let mut chosen = [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core].map(setting);
    let malloc = Setting {
        backend: Backend::Malloc,
        debug: false,
    };
    let pooled = Setting {
        backend: Backend::Pymalloc,
        debug: false,
    };
    if let Some(value) = lookup("PYMALLOC").filter(|v| !v.is_empty()) {
        let with_debug = |s: Setting, debug: bool| Setting { debug, ..s };
        chosen = match value.as_str() {
            "pymalloc" => [malloc, pooled, pooled, pooled],
            "malloc" => [malloc, malloc, malloc, pooled],
            "debug" | "pymalloc_debug" => {
                [malloc, pooled, pooled, pooled].map(|s| with_debug(s, true))
            }
            "malloc_debug" => [malloc, malloc, malloc, pooled].map(|s| with_debug(s, true)),
            _ => return Err(EnvError {
                variable: "PYMALLOC",
                value,
                expected:
                    "\"pymalloc\", \"malloc\", \"debug\", \"pymalloc_debug\" or \"malloc_debug\"",
            }),
        };
    }
    for domain in Domain::ALL {
        if let Some(value) = lookup(domain.variable()).filter(|v| !v.is_empty()) {
            chosen[domain as usize] = Setting::parse(&value).ok_or(EnvError {
                variable: domain.variable(),
                value,
                expected: "\"pymalloc\", \"malloc\", \"pymalloc_debug\" or \"malloc_debug\"",
            })?;
        }
    }
    if let Some(value) = lookup("PYMALLOC_DEBUG_ACTION").filter(|v| !v.is_empty()) {
        if value != "abort" && value != "warn" {
            return Err(EnvError {
                variable: "PYMALLOC_DEBUG_ACTION",
                value,
                expected: "\"abort\" or \"warn\"",
            });
        }
    }
    Ok(chosen)
}

/// Apply the environment's choice; an invalid value is reported on stderr
/// and aborts, as CPython does for an invalid `PYTHONMALLOC` (running with
/// an allocator the user did not ask for would be a silent fallback).
pub fn configure_from_env() {
    let lookup = |name: &str| std::env::var(name).ok();
    let chosen = or_abort(choose_from_env(lookup));
    for (domain, setting) in [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core]
        .into_iter()
        .zip(chosen)
    {
        set(domain, setting);
    }
    debug::set_warn_only(lookup("PYMALLOC_DEBUG_ACTION").as_deref() == Some("warn"));
    if lookup("PYMALLOC_PROFILE").is_some_and(|v| !v.is_empty()) {
        enable_profiling();
    }
    let decay = lookup("PYMALLOC_ARENA_DECAY_MS");
    crate::arena::set_decay_ms(or_abort(crate::arena::decay_from_env(decay.as_deref())));
    let space = lookup("PYMALLOC_ARENA_SPACE");
    crate::arena_space::set_space_bytes(or_abort(crate::arena_space::space_from_env(
        space.as_deref(),
    )));
    let huge_pages = lookup("PYMALLOC_HUGE_PAGES");
    crate::arena_space::set_huge_pages_from(or_abort(crate::arena_space::huge_pages_from_env(
        huge_pages.as_deref(),
    )));
    let cache = lookup("PYMALLOC_BLOCK_CACHE_BYTES");
    crate::block_cache::set_bytes_per_class(or_abort(crate::block_cache::bytes_from_env(
        cache.as_deref(),
    )));
}

/// A setting from the environment, or (it is invalid) the message naming
/// the variable, then abort: a process must not run on a setting it did
/// not ask for.
fn or_abort<T, E: core::fmt::Display>(setting: Result<T, E>) -> T {
    match setting {
        Ok(value) => value,
        Err(error) => {
            crate::report::message(format_args!("{error}"));
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const MALLOC: Setting = Setting {
        backend: Backend::Malloc,
        debug: false,
    };
    const POOL: Setting = Setting {
        backend: Backend::Pymalloc,
        debug: false,
    };

    #[test]
    fn cpython_names_select_all_heaps() {
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "malloc")])),
            Ok([MALLOC, MALLOC, MALLOC, POOL])
        );
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "pymalloc")])),
            Ok([MALLOC, POOL, POOL, POOL])
        );
        let debug = choose_from_env(env(&[("PYMALLOC", "debug")])).unwrap();
        assert!(debug.iter().all(|s| s.debug));
        assert_eq!(debug[1].backend, Backend::Pymalloc);
        let malloc_debug = choose_from_env(env(&[("PYMALLOC", "malloc_debug")])).unwrap();
        assert_eq!(
            malloc_debug[2],
            Setting {
                backend: Backend::Malloc,
                debug: true
            }
        );
    }

    #[test]
    fn per_heap_variables_override_and_bad_values_are_rejected() {
        assert_eq!(
            choose_from_env(env(&[
                ("PYMALLOC", "malloc"),
                ("PYMALLOC_OBJ", "pymalloc_debug")
            ])),
            Ok([
                MALLOC,
                MALLOC,
                Setting {
                    backend: Backend::Pymalloc,
                    debug: true
                },
                POOL
            ])
        );
        let error = choose_from_env(env(&[("PYMALLOC_RAW", "tcmalloc")])).unwrap_err();
        assert_eq!(error.variable, "PYMALLOC_RAW");
        assert!(error.to_string().contains("tcmalloc"));
        assert!(choose_from_env(env(&[("PYMALLOC", "fast")])).is_err());
        assert!(choose_from_env(env(&[("PYMALLOC_DEBUG_ACTION", "ignore")])).is_err());
    }

    /// The exports' routes follow the domain's state: the plain targets
    /// only while nothing is over the pools (a malloc backend still frees
    /// through the plain route, where ownership decides), never with the
    /// debug hooks, whose blocks carry a header.
    #[test]
    fn routes_follow_the_domains_state() {
        use crate::ffi::routes;
        let raw = Domain::Raw as usize;
        let plain_malloc = || routes::malloc(raw) as usize == PLAIN.malloc as usize;
        let plain_free = || routes::free(raw) as usize == PLAIN.free as usize;
        let saved = setting(Domain::Raw);
        set(Domain::Raw, MALLOC);
        assert!(!plain_malloc() && plain_free(), "malloc backend");
        set(
            Domain::Raw,
            Setting {
                debug: true,
                ..MALLOC
            },
        );
        assert!(!plain_malloc() && !plain_free(), "debug hooks");
        set(Domain::Raw, POOL);
        assert!(plain_malloc() && plain_free(), "pooled");
        set(
            Domain::Raw,
            Setting {
                debug: true,
                ..POOL
            },
        );
        assert!(!plain_malloc() && !plain_free(), "pooled, debug hooks");
        set(Domain::Raw, saved);
    }
}
