//! The simulator as an in-process [`Provider`]: no sockets, same decisions
//! and timing as the HTTP simulator, faults surfacing as the errors an HTTP
//! adapter would classify them into.

use super::config::{Fault, SimulatorConfig};
use super::engine::{Mix, Plan, SimEngine};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase, TransportCause};
use crate::policy::timeout::{Timeouts, earliest, guard_stream, run_until};
use crate::provider::{CallOptions, Capabilities, ChatStream, Provider, ProviderKind};
use crate::types::*;
use async_trait::async_trait;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The route name in-process calls are counted under.
pub const ROUTE: &str = "in_process";

/// An in-process simulated LLM.
#[derive(Debug, Clone)]
pub struct Simulator {
    name: Arc<str>,
    engine: Arc<SimEngine>,
    timeouts: Timeouts,
}

impl Simulator {
    /// A simulator named `name`.
    pub fn new(name: impl Into<Arc<str>>, config: SimulatorConfig) -> Self {
        Self::with_engine(name, Arc::new(SimEngine::new(config)))
    }

    /// A simulator sharing an engine (e.g. with an HTTP simulator or a test).
    pub fn with_engine(name: impl Into<Arc<str>>, engine: Arc<SimEngine>) -> Self {
        Simulator {
            name: name.into(),
            engine,
            timeouts: Timeouts::default(),
        }
    }

    /// Sets the timeouts applied to calls, as an HTTP provider would.
    pub fn with_timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// The engine: counters, live config, scripts.
    pub fn engine(&self) -> &Arc<SimEngine> {
        &self.engine
    }

    fn fault_error(&self, fault: Fault, plan: &Plan, streaming: bool) -> Option<Error> {
        let e = match fault {
            Fault::RateLimited => Error::new(ErrorKind::RateLimited, "simulated rate limit")
                .with_status(429)
                .with_retry_after(Some(plan.retry_after)),
            Fault::ServerError => Error::new(ErrorKind::ServerError, "simulated server error").with_status(500),
            Fault::Unavailable => Error::new(ErrorKind::Overloaded, "simulated unavailability").with_status(503),
            Fault::Overloaded => Error::new(ErrorKind::Overloaded, "simulated overload").with_status(529),
            Fault::Auth => Error::new(ErrorKind::Authentication, "simulated invalid API key").with_status(401),
            Fault::Reset => Error::network(TransportCause::ConnectionReset, "simulated connection reset"),
            Fault::Malformed if !streaming => Error::new(ErrorKind::UpstreamUnparseable, "simulated malformed answer"),
            Fault::Malformed => return None,
            Fault::Hang | Fault::CutStream | Fault::Stall => return None,
        };
        Some(e.with_provider(&self.name))
    }

    fn check_context(&self, req: &ChatRequest) -> Result<()> {
        let limit = self.engine.config().context_tokens;
        if req.estimate_prompt_tokens() > limit {
            return Err(Error::new(
                ErrorKind::ContextLengthExceeded,
                format!("the prompt exceeds the simulated context of {limit} tokens"),
            )
            .with_status(400)
            .with_provider(&self.name));
        }
        Ok(())
    }
}

