//! A compact HNSW graph (Malkov & Yashunin, 2016) over unit vectors, ranked
//! by dot product (= cosine similarity for normalised vectors).
//!
//! Why our own rather than a crate: the cache needs removal (eviction, TTL)
//! with bounded memory, a per-query filter (expired entries and the lexical
//! guards must never match, and the next-best live entry should be found
//! instead), and deterministic construction for tests. Of the maintained
//! crates, `usearch` is C++ (a second toolchain in every build), `hnsw_rs`
//! has no removal and pulls a large dependency tree, `instant-distance` builds
//! immutable indexes. What we need fits in a few hundred lines.
//!
//! Layout: vectors live in one contiguous arena; layer 0 links (the bulk) in a
//! flat `Vec<u32>` with a fixed stride per node; the few upper-layer links in
//! small per-node vectors. Removal marks a node as a tombstone: it still routes
//! searches (so the graph stays connected) but never appears in results, and
//! its slot is reused by the next insertion, so memory is bounded by the
//! largest live size the graph ever had. Reusing a slot first repairs its
//! neighbours' links (each re-selects among its own and the slot's former
//! neighbours), and the entry point is never a tombstone: both keep every
//! live node reachable, which a property test checks over random
//! insert/replace/remove sequences.

use super::index::dot;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Tuning of the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HnswParams {
    /// Links per node on the upper layers (layer 0 gets twice as many).
    pub m: usize,
    /// Candidate list size while inserting: higher = better graph, slower inserts.
    pub ef_construction: usize,
    /// Candidate list size while searching: higher = better recall, slower search.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        // M = 16 and ef_construction = 100 are the usual defaults (paper,
        // hnswlib). ef_search = 128 because of the worst case measured here,
        // 100k random 384-d vectors (benches/semantic_lookup.rs): a stored
        // vector is found 98% of the time at 128 against 91% at 64, for about
        // 0.4 ms more — small next to the 9–12 ms embedding, and a search that
        // misses costs a cache hit. Real embeddings are easier than random ones.
        HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 128,
        }
    }
}

/// A similarity with a total order, so it can live in a heap.
#[derive(Debug, Clone, Copy)]
struct Scored {
    sim: f32,
    node: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim.total_cmp(&other.sim).then(self.node.cmp(&other.node))
    }
}

/// A min-heap wrapper (the standard heap is a max-heap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Worst(std::cmp::Reverse<Scored>);

/// A visited set for one search: one bit per node.
struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Self {
        Visited(vec![0; n.div_ceil(64)])
    }
    /// Marks `i`; returns whether it was already marked.
    fn test_and_set(&mut self, i: u32) -> bool {
        let i = i as usize;
        let (w, b) = (i / 64, 1u64 << (i % 64));
        match self.0.get_mut(w) {
            Some(word) => {
                let seen = *word & b != 0;
                *word |= b;
                seen
            }
            // Not reachable for valid node ids; treat as seen so a bad id is skipped.
            None => true,
        }
    }
}

/// The graph. Node ids are dense `u32`s; each node carries the caller's id.
pub(crate) struct Hnsw {
    dim: usize,
    params: HnswParams,
    /// Normalisation factor for the level distribution: 1 / ln(M).
    level_mult: f64,
    vectors: Vec<f32>,
    /// The caller's id for each node.
    ids: Vec<u32>,
    deleted: Vec<bool>,
    levels: Vec<u8>,
    /// Layer-0 links: for node n, `layer0[n * stride]` is the count, then up to `2m` ids.
    layer0: Vec<u32>,
    /// Links on layers 1..=level, for nodes whose level is above 0.
    upper: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    max_level: usize,
    /// Tombstoned nodes, reused by the next insertions.
    free: Vec<u32>,
    live: usize,
    /// splitmix64 state for level draws: deterministic, so tests are too.
    rng: u64,
}

