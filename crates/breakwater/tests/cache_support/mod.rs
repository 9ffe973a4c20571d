//! Shared helpers of the cache tests: requests, responses, and the
//! composition the client performs (lookup → coalesce → origin → store →
//! stale fallback), with a fake origin that counts its calls.

#![allow(dead_code)]

use breakwater::cache::{CacheControl, CacheOutcome, CachePlan, ExactCache, ModelCacheConfig};
use breakwater::coalesce::Coalescer;
use breakwater::types::{ChatRequest, ChatResponse, Choice, Extra, FinishReason, Message, Usage};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A deterministic request (temperature 0).
pub fn req(text: &str) -> ChatRequest {
    let mut r = ChatRequest::user("fast", text);
    r.temperature = Some(0.0);
    r
}

/// A finished answer.
pub fn response(text: &str) -> ChatResponse {
    ChatResponse {
        id: format!("chatcmpl-{}", text.len()),
        object: "chat.completion".into(),
        created: 1,
        model: "gpt-4o-mini".into(),
        choices: vec![Choice {
            index: 0,
            message: Message::assistant(text),
            finish_reason: Some(FinishReason::Stop),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(Usage::new(100, 50)),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// A fake upstream that answers "answer to <last message>" and counts calls.
#[derive(Clone, Default)]
pub struct Origin {
    pub calls: Arc<AtomicUsize>,
}

impl Origin {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn call(&self, req: ChatRequest) -> impl Future<Output = breakwater::Result<ChatResponse>> + Send + use<> {
        let calls = self.calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(response(&format!(
                "answer to {}",
                req.messages.last().map(|m| m.text()).unwrap_or_default()
            )))
        }
    }
}

/// The composition a client performs for a complete answer.
// Every argument is one input the client has at hand; bundling them would
// only hide what the composition needs.
#[allow(clippy::too_many_arguments)]
pub async fn answer<F, Fut>(
    cache: &ExactCache,
    flights: &Coalescer<Arc<ChatResponse>>,
    tenant: &str,
    alias: &str,
    model_cfg: ModelCacheConfig,
    req: ChatRequest,
    control: CacheControl,
    origin: F,
) -> breakwater::Result<(Arc<ChatResponse>, CacheOutcome)>
where
    F: FnOnce(ChatRequest) -> Fut + Send + 'static,
    Fut: Future<Output = breakwater::Result<ChatResponse>> + Send + 'static,
{
    let plan = CachePlan::decide(&req, &model_cfg, control);
    if !plan.uses_cache() {
        cache.counters().bypass();
        return Ok((Arc::new(origin(req).await?), CacheOutcome::Bypass));
    }
    let key = cache.key_for(tenant, alias, &req).await;
    if plan.read
        && let Some(hit) = cache.lookup(&key).await
    {
        return Ok((hit.response, hit.outcome));
    }
    let store_cache = cache.clone();
    let result = flights
        .run(key, move || async move {
            let resp = Arc::new(origin(req).await?);
            if plan.write {
                let _ = store_cache.store(&key, resp.clone(), &model_cfg).await;
            }
            Ok(resp)
        })
        .await;
    let outcome = if plan.read {
        CacheOutcome::Miss
    } else {
        CacheOutcome::Bypass
    };
    match result {
        Ok(resp) => Ok((resp, outcome)),
        Err(e) => match cache.lookup_stale(&key).await {
            Some(stale) => Ok((stale.response, stale.outcome)),
            None => Err(e),
        },
    }
}

/// Yields until `cond` holds: other tasks (on other worker threads too) make
/// progress meanwhile. Bounded by a generous wall-clock limit so a bug fails
/// the test instead of hanging it; nothing here sleeps.
pub async fn until(mut cond: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < give_up, "condition never held");
        tokio::task::yield_now().await;
    }
}
