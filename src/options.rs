//! Every environment variable the library reads, in one place (as
//! mimalloc's `options.c`): what each means, how its value is parsed and
//! checked, and when it is read.
//!
//! Read once at load ([`configure_from_env`], from the library
//! constructor):
//!
//! | variable | value |
//! |---|---|
//! | `PYMALLOC` | every domain at once, with CPython's `PYTHONMALLOC` names (see [`crate::domain`]) |
//! | `PYMALLOC_RAW`, `PYMALLOC_MEM`, `PYMALLOC_OBJ` | one domain: `pymalloc`, `malloc`, `pymalloc_debug` or `malloc_debug` |
//! | `PYMALLOC_DEBUG_ACTION` | `abort` (the default) or `warn`: what the debug hooks do on a fault |
//! | `PYMALLOC_PROFILE` | non-empty: profile every domain's requests (the file is written at exit) |
//! | `PYMALLOC_ARENA_DECAY_MS` | milliseconds a wholly free arena stays mapped ([`crate::arena`]) |
//! | `PYMALLOC_ARENA_SPACE` | a size: the address space reserved for arenas ([`crate::arena_space`]) |
//! | `PYMALLOC_HUGE_PAGES` | `off`, or a size: arena memory in use from which arenas ask for huge pages |
//! | `PYMALLOC_BLOCK_CACHE_BYTES` | a size: each heap's block cache budget per size class ([`crate::block_cache`]) |
//! | `PYMALLOC_CPYTHON` | `0`: do not install the hook tables into a preloaded CPython ([`crate::cpython`]) |
//! | `LD_PRELOAD` | the loader's: whether this library was preloaded |
//!
//! Read at exit, so that a program may still set them while it runs:
//! `PYMALLOC_PROFILE` (the profile's file, `%p` the process id),
//! `PYMALLOC_LEAKS=1` (the live debug blocks), `PYMALLOC_STATS=1` (the
//! statistics on stderr) and `PYMALLOC_STATS_FILE` (one summary line
//! appended to the file).
//!
//! **Sizes** are whole numbers of bytes, optionally followed by `K`, `M`,
//! `G` or `T` (powers of 1024, either case), which may be spelt `KiB`,
//! `MiB`, … as well; blanks around the value are ignored: `65536`, `64K`,
//! `64k` and `64KiB` are the same size. `KB` and the like are refused
//! rather than guessed (1000 or 1024?).
//!
//! An unset variable keeps its default; so does an empty one for the
//! domain variables and `PYMALLOC_DEBUG_ACTION` (an empty size or time is
//! refused, as it always was). An invalid value aborts
//! the process at load with a message naming the variable, the value and
//! what is expected ([`EnvError`]): a process must not run on a setting
//! it did not ask for, as CPython does for an invalid `PYTHONMALLOC`.

use std::ffi::OsString;

use crate::arena;
use crate::arena_space::{self, DEFAULT_HUGE_PAGES_FROM, DEFAULT_SPACE_BYTES, MAX_SPACE_BYTES};
use crate::block_cache::{self, DEFAULT_BYTES_PER_CLASS};
use crate::config::ARENA_SIZE;
use crate::debug;
use crate::domain::{self, Domain, Setting};
use crate::ffi::routes;

/// An invalid value of an environment variable.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
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

