//! The vector index of one partition: an exact scan while small, an HNSW
//! graph once large, switching by itself.
//!
//! Vectors are unit length, so the dot product is the cosine similarity.
//!
//! Switching: past [`IndexConfig::hnsw_threshold`] live vectors a graph is
//! started; new vectors go into it, and each insertion also moves a few of
//! the scanned vectors over, so the one-off cost of building the graph is
//! spread over many insertions instead of stalling one of them (a write lock
//! is held while inserting). Searches look at both parts meanwhile. When the
//! size falls below a quarter of the threshold (mass expiry), the graph is
//! turned back into a scan; the gap between the two points prevents flapping.

use super::hnsw::{Hnsw, HnswParams};

/// Dot product, written so the compiler vectorises it: eight independent
/// accumulators (floating-point addition is not associative, so a single
/// running sum would have to stay sequential).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, xi), yi) in acc.iter_mut().zip(x).zip(y) {
            *s += xi * yi;
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// Scales `v` to unit length in place; a zero (or non-finite) vector becomes
/// all zeros, which is similar to nothing.
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm.is_finite() && norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// Tuning of a partition's index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexConfig {
    /// Live vectors above which the index builds an HNSW graph. Below it an
    /// exact scan is as fast (a few hundred microseconds at most) and exact.
    pub hnsw_threshold: usize,
    /// Scanned vectors moved into the graph per insertion while switching.
    pub migrate_per_insert: usize,
    /// The graph's parameters.
    pub hnsw: HnswParams,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            hnsw_threshold: 4096,
            migrate_per_insert: 8,
            hnsw: HnswParams::default(),
        }
    }
}

/// Where an id's vector lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    None,
    /// Row of the scan arena.
    Flat(u32),
    /// Node of the graph.
    Graph(u32),
}

/// Vectors scanned exhaustively, in one contiguous arena.
#[derive(Default)]
struct Flat {
    data: Vec<f32>,
    ids: Vec<u32>,
}

/// A vector index over ids chosen by the caller (small dense integers: the
/// caller's slot numbers).
pub struct VectorIndex {
    dim: usize,
    config: IndexConfig,
    flat: Flat,
    graph: Option<Hnsw>,
    locs: Vec<Loc>,
}

impl VectorIndex {
    /// An empty index for vectors of `dim` components.
    pub fn new(dim: usize, config: IndexConfig) -> Self {
        VectorIndex {
            dim,
            config,
            flat: Flat::default(),
            graph: None,
            locs: Vec::new(),
        }
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.flat.ids.len() + self.graph.as_ref().map_or(0, Hnsw::len)
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the graph's search candidate list size, now and for a graph
    /// built later: higher finds more true nearest neighbours, slower.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.config.hnsw.ef_search = ef.max(1);
        if let Some(g) = self.graph.as_mut() {
            g.set_ef_search(ef);
        }
    }

    /// Whether searches currently use an HNSW graph.
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    fn loc(&self, id: u32) -> Loc {
        self.locs.get(id as usize).copied().unwrap_or(Loc::None)
    }

    fn set_loc(&mut self, id: u32, loc: Loc) {
        let i = id as usize;
        if self.locs.len() <= i {
            self.locs.resize(i + 1, Loc::None);
        }
        self.locs[i] = loc;
    }

    /// Adds (or replaces) the vector of `id`. A vector of the wrong length is
    /// refused (returns false): the caller checks, this is a last guard.
    pub fn insert(&mut self, id: u32, vector: &[f32]) -> bool {
        if vector.len() != self.dim {
            return false;
        }
        self.remove(id);
        if self.graph.is_none() && self.len() >= self.config.hnsw_threshold {
            self.graph = Some(Hnsw::new(self.dim, self.config.hnsw));
        }
        if let Some(graph) = self.graph.as_mut() {
            let node = graph.insert(id, vector);
            self.set_loc(id, Loc::Graph(node));
            self.migrate(self.config.migrate_per_insert.max(1));
        } else {
            self.push_flat(id, vector);
        }
        true
    }

    fn push_flat(&mut self, id: u32, vector: &[f32]) {
        let row = self.flat.ids.len() as u32;
        self.flat.data.extend_from_slice(vector);
        self.flat.ids.push(id);
        self.set_loc(id, Loc::Flat(row));
    }

    /// Moves up to `n` scanned vectors into the graph.
    fn migrate(&mut self, n: usize) {
        for _ in 0..n {
            let Some(&id) = self.flat.ids.last() else {
                return;
            };
            let start = self.flat.data.len() - self.dim;
            let v: Vec<f32> = self.flat.data[start..].to_vec();
            self.flat.data.truncate(start);
            self.flat.ids.pop();
            if let Some(graph) = self.graph.as_mut() {
                let node = graph.insert(id, &v);
                self.set_loc(id, Loc::Graph(node));
            }
        }
    }

