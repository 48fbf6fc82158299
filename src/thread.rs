//! The per-thread slot holding the current thread's heap, and thread exit.
//!
//! The slot is one pointer of thread-local storage, read on every
//! allocation and every free. On x86-64 Linux it is defined in assembly
//! and read with the initial-exec TLS model (the slot's offset from the
//! GOT, then a load through `%fs`: two instructions): stable Rust's
//! `thread_local!` in a shared library goes through `__tls_get_addr`, a
//! call on every access, which the fast paths cannot afford. Elsewhere
//! `thread_local!` is used.
//!
//! A thread's slot holds the unattached placeholder heap until its first
//! allocation (so the fast paths need no null test), then its heap; a
//! pthread key destructor hands the heap back at thread exit and leaves the
//! exited placeholder behind, so allocations made by later TLS destructors
//! are recognised.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::heap::Heap;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod slot {
    use crate::heap::Heap;

    // The slot starts out holding the unattached placeholder heap (an
    // initialised TLS variable, relocated with the rest of the library
    // before any thread's copy is made).
    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        // Global so that every codegen unit can refer to it, hidden so that
        // it is not exported from the shared library.
        ".globl pymalloc_thread_heap_slot",
        ".hidden pymalloc_thread_heap_slot",
        ".type pymalloc_thread_heap_slot,@object",
        ".size pymalloc_thread_heap_slot,8",
        "pymalloc_thread_heap_slot:",
        ".quad {unattached}",
        ".popsection",
        unattached = sym crate::heap::UNATTACHED,
    );

    /// Address of this thread's slot.
    #[inline(always)]
    pub fn address() -> *mut *mut Heap {
        let address: usize;
        // SAFETY: reads the GOT entry holding the slot's offset from the
        // thread pointer (initial-exec model) and adds the thread pointer,
        // which glibc keeps at %fs:0. Touches no other memory.
        unsafe {
            core::arch::asm!(
                "mov {a}, qword ptr [rip + pymalloc_thread_heap_slot@GOTTPOFF]",
                "add {a}, qword ptr fs:[0]",
                a = out(reg) address,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        address as *mut *mut Heap
    }

    /// The slot's value, read in two instructions: the offset from the
    /// GOT, then the slot through the `%fs` segment (no separate add of
    /// the thread pointer). The fast paths read the slot on every call.
    #[inline(always)]
    pub fn read() -> *mut Heap {
        let heap: usize;
        // SAFETY: as in `address`; the second load reads this thread's
        // slot, an initialised pointer-sized TLS variable. `readonly`
        // without `pure`: the slot changes when the thread attaches or
        // exits, so every call reads it afresh.
        unsafe {
            core::arch::asm!(
                "mov {h}, qword ptr [rip + pymalloc_thread_heap_slot@GOTTPOFF]",
                "mov {h}, qword ptr fs:[{h}]",
                h = out(reg) heap,
                options(readonly, nostack, preserves_flags),
            );
        }
        heap as *mut Heap
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
mod slot {
    use crate::heap::Heap;
    use core::cell::Cell;

    std::thread_local! {
        static SLOT: Cell<*mut Heap> = const { Cell::new(core::ptr::null_mut()) };
    }

    #[inline(always)]
    pub fn address() -> *mut *mut Heap {
        SLOT.with(|slot| {
            if slot.get().is_null() {
                slot.set(crate::heap::unattached_heap());
            }
            slot.as_ptr()
        })
    }

    #[inline(always)]
    pub fn read() -> *mut Heap {
        // SAFETY: the slot is this thread's own storage.
        unsafe { *address() }
    }
}

/// The calling thread's heap: never null; the unattached placeholder
/// before its first allocation, the exited one after its exit destructor.
#[inline(always)]
pub fn current_heap() -> *mut Heap {
    slot::read()
}

pub fn set_current_heap(heap: *mut Heap) {
    // SAFETY: the slot is this thread's own storage.
    unsafe { *slot::address() = heap };
}

const KEY_UNSET: u32 = u32::MAX;
static EXIT_KEY: AtomicU32 = AtomicU32::new(KEY_UNSET);

/// Arrange for `on_exit(heap)` to run when the calling thread exits.
/// Returns false when no pthread key is available.
pub fn register_exit(heap: *mut Heap, on_exit: unsafe extern "C" fn(*mut libc::c_void)) -> bool {
    let mut key = EXIT_KEY.load(Ordering::Acquire);
    if key == KEY_UNSET {
        let mut new_key: libc::pthread_key_t = 0;
        // SAFETY: `new_key` is a valid out-parameter; the destructor is a
        // plain C function.
        if unsafe { libc::pthread_key_create(&mut new_key, Some(on_exit)) } != 0 {
            return false;
        }
        match EXIT_KEY.compare_exchange(KEY_UNSET, new_key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => key = new_key,
            Err(winner) => {
                // SAFETY: our key was never used.
                unsafe { libc::pthread_key_delete(new_key) };
                key = winner;
            }
        }
    }
    // SAFETY: `key` was created above; the value is non-null so the
    // destructor runs at thread exit.
    unsafe { libc::pthread_setspecific(key, heap.cast()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_thread() {
        let marker = 0x1000 as *mut Heap;
        let here = slot::address();
        let there = std::thread::spawn(|| slot::address() as usize)
            .join()
            .unwrap();
        assert_ne!(here as usize, there);
        let saved = current_heap();
        set_current_heap(marker);
        assert_eq!(current_heap(), marker);
        assert!(
            std::thread::spawn(|| current_heap() == crate::heap::unattached_heap())
                .join()
                .unwrap()
        );
        set_current_heap(saved);
    }
}
