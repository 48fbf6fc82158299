//! Build script: turns the build-time tunables into `config.rs` constants
//! (rejecting invalid combinations with a clear message) and generates the
//! C headers with cbindgen.
//!
//! Tunables (environment variables, also accepted as `make VAR=value`):
//!   PYMALLOC_ALIGNMENT                 block alignment and size-class spacing (16)
//!   PYMALLOC_SMALL_REQUEST_THRESHOLD   largest request served from pools (512)
//!   PYMALLOC_POOL_SIZE                 bytes per pool (16384)
//!   PYMALLOC_ARENA_SIZE                bytes per arena (1048576)
//!   PYMALLOC_RAW / PYMALLOC_MEM / PYMALLOC_OBJ
//!                                      default backend of each heap: malloc | pymalloc
//!
//! Headers are always generated into `$OUT_DIR/include`; they are copied into
//! the source tree's `include/` only when `PYMALLOC_WRITE_HEADERS=1` (what
//! `make` does), so that `make check` can compare the committed copy with a
//! fresh generation.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process;

/// Size of a pool's record in its arena's metadata pools (src/pool.rs
/// asserts that `size_of::<Pool>()` equals it).
const POOL_RECORD_BYTES: u64 = 64;

fn fail(message: &str) -> ! {
    eprintln!("\nerror: invalid pymalloc build configuration: {message}\n");
    process::exit(1);
}

fn tunable(name: &str, default: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={name}");
    match env::var(name) {
        Err(_) => default,
        Ok(text) if text.is_empty() => default,
        Ok(text) => parse_size(&text)
            .unwrap_or_else(|| fail(&format!("{name}={text:?} is not a number of bytes"))),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, scale) = match text.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1024),
        None => match text.strip_suffix(['m', 'M']) {
            Some(d) => (d, 1024 * 1024),
            None => (text, 1),
        },
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn backend(name: &str, default: &str) -> bool {
    println!("cargo:rerun-if-env-changed={name}");
    let value = env::var(name).unwrap_or_default();
    match if value.is_empty() {
        default
    } else {
        value.as_str()
    } {
        "pymalloc" => true,
        "malloc" => false,
        other => fail(&format!(
            "{name}={other:?}: expected \"pymalloc\" or \"malloc\""
        )),
    }
}

struct Config {
    alignment: u64,
    threshold: u64,
    pool_size: u64,
    arena_size: u64,
    raw_pooled: bool,
    mem_pooled: bool,
    obj_pooled: bool,
}

impl Config {
    fn from_env() -> Config {
        let config = Config {
            alignment: tunable("PYMALLOC_ALIGNMENT", 16),
            threshold: tunable("PYMALLOC_SMALL_REQUEST_THRESHOLD", 512),
            pool_size: tunable("PYMALLOC_POOL_SIZE", 16 * 1024),
            arena_size: tunable("PYMALLOC_ARENA_SIZE", 1024 * 1024),
            raw_pooled: backend("PYMALLOC_RAW", "malloc"),
            mem_pooled: backend("PYMALLOC_MEM", "pymalloc"),
            obj_pooled: backend("PYMALLOC_OBJ", "pymalloc"),
        };
        config.validate();
        config
    }

    /// Pools at the start of each arena that hold the records of all its pools.
    fn metadata_pools(&self) -> u64 {
        (self.arena_size / self.pool_size * POOL_RECORD_BYTES).div_ceil(self.pool_size)
    }