    /// Removes the vector of `id`, if any.
    pub fn remove(&mut self, id: u32) {
        match self.loc(id) {
            Loc::None => return,
            Loc::Flat(row) => {
                let row = row as usize;
                let last = self.flat.ids.len() - 1;
                if row != last {
                    // Swap-remove: move the last row into the hole.
                    let (dst, src) = (row * self.dim, last * self.dim);
                    self.flat.data.copy_within(src..src + self.dim, dst);
                    let moved = self.flat.ids[last];
                    self.flat.ids[row] = moved;
                    self.set_loc(moved, Loc::Flat(row as u32));
                }
                self.flat.data.truncate(last * self.dim);
                self.flat.ids.pop();
            }
            Loc::Graph(node) => {
                if let Some(graph) = self.graph.as_mut() {
                    graph.remove(node);
                }
            }
        }
        self.set_loc(id, Loc::None);
        if self.graph.is_some() && self.len() < self.config.hnsw_threshold / 4 {
            self.demote();
        }
    }

    /// Turns the graph back into a scan.
    fn demote(&mut self) {
        let Some(graph) = self.graph.take() else {
            return;
        };
        let live: Vec<(u32, Vec<f32>)> = graph.drain_live().map(|(id, v)| (id, v.to_vec())).collect();
        for (id, v) in live {
            self.push_flat(id, &v);
        }
    }

