//! Registered metric handles, looked up by name and label values without
//! allocating. The `counter!` macro builds a key (a label vector, owned label
//! strings) and hashes it into the registry on every call: per request, with
//! a handful of metrics, that was more work than routing the request. Here a
//! series is registered once; afterwards an update hashes the borrowed label
//! values, finds the handle under a read lock and increments it.

use breakwater::prehashed::PrehashedMap;
use foldhash::fast::RandomState;
use metrics::{Counter, Histogram, Label};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{LazyLock, RwLock};

/// One registered series: its name, label values and handle.
struct Series<H> {
    name: &'static str,
    values: Box<[Box<str>]>,
    handle: H,
}

/// Series by the hash of their name and label values (colliding series
/// share a bucket and are told apart by comparison). The hasher is seeded
/// per process, so label values a client chooses cannot aim at one bucket.
struct Table<H> {
    hasher: RandomState,
    /// Keyed by the hash already made: no second hashing.
    map: RwLock<PrehashedMap<Vec<Series<H>>>>,
}

impl<H: Clone> Table<H> {
    fn new() -> Self {
        Table {
            hasher: RandomState::default(),
            map: RwLock::new(PrehashedMap::default()),
        }
    }

    fn hash(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let mut h = self.hasher.build_hasher();
        name.hash(&mut h);
        for (k, v) in labels {
            k.hash(&mut h);
            v.hash(&mut h);
        }
        h.finish()
    }

    /// The handle of the series, registered with `register` the first time.
    fn get(&self, name: &'static str, labels: &[(&'static str, &str)], register: impl FnOnce(Vec<Label>) -> H) -> H {
        let hash = self.hash(name, labels);
        let matches = |s: &Series<H>| {
            s.name == name
                && s.values.len() == labels.len()
                && s.values.iter().zip(labels).all(|(a, (_, b))| **a == **b)
        };
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&hash).and_then(|b| b.iter().find(|s| matches(s))) {
                return s.handle.clone();
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let bucket = map.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| matches(s)) {
            return s.handle.clone();
        }
        let handle = register(labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect());
        bucket.push(Series {
            name,
            values: labels.iter().map(|(_, v)| Box::from(*v)).collect(),
            handle: handle.clone(),
        });
        handle
    }
}

static COUNTERS: LazyLock<Table<Counter>> = LazyLock::new(Table::new);
static HISTOGRAMS: LazyLock<Table<Histogram>> = LazyLock::new(Table::new);

/// The counter `name` with these labels.
pub fn counter(name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
    COUNTERS.get(name, labels, |l| metrics::counter!(name, l))
}

/// The histogram `name` with these labels.
pub fn histogram(name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
    HISTOGRAMS.get(name, labels, |l| metrics::histogram!(name, l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn a_series_is_registered_once_and_kept_apart_from_others() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut registrations = 0;
        metrics::with_local_recorder(&recorder, || {
            let table: Table<Counter> = Table::new();
            for _ in 0..3 {
                table
                    .get("t_total", &[("model", "a"), ("status", "200")], |l| {
                        registrations += 1;
                        metrics::counter!("t_total", l)
                    })
                    .increment(1);
            }
            table
                .get("t_total", &[("model", "b"), ("status", "200")], |l| {
                    metrics::counter!("t_total", l)
                })
                .increment(5);
            // The same values under another name are another series.
            table
                .get("u_total", &[("model", "a"), ("status", "200")], |l| {
                    metrics::counter!("u_total", l)
                })
                .increment(7);
        });
        assert_eq!(registrations, 1);
        let text = handle.render();
        for line in [
            r#"t_total{model="a",status="200"} 3"#,
            r#"t_total{model="b",status="200"} 5"#,
            r#"u_total{model="a",status="200"} 7"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
