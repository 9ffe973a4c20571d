//! The real embedder: sentence-transformers/all-MiniLM-L6-v2 run locally with
//! candle, on a thread of its own, batching concurrent requests.

use super::SemanticError;
use super::embed::Embedder;
use super::index::normalize;
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::{mpsc, oneshot};

/// The model's name, as it appears in logs and stats.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Where tests, benches and a zero-config gateway look for the model:
/// `$BREAKWATER_EMBED_MODEL_DIR`, else
/// `${BREAKWATER_MODEL_DIR:-$HOME/.cache/breakwater/models}/all-MiniLM-L6-v2`,
/// the default destination of `scripts/fetch-embedding-model`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BREAKWATER_EMBED_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = match std::env::var_os("BREAKWATER_MODEL_DIR").filter(|d| !d.is_empty()) {
        Some(root) => PathBuf::from(root),
        None => {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".cache").join("breakwater").join("models")
        }
    };
    root.join(MODEL_NAME)
}

/// How the embedder runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniLmOptions {
    /// Tokens per text, special tokens included (the model's own limit is
    /// 512; sentence-transformers uses 256 for this model).
    pub max_tokens: usize,
    /// What to do with a longer text: `false` (the default) refuses it with
    /// [`SemanticError::InputTooLong`]; `true` embeds its first `max_tokens`
    /// tokens. The cache wants `false`: two long prompts that differ only
    /// after the cut would embed identically and match each other.
    pub truncate: bool,
    /// Texts longer than this many bytes are refused (or, with `truncate`,
    /// cut) before tokenising, so a huge prompt costs nothing.
    pub max_input_bytes: usize,
    /// Texts run through the model together, at most.
    pub max_batch: usize,
    /// Requests that may wait for the worker; past that, callers get
    /// [`SemanticError::Overloaded`] at once instead of queueing.
    pub queue_capacity: usize,
    /// Compute threads for the model. One is right on small machines that
    /// also serve requests; batching gives throughput instead.
    ///
    /// With one thread, also set `RAYON_NUM_THREADS=1` in the process
    /// environment (before it starts threads): candle reads it on every
    /// matrix product, and otherwise splits each product for as many threads
    /// as there are cores, which on one thread measured 1.3–2.3× slower
    /// (10-token prompt 11.0 → 8.6 ms, 60 tokens 51 → 22 ms). A library
    /// cannot set it safely once threads run; [`MiniLmEmbedder::load`] warns
    /// when it is missing.
    pub threads: usize,
}

impl Default for MiniLmOptions {
    fn default() -> Self {
        MiniLmOptions {
            max_tokens: 256,
            truncate: false,
            max_input_bytes: 16 * 1024,
            max_batch: 32,
            queue_capacity: 1024,
            threads: 1,
        }
    }
}

/// The model and tokenizer, used synchronously by the worker thread.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    dim: usize,
    opts: MiniLmOptions,
}

fn load_err(e: impl std::fmt::Display) -> SemanticError {
    SemanticError::ModelLoad(e.to_string())
}

fn embed_err(e: impl std::fmt::Display) -> SemanticError {
    SemanticError::Embed(e.to_string())
}