    fn validate(&self) {
        let Config {
            alignment,
            threshold,
            pool_size,
            arena_size,
            ..
        } = *self;
        if !alignment.is_power_of_two() || !(8..=256).contains(&alignment) {
            fail(&format!(
                "PYMALLOC_ALIGNMENT={alignment}: must be a power of two from 8 to 256 \
                 (a free block stores a pointer, and C needs 16 for max_align_t on x86-64)"
            ));
        }
        if threshold < alignment || threshold % alignment != 0 {
            fail(&format!(
                "PYMALLOC_SMALL_REQUEST_THRESHOLD={threshold}: must be a positive multiple of \
                 PYMALLOC_ALIGNMENT={alignment} (size classes are spaced by the alignment)"
            ));
        }
        if threshold / alignment > 128 {
            fail(&format!(
                "PYMALLOC_SMALL_REQUEST_THRESHOLD={threshold} / PYMALLOC_ALIGNMENT={alignment} \
                 gives {} size classes; at most 128 are supported",
                threshold / alignment
            ));
        }
        if !pool_size.is_power_of_two() || !(4096..=1 << 20).contains(&pool_size) {
            fail(&format!(
                "PYMALLOC_POOL_SIZE={pool_size}: must be a power of two from 4096 (one page) to 1 MiB \
                 (the pool of a block is found by masking its address)"
            ));
        }
        if !arena_size.is_power_of_two() || arena_size < pool_size || arena_size > 256 << 20 {
            fail(&format!(
                "PYMALLOC_ARENA_SIZE={arena_size}: must be a power of two, at least \
                 PYMALLOC_POOL_SIZE={pool_size} and at most 256 MiB"
            ));
        }
        if arena_size / pool_size > 4096 {
            fail(&format!(
                "PYMALLOC_ARENA_SIZE / PYMALLOC_POOL_SIZE = {}: at most 4096 pools per arena",
                arena_size / pool_size
            ));
        }
        let blocks = pool_size / threshold;
        if blocks < 2 {
            fail(&format!(
                "a {pool_size}-byte pool holds {blocks} block(s) of the largest class \
                 ({threshold} bytes); it must hold at least 2: \
                 raise PYMALLOC_POOL_SIZE or lower PYMALLOC_SMALL_REQUEST_THRESHOLD"
            ));
        }
        if arena_size / pool_size <= self.metadata_pools() {
            fail(&format!(
                "PYMALLOC_ARENA_SIZE={arena_size} holds {} pool(s) of {pool_size} bytes, and {} of \
                 them hold the arena's pool records: an arena needs at least one pool for blocks",
                arena_size / pool_size,
                self.metadata_pools()
            ));
        }
    }

    fn write_rust(&self, path: &Path) {
        let mut out = String::new();
        let shift = |v: u64| v.trailing_zeros();
        writeln!(
            out,
            "// Generated by build.rs from the PYMALLOC_* build variables."
        )
        .unwrap();
        for (name, value) in [
            ("ALIGNMENT", self.alignment),
            ("SMALL_REQUEST_THRESHOLD", self.threshold),
            ("POOL_SIZE", self.pool_size),
            ("ARENA_SIZE", self.arena_size),
            ("METADATA_POOLS", self.metadata_pools()),
        ] {
            writeln!(out, "pub const {name}: usize = {value};").unwrap();
        }
        writeln!(
            out,
            "pub const ALIGNMENT_SHIFT: u32 = {};",
            shift(self.alignment)
        )
        .unwrap();
        writeln!(
            out,
            "pub const POOL_SHIFT: u32 = {};",
            shift(self.pool_size)
        )
        .unwrap();
        writeln!(
            out,
            "pub const ARENA_SHIFT: u32 = {};",
            shift(self.arena_size)
        )
        .unwrap();
        for (name, pooled) in [
            ("RAW_POOLED_BY_DEFAULT", self.raw_pooled),
            ("MEM_POOLED_BY_DEFAULT", self.mem_pooled),
            ("OBJ_POOLED_BY_DEFAULT", self.obj_pooled),
        ] {
            writeln!(out, "pub const {name}: bool = {pooled};").unwrap();
        }
        fs::write(path, out).expect("write config.rs");
    }
}

/// One generated header: the Rust files whose exports it declares, and the
/// hand-written C around them (types and macros cbindgen cannot express).
struct Header {
    file: &'static str,
    guard: &'static str,
    prologue: &'static str,
    /// Declarations CPython's own headers already provide: emitted inside
    /// `#ifndef Py_PYTHON_H` so the header can follow `#include <Python.h>`.
    cpython_part: Option<(&'static str, &'static str)>,
    /// Declarations only this library provides.
    own_part: Option<&'static str>,
    epilogue: &'static str,
}

