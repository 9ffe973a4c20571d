//! Worker threads. A gateway may serve from several threads, each running
//! its own single-threaded tokio runtime (no work stealing: a request's
//! tasks stay on one thread, so they never wake another one). Resources
//! that hold tasks, such as the HTTP connection pools of the providers, are
//! then kept per worker: a pooled connection is a task of the runtime that
//! opened it, and a request on another worker using it would cost a
//! cross-thread wake-up both ways.
//!
//! A thread that never says which worker it is counts as worker 0, so an
//! application with one runtime (single- or multi-threaded) needs nothing.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `index` (call it first thing on the
/// thread that runs worker `index`'s runtime).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The worker the current thread runs (0 unless [`set_worker`] said
/// otherwise).
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_worker_zero_until_told_otherwise() {
        assert_eq!(worker(), 0);
        std::thread::spawn(|| {
            set_worker(3);
            assert_eq!(worker(), 3);
        })
        .join()
        .expect("the thread ran");
        assert_eq!(worker(), 0, "another thread's index is its own");
    }
}