impl Model {
    fn load(dir: &Path, mut opts: MiniLmOptions) -> Result<Model, SemanticError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| SemanticError::ModelMissing {
                dir: dir.to_path_buf(),
                reason: format!("{name}: {e}"),
            })
        };
        let config_bytes = read("config.json")?;
        let tokenizer_bytes = read("tokenizer.json")?;
        let weights = read("model.safetensors")?;

        let config: Config = serde_json::from_slice(&config_bytes).map_err(load_err)?;
        opts.max_tokens = opts.max_tokens.clamp(2, config.max_position_embeddings);
        opts.max_batch = opts.max_batch.max(1);

        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes).map_err(load_err)?;
        // The packaged tokenizer.json pads and truncates every text to a fixed
        // 128 tokens; padding then dilutes the mean pool (unrelated sentences
        // score 0.75). We pad ourselves, per batch, and mask the pool.
        tokenizer.with_padding(None);
        let truncation = opts.truncate.then(|| TruncationParams {
            max_length: opts.max_tokens,
            ..TruncationParams::default()
        });
        tokenizer.with_truncation(truncation).map_err(load_err)?;

        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device).map_err(load_err)?;
        let bert = BertModel::load(vb, &config).map_err(load_err)?;
        Ok(Model {
            bert,
            tokenizer,
            device,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
            dim: config.hidden_size,
            opts,
        })
    }

    /// Token ids for one text, special tokens included, within the limits.
    fn encode(&self, text: &str) -> Result<Vec<u32>, SemanticError> {
        let text = if text.len() > self.opts.max_input_bytes {
            if !self.opts.truncate {
                return Err(SemanticError::InputTooLong {
                    len: text.len(),
                    max: self.opts.max_input_bytes,
                    unit: "bytes",
                });
            }
            cut_at_char_boundary(text, self.opts.max_input_bytes)
        } else {
            text
        };
        let enc = self.tokenizer.encode(text, true).map_err(embed_err)?;
        let ids = enc.get_ids();
        if ids.len() > self.opts.max_tokens {
            // Only reachable without truncation (the tokenizer cuts otherwise).
            return Err(SemanticError::InputTooLong {
                len: ids.len(),
                max: self.opts.max_tokens,
                unit: "tokens",
            });
        }
        Ok(ids.to_vec())
    }

    /// Embeds token sequences in one forward pass: pad to the longest, run
    /// BERT, mean-pool over the real tokens only, normalise.
    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, SemanticError> {
        let batch = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch == 0 || len == 0 {
            return Ok(vec![vec![0.0; self.dim]; batch]);
        }
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.pad_id, len - s.len()));
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.extend(std::iter::repeat_n(0u32, len - s.len()));
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
            let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
            let types = ids.zeros_like()?;
            let hidden = self.bert.forward(&ids, &types, Some(&mask))?; // (batch, len, dim)
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, len, 1)
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, dim)
            let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (batch, 1)
            summed.broadcast_div(&counts)?.to_vec2::<f32>()
        };
        let mut out = run().map_err(embed_err)?;
        for v in &mut out {
            normalize(v);
        }
        Ok(out)
    }
}

fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One text's outcome.
type Embedded = Result<Vec<f32>, SemanticError>;

/// One caller's request to the worker.
struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, SemanticError>>,
}

/// all-MiniLM-L6-v2 (384 dimensions), loaded from a local directory and run
/// on a dedicated thread, never on the async runtime's workers.
///
/// Concurrent calls queue on a channel; the worker takes everything waiting
/// (up to [`MiniLmOptions::max_batch`] texts) and runs it as one batch, so
/// under load each text costs a fraction of a lone one. Dropping the
/// embedder stops the worker once the queue is drained.
///
/// The directory must hold `config.json`, `tokenizer.json` and
/// `model.safetensors` (tensor names without a `bert.` prefix), as placed by
/// `scripts/fetch-embedding-model`. Nothing is downloaded at run time.
pub struct MiniLmEmbedder {
    tx: mpsc::Sender<Job>,
    dim: usize,
    opts: MiniLmOptions,
}

impl std::fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLmEmbedder")
            .field("dim", &self.dim)
            .field("opts", &self.opts)
            .finish()
    }
}

impl MiniLmEmbedder {
    /// Loads the model from `dir` and starts the worker thread.
    ///
    /// This blocks for about a second (reading 90 MB of weights): call it at
    /// start-up, or use [`MiniLmEmbedder::load_async`] from async code.
    pub fn load(dir: impl AsRef<Path>, opts: MiniLmOptions) -> Result<Self, SemanticError> {
        let model = Model::load(dir.as_ref(), opts)?;
        let opts = model.opts.clone();
        if opts.threads <= 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            tracing::warn!(
                "RAYON_NUM_THREADS is not set: embedding runs on one thread but candle splits its \
                 matrix products for every core, about 2x slower; set RAYON_NUM_THREADS=1"
            );
        }
        let dim = model.dim;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name(|i| format!("breakwater-embed-{i}"))
            .build()
            .map_err(load_err)?;
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        std::thread::Builder::new()
            .name("breakwater-embed".into())
            .spawn(move || worker(model, rx, pool))
            .map_err(load_err)?;
        Ok(MiniLmEmbedder { tx, dim, opts })
    }

    /// [`MiniLmEmbedder::load`] on the blocking pool, for async callers.
    pub async fn load_async(dir: impl Into<PathBuf>, opts: MiniLmOptions) -> Result<Self, SemanticError> {
        let dir = dir.into();
        tokio::task::spawn_blocking(move || Self::load(dir, opts))
            .await
            .map_err(|e| SemanticError::ModelLoad(format!("loader task failed: {e}")))?
    }

    /// The options in force (limits clamped to the model's).
    pub fn options(&self) -> &MiniLmOptions {
        &self.opts
    }
}

