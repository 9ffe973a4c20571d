//! [`SemanticCache`]: partitions of vector indexes, with TTLs, a global
//! entry bound and statistics.

use super::SemanticError;
use super::embed::Embedder;
use super::index::{IndexConfig, VectorIndex};
use super::query::{Guard, PartitionKey, SemanticQuery};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Settings of a [`SemanticCache`] (`cache.semantic` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// Cosine similarity a stored prompt needs to answer a new one.
    pub threshold: f32,
    /// Entries kept at most, over all partitions; past it the least recently
    /// used go first.
    pub max_entries: usize,
    /// Whether a hit also needs equal numbers and negation/polarity words
    /// (see [`query`](super::query)). Off only to measure the model alone.
    pub guards: bool,
    /// Index tuning.
    pub index: IndexConfig,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig {
            threshold: 0.92,
            max_entries: 100_000,
            guards: true,
            index: IndexConfig::default(),
        }
    }
}

/// Two stored prompts this similar (with equal guards) are one entry: a
/// second store replaces the first instead of adding a twin.
const DUPLICATE_SIMILARITY: f32 = 0.999;

/// Expired entries reclaimed from the front of the eviction queue per
/// insertion, so they do not linger until the entry bound is reached.
const RECLAIM_PER_INSERT: usize = 2;

/// A cached value and what decides whether it may answer.
struct Entry<V> {
    value: V,
    /// `None`: never expires.
    expires_at: Option<Instant>,
    guard: Guard,
    /// Identifies this entry in the eviction queue (slots are reused).
    generation: u64,
    /// Set on a hit; gives the entry a second chance at eviction (CLOCK).
    referenced: AtomicBool,
}

impl<V> Entry<V> {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One partition: its index, and the entries by slot (the index's ids).
struct Partition<V> {
    key: PartitionKey,
    index: VectorIndex,
    slots: Vec<Option<Entry<V>>>,
    free: Vec<u32>,
    live: usize,
    /// Set when the partition was dropped from the map (it became empty);
    /// an insertion that still holds it must start over.
    retired: bool,
}

impl<V> Partition<V> {
    fn entry(&self, slot: u32) -> Option<&Entry<V>> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn remove(&mut self, slot: u32) -> Option<Entry<V>> {
        let e = self.slots.get_mut(slot as usize).and_then(Option::take)?;
        self.index.remove(slot);
        self.free.push(slot);
        self.live -= 1;
        Some(e)
    }
}

type Shared<V> = Arc<RwLock<Partition<V>>>;

/// An entry's place in the eviction order.
struct Record<V> {
    partition: Shared<V>,
    slot: u32,
    generation: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    embeddings: AtomicU64,
    embed_micros: AtomicU64,
    embed_micros_max: AtomicU64,
}

/// A snapshot of a [`SemanticCache`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SemanticStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing close enough.
    pub misses: u64,
    /// Lookups and stores that failed (embedding refused or failed); the
    /// caller treated them as misses.
    pub errors: u64,
    /// Entries held now.
    pub entries: u64,
    /// Partitions held now.
    pub partitions: u64,
    /// Entries dropped to respect `max_entries`.
    pub evictions: u64,
    /// Expired entries reclaimed.
    pub expired: u64,
    /// Embedding calls made.
    pub embeddings: u64,
    /// Their total wall time.
    pub embed_time_total: Duration,
    /// The slowest of them.
    pub embed_time_max: Duration,
}

impl SemanticStats {
    /// Mean wall time of an embedding call (queueing included).
    pub fn embed_time_mean(&self) -> Duration {
        self.embed_time_total
            .checked_div(u32::try_from(self.embeddings).unwrap_or(u32::MAX))
            .unwrap_or_default()
    }
}

/// A cached value that answered a lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit<V> {
    /// The value stored for the similar prompt.
    pub value: V,
    /// Cosine similarity of the two prompts.
    pub similarity: f32,
}

/// A lookup that found nothing; carries the embedding, so storing the answer
/// later costs no second embedding.
#[derive(Debug, Clone)]
pub struct SemanticMiss {
    query: SemanticQuery,
    embedding: Vec<f32>,
    best: Option<f32>,
}

