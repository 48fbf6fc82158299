//! Randomised differential testing of the C API against a model.
//!
//! A seeded generator produces operation sequences — malloc, calloc,
//! realloc and free in every API family, with sizes from 0 to 1 MiB
//! weighted toward small ones, plus the boundary sizes (0, 511, 512, 513,
//! `PY_SSIZE_T_MAX`, `SIZE_MAX`) — executed against the library while a
//! model tracks what each live block must contain. Every block holds a
//! pattern derived from its id, checked whenever it is touched and at the
//! end; every pointer is checked for 16-byte alignment. A failure prints
//! the seed that reproduces it:
//!
//! ```text
//! PYMALLOC_SEED=1234 cargo test --release --test differential
//! PYMALLOC_STRESS_OPS=100000000 cargo test --release --test differential   # make stress
//! ```
//!
//! The threaded variant passes blocks between threads, so that most frees
//! are cross-thread, while threads come and go.

use std::ffi::c_void;
use std::sync::mpsc;

use pymalloc::ffi::core::{PyCore_Calloc, PyCore_Free, PyCore_Malloc, PyCore_Realloc};
use pymalloc::ffi::objimpl::{PyObject_Calloc, PyObject_Free, PyObject_Malloc, PyObject_Realloc};
use pymalloc::ffi::pymem::{
    PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc,
    PyMem_RawRealloc, PyMem_Realloc,
};

struct Family {
    name: &'static str,
    malloc: extern "C" fn(usize) -> *mut c_void,
    calloc: extern "C" fn(usize, usize) -> *mut c_void,
    realloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
}

const FAMILIES: [Family; 4] = [
    Family {
        name: "raw",
        malloc: PyMem_RawMalloc,
        calloc: PyMem_RawCalloc,
        realloc: PyMem_RawRealloc,
        free: PyMem_RawFree,
    },
    Family {
        name: "mem",
        malloc: PyMem_Malloc,
        calloc: PyMem_Calloc,
        realloc: PyMem_Realloc,
        free: PyMem_Free,
    },
    Family {
        name: "object",
        malloc: PyObject_Malloc,
        calloc: PyObject_Calloc,
        realloc: PyObject_Realloc,
        free: PyObject_Free,
    },
    Family {
        name: "core",
        malloc: PyCore_Malloc,
        calloc: PyCore_Calloc,
        realloc: PyCore_Realloc,
        free: PyCore_Free,
    },
];

/// splitmix64: small, seedable, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly small sizes, some medium, a few large, and the boundaries.
    fn size(&mut self) -> usize {
        match self.below(1000) {
            0..=799 => self.below(129) as usize,
            800..=939 => self.below(1025) as usize,
            940..=979 => [0, 1, 15, 16, 17, 511, 512, 513, 4096][self.below(9) as usize],
            980..=997 => self.below(64 * 1024) as usize,
            _ => self.below(1 << 20) as usize,
        }
    }
}

/// A live block and what the model knows of it.
struct Live {
    ptr: usize,
    size: usize,
    id: u64,
    family: usize,
    zeroed: bool,
}

fn pattern(id: u64, offset: usize) -> u8 {
    (id.wrapping_mul(31).wrapping_add(offset as u64 * 7) >> 3) as u8 | 1
}

/// Write the block's pattern into every byte of it.
fn fill(block: &Live) {
    let bytes = block.ptr as *mut u8;
    for offset in 0..block.size {
        // SAFETY: offsets are below the block's size.
        unsafe { *bytes.add(offset) = pattern(block.id, offset) };
    }
}

/// The bytes `verify` reads: the first and last 16 and a stride in between,
/// enough to catch overlap and lost content without making large blocks
/// expensive.
fn sample_offsets(size: usize) -> impl Iterator<Item = usize> {
    let stride = (size / 64).max(1);
    (0..size.min(16))
        .chain((16..size.saturating_sub(16)).step_by(stride))
        .chain(size.saturating_sub(16).max(16)..size)
}

fn verify(block: &Live, seed: u64, what: &str) {
    let bytes = block.ptr as *const u8;
    for offset in sample_offsets(block.size) {
        // SAFETY: offsets are below the block's size.
        let found = unsafe { *bytes.add(offset) };
        let expected = if block.zeroed {
            0
        } else {
            pattern(block.id, offset)
        };
        assert_eq!(
            found, expected,
            "seed {seed}: {what}: block {} ({} bytes, {} heap) byte {offset} corrupted",
            block.id, block.size, FAMILIES[block.family].name
        );
    }
}

fn check_pointer(ptr: *mut c_void, seed: u64, what: &str) -> usize {
    assert!(!ptr.is_null(), "seed {seed}: {what} returned NULL");
    assert_eq!(
        ptr as usize % 16,
        0,
        "seed {seed}: {what} returned a misaligned pointer"
    );
    ptr as usize
}