const HEADERS: &[Header] = &[
    Header {
        file: "pymalloc/pymem.h",
        guard: "PYMALLOC_PYMEM_H",
        prologue: "src/ffi/c/pymem_prologue.h",
        cpython_part: Some(("src/ffi/pymem.rs", "src/ffi/c/pymem_macros.h")),
        own_part: Some("src/ffi/core.rs"),
        epilogue: "src/ffi/c/pycore_macros.h",
    },
    Header {
        file: "pymalloc/objimpl.h",
        guard: "PYMALLOC_OBJIMPL_H",
        prologue: "src/ffi/c/objimpl_prologue.h",
        cpython_part: Some(("src/ffi/objimpl.rs", "src/ffi/c/objimpl_macros.h")),
        own_part: None,
        epilogue: "",
    },
];

fn cbindgen_section(crate_dir: &Path, source: &str) -> String {
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let mut text = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join(source))
        .with_no_includes()
        .generate()
        .unwrap_or_else(|e| fail(&format!("cbindgen failed on {source}: {e}")))
        .write(&mut text);
    String::from_utf8(text).expect("cbindgen writes UTF-8")
}

fn read(crate_dir: &Path, path: &str) -> String {
    // No file, nothing to watch: an empty `rerun-if-changed` would make
    // cargo watch the package's directory, and rebuild whenever a file
    // is created beside Cargo.toml.
    if path.is_empty() {
        return String::new();
    }
    println!("cargo:rerun-if-changed={path}");
    fs::read_to_string(crate_dir.join(path)).unwrap_or_else(|e| fail(&format!("{path}: {e}")))
}

fn generate_header(crate_dir: &Path, header: &Header) -> String {
    let mut out = String::new();
    out.push_str(
        "/* Generated by build.rs from src/ffi (cbindgen) and the C fragments in src/ffi/c.\n   \
         Do not edit: change the Rust or the fragments and run `make headers`. */\n",
    );
    writeln!(out, "#ifndef {0}\n#define {0}\n", header.guard).unwrap();
    out.push_str(&read(crate_dir, header.prologue));
    if let Some((source, macros)) = header.cpython_part {
        out.push_str("\n#ifndef Py_PYTHON_H\n/* Declared here only when CPython's Python.h is not included. */\n");
        out.push_str(&cbindgen_section(crate_dir, source));
        out.push('\n');
        out.push_str(&read(crate_dir, macros));
        out.push_str("#endif /* !Py_PYTHON_H */\n");
    }
    if let Some(source) = header.own_part {
        out.push('\n');
        out.push_str(&cbindgen_section(crate_dir, source));
    }
    let epilogue = read(crate_dir, header.epilogue);
    if !epilogue.is_empty() {
        out.push('\n');
        out.push_str(&epilogue);
    }
    writeln!(out, "\n#endif /* {} */", header.guard).unwrap();
    // cbindgen leaves runs of blank lines between sections; keep one.
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out
}

/// Give the shared library an SONAME, `libpymalloc.so.MAJOR` (for 0.x
/// versions `libpymalloc.so.0`), as C libraries have: a program linked with
/// `-lpymalloc` then records that name, and `make install` installs the
/// file under its full version with the SONAME and `libpymalloc.so` as
/// links to it. ELF targets only.
fn link_soname() {
    let family = env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if family.split(',').any(|f| f == "unix") && !matches!(os.as_str(), "macos" | "ios") {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpymalloc.so.{major}");
    }
}

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-env-changed=PYMALLOC_WRITE_HEADERS");

    Config::from_env().write_rust(&out_dir.join("config.rs"));
    link_soname();

    let generated = out_dir.join("include");
    let write_tree = env::var("PYMALLOC_WRITE_HEADERS").is_ok_and(|v| v == "1");
    let mut files: Vec<(&str, String)> = HEADERS
        .iter()
        .map(|h| (h.file, generate_header(&crate_dir, h)))
        .collect();
    files.push(("pymalloc.h", read(&crate_dir, "src/ffi/c/pymalloc.h")));
    for (name, text) in files {
        let target = generated.join(name);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, &text).unwrap();
        if write_tree {
            let committed = crate_dir.join("include").join(name);
            if fs::read_to_string(&committed).ok().as_deref() != Some(text.as_str()) {
                fs::create_dir_all(committed.parent().unwrap()).unwrap();
                fs::write(&committed, &text).unwrap();
            }
        }
    }
    println!(
        "cargo:rustc-env=PYMALLOC_GENERATED_INCLUDE={}",
        generated.display()
    );
}
