//! The semantic cache with the real embedding model (all-MiniLM-L6-v2).
//!
//! The model is not in the repository: `scripts/fetch-embedding-model` puts
//! it in place (CI runs it first). Without it these tests fail, saying so.

use breakwater::cache::semantic::{
    Embedder, Guard, Lookup, MiniLmEmbedder, MiniLmOptions, SemanticCache, SemanticConfig, SemanticError,
    SemanticQuery, default_model_dir, dot,
};
use breakwater::types::{ChatRequest, Message};
use std::sync::{Arc, OnceLock};

/// One model per test binary: loading takes a second, and the embedder's
/// worker is a plain thread that serves every test's runtime.
fn model() -> Arc<MiniLmEmbedder> {
    static MODEL: OnceLock<Arc<MiniLmEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = default_model_dir();
            match MiniLmEmbedder::load(&dir, MiniLmOptions::default()) {
                Ok(m) => Arc::new(m),
                Err(e) => panic!(
                    "the embedding model is needed at {}: run scripts/fetch-embedding-model \
                     (or set BREAKWATER_EMBED_MODEL_DIR). Error: {e}",
                    dir.display()
                ),
            }
        })
        .clone()
}

async fn embed1(e: &MiniLmEmbedder, text: &str) -> Vec<f32> {
    e.embed(&[text]).await.unwrap().remove(0)
}

#[tokio::test]
async fn semantic_vectors_are_384_dimensional_unit_and_meaningful() {
    let e = model();
    assert_eq!(e.dimension(), 384);
    let v = e
        .embed(&[
            "How do I reverse a list in Python?",
            "What is the way to reverse a Python list?",
            "The cat sat on the mat in the sun.",
        ])
        .await
        .unwrap();
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((dot(x, x) - 1.0).abs() < 1e-4);
    }
    let para = dot(&v[0], &v[1]);
    let unrelated = dot(&v[0], &v[2]);
    assert!(para > 0.85, "paraphrase {para}");
    assert!(unrelated < 0.3, "unrelated {unrelated}");
}

#[tokio::test]
async fn semantic_batching_and_padding_do_not_change_vectors() {
    // A short text batched with a long one is padded; the masked pool must
    // make that invisible.
    let e = model();
    let short = "Lock the door.";
    let long = "Please give me a detailed, step by step explanation of how public key cryptography \
                works, including key exchange, signatures and certificate chains.";
    let alone = embed1(&e, short).await;
    let batched = e.embed(&[long, short]).await.unwrap();
    assert!(dot(&alone, &batched[1]) > 0.9999, "{}", dot(&alone, &batched[1]));
    // Concurrent callers are batched by the worker, with the same result.
    let texts: Vec<String> = (0..40)
        .map(|i| format!("question number {i} about the weather"))
        .collect();
    let futs = texts.iter().map(|t| {
        let e = e.clone();
        async move { e.embed(&[t.as_str()]).await }
    });
    let together = futures::future::join_all(futs).await;
    for (t, got) in texts.iter().zip(together) {
        let got = got.unwrap().remove(0);
        let solo = embed1(&e, t).await;
        assert!(dot(&got, &solo) > 0.9999);
    }
}

#[tokio::test]
async fn semantic_no_panic_on_odd_input_and_long_input_is_refused() {
    let e = model();
    let odd = [
        "",
        " ",
        "\u{0}",
        "🦀🦀🦀",
        "ünïcödé ＦＵＬＬＷＩＤＴＨ",
        "مرحبا بالعالم",
        "日本語のテキスト",
        "\u{202e}reversed\u{feff}",
        "a\u{301}\u{301}\u{301}",
    ];
    let v = e.embed(&odd).await.unwrap();
    assert_eq!(v.len(), odd.len());
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!(x.iter().all(|c| c.is_finite()));
    }
    assert!(e.embed(&[]).await.unwrap().is_empty());

    // Past 256 tokens: refused, because truncating would let two prompts
    // that differ only at the end match each other.
    let long = "word ".repeat(300);
    let err = e.embed(&[&long]).await.unwrap_err();
    assert!(
        matches!(err, SemanticError::InputTooLong { unit: "tokens", .. }),
        "{err}"
    );
    let huge = "x".repeat(1 << 20);
    let err = e.embed(&[&huge]).await.unwrap_err();
    assert!(
        matches!(err, SemanticError::InputTooLong { unit: "bytes", .. }),
        "{err}"
    );
    // A bad text fails its own call only; the worker carries on.
    assert_eq!(embed1(&e, "still working").await.len(), 384);
    let long_word = "x".repeat(10_000); // one [UNK] token
    assert_eq!(embed1(&e, &long_word).await.len(), 384);
}