impl Hnsw {
    /// An empty graph for vectors of `dim` dimensions.
    pub(crate) fn new(dim: usize, params: HnswParams) -> Self {
        let m = params.m.max(2);
        Hnsw {
            dim,
            params: HnswParams { m, ..params },
            level_mult: 1.0 / (m as f64).ln(),
            vectors: Vec::new(),
            ids: Vec::new(),
            deleted: Vec::new(),
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            max_level: 0,
            free: Vec::new(),
            live: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Changes the search candidate list size (recall against speed).
    pub(crate) fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Live (not removed) nodes.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn stride(&self) -> usize {
        2 * self.params.m + 1
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 { 2 * self.params.m } else { self.params.m }
    }

    fn vector(&self, node: u32) -> &[f32] {
        let start = node as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    fn links(&self, node: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let base = node as usize * self.stride();
            let count = self.layer0[base] as usize;
            &self.layer0[base + 1..base + 1 + count]
        } else {
            self.upper
                .get(node as usize)
                .and_then(|l| l.get(layer - 1))
                .map_or(&[], Vec::as_slice)
        }
    }

    fn set_links(&mut self, node: u32, layer: usize, links: &[u32]) {
        if layer == 0 {
            let stride = self.stride();
            let base = node as usize * stride;
            let n = links.len().min(stride - 1);
            self.layer0[base] = n as u32;
            self.layer0[base + 1..base + 1 + n].copy_from_slice(&links[..n]);
        } else if let Some(l) = self.upper.get_mut(node as usize).and_then(|l| l.get_mut(layer - 1)) {
            l.clear();
            l.extend_from_slice(links);
        }
    }

    fn draw_level(&mut self) -> usize {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Uniform in (0, 1]: never 0, so ln is finite.
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let level = (-u.ln() * self.level_mult).floor();
        // Cap so a freak draw cannot build a tower of empty layers.
        (level as usize).min(16)
    }

    /// Inserts `vector` for the caller's `id`. The vector must have `dim`
    /// components (the index checks before calling).
    /// Returns the node it occupies.
    pub(crate) fn insert(&mut self, id: u32, vector: &[f32]) -> u32 {
        // Reuse a tombstone, but never the entry point: searches start
        // there, and a reused node loses its links for a moment.
        let reusable = self.free.iter().rposition(|&n| Some(n) != self.entry);
        let node = match reusable.map(|i| self.free.swap_remove(i)) {
            Some(node) => {
                // Keep its level (so the layer structure stays valid), give it
                // the new vector and fresh links. Stale links *to* it from
                // other nodes remain as routing edges and are pruned as those
                // nodes gain better neighbours.
                for layer in 0..=self.levels[node as usize] as usize {
                    self.unlink(node, layer);
                }
                let start = node as usize * self.dim;
                self.vectors[start..start + self.dim].copy_from_slice(vector);
                self.ids[node as usize] = id;
                self.deleted[node as usize] = false;
                node
            }
            None => {
                let node = self.ids.len() as u32;
                let level = self.draw_level();
                self.vectors.extend_from_slice(vector);
                self.ids.push(id);
                self.deleted.push(false);
                self.levels.push(level as u8);
                self.layer0.resize(self.layer0.len() + self.stride(), 0);
                self.upper.push(vec![Vec::new(); level]);
                node
            }
        };
        self.live += 1;
        let level = self.levels[node as usize] as usize;

        let Some(mut ep) = self.entry.filter(|&e| e != node) else {
            self.entry = Some(node);
            self.max_level = level;
            return node;
        };
        let query = self.vector(node).to_vec();
        // Greedy descent through the layers above the new node's level.
        let mut layer = self.max_level;
        while layer > level {
            ep = self.greedy(&query, ep, layer);
            layer -= 1;
        }
        let mut eps = vec![ep];
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = self.search_layer(&query, &eps, self.params.ef_construction, layer, Some(node), |_| true);
            let neighbours = self.select(&found, self.params.m.min(self.max_links(layer)));
            let ids: Vec<u32> = neighbours.iter().map(|s| s.node).collect();
            self.set_links(node, layer, &ids);
            for &nb in &ids {
                self.connect(nb, node, layer);
            }
            eps = found.iter().map(|s| s.node).collect();
            if eps.is_empty() {
                eps.push(ep);
            }
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(node);
        }
        node
    }

    /// Drops `node`'s links on `layer` without cutting anyone off: each former
    /// neighbour re-selects its links from its own plus `node`'s other
    /// neighbours (the usual local repair for HNSW deletion), so nodes that
    /// were reached only through `node` stay reachable.
    fn unlink(&mut self, node: u32, layer: usize) {
        let old: Vec<u32> = self.links(node, layer).to_vec();
        self.set_links(node, layer, &[]);
        for &nb in &old {
            if nb == node {
                continue;
            }
            let mut cands: Vec<u32> = self.links(nb, layer).iter().copied().filter(|&c| c != node).collect();
            for &o in &old {
                if o != nb && o != node && !cands.contains(&o) {
                    cands.push(o);
                }
            }
            let base = self.vector(nb);
            let mut scored: Vec<Scored> = cands
                .iter()
                .map(|&c| Scored {
                    sim: dot(base, self.vector(c)),
                    node: c,
                })
                .collect();
            scored.sort_unstable_by(|a, b| b.cmp(a));
            let kept: Vec<u32> = self
                .select(&scored, self.max_links(layer))
                .iter()
                .map(|s| s.node)
                .collect();
            self.set_links(nb, layer, &kept);
        }
    }

    /// Adds the link `from → to` on `layer`, shrinking `from`'s list with the
    /// selection heuristic when it overflows.
    fn connect(&mut self, from: u32, to: u32, layer: usize) {
        let max = self.max_links(layer);
        let current = self.links(from, layer);
        if current.contains(&to) {
            return;
        }
        if current.len() < max {
            let mut l = current.to_vec();
            l.push(to);
            self.set_links(from, layer, &l);
            return;
        }
        let base = self.vector(from);
        let mut cands: Vec<Scored> = current
            .iter()
            .chain(std::iter::once(&to))
            .filter(|&&n| !self.deleted[n as usize] || n == to)
            .map(|&n| Scored {
                sim: dot(base, self.vector(n)),
                node: n,
            })
            .collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let kept: Vec<u32> = self.select(&cands, max).iter().map(|s| s.node).collect();
        self.set_links(from, layer, &kept);
    }

    /// The neighbour-selection heuristic (the paper's algorithm 4): take
    /// candidates best first, keeping one only if it is closer to the base
    /// than to every neighbour already kept. This spreads links across
    /// clusters, which plain top-M does not; free places are then filled with
    /// the best of the rest. `sorted` is best first.
    fn select(&self, sorted: &[Scored], m: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        let mut pruned: Vec<Scored> = Vec::new();
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let v = self.vector(c.node);
            if kept.iter().all(|k| dot(v, self.vector(k.node)) < c.sim) {
                kept.push(*c);
            } else {
                pruned.push(*c);
            }
        }
        // Fill the free places with the best pruned candidates (the paper's
        // "keepPrunedConnections"): more links cost little, and without them
        // a node whose few in-links were all pruned becomes unreachable.
        for c in pruned {
            if kept.len() >= m {
                break;
            }
            kept.push(c);
        }
        kept
    }

