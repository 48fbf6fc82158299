//! The three heaps of the memory API — raw (`PyMem_Raw*`), memory
//! (`PyMem_*`) and object (`PyObject_*`) — and which allocator serves each.
//!
//! The 2002 proposal's "configure option": each heap is served either by
//! libc malloc or by the pooled allocator. The build sets the default
//! (`make PYMALLOC_MEM=malloc`); the environment can override it at load
//! time, with CPython's `PYTHONMALLOC` names in `PYMALLOC` (`pymalloc`:
//! raw = malloc, mem and object = pymalloc; `malloc`: all three malloc) and
//! per heap in `PYMALLOC_RAW`, `PYMALLOC_MEM`, `PYMALLOC_OBJ`.
//!
//! Only allocation consults the choice. Free and realloc ask the address
//! map who owns the block, so a block always returns to the allocator that
//! made it, even if the choice changed in between.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::allocator;
use crate::config::{MEM_POOLED_BY_DEFAULT, OBJ_POOLED_BY_DEFAULT, RAW_POOLED_BY_DEFAULT};
use crate::system;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Domain {
    Raw = 0,
    Mem = 1,
    Obj = 2,
}

impl Domain {
    pub const ALL: [Domain; 3] = [Domain::Raw, Domain::Mem, Domain::Obj];

    pub fn name(self) -> &'static str {
        match self {
            Domain::Raw => "raw",
            Domain::Mem => "mem",
            Domain::Obj => "object",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Domain::Raw => "PYMALLOC_RAW",
            Domain::Mem => "PYMALLOC_MEM",
            Domain::Obj => "PYMALLOC_OBJ",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Malloc = 0,
    Pymalloc = 1,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Malloc => "malloc",
            Backend::Pymalloc => "pymalloc",
        }
    }

    fn parse(text: &str) -> Option<Backend> {
        match text {
            "malloc" => Some(Backend::Malloc),
            "pymalloc" => Some(Backend::Pymalloc),
            _ => None,
        }
    }

    const fn from_pooled(pooled: bool) -> Backend {
        if pooled {
            Backend::Pymalloc
        } else {
            Backend::Malloc
        }
    }
}

static BACKENDS: [AtomicU8; 3] = [
    AtomicU8::new(Backend::from_pooled(RAW_POOLED_BY_DEFAULT) as u8),
    AtomicU8::new(Backend::from_pooled(MEM_POOLED_BY_DEFAULT) as u8),
    AtomicU8::new(Backend::from_pooled(OBJ_POOLED_BY_DEFAULT) as u8),
];

#[inline(always)]
pub fn backend(domain: Domain) -> Backend {
    if BACKENDS[domain as usize].load(Ordering::Relaxed) == Backend::Pymalloc as u8 {
        Backend::Pymalloc
    } else {
        Backend::Malloc
    }
}

pub fn set_backend(domain: Domain, backend: Backend) {
    BACKENDS[domain as usize].store(backend as u8, Ordering::Relaxed);
}

#[inline(always)]
pub fn malloc(domain: Domain, size: usize) -> *mut u8 {
    match backend(domain) {
        Backend::Pymalloc => allocator::malloc(size),
        Backend::Malloc => system::malloc(size),
    }
}

#[inline(always)]
pub fn calloc(domain: Domain, count: usize, size: usize) -> *mut u8 {
    match backend(domain) {
        Backend::Pymalloc => allocator::calloc(count, size),
        Backend::Malloc => system::calloc(count, size),
    }
}

/// # Safety
/// `block` is null or a live block of any heap.
#[inline(always)]
pub unsafe fn realloc(domain: Domain, block: *mut u8, size: usize) -> *mut u8 {
    if block.is_null() {
        return malloc(domain, size);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { allocator::realloc(block, size) }
}

/// # Safety
/// `block` is null or a live block of any heap.
#[inline(always)]
pub unsafe fn free(block: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { allocator::free(block) }
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

/// Work out the backend of each heap from the environment (`lookup`
/// returns a variable's value). `Ok` holds what to apply.
pub fn choose_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<[Backend; 3], EnvError> {
    let mut chosen = Domain::ALL.map(backend);
    if let Some(value) = lookup("PYMALLOC").filter(|v| !v.is_empty()) {
        chosen = match value.as_str() {
            "pymalloc" => [Backend::Malloc, Backend::Pymalloc, Backend::Pymalloc],
            "malloc" => [Backend::Malloc; 3],
            _ => {
                return Err(EnvError {
                    variable: "PYMALLOC",
                    value,
                    expected: "\"pymalloc\" or \"malloc\"",
                })
            }
        };
    }
    for domain in Domain::ALL {
        if let Some(value) = lookup(domain.variable()).filter(|v| !v.is_empty()) {
            chosen[domain as usize] = Backend::parse(&value).ok_or(EnvError {
                variable: domain.variable(),
                value,
                expected: "\"pymalloc\" or \"malloc\"",
            })?;
        }
    }
    Ok(chosen)
}

/// Apply the environment's choice; an invalid value is reported on stderr
/// and aborts, as CPython does for an invalid `PYTHONMALLOC` (running with
/// an allocator the user did not ask for would be a silent fallback).
pub fn configure_from_env() {
    let lookup = |name: &str| std::env::var(name).ok();
    match choose_from_env(lookup) {
        Ok(chosen) => {
            for domain in Domain::ALL {
                set_backend(domain, chosen[domain as usize]);
            }
        }
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

    #[test]
    fn cpython_names_select_all_heaps() {
        use Backend::*;
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "malloc")])),
            Ok([Malloc; 3])
        );
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "pymalloc")])),
            Ok([Malloc, Pymalloc, Pymalloc])
        );
    }

    #[test]
    fn per_heap_variables_override_and_bad_values_are_rejected() {
        use Backend::*;
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "malloc"), ("PYMALLOC_OBJ", "pymalloc")])),
            Ok([Malloc, Malloc, Pymalloc])
        );
        let error = choose_from_env(env(&[("PYMALLOC_RAW", "tcmalloc")])).unwrap_err();
        assert_eq!(error.variable, "PYMALLOC_RAW");
        assert!(error.to_string().contains("tcmalloc"));
        assert!(choose_from_env(env(&[("PYMALLOC", "fast")])).is_err());
    }
}
