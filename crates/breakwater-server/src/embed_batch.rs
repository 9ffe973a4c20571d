//! Embedding micro-batching: single-input requests for the same model that
//! arrive within a few milliseconds go upstream as one call and are split
//! back. Upstreams charge per token, not per call, so this saves round trips
//! and rate-limit requests without changing the answers.

use breakwater::client::{CallMeta, Client, Failure, RequestOptions};
use breakwater::types::{Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Reply = Result<(EmbeddingResponse, CallMeta), Failure>;

struct Pending {
    req: EmbeddingRequest,
    opts: RequestOptions,
    reply: oneshot::Sender<Reply>,
}

/// Groups single-input embedding requests.
#[derive(Clone)]
pub struct EmbedBatcher {
    client: Client,
    tx: Option<mpsc::Sender<Pending>>,
}

/// What may share an upstream call: same model, dimensions and encoding.
#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    model: String,
    dimensions: Option<u32>,
    encoding: Option<String>,
}

impl EmbedBatcher {
    /// A batcher that waits `window` for company, up to `max` inputs per
    /// call; a zero window turns batching off. Must be created inside a
    /// tokio runtime.
    pub fn new(client: Client, window: Duration, max: usize) -> Self {
        if window.is_zero() || max < 2 || tokio::runtime::Handle::try_current().is_err() {
            return EmbedBatcher { client, tx: None };
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(client.clone(), rx, window, max));
        EmbedBatcher { client, tx: Some(tx) }
    }

    /// Embeds, batching single text inputs with others.
    pub async fn embed(&self, req: EmbeddingRequest, opts: RequestOptions) -> Reply {
        let single = matches!(&req.input, EmbeddingInput::One(_))
            || matches!(&req.input, EmbeddingInput::Many(v) if v.len() == 1);
        // Unknown fields might change the answer: those go alone.
        let Some(tx) = self.tx.as_ref().filter(|_| single && req.extra.is_empty()) else {
            return self.client.embed(req, opts).await;
        };
        let (reply, rx) = oneshot::channel();
        let fallback = (req.clone(), opts.clone());
        if tx.send(Pending { req, opts, reply }).await.is_err() {
            return self.client.embed(fallback.0, fallback.1).await;
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => self.client.embed(fallback.0, fallback.1).await,
        }
    }
}

fn text_of(req: &EmbeddingRequest) -> String {
    match &req.input {
        EmbeddingInput::One(s) => s.clone(),
        EmbeddingInput::Many(v) => v.first().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

async fn run(client: Client, mut rx: mpsc::Receiver<Pending>, window: Duration, max: usize) {
    while let Some(first) = rx.recv().await {
        let mut groups: HashMap<GroupKey, Vec<Pending>> = HashMap::new();
        let key = |p: &Pending| GroupKey {
            model: p.req.model.clone(),
            dimensions: p.req.dimensions,
            encoding: p.req.encoding_format.clone(),
        };
        groups.entry(key(&first)).or_default().push(first);
        let until = tokio::time::Instant::now() + window;
        let mut n = 1;
        while n < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(p)) => {
                    groups.entry(key(&p)).or_default().push(p);
                    n += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        for (_, group) in groups {
            tokio::spawn(flush(client.clone(), group));
        }
    }
}

async fn flush(client: Client, group: Vec<Pending>) {
    if group.len() == 1 {
        if let Some(p) = group.into_iter().next() {
            let r = client.embed(p.req, p.opts).await;
            let _ = p.reply.send(r);
        }
        return;
    }
    let mut req = group[0].req.clone();
    let texts: Vec<String> = group.iter().map(|p| text_of(&p.req)).collect();
    req.input = EmbeddingInput::Many(texts.clone());
    // The earliest deadline of the group bounds the shared call.
    let mut opts = group[0].opts.clone();
    opts.deadline = group.iter().filter_map(|p| p.opts.deadline).min();
    opts.timeout = group.iter().filter_map(|p| p.opts.timeout).min();
    match client.embed(req, opts).await {
        Ok((resp, meta)) => {
            let total_chars: usize = texts.iter().map(String::len).sum::<usize>().max(1);
            for (i, p) in group.into_iter().enumerate() {
                let Some(e) = resp.data.iter().find(|d| d.index as usize == i) else {
                    let _ = p.reply.send(Err(Failure {
                        error: breakwater::Error::new(
                            breakwater::ErrorKind::UpstreamUnparseable,
                            "the upstream returned fewer embeddings than inputs",
                        ),
                        meta: Box::new(meta.clone()),
                    }));
                    continue;
                };
                // Usage is shared out by input length.
                let share = |t: u32| (u64::from(t) * texts[i].len() as u64 / total_chars as u64) as u32;
                let one = EmbeddingResponse {
                    object: resp.object.clone(),
                    data: vec![Embedding {
                        object: e.object.clone(),
                        index: 0,
                        embedding: e.embedding.clone(),
                    }],
                    model: resp.model.clone(),
                    usage: EmbeddingUsage {
                        prompt_tokens: share(resp.usage.prompt_tokens).max(1),
                        total_tokens: share(resp.usage.total_tokens).max(1),
                    },
                    extra: resp.extra.clone(),
                };
                let _ = p.reply.send(Ok((one, meta.clone())));
            }
        }
        Err(f) => {
            for p in group {
                let _ = p.reply.send(Err(f.clone()));
            }
        }
    }
}
