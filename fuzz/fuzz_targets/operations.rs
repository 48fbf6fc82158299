//! Coverage-guided fuzzing of the C API with the operation language of
//! tests/differential.rs: each input byte string is decoded into malloc,
//! calloc, realloc and free operations in every API family, with sizes
//! steered toward the boundaries, on two threads that hand blocks to each
//! other. Every live block holds a pattern checked before it is resized or
//! freed, and every pointer is checked for alignment.
//!
//! cargo +nightly fuzz run operations -- -max_total_time=60
#![no_main]

use std::ffi::c_void;
use std::sync::mpsc;

use libfuzzer_sys::fuzz_target;
use pymalloc::ffi::core::{PyCore_Calloc, PyCore_Free, PyCore_Malloc, PyCore_Realloc};
use pymalloc::ffi::objimpl::{PyObject_Calloc, PyObject_Free, PyObject_Malloc, PyObject_Realloc};
use pymalloc::ffi::pymem::{
    PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc,
    PyMem_RawRealloc, PyMem_Realloc,
};

type Malloc = extern "C" fn(usize) -> *mut c_void;
type Calloc = extern "C" fn(usize, usize) -> *mut c_void;
type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type Free = unsafe extern "C" fn(*mut c_void);

const FAMILIES: [(Malloc, Calloc, Realloc, Free); 4] = [
    (PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree),
    (PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free),
    (PyObject_Malloc, PyObject_Calloc, PyObject_Realloc, PyObject_Free),
    (PyCore_Malloc, PyCore_Calloc, PyCore_Realloc, PyCore_Free),
];

struct Block {
    ptr: usize,
    size: usize,
    tag: u8,
    family: usize,
}

fn size_from(bytes: &[u8]) -> usize {
    let selector = bytes.first().copied().unwrap_or(0);
    let value = u16::from_le_bytes([bytes.get(1).copied().unwrap_or(0), bytes.get(2).copied().unwrap_or(0)]) as usize;
    match selector % 8 {
        0 => [0, 1, 15, 16, 17, 511, 512, 513][value % 8],
        1..=4 => value % 513,
        5 | 6 => value % 8193,
        _ => value * 16 % (1 << 20),
    }
}

fn fill(block: &Block) {
    // SAFETY: the block has `size` bytes.
    unsafe { std::ptr::write_bytes(block.ptr as *mut u8, block.tag, block.size) };
}

fn check(block: &Block) {
    assert_eq!(block.ptr % 16, 0, "misaligned block");
    // SAFETY: the block has `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(block.ptr as *const u8, block.size) };
    assert!(bytes.iter().all(|&b| b == block.tag), "block content changed");
}

fn release(block: Block) {
    check(&block);
    // SAFETY: a live block, released with its own family.
    unsafe { (FAMILIES[block.family].3)(block.ptr as *mut c_void) };
}

fn run(ops: &[u8], inbox: Option<mpsc::Receiver<Block>>, outbox: Option<mpsc::Sender<Block>>) {
    let mut live: Vec<Block> = Vec::new();
    for (step, op) in ops.chunks(4).enumerate() {
        if let Some(inbox) = &inbox {
            live.extend(inbox.try_iter());
        }
        let family = (op[0] >> 4) as usize % 4;
        let (malloc, calloc, realloc, _) = FAMILIES[family];
        let size = size_from(&op[1..]);
        let tag = (step as u8) | 1;
        match op[0] % 6 {
            0 | 1 => {
                let ptr = malloc(size) as usize;
                assert_ne!(ptr, 0, "malloc({size}) failed");
                let block = Block { ptr, size, tag, family };
                fill(&block);
                live.push(block);
            }
            2 => {
                let (count, each) = (size % 97, size / 97);
                let ptr = calloc(count, each) as usize;
                assert_ne!(ptr, 0, "calloc({count}, {each}) failed");
                let block = Block { ptr, size: count * each, tag: 0, family };
                check(&block);
                live.push(block);
            }
            3 if !live.is_empty() => {
                let index = size % live.len();
                let mut block = live.swap_remove(index);
                check(&block);
                let (_, _, realloc_of, _) = FAMILIES[block.family];
                // SAFETY: a live block of this family.
                let ptr = unsafe { realloc_of(block.ptr as *mut c_void, size) } as usize;
                assert_ne!(ptr, 0, "realloc to {size} failed");
                block.ptr = ptr;
                block.size = block.size.min(size);
                check(&block);
                block.size = size;
                block.tag = tag;
                fill(&block);
                live.push(block);
            }
            4 if !live.is_empty() => match &outbox {
                Some(outbox) => {
                    let block = live.swap_remove(size % live.len());
                    if let Err(mpsc::SendError(block)) = outbox.send(block) {
                        live.push(block);
                    }
                }
                None => release(live.swap_remove(size % live.len())),
            },
            _ if !live.is_empty() => release(live.swap_remove(size % live.len())),
            _ => {
                let _ = realloc; // an operation with no live block does nothing
            }
        }
    }
    live.into_iter().for_each(release);
    if let Some(inbox) = inbox {
        // Until the sender is done: no block is left in the channel.
        inbox.iter().for_each(release);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first half runs here, the second on a thread that receives
    // blocks from this one (so they are freed cross-thread) and exits,
    // abandoning its heap.
    let middle = data.len() / 2 / 4 * 4;
    let (first, second) = data.split_at(middle);
    let (sender, receiver) = mpsc::channel();
    let peer = {
        let second = second.to_vec();
        std::thread::spawn(move || run(&second, Some(receiver), None))
    };
    run(first, None, Some(sender));
    peer.join().expect("peer thread");
});