/// Run `operations` random operations from `seed`; blocks the caller
/// receives through `inbox` join the live set, and some live blocks are
/// handed to `outbox` (to be verified and freed by another thread).
fn run(
    seed: u64,
    operations: u64,
    inbox: Option<&mpsc::Receiver<Vec<Live>>>,
    outbox: Option<&mpsc::Sender<Vec<Live>>>,
) {
    let mut rng = Rng(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut next_id = seed << 32;
    for _ in 0..operations {
        if let Some(inbox) = inbox {
            while let Ok(blocks) = inbox.try_recv() {
                for block in &blocks {
                    verify(block, seed, "received from another thread");
                }
                live.extend(blocks);
            }
        }
        let family = rng.below(4) as usize;
        let f = &FAMILIES[family];
        match rng.below(100) {
            // allocate
            0..=39 if live.len() < 20_000 => {
                next_id += 1;
                let size = rng.size();
                let ptr = check_pointer((f.malloc)(size), seed, "malloc");
                let block = Live {
                    ptr,
                    size,
                    id: next_id,
                    family,
                    zeroed: false,
                };
                fill(&block);
                live.push(block);
            }
            40..=49 if live.len() < 20_000 => {
                next_id += 1;
                let (count, each) = (rng.below(64) as usize, rng.below(64) as usize);
                let ptr = check_pointer((f.calloc)(count, each), seed, "calloc");
                let block = Live {
                    ptr,
                    size: count * each,
                    id: next_id,
                    family,
                    zeroed: true,
                };
                verify(&block, seed, "fresh calloc");
                live.push(block);
            }
            // resize, with the family that made the block
            50..=64 if !live.is_empty() => {
                let index = rng.below(live.len() as u64) as usize;
                let mut block = live.swap_remove(index);
                verify(&block, seed, "before realloc");
                let new_size = rng.size();
                let g = &FAMILIES[block.family];
                // SAFETY: a live block of family `g`.
                let ptr = check_pointer(
                    unsafe { (g.realloc)(block.ptr as *mut c_void, new_size) },
                    seed,
                    "realloc",
                );
                block.ptr = ptr;
                let kept = block.size.min(new_size);
                block.size = kept;
                verify(&block, seed, "content kept by realloc");
                block.size = new_size;
                block.zeroed = false;
                next_id += 1;
                block.id = next_id;
                fill(&block);
                live.push(block);
            }
            // hand some blocks to another thread
            65..=69 if outbox.is_some() && live.len() > 16 => {
                let count = 1 + rng.below(16) as usize;
                let at = live.len() - count;
                let batch: Vec<Live> = live.drain(at..).collect();
                // A peer that has finished no longer receives: keep them.
                if let Err(mpsc::SendError(batch)) = outbox.unwrap().send(batch) {
                    live.extend(batch);
                }
            }
            // free
            _ if !live.is_empty() => {
                let index = rng.below(live.len() as u64) as usize;
                let block = live.swap_remove(index);
                verify(&block, seed, "before free");
                // SAFETY: a live block, freed with its own family.
                unsafe { (FAMILIES[block.family].free)(block.ptr as *mut c_void) };
            }
            _ => {}
        }
    }
    for block in live {
        verify(&block, seed, "at the end");
        // SAFETY: a live block, freed with its own family.
        unsafe { (FAMILIES[block.family].free)(block.ptr as *mut c_void) };
    }
}

fn seed() -> u64 {
    std::env::var("PYMALLOC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED)
}

fn operations(default: u64) -> u64 {
    std::env::var("PYMALLOC_STRESS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn boundary_sizes_are_refused_or_served_exactly() {
    for f in &FAMILIES {
        assert!(
            (f.malloc)(isize::MAX as usize + 1).is_null(),
            "{}: PY_SSIZE_T_MAX + 1",
            f.name
        );
        assert!((f.malloc)(usize::MAX).is_null(), "{}: SIZE_MAX", f.name);
        assert!(
            (f.calloc)(usize::MAX / 2, 3).is_null(),
            "{}: calloc overflow",
            f.name
        );
        let block = (f.malloc)(8);
        // SAFETY: a live block of this family.
        unsafe {
            assert!((f.realloc)(block, isize::MAX as usize + 1).is_null());
            (f.free)(block); // still valid after the refused realloc
            (f.free)(std::ptr::null_mut());
        }
    }
}

#[test]
fn single_thread_random_operations_match_the_model() {
    let seed = seed();
    let ops = operations(1_000_000);
    println!("differential: seed {seed}, {ops} operations (PYMALLOC_SEED / PYMALLOC_STRESS_OPS to change)");
    run(seed, ops, None, None);
}

#[test]
fn blocks_move_between_threads_while_threads_come_and_go() {
    let seed = seed();
    let ops = operations(1_000_000) / 8;
    // A ring of workers: each hands blocks to the next, which verifies and
    // keeps or frees them. Workers are replaced by new threads each round.
    for round in 0..4u64 {
        let workers = 3;
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::channel::<Vec<Live>>()).unzip();
        let mut handles = Vec::new();
        for (index, inbox) in receivers.into_iter().enumerate() {
            let outbox = senders[(index + 1) % workers].clone();
            let worker_seed = seed ^ (round << 8) ^ index as u64;
            handles.push(std::thread::spawn(move || {
                run(worker_seed, ops, Some(&inbox), Some(&outbox));
                drop(outbox);
                // Blocks still in flight to this worker: verify and free.
                for blocks in inbox.try_iter() {
                    for block in blocks {
                        verify(&block, worker_seed, "drained");
                        // SAFETY: a live block, freed with its own family.
                        unsafe { (FAMILIES[block.family].free)(block.ptr as *mut c_void) };
                    }
                }
            }));
        }
        drop(senders);
        for handle in handles {
            handle
                .join()
                .expect("worker panicked (its seed is in the message)");
        }
    }
}