    fn greedy(&self, query: &[f32], mut ep: u32, layer: usize) -> u32 {
        let mut best = dot(query, self.vector(ep));
        loop {
            let mut moved = false;
            for &n in self.links(ep, layer) {
                let s = dot(query, self.vector(n));
                if s > best {
                    best = s;
                    ep = n;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Best-first search of one layer. Every reached node routes the search;
    /// only nodes that pass `include` (and are not tombstones, nor `skip`)
    /// enter the result. Returns up to `ef` nodes, best first.
    fn search_layer(
        &self,
        query: &[f32],
        eps: &[u32],
        ef: usize,
        layer: usize,
        skip: Option<u32>,
        include: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let ef = ef.max(1);
        let mut visited = Visited::new(self.ids.len());
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        let mut results: BinaryHeap<Worst> = BinaryHeap::new();
        if let Some(s) = skip {
            visited.test_and_set(s);
        }
        let admit = |n: u32| !self.deleted[n as usize] && include(self.ids[n as usize]);
        for &ep in eps {
            if visited.test_and_set(ep) {
                continue;
            }
            let s = Scored {
                sim: dot(query, self.vector(ep)),
                node: ep,
            };
            candidates.push(s);
            if admit(ep) {
                results.push(Worst(std::cmp::Reverse(s)));
            }
        }
        // A bound on similarity evaluations: when the filter rejects most
        // nodes (say, a partition whose entries all expired) the result list
        // never fills and best-first search would walk the whole graph.
        // An unfiltered search evaluates a few thousand nodes; this allows
        // several times that before giving up.
        let mut budget = ef * self.stride() * 4;
        'search: while let Some(c) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| c.sim < w.0.0.sim) {
                break;
            }
            for &n in self.links(c.node, layer) {
                if visited.test_and_set(n) {
                    continue;
                }
                if budget == 0 {
                    break 'search;
                }
                budget -= 1;
                let s = Scored {
                    sim: dot(query, self.vector(n)),
                    node: n,
                };
                let worst = results.peek().map_or(f32::NEG_INFINITY, |w| w.0.0.sim);
                if results.len() < ef || s.sim > worst {
                    candidates.push(s);
                    if admit(n) {
                        results.push(Worst(std::cmp::Reverse(s)));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results.into_iter().map(|w| w.0.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// Up to `k` best (caller id, similarity) pairs among live nodes whose id
    /// passes `accept`, best first.
    pub(crate) fn search(&self, query: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        if self.live == 0 || k == 0 {
            return Vec::new();
        }
        for layer in (1..=self.max_level).rev() {
            ep = self.greedy(query, ep, layer);
        }
        let found = self.search_layer(query, &[ep], self.params.ef_search.max(k), 0, None, accept);
        found
            .into_iter()
            .take(k)
            .map(|s| (self.ids[s.node as usize], s.sim))
            .collect()
    }

    /// Removes the node holding the caller's `id`, found through `node`.
    pub(crate) fn remove(&mut self, node: u32) {
        if let Some(d) = self.deleted.get_mut(node as usize)
            && !*d
        {
            *d = true;
            self.live -= 1;
            self.free.push(node);
            if self.live == 0 {
                // Nothing left to find: start afresh rather than keep routing
                // through tombstones.
                *self = Hnsw::new(self.dim, self.params);
            } else if self.entry == Some(node) {
                // Searches start at the entry point; a tombstone there would
                // see its links pruned away over time (links to tombstones
                // are the first dropped) and could end up isolated. Move it to
                // the highest live node (a scan, but only on 1/n removals).
                let best = (0..self.ids.len())
                    .filter(|&n| !self.deleted[n])
                    .max_by_key(|&n| (self.levels[n], std::cmp::Reverse(n)));
                if let Some(n) = best {
                    self.entry = Some(n as u32);
                    self.max_level = self.levels[n] as usize;
                }
            }
        }
    }

    /// Every live (caller id, vector) pair, for converting back to a flat scan.
    pub(crate) fn drain_live(&self) -> impl Iterator<Item = (u32, &[f32])> + '_ {
        (0..self.ids.len())
            .filter(|&n| !self.deleted[n])
            .map(|n| (self.ids[n], self.vector(n as u32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::semantic::index::tests::{noisy_copy, random_unit};

    fn brute(vs: &[Vec<f32>], q: &[f32]) -> u32 {
        let mut best = (0u32, f32::NEG_INFINITY);
        for (i, v) in vs.iter().enumerate() {
            let s = dot(q, v);
            if s > best.1 {
                best = (i as u32, s);
            }
        }
        best.0
    }

    #[test]
    fn finds_near_duplicates_with_high_recall() {
        // Small enough for a debug build (this crate is not optimised in tests).
        let (dim, n) = (32, 1200);
        let mut seed = 7u64;
        let vs: Vec<Vec<f32>> = (0..n).map(|_| random_unit(dim, &mut seed)).collect();
        let mut h = Hnsw::new(dim, HnswParams::default());
        for (i, v) in vs.iter().enumerate() {
            h.insert(i as u32, v);
        }
        assert_eq!(h.len(), n);
        let mut hits = 0;
        for i in (0..n).step_by(6) {
            let q = noisy_copy(&vs[i], 0.3, &mut seed);
            let got = h.search(&q, 1, &|_| true);
            if got.first().map(|g| g.0) == Some(brute(&vs, &q)) {
                hits += 1;
            }
        }
        // 200 queries; a near duplicate is the easy case HNSW is built for.
        assert!(hits >= 196, "recall {hits}/200");
    }

    #[test]
    fn removed_nodes_never_match_and_slots_are_reused() {
        let dim = 16;
        let mut seed = 3u64;
        let vs: Vec<Vec<f32>> = (0..500).map(|_| random_unit(dim, &mut seed)).collect();
        let mut h = Hnsw::new(dim, HnswParams::default());
        for (i, v) in vs.iter().enumerate() {
            h.insert(i as u32, v);
        }
        // Remove every even node (node index == id here since nothing was reused).
        for n in (0..500).step_by(2) {
            h.remove(n);
        }
        h.remove(0); // twice: no effect
        assert_eq!(h.len(), 250);
        for i in (0..500).step_by(2) {
            let got = h.search(&vs[i], 3, &|_| true);
            assert!(got.iter().all(|(id, _)| id % 2 == 1), "removed id returned: {got:?}");
        }
        // Odd ones are still found exactly.
        let found = (1..500)
            .step_by(2)
            .filter(|&i| h.search(&vs[i], 1, &|_| true)[0].0 == i as u32)
            .count();
        assert!(found >= 245, "found {found}/250");
        // Reinsertion reuses tombstones: the arena does not grow.
        let before = h.ids.len();
        for i in 0..250 {
            h.insert(1000 + i, &random_unit(dim, &mut seed));
        }
        assert_eq!(h.ids.len(), before);
        assert_eq!(h.len(), 500);
    }

    #[test]
    fn filter_skips_to_next_best() {
        let mut h = Hnsw::new(2, HnswParams::default());
        h.insert(1, &[1.0, 0.0]);
        h.insert(2, &[0.8, 0.6]);
        h.insert(3, &[0.0, 1.0]);
        let got = h.search(&[1.0, 0.0], 1, &|id| id != 1);
        assert_eq!(got[0].0, 2);
    }

    #[test]
    fn empty_graph_and_zero_k() {
        let h = Hnsw::new(4, HnswParams::default());
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 5, &|_| true).is_empty());
        let mut h = Hnsw::new(4, HnswParams::default());
        h.insert(9, &[1.0, 0.0, 0.0, 0.0]);
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 0, &|_| true).is_empty());
        h.remove(0);
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 1, &|_| true).is_empty());
        h.insert(10, &[0.0, 1.0, 0.0, 0.0]);
        assert_eq!(h.search(&[0.0, 1.0, 0.0, 0.0], 1, &|_| true)[0].0, 10);
    }
}
