//! pymalloc-rs as the global allocator of a whole Rust program (this test
//! binary, its harness and its threads included).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use pymalloc::ffi::core::PyCore_IsPooled;
use pymalloc::PyMalloc;

#[global_allocator]
static ALLOCATOR: PyMalloc = PyMalloc;

#[test]
fn small_boxes_come_from_the_pools_and_large_ones_from_libc() {
    let small = Box::new([7u8; 48]);
    let large = vec![1u8; 4096];
    let over_aligned = Box::new(Aligned64([3; 64]));
    assert!(PyCore_IsPooled(small.as_ptr().cast()) != 0);
    assert!(PyCore_IsPooled(large.as_ptr().cast()) == 0);
    assert!(PyCore_IsPooled(over_aligned.0.as_ptr().cast()) == 0);
    assert_eq!(&*over_aligned as *const Aligned64 as usize % 64, 0);
}

#[repr(align(64))]
struct Aligned64([u8; 64]);

/// Collections build, grow (realloc across the threshold) and tear down;
/// strings move between threads and are freed by a thread that did not
/// allocate them. Contents are checked at every hand-off.
#[test]
fn collections_and_cross_thread_frees() {
    let (sender, receiver) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..3)
        .map(|id| {
            let sender = sender.clone();
            thread::spawn(move || {
                for round in 0..200 {
                    let batch: Vec<String> =
                        (0..100).map(|i| format!("p{id}-r{round}-{i}")).collect();
                    sender.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(sender);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    for batch in receiver {
        for (i, text) in batch.into_iter().enumerate() {
            assert!(text.ends_with(&format!("-{i}")), "{text}");
            *counts.entry(text[..2].to_string()).or_default() += 1;
            received += 1;
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(received, 3 * 200 * 100);
    assert_eq!(counts.len(), 3);

    let mut tree = BTreeMap::new();
    for i in 0..50_000u32 {
        tree.insert(i.wrapping_mul(2_654_435_761), vec![i; (i % 40) as usize]);
    }
    assert!(tree
        .values()
        .all(|v| v.iter().all(|&x| v.len() == (x % 40) as usize)));
}