    /// Up to `k` best `(id, similarity)` pairs among ids that pass `accept`,
    /// best first. Exact below the graph threshold, approximate above it.
    pub fn search(&self, query: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<(u32, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (row, v) in self.flat.data.chunks_exact(self.dim).enumerate() {
            let sim = dot(query, v);
            let id = self.flat.ids[row];
            // Cheap test first: the filter may look at a clock or a guard.
            if beats(&best, k, sim) && accept(id) {
                offer(&mut best, k, id, sim);
            }
        }
        if let Some(graph) = &self.graph {
            for (id, sim) in graph.search(query, k, accept) {
                offer(&mut best, k, id, sim);
            }
        }
        best
    }
}

/// Whether `sim` would enter a top-`k` list (best first).
fn beats(best: &[(u32, f32)], k: usize, sim: f32) -> bool {
    best.len() < k || best.last().is_some_and(|w| sim > w.1)
}

/// Puts `(id, sim)` into the top-`k` list `best` (best first) if it belongs.
fn offer(best: &mut Vec<(u32, f32)>, k: usize, id: u32, sim: f32) {
    if !beats(best, k, sim) {
        return;
    }
    let at = best.partition_point(|b| b.1 >= sim);
    best.insert(at, (id, sim));
    best.truncate(k);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vector (xorshift), for tests and benches.
    pub(crate) fn random_unit(dim: usize, seed: &mut u64) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| gaussian(seed)).collect();
        normalize(&mut v);
        v
    }

    fn uniform(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn gaussian(seed: &mut u64) -> f32 {
        // Box-Muller: a spherical distribution needs Gaussian components.
        let (u1, u2) = (uniform(seed), uniform(seed));
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// `v` plus Gaussian noise of relative size `noise`, renormalised.
    pub(crate) fn noisy_copy(v: &[f32], noise: f32, seed: &mut u64) -> Vec<f32> {
        let scale = noise / (v.len() as f32).sqrt();
        let mut out: Vec<f32> = v.iter().map(|x| x + scale * gaussian(seed)).collect();
        normalize(&mut out);
        out
    }

    #[test]
    fn dot_matches_naive_for_all_lengths() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-3, "n={n}");
        }
        assert_eq!(dot(&[1.0, 2.0], &[3.0]), 3.0);
    }

    #[test]
    fn normalize_handles_zero_and_nan() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        let mut n = vec![f32::NAN, 1.0];
        normalize(&mut n);
        assert_eq!(n, vec![0.0, 0.0]);
    }

    #[test]
    fn exact_scan_insert_remove_replace() {
        let mut idx = VectorIndex::new(2, IndexConfig::default());
        assert!(idx.insert(0, &[1.0, 0.0]));
        assert!(idx.insert(1, &[0.0, 1.0]));
        assert!(idx.insert(2, &[0.6, 0.8]));
        assert!(!idx.insert(3, &[1.0]), "wrong dimension is refused");
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.search(&[1.0, 0.0], 1, &|_| true), vec![(0, 1.0)]);
        let top2 = idx.search(&[1.0, 0.0], 2, &|_| true);
        assert_eq!(top2.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 2]);
        idx.remove(0);
        idx.remove(0);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.search(&[1.0, 0.0], 1, &|_| true)[0].0, 2);
        // Replacing id 2 moves it.
        idx.insert(2, &[0.0, -1.0]);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.search(&[0.0, -1.0], 1, &|_| true)[0].0, 2);
        assert!(idx.search(&[1.0], 1, &|_| true).is_empty(), "wrong query dimension");
        assert!(idx.search(&[1.0, 0.0], 1, &|_| false).is_empty(), "filter");
    }

    #[test]
    fn switches_to_graph_and_back_and_stays_correct() {
        let dim = 24;
        let cfg = IndexConfig {
            hnsw_threshold: 200,
            migrate_per_insert: 4,
            hnsw: HnswParams::default(),
        };
        let mut idx = VectorIndex::new(dim, cfg);
        let mut seed = 11u64;
        let vs: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(dim, &mut seed)).collect();
        for (i, v) in vs.iter().enumerate() {
            idx.insert(i as u32, v);
            if i == 220 {
                assert!(idx.uses_graph());
                assert!(!idx.flat.ids.is_empty(), "migration is gradual");
            }
        }
        assert!(idx.uses_graph());
        assert!(idx.flat.ids.is_empty(), "migration finished");
        assert_eq!(idx.len(), 1000);
        let found = (0..1000)
            .step_by(10)
            .filter(|&i| idx.search(&noisy_copy(&vs[i], 0.2, &mut seed), 1, &|_| true)[0].0 == i as u32)
            .count();
        assert!(found >= 98, "recall {found}/100");
        for i in 0..960 {
            idx.remove(i);
        }
        assert!(!idx.uses_graph(), "demoted below a quarter of the threshold");
        assert_eq!(idx.len(), 40);
        for i in 960..1000u32 {
            assert_eq!(idx.search(&vs[i as usize], 1, &|_| true)[0].0, i);
        }
    }

    /// Found by the property test below: the graph's entry point was removed,
    /// its links decayed, and a later insertion found no way in.
    #[test]
    fn regression_removed_entry_point() {
        let ops = [
            (47, true),
            (8, true),
            (9, true),
            (10, true),
            (27, true),
            (28, true),
            (11, true),
            (0, true),
            (1, true),
            (30, true),
            (2, true),
            (3, true),
            (5, true),
            (43, true),
            (56, true),
            (12, true),
            (43, false),
            (26, true),
            (4, true),
            (26, false),
            (56, false),
            (0, false),
            (0, false),
            (0, true),
            (0, true),
            (0, true),
            (5, false),
            (8, true),
            (8, true),
            (5, false),
            (21, true),
            (0, false),
            (0, false),
            (0, true),
            (41, true),
            (0, true),
            (13, true),
            (29, true),
            (15, true),
            (23, true),
            (44, true),
            (31, true),
            (16, false),
            (24, true),
            (0, true),
            (16, true),
            (0, true),
            (33, true),
            (17, true),
            (5, true),
            (32, false),
            (32, true),
            (34, true),
            (0, true),
            (19, true),
            (22, true),
            (0, true),
            (20, true),
            (6, true),
            (13, true),
            (4, false),
            (14, true),
        ];
        let dim = 8;
        let mut idx = VectorIndex::new(
            dim,
            IndexConfig {
                hnsw_threshold: 16,
                migrate_per_insert: 2,
                hnsw: HnswParams::default(),
            },
        );
        let mut model: std::collections::HashMap<u32, Vec<f32>> = Default::default();
        let mut seed = 99u64;
        for (id, insert) in ops {
            if insert {
                let v = random_unit(dim, &mut seed);
                idx.insert(id, &v);
                model.insert(id, v);
            } else {
                idx.remove(id);
                model.remove(&id);
            }
        }
        for (id, v) in &model {
            assert_eq!(idx.search(v, 1, &|_| true).first().map(|g| g.0), Some(*id));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Any sequence of insertions, replacements and removals, across the
        /// switch to a graph and back: the index holds exactly the live ids,
        /// finds each by its own vector, and never returns a removed one.
        #[test]
        fn index_matches_a_model_under_any_operations(
            ops in proptest::collection::vec((0u32..60, proptest::bool::weighted(0.7)), 0..300)
        ) {
            let dim = 8;
            let mut idx = VectorIndex::new(dim, IndexConfig {
                hnsw_threshold: 16,
                migrate_per_insert: 2,
                hnsw: HnswParams::default(),
            });
            let mut model: std::collections::HashMap<u32, Vec<f32>> = Default::default();
            let mut seed = 99u64;
            for (id, insert) in ops {
                if insert {
                    let v = random_unit(dim, &mut seed);
                    idx.insert(id, &v);
                    model.insert(id, v);
                } else {
                    idx.remove(id);
                    model.remove(&id);
                }
                proptest::prop_assert_eq!(idx.len(), model.len());
            }
            for (id, v) in &model {
                let got = idx.search(v, 1, &|_| true);
                proptest::prop_assert_eq!(got.first().map(|g| g.0), Some(*id));
            }
            let all = idx.search(&random_unit(dim, &mut seed), 100, &|_| true);
            proptest::prop_assert_eq!(all.len(), model.len());
            for (id, _) in all {
                proptest::prop_assert!(model.contains_key(&id), "removed id {} returned", id);
            }
        }
    }
}