/// A vector for `text`: deterministic, unit length.
pub fn embed_text(seed: u64, text: &str, dims: usize) -> Vec<f32> {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Mix::new(h);
    let mut v: Vec<f32> = (0..dims.max(1)).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[async_trait]
impl Provider for Simulator {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_json_schema: true,
            assistant_prefill: true,
            embeddings: true,
            tools: true,
        }
    }

    async fn chat(&self, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse> {
        self.check_context(req)?;
        let total_at = earliest(Some(Instant::now() + self.timeouts.total()), opts.deadline);
        let plan = self.engine.plan(ROUTE, req);
        let _guard = self.engine.in_flight();
        run_until(total_at, TimeoutPhase::Total, async {
            super::wait(plan.first_token_delay).await;
            match plan.fault {
                Some(Fault::Hang) | Some(Fault::Stall) => futures::future::pending::<()>().await,
                Some(Fault::CutStream) => {
                    return Err(Error::network(TransportCause::ConnectionReset, "simulated cut answer")
                        .with_provider(&self.name));
                }
                Some(f) => {
                    if let Some(e) = self.fault_error(f, &plan, false) {
                        return Err(e);
                    }
                }
                None => {}
            }
            super::wait(plan.token_interval * plan.tokens.len() as u32).await;
            Ok(plan.response.clone())
        })
        .await
        .map_err(|e| {
            if e.provider.is_none() {
                e.with_provider(&self.name)
            } else {
                e
            }
        })
    }

    async fn chat_stream(&self, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream> {
        self.check_context(req)?;
        let now = Instant::now();
        let first_token_at = Some(now + self.timeouts.first_token());
        let total_at = earliest(Some(now + self.timeouts.total()), opts.deadline);
        let plan = self.engine.plan(ROUTE, req);
        let guard = self.engine.in_flight();
        // Errors answered instead of a stream come before any chunk.
        if let Some(f) = plan.fault
            && let Some(e) = self.fault_error(f, &plan, true)
        {
            let until = earliest(first_token_at, total_at);
            run_until(until, TimeoutPhase::FirstToken, async {
                super::wait(plan.first_token_delay).await;
                Ok(())
            })
            .await?;
            return Err(e);
        }
        self.engine.stream_started();
        let name = self.name.clone();
        let engine = self.engine.clone();
        let total = plan.chunk_count();
        let limit = match plan.fault {
            Some(Fault::CutStream | Fault::Stall | Fault::Malformed) => plan.cut_after.min(total),
            Some(Fault::Hang) => 0,
            _ => total,
        };
        let state = (0..limit, 0usize, plan, name, engine, guard, false);
        let stream = futures::stream::unfold(state, move |(mut it, n, plan, name, engine, guard, ended)| async move {
            if ended {
                return None;
            }
            let delay = if n == 0 {
                plan.first_token_delay
            } else {
                plan.token_interval
            };
            super::wait(delay).await;
            match it.next().and_then(|i| plan.chunk(i)) {
                Some(c) => Some((Ok(c), (it, n + 1, plan, name, engine, guard, false))),
                None if n == total => {
                    engine.stream_ended(true, plan.tokens.len() as u64);
                    None
                }
                None => {
                    engine.stream_ended(false, n as u64);
                    let err = match plan.fault {
                        Some(Fault::Malformed) => {
                            Error::new(ErrorKind::UpstreamUnparseable, "simulated malformed chunk").with_provider(&name)
                        }
                        Some(Fault::CutStream) => {
                            Error::network(TransportCause::Truncated, "simulated cut stream").with_provider(&name)
                        }
                        _ => {
                            // Hang or stall: stay open, send nothing.
                            futures::future::pending::<()>().await;
                            unreachable!("pending never resolves")
                        }
                    };
                    Some((Err(err), (it, n, plan, name, engine, guard, true)))
                }
            }
        });
        Ok(guard_stream(
            Box::pin(stream.fuse()),
            first_token_at,
            Some(self.timeouts.idle()),
            total_at,
        ))
    }

    async fn embed(&self, req: &EmbeddingRequest, opts: &CallOptions) -> Result<EmbeddingResponse> {
        let texts: Vec<String> = match &req.input {
            EmbeddingInput::One(s) => vec![s.clone()],
            EmbeddingInput::Many(v) => v.clone(),
            EmbeddingInput::Tokens(t) => vec![format!("{t:?}")],
            EmbeddingInput::TokenBatches(b) => b.iter().map(|t| format!("{t:?}")).collect(),
        };
        if texts.is_empty() {
            return Err(Error::invalid_param("input", "nothing to embed"));
        }
        let total_at = earliest(Some(Instant::now() + self.timeouts.total()), opts.deadline);
        let (fault, delay, retry) = self.engine.plan_embed(ROUTE);
        let _guard = self.engine.in_flight();
        let seed = self.engine.config().seed;
        run_until(total_at, TimeoutPhase::Total, async {
            super::wait(delay).await;
            if let Some(f) = fault {
                if matches!(f, Fault::Hang | Fault::Stall) {
                    futures::future::pending::<()>().await;
                }
                let plan_like = Plan {
                    fault: Some(f),
                    first_token_delay: Duration::ZERO,
                    token_interval: Duration::ZERO,
                    response: ChatResponse {
                        id: String::new(),
                        object: String::new(),
                        created: 0,
                        model: String::new(),
                        choices: vec![],
                        usage: None,
                        system_fingerprint: None,
                        extra: Extra::new(),
                    },
                    tokens: vec![],
                    retry_after: retry,
                    cut_after: 0,
                    seq: 0,
                };
                return Err(self.fault_error(f, &plan_like, false).unwrap_or_else(|| {
                    Error::network(TransportCause::ConnectionReset, "simulated cut answer").with_provider(&self.name)
                }));
            }
            let dims = req.dimensions.unwrap_or(64) as usize;
            let tokens: u32 = texts.iter().map(|t| t.len().div_ceil(4).max(1) as u32).sum();
            Ok(EmbeddingResponse {
                object: "list".into(),
                data: texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Embedding::new(i as u32, embed_text(seed, t, dims)))
                    .collect(),
                model: req.model.clone(),
                usage: EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
                extra: Extra::new(),
            })
        })
        .await
    }

    async fn probe(&self, _opts: &CallOptions) -> Result<()> {
        let (fault, _, retry) = self.engine.plan_embed("probe");
        match fault {
            None => Ok(()),
            Some(Fault::Hang | Fault::Stall) => Err(Error::timeout(TimeoutPhase::Total, "simulated hang")),
            Some(f) => {
                let mut e = Error::new(ErrorKind::ServerError, format!("simulated {} on probe", f.as_str()));
                e.retry_after = Some(retry);
                Err(e.with_provider(&self.name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::{Faults, ScriptStep};

    fn step(fault: Option<Fault>) -> ScriptStep {
        ScriptStep {
            fault,
            reply: None,
            tool_call: None,
            latency_ms: None,
            retry_after_s: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stream_equals_plain_answer() {
        let sim = Simulator::new("sim", SimulatorConfig::default());
        let req = ChatRequest::user("m", "tell me");
        let plain = sim.chat(&req, &CallOptions::default()).await.unwrap();
        let mut s = sim.chat_stream(&req, &CallOptions::default()).await.unwrap();
        let mut a = StreamAssembler::new();
        while let Some(c) = s.next().await {
            a.push(&c.unwrap());
        }
        assert_eq!(a.finish().text(), plain.text());
        let st = sim.engine().stats();
        assert_eq!((st.requests, st.streams_started, st.streams_completed), (2, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn faults_become_classified_errors() {
        let sim = Simulator::new("sim", SimulatorConfig::default());
        let cases = [
            (Fault::RateLimited, ErrorKind::RateLimited),
            (Fault::ServerError, ErrorKind::ServerError),
            (Fault::Unavailable, ErrorKind::Overloaded),
            (Fault::Overloaded, ErrorKind::Overloaded),
            (Fault::Auth, ErrorKind::Authentication),
            (Fault::Reset, ErrorKind::Network),
            (Fault::Malformed, ErrorKind::UpstreamUnparseable),
            (Fault::Hang, ErrorKind::Timeout),
        ];
        for (fault, kind) in cases {
            sim.engine().push_script([step(Some(fault))]);
            let e = sim
                .chat(&ChatRequest::user("m", "x"), &CallOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind, kind, "{fault:?}");
            assert_eq!(e.provider.as_deref(), Some("sim"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stream_faults() {
        let sim = Simulator::new("sim", SimulatorConfig::default()).with_timeouts(Timeouts {
            idle_ms: 1000,
            ..Default::default()
        });
        for (fault, kind, phase) in [
            (Fault::CutStream, ErrorKind::Network, None),
            (Fault::Malformed, ErrorKind::UpstreamUnparseable, None),
            (Fault::Stall, ErrorKind::Timeout, Some(TimeoutPhase::Idle)),
            (Fault::Hang, ErrorKind::Timeout, Some(TimeoutPhase::FirstToken)),
        ] {
            sim.engine().push_script([step(Some(fault))]);
            let mut s = sim
                .chat_stream(&ChatRequest::user("m", "x"), &CallOptions::default())
                .await
                .unwrap();
            let mut ok = 0;
            let err = loop {
                match s.next().await {
                    Some(Ok(_)) => ok += 1,
                    Some(Err(e)) => break e,
                    None => panic!("{fault:?}: stream ended cleanly"),
                }
            };
            assert_eq!(
                (err.kind, err.phase.filter(|_| phase.is_some())),
                (kind, phase),
                "{fault:?}"
            );
            if fault != Fault::Hang {
                assert_eq!(ok, 3, "{fault:?} cut after 3 chunks");
            }
            assert!(s.next().await.is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_a_hang() {
        let sim = Simulator::new(
            "sim",
            SimulatorConfig {
                faults: Faults {
                    hang: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let start = Instant::now();
        let opts = CallOptions {
            deadline: Some(start + Duration::from_millis(300)),
            request_id: None,
        };
        let e = sim.chat(&ChatRequest::user("m", "x"), &opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn embeddings_are_deterministic_unit_vectors() {
        let sim = Simulator::new("sim", SimulatorConfig::instant());
        let req = EmbeddingRequest::new("e", vec!["a".into(), "b".into(), "a".into()]);
        let r = sim.embed(&req, &CallOptions::default()).await.unwrap();
        let v = |i: usize| match &r.data[i].embedding {
            EmbeddingVector::Float(v) => v.clone(),
            EmbeddingVector::Base64(_) => panic!("float expected"),
        };
        assert_eq!(v(0), v(2));
        assert_ne!(v(0), v(1));
        assert!((v(0).iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    }
}
