//! Criterion benchmarks of the Rust-level fast paths: pymalloc-rs through
//! `GlobalAlloc` (`PyMalloc`) and through its C entry points
//! (`PyCore_Malloc`/`PyCore_Free`, called from Rust), against the
//! `mimalloc` crate and the system allocator (glibc), in the same run and
//! on the same request sequences.
//!
//! `cargo bench --bench fast_paths`; `make bench-rust` does the same. The
//! C benchmark (`make bench`) compares CPython's own pymalloc, jemalloc and
//! tcmalloc as well; see BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mimalloc::MiMalloc;
use pymalloc::ffi::core::{PyCore_Free, PyCore_Malloc, PyCore_Realloc};
use pymalloc::PyMalloc;

/// The C API as a `GlobalAlloc`, to measure the exported functions (and
/// their argument checks) rather than the inlined Rust path.
struct PyCore;

// SAFETY: PyCore_Malloc returns blocks aligned to 16 bytes (the benchmark
// asks for at most 8) of at least the requested size, or NULL.
unsafe impl GlobalAlloc for PyCore {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PyCore_Malloc(layout.size()).cast()
    }
    unsafe fn dealloc(&self, block: *mut u8, _layout: Layout) {
        // SAFETY: a live block from PyCore_Malloc (caller).
        unsafe { PyCore_Free(block.cast()) }
    }
    unsafe fn realloc(&self, block: *mut u8, _layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: a live block from PyCore_Malloc (caller).
        unsafe { PyCore_Realloc(block.cast(), new_size).cast() }
    }
}

/// A Python-like mix of request sizes: most 16..64 bytes, some up to 256,
/// a few up to the 512-byte threshold. Deterministic (xorshift).
fn python_sizes(count: usize, seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let roll = next() % 100;
            let span = if roll < 70 {
                (16, 64)
            } else if roll < 95 {
                (65, 256)
            } else {
                (257, 512)
            };
            span.0 + (next() as usize) % (span.1 - span.0 + 1)
        })
        .collect()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The allocators, in the order the reports list them.
fn contenders() -> [(&'static str, &'static dyn Contender); 4] {
    [
        ("pymalloc-rs PyMalloc", &PyMalloc),
        ("pymalloc-rs PyCore_*", &PyCore),
        ("mimalloc crate", &MiMalloc),
        ("system (glibc)", &System),
    ]
}

/// Each workload is generic over the allocator, so every contender runs
/// the same monomorphised loop; this trait only picks the instance.
trait Contender: Sync {
    fn pairs(&self, sizes: &[usize], iterations: u64) -> std::time::Duration;
    fn churn(
        &self,
        live: &mut [(usize, *mut u8)],
        sizes: &[usize],
        iterations: u64,
    ) -> std::time::Duration;
    fn teardown(&self, sizes: &[usize]) -> std::time::Duration;
    fn realloc_growth(&self, iterations: u64) -> std::time::Duration;
    fn fill(&self, sizes: &[usize]) -> Vec<(usize, *mut u8)>;
    fn empty(&self, live: Vec<(usize, *mut u8)>);
}

impl<A: GlobalAlloc + Sync> Contender for A {
    fn pairs(&self, sizes: &[usize], iterations: u64) -> std::time::Duration {
        let start = Instant::now();
        for i in 0..iterations as usize {
            let l = layout(sizes[i % sizes.len()]);
            // SAFETY: non-zero layout; freed at once with the same layout.
            unsafe {
                let block = self.alloc(l);
                black_box(block).write(1);
                self.dealloc(block, l);
            }
        }
        start.elapsed()
    }

    fn churn(
        &self,
        live: &mut [(usize, *mut u8)],
        sizes: &[usize],
        iterations: u64,
    ) -> std::time::Duration {
        let start = Instant::now();
        let mut slot = 0usize;
        for i in 0..iterations as usize {
            // A multiplicative step visits the slots in scattered order.
            slot = (slot + 7919) % live.len();
            let (old_size, old_block) = live[slot];
            let size = sizes[i % sizes.len()];
            // SAFETY: `old_block` is live with `old_size`; the new block
            // replaces it in the table and is freed later with its size.
            unsafe {
                self.dealloc(old_block, layout(old_size));
                let block = self.alloc(layout(size));
                block.write(1);
                live[slot] = (size, block);
            }
        }
        start.elapsed()
    }

    fn teardown(&self, sizes: &[usize]) -> std::time::Duration {
        let start = Instant::now();
        let live = self.fill(sizes);
        self.empty(live);
        start.elapsed()
    }

    fn realloc_growth(&self, iterations: u64) -> std::time::Duration {
        let start = Instant::now();
        for _ in 0..iterations {
            let mut size = 8;
            // SAFETY: every step reallocates the live block with its layout.
            unsafe {
                let mut block = self.alloc(layout(size));
                while size < 1024 {
                    let grown = size + size / 2;
                    block = self.realloc(block, layout(size), grown);
                    block.add(grown - 1).write(1);
                    size = grown;
                }
                self.dealloc(black_box(block), layout(size));
            }
        }
        start.elapsed()
    }

    fn fill(&self, sizes: &[usize]) -> Vec<(usize, *mut u8)> {
        sizes
            .iter()
            .map(|&size| {
                // SAFETY: non-zero layout; the block is written within it.
                let block = unsafe { self.alloc(layout(size)) };
                // SAFETY: as above.
                unsafe { block.write(1) };
                (size, block)
            })
            .collect()
    }

    fn empty(&self, live: Vec<(usize, *mut u8)>) {
        for (size, block) in live {
            // SAFETY: live blocks with their sizes, freed once.
            unsafe { self.dealloc(block, layout(size)) };
        }
    }
}

fn pair(c: &mut Criterion) {
    let sizes = python_sizes(1024, 11);
    let mut group = c.benchmark_group("pair (alloc+free)");
    group.throughput(Throughput::Elements(1));
    for (name, contender) in contenders() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| contender.pairs(&sizes, iterations))
        });
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    const LIVE: usize = 100_000;
    let sizes = python_sizes(LIVE, 23);
    let mut group = c.benchmark_group("churn (100k live, replace one)");
    group.throughput(Throughput::Elements(1));
    for (name, contender) in contenders() {
        let mut live = contender.fill(&python_sizes(LIVE, 5));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| contender.churn(&mut live, &sizes, iterations))
        });
        contender.empty(live);
    }
    group.finish();
}

fn teardown(c: &mut Criterion) {
    const BLOCKS: usize = 100_000;
    let sizes = python_sizes(BLOCKS, 31);
    let mut group = c.benchmark_group("teardown (allocate 100k, free all)");
    group.throughput(Throughput::Elements(BLOCKS as u64));
    group.sample_size(20);
    for (name, contender) in contenders() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| contender.teardown(&sizes)).sum())
        });
    }
    group.finish();
}

fn realloc_growth(c: &mut Criterion) {
    let mut group = c.benchmark_group("realloc growth (8 -> 1024 bytes by 1.5x)");
    group.throughput(Throughput::Elements(1));
    for (name, contender) in contenders() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| contender.realloc_growth(iterations))
        });
    }
    group.finish();
}

criterion_group!(benches, pair, churn, teardown, realloc_growth);
criterion_main!(benches);