#[tokio::test]
async fn semantic_truncation_option_embeds_the_head() {
    let dir = default_model_dir();
    let e = MiniLmEmbedder::load(
        &dir,
        MiniLmOptions {
            truncate: true,
            max_tokens: 16,
            ..MiniLmOptions::default()
        },
    )
    .unwrap_or_else(|err| panic!("run scripts/fetch-embedding-model: {err}"));
    let a = embed1(&e, &format!("{} alpha", "word ".repeat(100))).await;
    let b = embed1(&e, &format!("{} omega", "word ".repeat(100))).await;
    assert!(dot(&a, &b) > 0.9999, "only the first 16 tokens count");
}

#[tokio::test]
async fn semantic_cache_end_to_end_with_chat_requests() {
    let cache: SemanticCache<String> = SemanticCache::new(model(), SemanticConfig::default());
    let ask = |text: &str| ChatRequest {
        model: "fast".into(),
        messages: vec![Message::system("You are a helpful assistant."), Message::user(text)],
        ..Default::default()
    };
    let q = |tenant: &str, text: &str| SemanticQuery::from_chat("fast", tenant, &ask(text)).unwrap();

    let Lookup::Miss(miss) = cache
        .lookup(q("team-a", "What is the capital of France?"))
        .await
        .unwrap()
    else {
        panic!("hit in an empty cache");
    };
    cache.insert(miss, "Paris.".into(), None);

    match cache
        .lookup(q("team-a", "What's France's capital city?"))
        .await
        .unwrap()
    {
        Lookup::Hit(hit) => {
            assert_eq!(hit.value, "Paris.");
            assert!(hit.similarity >= 0.92);
        }
        Lookup::Miss(m) => panic!("paraphrase missed, best {:?}", m.best_similarity()),
    }
    for (tenant, text) in [
        ("team-b", "What's France's capital city?"),
        ("team-a", "What is the capital of Germany?"),
        ("team-a", "How do I bake sourdough bread?"),
    ] {
        assert!(
            matches!(cache.lookup(q(tenant, text)).await.unwrap(), Lookup::Miss(_)),
            "{tenant}: {text}"
        );
    }
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 4, 1));
    assert!(s.embed_time_mean() > std::time::Duration::ZERO);
}

// ---- precision / recall over the labelled pairs -------------------------------------

#[derive(serde::Deserialize)]
struct Pair {
    a: String,
    b: String,
    same: bool,
    kind: String,
}

struct Scored {
    sim: f32,
    guard_ok: bool,
    same: bool,
    kind: String,
    a: String,
    b: String,
}

impl Scored {
    fn copy(&self) -> Scored {
        Scored {
            sim: self.sim,
            guard_ok: self.guard_ok,
            same: self.same,
            kind: self.kind.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

fn count(scored: &[Scored], threshold: f32, guards: bool) -> Counts {
    let mut c = Counts::default();
    for s in scored {
        let predicted = s.sim >= threshold && (!guards || s.guard_ok);
        match (predicted, s.same) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => {}
        }
    }
    c
}

async fn score_file(name: &str) -> Vec<Scored> {
    let path = format!("{}/tests/data/semantic/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let pairs: Vec<Pair> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}")))
        .collect();
    let e = model();
    let mut texts = Vec::new();
    for p in &pairs {
        texts.push(p.a.as_str());
        texts.push(p.b.as_str());
    }
    let vectors = e.embed(&texts).await.unwrap();
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| Scored {
            sim: dot(&vectors[2 * i], &vectors[2 * i + 1]),
            guard_ok: Guard::of(&p.a).compatible(&Guard::of(&p.b)),
            same: p.same,
            kind: p.kind.clone(),
            a: p.a.clone(),
            b: p.b.clone(),
        })
        .collect()
}

