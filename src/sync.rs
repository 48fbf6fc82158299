//! Locks for the allocator's few shared structures (the arena set, the
//! heap registry, the debug hooks' list of live blocks, the domains'
//! state changes and the CPython hook installation), and their handling
//! across `fork()`, which takes them all in the order that
//! [`fork`](crate::fork) documents.
//!
//! They are `pthread_mutex_t`s rather than `std::sync::Mutex` because
//! `fork()` must be able to take them in the parent before the fork and
//! hand them over released in both processes: a lock held by a thread that
//! does not exist in the child would deadlock it forever.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

/// A value guarded by a process-wide pthread mutex.
pub struct Locked<T> {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reachable through `lock()`, which serialises
// access with the mutex; `T: Send` makes moving that access between threads
// sound.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    pub const fn new(value: T) -> Self {
        Locked {
            mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        // SAFETY: the mutex is initialised statically and never moved (it
        // lives in a static); a default mutex cannot fail to lock except by
        // self-deadlock, which the allocator never re-enters.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        Guard { owner: self }
    }

    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        // SAFETY: as in `lock`.
        let status = unsafe { libc::pthread_mutex_trylock(self.mutex.get()) };
        // Not `then_some`: it would build (and drop, unlocking) a guard
        // for a mutex this thread failed to take.
        if status == 0 {
            Some(Guard { owner: self })
        } else {
            None
        }
    }

    /// Acquire without a guard (fork preparation). Must be paired with
    /// `release_after_fork` in the same thread.
    pub fn acquire_for_fork(&self) {
        // SAFETY: as in `lock`.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
    }

    /// Release a lock taken by `acquire_for_fork`. In the child the mutex is
    /// re-initialised instead: its owner bookkeeping refers to the parent.
    pub fn release_after_fork(&self, in_child: bool) {
        // SAFETY: the calling thread holds the mutex (taken in the prepare
        // handler); in the child no other thread exists that could use it.
        unsafe {
            if in_child {
                *self.mutex.get() = libc::PTHREAD_MUTEX_INITIALIZER;
            } else {
                libc::pthread_mutex_unlock(self.mutex.get());
            }
        }
    }

    /// Access the value while the lock is held by `acquire_for_fork`.
    ///
    /// # Safety
    /// The caller holds the mutex and creates no other reference meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn value_while_held(&self) -> &mut T {
        // SAFETY: guaranteed by the caller.
        unsafe { &mut *self.value.get() }
    }
}

pub struct Guard<'a, T> {
    owner: &'a Locked<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the mutex is held by this thread.
        unsafe { &*self.owner.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the mutex is held by this thread, and
        // `&mut self` makes this the only reference made through it.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the mutex was locked by this guard's creation.
        unsafe { libc::pthread_mutex_unlock(self.owner.mutex.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_serialises_increments() {
        static COUNTER: Locked<u64> = Locked::new(0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10_000 {
                        *COUNTER.lock() += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*COUNTER.lock(), 40_000);
    }

    #[test]
    fn try_lock_fails_while_held() {
        static VALUE: Locked<u8> = Locked::new(0);
        let guard = VALUE.lock();
        // Twice: a failed try_lock must not release the holder's lock.
        let other = std::thread::spawn(|| {
            let first = VALUE.try_lock().is_none();
            let second = VALUE.try_lock().is_none();
            first && second
        })
        .join()
        .unwrap();
        assert!(
            other,
            "a failed try_lock released the lock this thread holds"
        );
        drop(guard);
        assert!(VALUE.try_lock().is_some());
    }
}
