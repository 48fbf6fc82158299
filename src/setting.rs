//! What the memory API's domains are and what can serve each: the
//! vocabulary shared by the domains' dispatch ([`crate::domain`]), the
//! debug hooks ([`crate::debug`]), the profiler ([`crate::profile`]) and
//! the environment settings ([`crate::options`]).
//!
//! A leaf: it imports nothing of the crate, so the modules above can all
//! name a domain without importing each other.

use core::ffi::c_void;

/// The C signatures of a domain's four memory functions.
pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);

/// One domain's four functions for one way of serving it (the pools' fast
/// path, the general path, or libpython's own functions): what a domain's
/// routes point to (`ffi::routes`).
#[derive(Clone, Copy)]
pub struct Targets {
    pub malloc: MallocFn,
    pub calloc: CallocFn,
    pub realloc: ReallocFn,
    pub free: FreeFn,
}

/// One family of the memory API. CPython has three (raw, mem, object);
/// `PyCore_*` is the pooled allocator's own.
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

    /// Every domain, `PyCore_*` last (the order of per-domain arrays).
    pub const WITH_CORE: [Domain; 4] = [Domain::Raw, Domain::Mem, Domain::Obj, Domain::Core];

    /// The domain's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Raw => "raw",
            Domain::Mem => "mem",
            Domain::Obj => "object",
            Domain::Core => "core",
        }
    }
}

/// The allocator under a domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Malloc = 0,
    Pymalloc = 1,
}

/// What serves a domain: an allocator, and whether the debug hooks wrap it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Setting {
    pub backend: Backend,
    pub debug: bool,
}

impl Setting {
    /// The pools (`pooled`) or libc malloc, without the debug hooks.
    pub const fn plain(pooled: bool) -> Setting {
        Setting {
            backend: if pooled {
                Backend::Pymalloc
            } else {
                Backend::Malloc
            },
            debug: false,
        }
    }

    /// This setting with the debug hooks on or off.
    pub const fn with_debug(self, debug: bool) -> Setting {
        Setting {
            backend: self.backend,
            debug,
        }
    }

    /// A setting's name as CPython's `PYTHONMALLOC` spells it: `pymalloc`,
    /// `malloc`, `pymalloc_debug` or `malloc_debug`.
    pub fn parse(text: &str) -> Option<Setting> {
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