fn invalid(variable: &'static str, value: &str, expected: impl Into<String>) -> EnvError {
    EnvError {
        variable,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A size in bytes (see the module documentation): digits, optionally
/// `K`, `M`, `G` or `T` (powers of 1024, either case, optionally followed
/// by `iB`), blanks around allowed. `None` if malformed or above `u64`.
pub fn parse_size(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    // A leading `+` was always accepted (Rust's integer parsing takes it).
    let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let unit = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
    let digits = &trimmed[..trimmed.len() - unit.len()];
    let prefix = match unit.len() {
        3 if unit[1..].eq_ignore_ascii_case("ib") => &unit[..1],
        _ => unit,
    };
    let shift = match prefix.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A whole number, blanks around allowed.
fn parse_whole(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()
}

/// A variable's value, `None` when unset or empty.
fn var(lookup: &impl Fn(&str) -> Option<String>, variable: &str) -> Option<String> {
    lookup(variable).filter(|value| !value.is_empty())
}

/// The variable that chooses one domain's setting.
fn domain_variable(domain: Domain) -> &'static str {
    match domain {
        Domain::Raw => "PYMALLOC_RAW",
        Domain::Mem => "PYMALLOC_MEM",
        Domain::Obj => "PYMALLOC_OBJ",
        Domain::Core => "PYMALLOC",
    }
}

/// The settings the environment asks for, in `[raw, mem, obj, core]`
/// order: `PYMALLOC`, then the per-domain variables over it, over the
/// build's defaults. Also checks `PYMALLOC_DEBUG_ACTION`.
pub fn choose_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<[Setting; 4], EnvError> {
    let mut chosen = domain::DEFAULT_SETTINGS;
    let malloc = Setting::plain(false);
    let pooled = Setting::plain(true);
    if let Some(value) = var(&lookup, "PYMALLOC") {
        chosen =
            match value.as_str() {
                "pymalloc" => [malloc, pooled, pooled, pooled],
                "malloc" => [malloc, malloc, malloc, pooled],
                "debug" | "pymalloc_debug" => {
                    [malloc, pooled, pooled, pooled].map(|s| s.with_debug(true))
                }
                "malloc_debug" => [malloc, malloc, malloc, pooled].map(|s| s.with_debug(true)),
                _ => return Err(invalid(
                    "PYMALLOC",
                    &value,
                    "\"pymalloc\", \"malloc\", \"debug\", \"pymalloc_debug\" or \"malloc_debug\"",
                )),
            };
    }
    for domain in Domain::ALL {
        let variable = domain_variable(domain);
        if let Some(value) = var(&lookup, variable) {
            chosen[domain as usize] = Setting::parse(&value).ok_or_else(|| {
                invalid(
                    variable,
                    &value,
                    "\"pymalloc\", \"malloc\", \"pymalloc_debug\" or \"malloc_debug\"",
                )
            })?;
        }
    }
    debug_action_warns(&lookup)?;
    Ok(chosen)
}

/// `PYMALLOC_DEBUG_ACTION`: whether the debug hooks report a fault and
/// continue (`warn`) rather than abort (`abort`, the default).
fn debug_action_warns(lookup: &impl Fn(&str) -> Option<String>) -> Result<bool, EnvError> {
    match var(lookup, "PYMALLOC_DEBUG_ACTION").as_deref() {
        None | Some("abort") => Ok(false),
        Some("warn") => Ok(true),
        Some(value) => Err(invalid(
            "PYMALLOC_DEBUG_ACTION",
            value,
            "\"abort\" or \"warn\"",
        )),
    }
}

/// `PYMALLOC_ARENA_DECAY_MS`: a whole number of milliseconds.
pub fn arena_decay_ms(value: Option<&str>) -> Result<u64, EnvError> {
    let Some(text) = value else {
        return Ok(arena::DEFAULT_DECAY_MS);
    };
    parse_whole(text).ok_or_else(|| {
        invalid(
            "PYMALLOC_ARENA_DECAY_MS",
            text,
            "a whole number of milliseconds (0 returns free arenas at once)",
        )
    })
}

/// `PYMALLOC_ARENA_SPACE`: a size, a multiple of the arena size and at
/// most `MAX_SPACE_BYTES`; `0` reserves nothing (every arena mapped on
/// its own).
pub fn arena_space_bytes(value: Option<&str>) -> Result<u64, EnvError> {
    let Some(text) = value else {
        return Ok(DEFAULT_SPACE_BYTES);
    };
    match parse_size(text) {
        Some(bytes) if bytes <= MAX_SPACE_BYTES && bytes % ARENA_SIZE as u64 == 0 => Ok(bytes),
        _ => Err(invalid(
            "PYMALLOC_ARENA_SPACE",
            text,
            format!(
                "a size such as 32G, 512M or 0 (a multiple of the {ARENA_SIZE}-byte arena size, \
                 at most {}G)",
                MAX_SPACE_BYTES >> 30
            ),
        )),
    }
}

/// `PYMALLOC_HUGE_PAGES`: `off` (either case), or the arena memory in use
/// (a size) from which new arenas ask for transparent huge pages; `0`
/// asks from the first arena.
pub fn huge_pages_from(value: Option<&str>) -> Result<Option<u64>, EnvError> {
    let Some(text) = value else {
        return Ok(Some(DEFAULT_HUGE_PAGES_FROM));
    };
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match parse_size(text) {
        // `u64::MAX` is how the arena space stores "off".
        Some(bytes) if bytes < u64::MAX => Ok(Some(bytes)),
        _ => Err(invalid(
            "PYMALLOC_HUGE_PAGES",
            text,
            "off, or the arena memory in use from which arenas ask for huge pages, \
             such as 64M (the default) or 0 (always)",
        )),
    }
}

/// The largest block cache budget per size class.
const MAX_BLOCK_CACHE_BYTES: u64 = 1 << 20;

/// `PYMALLOC_BLOCK_CACHE_BYTES`: a size per size class, at most 1 MiB; 0
/// turns the block caches off.
pub fn block_cache_bytes(value: Option<&str>) -> Result<usize, EnvError> {
    let Some(text) = value else {
        return Ok(DEFAULT_BYTES_PER_CLASS);
    };
    match parse_size(text) {
        Some(bytes) if bytes <= MAX_BLOCK_CACHE_BYTES => Ok(bytes as usize),
        _ => Err(invalid(
            "PYMALLOC_BLOCK_CACHE_BYTES",
            text,
            format!(
                "a size in bytes per size class, 0 to {MAX_BLOCK_CACHE_BYTES} or 1M \
                 (0 turns the block caches off)"
            ),
        )),
    }
}

/// Apply the environment's settings, at load. An invalid value is
/// reported on stderr and aborts (see the module documentation).
pub fn configure_from_env() {
    let lookup = |name: &str| std::env::var(name).ok();
    let chosen = or_abort(choose_from_env(lookup));
    for (domain, setting) in Domain::WITH_CORE.into_iter().zip(chosen) {
        routes::set(domain, setting);
    }
    debug::set_warn_only(or_abort(debug_action_warns(&lookup)));
    if profile_requested() {
        routes::enable_profiling();
    }
    let value = |name: &str| lookup(name);
    arena::set_decay_ms(or_abort(arena_decay_ms(
        value("PYMALLOC_ARENA_DECAY_MS").as_deref(),
    )));
    arena_space::set_space_bytes(or_abort(arena_space_bytes(
        value("PYMALLOC_ARENA_SPACE").as_deref(),
    )));
    arena_space::set_huge_pages_from(or_abort(huge_pages_from(
        value("PYMALLOC_HUGE_PAGES").as_deref(),
    )));
    block_cache::set_bytes_per_class(or_abort(block_cache_bytes(
        value("PYMALLOC_BLOCK_CACHE_BYTES").as_deref(),
    )));
}

/// A setting, or (it is invalid) its message on stderr, then abort.
fn or_abort<T>(setting: Result<T, EnvError>) -> T {
    match setting {
        Ok(value) => value,
        Err(error) => {
            crate::report::message(format_args!("{error}"));
            std::process::abort();
        }
    }
}

/// `PYMALLOC_PROFILE` is set (and not empty).
pub fn profile_requested() -> bool {
    profile_file().is_some()
}

/// `PYMALLOC_PROFILE`: where the allocation profile goes at exit, `%p`
/// replaced by the process id (so that every process of a run keeps its
/// own).
pub fn profile_file() -> Option<String> {
    let name = std::env::var_os("PYMALLOC_PROFILE").filter(|name| !name.is_empty())?;
    Some(
        name.to_string_lossy()
            .replace("%p", &std::process::id().to_string()),
    )
}

/// `PYMALLOC_LEAKS=1`: list the live debug blocks at exit.
pub fn leak_report_requested() -> bool {
    std::env::var_os("PYMALLOC_LEAKS").is_some_and(|v| v == "1")
}

/// `PYMALLOC_STATS=1`: the full statistics on stderr at exit.
pub fn stats_to_stderr() -> bool {
    std::env::var_os("PYMALLOC_STATS").is_some_and(|v| v == "1")
}

/// `PYMALLOC_STATS_FILE=path`: one summary line appended to `path` at exit
/// (for runs with many processes, such as a test suite).
pub fn stats_file() -> Option<OsString> {
    std::env::var_os("PYMALLOC_STATS_FILE")
}

/// `PYMALLOC_CPYTHON=0` turns off the installation of the hook tables into
/// a CPython this library is preloaded into.
pub fn cpython_install_allowed() -> bool {
    std::env::var_os("PYMALLOC_CPYTHON").is_none_or(|v| v != "0")
}

/// The loader's `LD_PRELOAD`, if set.
pub fn ld_preload() -> Option<OsString> {
    std::env::var_os("LD_PRELOAD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Backend;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const MALLOC: Setting = Setting::plain(false);
    const POOL: Setting = Setting::plain(true);

    #[test]
    fn cpython_names_select_all_domains() {
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
        assert_eq!(malloc_debug[2], MALLOC.with_debug(true));
        assert_eq!(choose_from_env(env(&[])), Ok(domain::DEFAULT_SETTINGS));
        assert_eq!(
            choose_from_env(env(&[("PYMALLOC", "")])),
            Ok(domain::DEFAULT_SETTINGS)
        );
    }

    #[test]
    fn per_domain_variables_override_and_bad_values_are_rejected() {
        assert_eq!(
            choose_from_env(env(&[
                ("PYMALLOC", "malloc"),
                ("PYMALLOC_OBJ", "pymalloc_debug")
            ])),
            Ok([MALLOC, MALLOC, POOL.with_debug(true), POOL])
        );
        let error = choose_from_env(env(&[("PYMALLOC_RAW", "tcmalloc")])).unwrap_err();
        assert_eq!(error.variable, "PYMALLOC_RAW");
        assert!(error.to_string().contains("tcmalloc"));
        assert!(choose_from_env(env(&[("PYMALLOC", "fast")])).is_err());
        assert!(choose_from_env(env(&[("PYMALLOC_DEBUG_ACTION", "ignore")])).is_err());
        assert_eq!(
            debug_action_warns(&env(&[("PYMALLOC_DEBUG_ACTION", "warn")])),
            Ok(true)
        );
        assert_eq!(debug_action_warns(&env(&[])), Ok(false));
    }

    /// Every message has one shape: the variable, the value as given, and
    /// what was expected.
    #[test]
    fn messages_name_the_variable_the_value_and_what_is_expected() {
        let error = arena_decay_ms(Some("soon")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PYMALLOC_ARENA_DECAY_MS=\"soon\": expected a whole number of \
             milliseconds (0 returns free arenas at once)"
        );
        for error in [
            choose_from_env(env(&[("PYMALLOC_MEM", "x")])).unwrap_err(),
            arena_space_bytes(Some("x")).unwrap_err(),
            huge_pages_from(Some("x")).unwrap_err(),
            block_cache_bytes(Some("x")).unwrap_err(),
        ] {
            let text = error.to_string();
            let start = format!("invalid {}=\"x\": expected ", error.variable);
            assert!(text.starts_with(&start), "{text}");
        }
    }

    #[test]
    fn sizes_are_bytes_or_powers_of_1024() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size(" 4096 "), Some(4096));
        for same in ["64K", "64k", "64KiB", "64kib", " 64K "] {
            assert_eq!(parse_size(same), Some(64 << 10), "{same}");
        }
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("1TiB"), Some(1 << 40));
        assert_eq!(parse_size("+5"), Some(5));
        for bad in [
            "", "K", "lots", "12X", "-1", "-1G", "1.5M", "64KB", "64 K", "1e3", "++5",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("16777216T"), None, "overflows u64");
    }

    #[test]
    fn the_decay_time_comes_from_the_environment_or_is_refused() {
        assert_eq!(arena_decay_ms(None), Ok(arena::DEFAULT_DECAY_MS));
        assert_eq!(arena_decay_ms(Some("0")), Ok(0));
        assert_eq!(arena_decay_ms(Some(" 250 ")), Ok(250));
        let error = arena_decay_ms(Some("soon")).unwrap_err().to_string();
        assert!(
            error.contains("PYMALLOC_ARENA_DECAY_MS=\"soon\""),
            "{error}"
        );
        assert!(arena_decay_ms(Some("-1")).is_err());
    }

    #[test]
    fn arena_space_sizes_parse_with_units_and_are_validated() {
        assert_eq!(arena_space_bytes(None), Ok(DEFAULT_SPACE_BYTES));
        assert_eq!(arena_space_bytes(Some("0")), Ok(0));
        assert_eq!(arena_space_bytes(Some("32G")), Ok(32 << 30));
        assert_eq!(arena_space_bytes(Some(" 512m ")), Ok(512 << 20));
        assert_eq!(arena_space_bytes(Some("1T")), Ok(1 << 40));
        assert_eq!(
            arena_space_bytes(Some(&(ARENA_SIZE * 3).to_string())),
            Ok(ARENA_SIZE as u64 * 3)
        );
        for bad in [
            "",
            "G",
            "lots",
            "12X",
            "-1G",
            "64T",
            "99999999999999999999",
            "1K",
        ] {
            let error = arena_space_bytes(Some(bad)).unwrap_err();
            assert_eq!(error.variable, "PYMALLOC_ARENA_SPACE", "{bad}");
        }
    }

    #[test]
    fn huge_page_settings_parse_and_are_validated() {
        assert_eq!(huge_pages_from(None), Ok(Some(DEFAULT_HUGE_PAGES_FROM)));
        assert_eq!(huge_pages_from(Some("off")), Ok(None));
        assert_eq!(huge_pages_from(Some(" OFF ")), Ok(None));
        assert_eq!(huge_pages_from(Some("0")), Ok(Some(0)));
        assert_eq!(huge_pages_from(Some("128M")), Ok(Some(128 << 20)));
        assert_eq!(huge_pages_from(Some("1G")), Ok(Some(1 << 30)));
        for bad in ["", "on", "yes", "12X", "-1", "99999999999999999999"] {
            let error = huge_pages_from(Some(bad)).unwrap_err();
            assert_eq!(error.variable, "PYMALLOC_HUGE_PAGES", "{bad}");
        }
    }

    #[test]
    fn block_cache_budgets_are_checked() {
        assert_eq!(block_cache_bytes(None), Ok(DEFAULT_BYTES_PER_CLASS));
        assert_eq!(block_cache_bytes(Some("0")), Ok(0));
        assert_eq!(block_cache_bytes(Some(" 8192 ")), Ok(8192));
        assert_eq!(block_cache_bytes(Some("8K")), Ok(8192));
        assert_eq!(block_cache_bytes(Some("1M")), Ok(1 << 20));
        let error = block_cache_bytes(Some("lots")).unwrap_err();
        assert_eq!(error.variable, "PYMALLOC_BLOCK_CACHE_BYTES");
        assert!(block_cache_bytes(Some("2000000")).is_err());
    }
}
