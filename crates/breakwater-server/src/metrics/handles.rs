//! Registered metric handles, looked up by name and label values without
//! allocating. The `counter!` macro builds a key (a label vector, owned label
//! strings) and hashes it into the registry on every call: per request, with
//! a handful of metrics, that was more work than routing the request. Here a
//! series is registered once; afterwards an update hashes the borrowed label
//! values and finds the handle in its worker's own copy of the table.
//!
//! Why a copy per thread: a shared table behind a read lock (and cloning
//! the handle's `Arc`) writes to the same cache lines from every worker on
//! every update, which costs more than the lookup itself once two workers
//! are busy. A thread finds a series in the shared table the first time
//! only.

use breakwater::prehashed::PrehashedMap;
use foldhash::fast::RandomState;
use metrics::{Counter, Histogram, Label};
use std::cell::RefCell;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{LazyLock, RwLock};
use thread_local::ThreadLocal;

/// One registered series: its name, label values and handle.
struct Series<H> {
    name: &'static str,
    values: Box<[Box<str>]>,
    handle: H,
}

impl<H> Series<H> {
    fn is(&self, name: &'static str, labels: &[(&'static str, &str)]) -> bool {
        self.name == name
            && self.values.len() == labels.len()
            && self.values.iter().zip(labels).all(|(a, (_, b))| **a == **b)
    }

    fn new(name: &'static str, labels: &[(&'static str, &str)], handle: H) -> Self {
        Series {
            name,
            values: labels.iter().map(|(_, v)| Box::from(*v)).collect(),
            handle,
        }
    }
}

/// Series by the hash of their name and label values (colliding series
/// share a bucket and are told apart by comparison).
type Buckets<H> = PrehashedMap<Vec<Series<H>>>;

/// The shared table and each thread's copy. The hasher is seeded per
/// process, so label values a client chooses cannot aim at one bucket.
struct Table<H: Send> {
    hasher: RandomState,
    /// Keyed by the hash already made: no second hashing.
    shared: RwLock<Buckets<H>>,
    local: ThreadLocal<RefCell<Buckets<H>>>,
}

impl<H: Clone + Send> Table<H> {
    fn new() -> Self {
        Table {
            hasher: RandomState::default(),
            shared: RwLock::new(PrehashedMap::default()),
            local: ThreadLocal::new(),
        }
    }

    fn hash(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let mut h = self.hasher.build_hasher();
        name.hash(&mut h);
        // A metric's label keys are the same at every update (the name
        // decides them, and `Series::is` compares the values only).
        for (_, v) in labels {
            v.hash(&mut h);
        }
        h.finish()
    }

    /// Calls `f` with the handle of the series, registered with `register`
    /// the first time any thread uses it.
    fn with<R>(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        register: impl FnOnce(Vec<Label>) -> H,
        f: impl FnOnce(&H) -> R,
    ) -> R {
        let hash = self.hash(name, labels);
        let local = self.local.get_or(|| RefCell::new(PrehashedMap::default()));
        // Only `f` or `register` could re-enter (neither does); if one did,
        // the shared table still answers.
        let Ok(mut local) = local.try_borrow_mut() else {
            return f(&self.shared_handle(hash, name, labels, register));
        };
        let bucket = local.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| s.is(name, labels)) {
            return f(&s.handle);
        }
        let handle = self.shared_handle(hash, name, labels, register);
        bucket.push(Series::new(name, labels, handle));
        f(&bucket[bucket.len() - 1].handle)
    }

    /// The handle from the shared table, registered there the first time.
    fn shared_handle(
        &self,
        hash: u64,
        name: &'static str,
        labels: &[(&'static str, &str)],
        register: impl FnOnce(Vec<Label>) -> H,
    ) -> H {
        {
            let map = self.shared.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&hash).and_then(|b| b.iter().find(|s| s.is(name, labels))) {
                return s.handle.clone();
            }
        }
        let mut map = self.shared.write().unwrap_or_else(|p| p.into_inner());
        let bucket = map.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| s.is(name, labels)) {
            return s.handle.clone();
        }
        let handle = register(labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect());
        bucket.push(Series::new(name, labels, handle.clone()));
        handle
    }
}

static COUNTERS: LazyLock<Table<Counter>> = LazyLock::new(Table::new);
static HISTOGRAMS: LazyLock<Table<Histogram>> = LazyLock::new(Table::new);

/// Adds `n` to the counter `name` with these labels.
pub fn count(name: &'static str, labels: &[(&'static str, &str)], n: u64) {
    COUNTERS.with(name, labels, |l| metrics::counter!(name, l), |c| c.increment(n));
}

/// Records `v` in the histogram `name` with these labels.
pub fn observe(name: &'static str, labels: &[(&'static str, &str)], v: f64) {
    HISTOGRAMS.with(name, labels, |l| metrics::histogram!(name, l), |h| h.record(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_series_is_registered_once_across_threads_and_kept_apart_from_others() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let registrations = AtomicUsize::new(0);
        let table: Table<Counter> = Table::new();
        let add = |name: &'static str, model: &str, n: u64| {
            table.with(
                name,
                &[("model", model), ("status", "200")],
                |l| {
                    registrations.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!(name, l)
                },
                |c| c.increment(n),
            );
        };
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                add("t_total", "a", 1);
            }
            add("t_total", "b", 5);
            // The same values under another name are another series.
            add("u_total", "a", 7);
        });
        // Another thread has its own copy of the table, filled from the
        // shared one: the series it finds there are not registered again.
        std::thread::scope(|s| {
            s.spawn(|| {
                add("t_total", "a", 10);
                add("u_total", "a", 1);
            });
        });
        assert_eq!(
            registrations.load(Ordering::SeqCst),
            3,
            "t_total a, t_total b, u_total a"
        );
        let text = handle.render();
        for line in [
            r#"t_total{model="a",status="200"} 13"#,
            r#"t_total{model="b",status="200"} 5"#,
            r#"u_total{model="a",status="200"} 8"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