impl SemanticMiss {
    /// A miss for an embedding computed elsewhere (warm-up from a batch
    /// embedding call, a persisted cache, benchmarks). The vector must come
    /// from the same embedder as the cache's and be unit length.
    pub fn with_embedding(query: SemanticQuery, embedding: Vec<f32>) -> Self {
        SemanticMiss {
            query,
            embedding,
            best: None,
        }
    }

    /// The best similarity seen (below the threshold, or blocked by a guard
    /// or expiry), for logs and threshold tuning.
    pub fn best_similarity(&self) -> Option<f32> {
        self.best
    }

    /// The query that missed.
    pub fn query(&self) -> &SemanticQuery {
        &self.query
    }
}

/// The outcome of [`SemanticCache::lookup`].
#[derive(Debug, Clone)]
// Not boxed: a lookup result lives for one request and its miss moves
// straight into `insert`; boxing would add an allocation to every miss.
#[allow(clippy::large_enum_variant)]
pub enum Lookup<V> {
    /// A stored prompt close enough answered.
    Hit(SemanticHit<V>),
    /// Nothing did; pass this to [`SemanticCache::insert`] with the answer.
    Miss(SemanticMiss),
}

/// A semantic cache: answers a prompt with the value stored for an earlier
/// prompt that means the same, within the same partition (model alias,
/// tenant, and everything in the request besides the last user message; see
/// [`SemanticQuery`]).
///
/// `V` is what is cached: a response, or the key of an exact-cache entry.
///
/// Concurrency: embedding (the slow part) holds no lock; a lookup holds one
/// partition's read lock only for the search, an insertion that partition's
/// write lock only for the insertion. Partitions do not contend.
pub struct SemanticCache<V> {
    embedder: Arc<dyn Embedder>,
    config: SemanticConfig,
    partitions: RwLock<HashMap<PartitionKey, Shared<V>>>,
    /// Eviction order: insertion order, with a second chance for entries hit
    /// since their last turn (CLOCK, an O(1) approximation of LRU).
    queue: Mutex<VecDeque<Record<V>>>,
    entries: AtomicUsize,
    generation: AtomicU64,
    counters: Counters,
}

