//! A lock-free counter over a sliding time window, made of slots.
//!
//! Each slot is one `AtomicU64` packing the slot's sequence number (upper 32
//! bits) with its count (lower 32 bits), so a slot that belongs to an old
//! period is recognised and restarted by a single compare-and-swap: no lock
//! and no lost increments when two threads roll the same slot over. The
//! window is `slots × slot_len`; a count is seen for between
//! `(slots-1) × slot_len` and `slots × slot_len` (the usual bucketed
//! approximation of Finagle and Hystrix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const COUNT_MASK: u64 = 0xFFFF_FFFF;

/// Counts events over the last `window`.
#[derive(Debug)]
pub(crate) struct WindowCounter {
    slots: Box<[AtomicU64]>,
    slot_nanos: u64,
}

impl WindowCounter {
    /// A counter over `window` split into `slots` slots (at least 1 ms each).
    pub(crate) fn new(window: Duration, slots: usize) -> Self {
        let slots = slots.max(1);
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let slot_nanos = (window_nanos / slots as u64).max(1_000_000);
        WindowCounter {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            slot_nanos,
        }
    }

    fn seq(&self, now_nanos: u64) -> u32 {
        // Sequence 0 is what a fresh slot holds: shift by one so that a slot
        // never written is never mistaken for the current one.
        ((now_nanos / self.slot_nanos) as u32).wrapping_add(1)
    }

    /// Adds `n` at time `now_nanos` (nanoseconds on a monotonic clock).
    pub(crate) fn add(&self, now_nanos: u64, n: u32) {
        let seq = self.seq(now_nanos);
        let slot = &self.slots[seq as usize % self.slots.len()];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let new = if (cur >> 32) as u32 == seq {
                let count = ((cur & COUNT_MASK) + u64::from(n)).min(COUNT_MASK);
                (cur & !COUNT_MASK) | count
            } else {
                (u64::from(seq) << 32) | u64::from(n)
            };
            match slot.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Removes `n` from the current slot if it still holds at least `n`
    /// (undoing an optimistic [`add`](Self::add)).
    pub(crate) fn sub(&self, now_nanos: u64, n: u32) {
        let seq = self.seq(now_nanos);
        let slot = &self.slots[seq as usize % self.slots.len()];
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            ((cur >> 32) as u32 == seq && (cur & COUNT_MASK) >= u64::from(n)).then(|| cur - u64::from(n))
        });
    }

    /// The sum over the window ending at `now_nanos`.
    pub(crate) fn sum(&self, now_nanos: u64) -> u64 {
        let seq = self.seq(now_nanos);
        let n = self.slots.len() as u32;
        self.slots
            .iter()
            .map(|s| {
                let v = s.load(Ordering::Relaxed);
                let age = seq.wrapping_sub((v >> 32) as u32);
                if age < n { v & COUNT_MASK } else { 0 }
            })
            .sum()
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_within_the_window_and_forgets_after() {
        let w = WindowCounter::new(Duration::from_secs(10), 10);
        w.add(0, 3);
        w.add(5_000 * MS, 2);
        assert_eq!(w.sum(5_000 * MS), 5);
        assert_eq!(w.sum(9_999 * MS), 5);
        // The first slot ([0, 1 s)) leaves the window at 10 s.
        assert_eq!(w.sum(10_000 * MS), 2);
        assert_eq!(w.sum(15_000 * MS), 0);
        // A slot reused after a full turn starts from zero.
        w.add(20_000 * MS, 1);
        assert_eq!(w.sum(20_000 * MS), 1);
    }

    #[test]
    fn sub_undoes_an_add_in_the_same_slot_only() {
        let w = WindowCounter::new(Duration::from_secs(1), 10);
        w.add(0, 1);
        w.sub(0, 1);
        assert_eq!(w.sum(0), 0);
        w.sub(0, 1);
        assert_eq!(w.sum(0), 0, "never below zero");
        w.add(0, 1);
        w.sub(200 * MS, 1);
        assert_eq!(w.sum(200 * MS), 1, "another slot is untouched");
        w.clear();
        assert_eq!(w.sum(200 * MS), 0);
    }

    #[test]
    fn concurrent_adds_are_not_lost() {
        let w = std::sync::Arc::new(WindowCounter::new(Duration::from_secs(10), 10));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.add(3 * MS, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.sum(3 * MS), 40_000);
    }
}