/// Prints the precision/recall table and the interesting pairs.
fn report(name: &str, scored: &[Scored]) {
    let positives = scored.iter().filter(|s| s.same).count();
    println!(
        "\n== {name}: {} pairs, {} paraphrases, {} hard non-paraphrases",
        scored.len(),
        positives,
        scored.len() - positives
    );
    println!("threshold | model alone: precision recall (FP) | with guards: precision recall (FP)");
    for t in [0.80f32, 0.85, 0.88, 0.90, 0.92, 0.95] {
        let raw = count(scored, t, false);
        let g = count(scored, t, true);
        println!(
            "   {t:.2}   |        {:.3}   {:.3}  ({:>2})       |        {:.3}   {:.3}  ({:>2})",
            raw.precision(),
            raw.recall(),
            raw.fp,
            g.precision(),
            g.recall(),
            g.fp
        );
    }
    println!("non-paraphrases scoring >= 0.85 (guard verdict):");
    for s in scored.iter().filter(|s| !s.same && s.sim >= 0.85) {
        let verdict = if s.guard_ok { "PASSES" } else { "blocked" };
        println!("  {:.3} [{}] {verdict}: {:?} / {:?}", s.sim, s.kind, s.a, s.b);
    }
    println!("paraphrases missed at 0.92 (similarity, guard):");
    for s in scored.iter().filter(|s| s.same && (s.sim < 0.92 || !s.guard_ok)) {
        let verdict = if s.guard_ok { "" } else { " blocked by guard" };
        println!("  {:.3}{verdict}: {:?} / {:?}", s.sim, s.a, s.b);
    }
}

/// Runs the model over the labelled pairs (paraphrases and hard
/// non-paraphrases: other numbers, entities, directions, negations), prints
/// precision and recall per threshold, with and without the lexical guards
/// (`cargo test -p breakwater --test semantic_model precision -- --nocapture`).
///
/// `pairs.jsonl` is the development set: the guards were designed from its
/// failures. `pairs_holdout.jsonl` was written next and scored blind (0.80
/// precision at 0.92), then used for one more guard (names), so it is no
/// longer blind. `pairs_holdout2.jsonl` was written after that and is the
/// honest estimate.
///
/// What the numbers say: the model alone cannot tell "convert 5 km to miles"
/// from "convert 5 miles to km" (0.99) — mean pooling barely sees word
/// order — so no threshold gives good precision on its own (0.62 at 0.92).
/// Guards lift that to 0.92 at 0.92 and 0.96 at 0.95. Wrong hits are the
/// costly error (a wrong answer served to a user; a miss costs one upstream
/// call), hence the bars: at 0.95, the proposed default, precision ≥ 0.95
/// overall and no false hit on the blind set; at the configured 0.92,
/// precision ≥ 0.90 with guards (a regression fence). Recall floors only
/// show the cache still does something.
#[tokio::test]
async fn semantic_precision_and_recall_on_labelled_pairs() {
    let dev = score_file("pairs.jsonl").await;
    let seen = score_file("pairs_holdout.jsonl").await;
    let blind = score_file("pairs_holdout2.jsonl").await;
    report("pairs.jsonl (development)", &dev);
    report(
        "pairs_holdout.jsonl (scored blind once, then used for the names guard)",
        &seen,
    );
    report("pairs_holdout2.jsonl (blind)", &blind);
    let all: Vec<Scored> = dev
        .into_iter()
        .chain(seen)
        .chain(blind.iter().map(Scored::copy))
        .collect();
    assert!(all.len() >= 60);
    report("all sets", &all);

    let proposed = count(&all, 0.95, true);
    assert!(
        proposed.precision() >= 0.95,
        "precision {:.3} at 0.95",
        proposed.precision()
    );
    assert!(proposed.recall() >= 0.2, "recall {:.3} at 0.95", proposed.recall());
    let blind_at = count(&blind, 0.95, true);
    assert_eq!(blind_at.fp, 0, "false hits on the blind set at 0.95");
    let configured = count(&all, SemanticConfig::default().threshold, true);
    assert!(
        configured.precision() >= 0.90,
        "precision {:.3} at 0.92",
        configured.precision()
    );
    assert!(configured.recall() >= 0.4, "recall {:.3} at 0.92", configured.recall());
}