impl<V> std::fmt::Debug for SemanticCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("embedder", &self.embedder.name())
            .field("config", &self.config)
            .field("entries", &self.entries.load(Ordering::Relaxed))
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone + Send + Sync> SemanticCache<V> {
    /// An empty cache using `embedder`.
    pub fn new(embedder: Arc<dyn Embedder>, config: SemanticConfig) -> Self {
        SemanticCache {
            embedder,
            config,
            partitions: RwLock::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            entries: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &SemanticConfig {
        &self.config
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn embed(&self, text: &str) -> Result<Vec<f32>, SemanticError> {
        let started = std::time::Instant::now();
        let result = self.embedder.embed(&[text]).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.embeddings.fetch_add(1, Ordering::Relaxed);
        self.counters.embed_micros.fetch_add(micros, Ordering::Relaxed);
        self.counters.embed_micros_max.fetch_max(micros, Ordering::Relaxed);
        let dim = self.embedder.dimension();
        match result?.into_iter().next() {
            Some(v) if v.len() == dim => Ok(v),
            Some(v) => Err(SemanticError::Embed(format!(
                "embedder gave {} components, expected {dim}",
                v.len()
            ))),
            None => Err(SemanticError::Embed("embedder gave no vector".into())),
        }
    }

    /// Looks for a stored prompt meaning the same as `query`'s, in its
    /// partition, at or above the threshold, unexpired, with equal guards.
    ///
    /// An error (the embedder refused or failed) means "not cached": serve
    /// the request upstream and skip the store.
    pub async fn lookup(&self, query: SemanticQuery) -> Result<Lookup<V>, SemanticError> {
        let embedding = match self.embed(&query.text).await {
            Ok(v) => v,
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let partition = read(&self.partitions).get(&query.partition).cloned();
        let mut best = None;
        if let Some(partition) = partition {
            let now = Instant::now();
            let p = read(&partition);
            let guards = self.config.guards;
            let accept = |slot: u32| {
                p.entry(slot)
                    .is_some_and(|e| !e.expired(now) && (!guards || e.guard.compatible(&query.guard)))
            };
            if let Some(&(slot, sim)) = p.index.search(&embedding, 1, &accept).first() {
                best = Some(sim);
                if sim >= self.config.threshold
                    && let Some(e) = p.entry(slot)
                {
                    e.referenced.store(true, Ordering::Relaxed);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Lookup::Hit(SemanticHit {
                        value: e.value.clone(),
                        similarity: sim,
                    }));
                }
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        Ok(Lookup::Miss(SemanticMiss { query, embedding, best }))
    }

    /// Stores `value` for the prompt that missed, for `ttl` (`None`: until
    /// evicted). Synchronous and quick: the embedding was made by the lookup.
    pub fn insert(&self, miss: SemanticMiss, value: V, ttl: Option<Duration>) {
        let SemanticMiss { query, embedding, .. } = miss;
        if embedding.len() != self.embedder.dimension() || ttl.is_some_and(|t| t.is_zero()) {
            return;
        }
        let now = Instant::now();
        let expires_at = ttl.and_then(|t| now.checked_add(t));
        let mut entry = Some(Entry {
            value,
            expires_at,
            guard: query.guard,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            referenced: AtomicBool::new(false),
        });
        loop {
            let partition = self.partition_for(&query.partition);
            let mut p = write(&partition);
            if p.retired {
                continue; // emptied and dropped meanwhile: take the new one
            }
            let Some(new) = entry.take() else { return };
            // A near-identical prompt already stored (two concurrent misses of
            // the same question): refresh it in place, keep its queue position.
            let twin = p
                .index
                .search(&embedding, 1, &|slot| {
                    p.entry(slot).is_some_and(|e| e.guard == new.guard && !e.expired(now))
                })
                .first()
                .filter(|(_, sim)| *sim >= DUPLICATE_SIMILARITY)
                .map(|&(slot, _)| slot);
            if let Some(slot) = twin
                && let Some(Some(old)) = p.slots.get_mut(slot as usize)
            {
                old.value = new.value;
                old.expires_at = new.expires_at;
                return;
            }
            let slot = match p.free.pop() {
                Some(s) => s,
                None => {
                    p.slots.push(None);
                    u32::try_from(p.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            if !p.index.insert(slot, &embedding) {
                p.free.push(slot);
                return;
            }
            let generation = new.generation;
            if let Some(s) = p.slots.get_mut(slot as usize) {
                *s = Some(new);
            }
            p.live += 1;
            drop(p);
            self.entries.fetch_add(1, Ordering::Relaxed);
            self.lock_queue().push_back(Record {
                partition,
                slot,
                generation,
            });
            break;
        }
        self.reclaim_expired_front(RECLAIM_PER_INSERT);
        while self.len() > self.config.max_entries {
            if !self.evict_one() {
                break;
            }
        }
    }

    /// [`lookup`](Self::lookup)'s embedding then [`insert`](Self::insert), for
    /// callers that did not look up first.
    pub async fn store(&self, query: SemanticQuery, value: V, ttl: Option<Duration>) -> Result<(), SemanticError> {
        let embedding = match self.embed(&query.text).await {
            Ok(v) => v,
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.insert(
            SemanticMiss {
                query,
                embedding,
                best: None,
            },
            value,
            ttl,
        );
        Ok(())
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Record<V>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn partition_for(&self, key: &PartitionKey) -> Shared<V> {
        if let Some(p) = read(&self.partitions).get(key) {
            return p.clone();
        }
        write(&self.partitions)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(RwLock::new(Partition {
                    key: key.clone(),
                    index: VectorIndex::new(self.embedder.dimension(), self.config.index),
                    slots: Vec::new(),
                    free: Vec::new(),
                    live: 0,
                    retired: false,
                }))
            })
            .clone()
    }

    /// Removes the entry a record points at, if it is still that entry.
    /// Returns whether it removed something.
    fn remove_record(&self, rec: &Record<V>, expired: bool) -> bool {
        let mut p = write(&rec.partition);
        if p.entry(rec.slot).is_none_or(|e| e.generation != rec.generation) {
            return false;
        }
        p.remove(rec.slot);
        let empty = p.live == 0;
        drop(p);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        let counter = if expired {
            &self.counters.expired
        } else {
            &self.counters.evictions
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if empty {
            self.retire_if_empty(&rec.partition);
        }
        true
    }

    /// Drops an empty partition from the map (lock order: map, then partition).
    fn retire_if_empty(&self, partition: &Shared<V>) {
        let mut map = write(&self.partitions);
        let mut p = write(partition);
        if p.live == 0 && !p.retired && map.get(&p.key).is_some_and(|a| Arc::ptr_eq(a, partition)) {
            map.remove(&p.key);
            p.retired = true;
        }
    }

    /// Evicts one entry: the oldest not hit since its last turn, or an
    /// expired one. Returns false when the queue is empty.
    fn evict_one(&self) -> bool {
        // Each record gets at most one second chance per call, so this ends.
        let mut chances = self.lock_queue().len();
        loop {
            let Some(rec) = self.lock_queue().pop_front() else {
                return false;
            };
            let (live, expired, referenced) = {
                let p = read(&rec.partition);
                match p.entry(rec.slot).filter(|e| e.generation == rec.generation) {
                    None => (false, false, false),
                    Some(e) => (
                        true,
                        e.expired(Instant::now()),
                        e.referenced.swap(false, Ordering::Relaxed),
                    ),
                }
            };
            if !live {
                continue; // stale record: the entry was already removed
            }
            if referenced && !expired && chances > 0 {
                chances -= 1;
                self.lock_queue().push_back(rec);
                continue;
            }
            if self.remove_record(&rec, expired) {
                return true;
            }
        }
    }

    /// Reclaims up to `n` expired entries at the front of the queue (the
    /// oldest insertions, which expire first when TTLs are alike).
    fn reclaim_expired_front(&self, n: usize) {
        let now = Instant::now();
        for _ in 0..n {
            let Some(rec) = self.lock_queue().pop_front() else {
                return;
            };
            let state = {
                let p = read(&rec.partition);
                p.entry(rec.slot)
                    .filter(|e| e.generation == rec.generation)
                    .map(|e| e.expired(now))
            };
            match state {
                None => {}
                Some(true) => {
                    self.remove_record(&rec, true);
                }
                Some(false) => {
                    self.lock_queue().push_front(rec);
                    return;
                }
            }
        }
    }

    /// Removes every expired entry (a full pass). Expired entries never
    /// match anyway and are reclaimed as the cache turns over; call this
    /// periodically to give their memory back sooner. Returns how many went.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let records: Vec<Record<V>> = std::mem::take(&mut *self.lock_queue()).into_iter().collect();
        let mut removed = 0;
        let mut keep = VecDeque::with_capacity(records.len());
        for rec in records {
            let state = {
                let p = read(&rec.partition);
                p.entry(rec.slot)
                    .filter(|e| e.generation == rec.generation)
                    .map(|e| e.expired(now))
            };
            match state {
                None => {}
                Some(true) if self.remove_record(&rec, true) => removed += 1,
                Some(true) => {}
                Some(false) => keep.push_back(rec),
            }
        }
        // Insertions made meanwhile went to the (emptied) queue: put the
        // survivors in front of them, preserving age order.
        let mut q = self.lock_queue();
        let newer = std::mem::take(&mut *q);
        keep.extend(newer);
        *q = keep;
        removed
    }

    /// Removes everything.
    pub fn clear(&self) {
        let map = std::mem::take(&mut *write(&self.partitions));
        for p in map.values() {
            write(p).retired = true;
        }
        self.lock_queue().clear();
        self.entries.store(0, Ordering::Relaxed);
    }

    /// The counters.
    pub fn stats(&self) -> SemanticStats {
        let c = &self.counters;
        SemanticStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            entries: self.len() as u64,
            partitions: read(&self.partitions).len() as u64,
            evictions: c.evictions.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            embeddings: c.embeddings.load(Ordering::Relaxed),
            embed_time_total: Duration::from_micros(c.embed_micros.load(Ordering::Relaxed)),
            embed_time_max: Duration::from_micros(c.embed_micros_max.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::semantic::HashEmbedder;
    use async_trait::async_trait;

    fn cache(max_entries: usize) -> SemanticCache<u32> {
        SemanticCache::new(
            Arc::new(HashEmbedder::new(64)),
            SemanticConfig {
                max_entries,
                ..SemanticConfig::default()
            },
        )
    }

    fn q(tenant: &str, text: &str) -> SemanticQuery {
        SemanticQuery::new("fast", tenant, b"system: be brief", text)
    }

    async fn get(c: &SemanticCache<u32>, query: SemanticQuery) -> Option<u32> {
        match c.lookup(query).await.unwrap() {
            Lookup::Hit(h) => Some(h.value),
            Lookup::Miss(_) => None,
        }
    }

    async fn put(c: &SemanticCache<u32>, query: SemanticQuery, v: u32, ttl: Option<Duration>) {
        c.store(query, v, ttl).await.unwrap();
    }

    /// Every text embeds to the same vector: only guards, partitions and
    /// expiry can tell entries apart.
    struct Constant;

    #[async_trait]
    impl Embedder for Constant {
        fn dimension(&self) -> usize {
            2
        }
        fn name(&self) -> &str {
            "constant"
        }
        async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        }
    }

    /// Fails, or answers with the wrong shape.
    struct Broken(bool);

    #[async_trait]
    impl Embedder for Broken {
        fn dimension(&self) -> usize {
            4
        }
        fn name(&self) -> &str {
            "broken"
        }
        async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
            if self.0 {
                Err(SemanticError::Overloaded)
            } else {
                Ok(texts.iter().map(|_| vec![1.0]).collect())
            }
        }
    }

    #[tokio::test]
    async fn hit_on_same_meaning_miss_otherwise_and_reuses_embedding() {
        let c = cache(100);
        let Lookup::Miss(miss) = c.lookup(q("a", "What is the capital of France?")).await.unwrap() else {
            panic!("empty cache hit");
        };
        assert_eq!(miss.best_similarity(), None);
        c.insert(miss, 7, None);
        // Same words, other case and punctuation: similarity 1.
        let Lookup::Hit(hit) = c.lookup(q("a", "what is the capital of france")).await.unwrap() else {
            panic!("expected a hit");
        };
        assert_eq!(hit.value, 7);
        assert!(hit.similarity > 0.999);
        let Lookup::Miss(miss) = c.lookup(q("a", "How do I bake bread?")).await.unwrap() else {
            panic!("unrelated prompt hit");
        };
        assert!(miss.best_similarity().is_some_and(|s| s < 0.92));
        let s = c.stats();
        assert_eq!(
            (s.hits, s.misses, s.entries, s.partitions, s.embeddings),
            (1, 2, 1, 1, 3)
        );
        assert!(s.embed_time_max >= s.embed_time_mean());
    }

    #[tokio::test]
    async fn never_crosses_partitions() {
        let c = cache(100);
        put(&c, q("a", "hello there"), 1, None).await;
        assert_eq!(get(&c, q("a", "hello there")).await, Some(1));
        assert_eq!(get(&c, q("b", "hello there")).await, None, "other tenant");
        assert_eq!(
            get(&c, SemanticQuery::new("smart", "a", b"system: be brief", "hello there")).await,
            None
        );
        assert_eq!(
            get(&c, SemanticQuery::new("fast", "a", b"system: be long", "hello there")).await,
            None
        );
        put(&c, q("b", "hello there"), 2, None).await;
        assert_eq!(get(&c, q("a", "hello there")).await, Some(1));
        assert_eq!(get(&c, q("b", "hello there")).await, Some(2));
        assert_eq!(c.stats().partitions, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_never_match_and_are_reclaimed() {
        let c = cache(100);
        put(&c, q("a", "first question"), 1, Some(Duration::from_secs(10))).await;
        put(&c, q("a", "second question here"), 2, Some(Duration::from_secs(100))).await;
        put(&c, q("a", "no expiry at all"), 3, None).await;
        put(&c, q("a", "zero ttl is not stored"), 4, Some(Duration::ZERO)).await;
        assert_eq!(c.len(), 3);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(get(&c, q("a", "first question")).await, Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get(&c, q("a", "first question")).await, None, "expired");
        assert_eq!(get(&c, q("a", "second question here")).await, Some(2));
        // A new insertion reclaims the expired entry at the queue's front.
        put(&c, q("a", "another one"), 5, None).await;
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().expired, 1);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(c.purge_expired(), 1);
        assert_eq!(c.len(), 2);
        assert_eq!(get(&c, q("a", "no expiry at all")).await, Some(3));
        assert_eq!(get(&c, q("a", "another one")).await, Some(5));
        // A huge TTL does not overflow.
        put(&c, q("a", "forever and ever"), 6, Some(Duration::MAX)).await;
        assert_eq!(get(&c, q("a", "forever and ever")).await, Some(6));
    }

    #[tokio::test]
    async fn bounded_by_max_entries_least_recently_used_first() {
        let c = cache(3);
        put(&c, q("a", "alpha"), 1, None).await;
        put(&c, q("b", "bravo"), 2, None).await;
        put(&c, q("a", "charlie"), 3, None).await;
        // Touch the oldest: it gets a second chance, bravo goes instead.
        assert_eq!(get(&c, q("a", "alpha")).await, Some(1));
        put(&c, q("a", "delta"), 4, None).await;
        assert_eq!(c.len(), 3);
        assert_eq!(get(&c, q("b", "bravo")).await, None);
        assert_eq!(c.stats().partitions, 1, "tenant b's emptied partition was dropped");
        assert_eq!(get(&c, q("a", "alpha")).await, Some(1));
        put(&c, q("b", "echo"), 5, None).await;
        put(&c, q("b", "foxtrot"), 6, None).await;
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evictions, 3);
        assert_eq!(get(&c, q("b", "foxtrot")).await, Some(6));
    }

    #[tokio::test]
    async fn storing_the_same_prompt_twice_replaces() {
        let c = cache(10);
        put(&c, q("a", "same prompt"), 1, None).await;
        put(&c, q("a", "Same prompt!"), 2, None).await;
        assert_eq!(c.len(), 1);
        assert_eq!(get(&c, q("a", "same prompt")).await, Some(2));
    }

    #[tokio::test]
    async fn guards_block_what_the_embedding_cannot_see() {
        let c: SemanticCache<u32> = SemanticCache::new(Arc::new(Constant), SemanticConfig::default());
        c.store(q("a", "convert 5 km to miles"), 1, None).await.unwrap();
        c.store(q("a", "turn on the light"), 2, None).await.unwrap();
        assert_eq!(c.len(), 2, "equal vectors with different guards are two entries");
        let hit = |text: &'static str| {
            let c = &c;
            async move {
                match c.lookup(q("a", text)).await.unwrap() {
                    Lookup::Hit(h) => Some(h.value),
                    Lookup::Miss(_) => None,
                }
            }
        };
        assert_eq!(hit("how many miles are 5 km").await, Some(1));
        assert_eq!(hit("convert 50 km to miles").await, None);
        assert_eq!(hit("switch on the light").await, Some(2));
        assert_eq!(hit("turn off the light").await, None);
        assert_eq!(hit("do not turn on the light").await, None);
        let off: SemanticCache<u32> = SemanticCache::new(
            Arc::new(Constant),
            SemanticConfig {
                guards: false,
                ..SemanticConfig::default()
            },
        );
        off.store(q("a", "convert 5 km to miles"), 1, None).await.unwrap();
        assert!(matches!(
            off.lookup(q("a", "convert 50 km to miles")).await,
            Ok(Lookup::Hit(_))
        ));
    }

    #[tokio::test]
    async fn embedder_failures_are_errors_not_panics() {
        for e in [Broken(true), Broken(false)] {
            let c: SemanticCache<u32> = SemanticCache::new(Arc::new(e), SemanticConfig::default());
            assert!(c.lookup(q("a", "x")).await.is_err());
            assert!(c.store(q("a", "x"), 1, None).await.is_err());
            assert_eq!(c.stats().errors, 2);
            assert!(c.is_empty());
        }
    }

    #[tokio::test]
    async fn clear_empties_everything() {
        let c = cache(10);
        put(&c, q("a", "one"), 1, None).await;
        put(&c, q("b", "two"), 2, None).await;
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.stats().partitions, 0);
        assert_eq!(get(&c, q("a", "one")).await, None);
        put(&c, q("a", "one"), 3, None).await;
        assert_eq!(get(&c, q("a", "one")).await, Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lookups_and_inserts_keep_the_bound() {
        let c = Arc::new(cache(50));
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u32 {
                    let tenant = if i % 2 == 0 { "a" } else { "b" };
                    let text = format!("question number {} about topic {}", i % 30, t % 3);
                    match c.lookup(q(tenant, &text)).await {
                        Ok(Lookup::Miss(m)) => c.insert(m, t * 1000 + i, None),
                        Ok(Lookup::Hit(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = c.stats();
        assert!(c.len() <= 50, "len {}", c.len());
        assert_eq!(s.hits + s.misses, 800);
        assert!(s.hits > 0);
        // The count agrees with the partitions' contents.
        let live: usize = read(&c.partitions).values().map(|p| read(p).live).sum();
        assert_eq!(live, c.len());
    }
}