/// The worker thread: wait for a job, take what else is queued, run it as one
/// batch in the compute pool, answer. Ends when every sender is gone.
fn worker(model: Model, mut rx: mpsc::Receiver<Job>, pool: rayon::ThreadPool) {
    while let Some(first) = rx.blocking_recv() {
        let mut texts = first.texts.len();
        let mut jobs = vec![first];
        while texts < model.opts.max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    texts += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // A panic inside the model must not kill the worker (every later call
        // would fail): the jobs of this round are answered by their senders
        // being dropped, and the loop goes on.
        let run = std::panic::AssertUnwindSafe(|| pool.install(|| run_jobs(&model, jobs)));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("embedding worker panicked; the affected requests failed");
        }
    }
}

fn run_jobs(model: &Model, jobs: Vec<Job>) {
    // Tokenise each job's texts; a job with a bad text fails alone.
    let mut pending: Vec<(Job, Vec<Vec<u32>>)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.reply.is_closed() {
            continue; // the caller went away
        }
        match job.texts.iter().map(|t| model.encode(t)).collect::<Result<Vec<_>, _>>() {
            Ok(seqs) => pending.push((job, seqs)),
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    // Batch by similar length, so short texts are not padded to a long one.
    let mut order: Vec<(usize, usize)> = pending
        .iter()
        .enumerate()
        .flat_map(|(j, (_, seqs))| (0..seqs.len()).map(move |t| (j, t)))
        .collect();
    order.sort_by_key(|&(j, t)| pending[j].1[t].len());
    let mut results: Vec<Vec<Option<Embedded>>> = pending.iter().map(|(_, seqs)| vec![None; seqs.len()]).collect();
    for chunk in order.chunks(model.opts.max_batch) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|&(j, t)| pending[j].1[t].as_slice()).collect();
        match model.forward(&seqs) {
            Ok(vectors) => {
                for (&(j, t), v) in chunk.iter().zip(vectors) {
                    results[j][t] = Some(Ok(v));
                }
            }
            Err(e) => {
                for &(j, t) in chunk {
                    results[j][t] = Some(Err(e.clone()));
                }
            }
        }
    }
    for ((job, _), res) in pending.into_iter().zip(results) {
        let answer = res
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SemanticError::Embed("text was not embedded".into()))))
            .collect::<Result<Vec<_>, _>>();
        let _ = job.reply.send(answer);
    }
}

#[async_trait]
impl Embedder for MiniLmEmbedder {
    fn dimension(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        MODEL_NAME
    }

    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Refuse oversized texts here rather than copy them to the worker.
        if !self.opts.truncate
            && let Some(t) = texts.iter().find(|t| t.len() > self.opts.max_input_bytes)
        {
            return Err(SemanticError::InputTooLong {
                len: t.len(),
                max: self.opts.max_input_bytes,
                unit: "bytes",
            });
        }
        let texts = texts
            .iter()
            .map(|t| cut_at_char_boundary(t, self.opts.max_input_bytes).to_owned())
            .collect();
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Job { texts, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SemanticError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SemanticError::Stopped,
        })?;
        answer.await.map_err(|_| SemanticError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut_at_char_boundary("héllo", 2), "h");
        assert_eq!(cut_at_char_boundary("héllo", 3), "hé");
        assert_eq!(cut_at_char_boundary("abc", 10), "abc");
        assert_eq!(cut_at_char_boundary("", 0), "");
    }

    #[test]
    fn missing_model_says_how_to_fetch_it() {
        let err = MiniLmEmbedder::load("/nonexistent/breakwater-model", MiniLmOptions::default()).unwrap_err();
        assert!(matches!(err, SemanticError::ModelMissing { .. }));
        assert!(err.to_string().contains("scripts/fetch-embedding-model"), "{err}");
    }
}
