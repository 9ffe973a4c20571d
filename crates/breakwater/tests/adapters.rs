//! Every adapter over real HTTP against the simulator server: plain reply,
//! streamed reply (reassembled text equals the plain one), tool call,
//! embeddings, and each injected fault mapping to the right ErrorKind.

use breakwater::error::{ErrorKind, TimeoutPhase, TransportCause};
use breakwater::policy::timeout::Timeouts;
use breakwater::provider::anthropic::Anthropic;
use breakwater::provider::gemini::Gemini;
use breakwater::provider::openai::OpenAi;
use breakwater::provider::{CallOptions, DynProvider, HttpSettings};
use breakwater::simulator::{Fault, ScriptStep, SimulatorConfig};
use breakwater::types::*;
use breakwater_simulator::SimServer;
use breakwater_testkit::RawServer;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAi,
    Anthropic,
    Gemini,
}

const ALL: [Kind; 3] = [Kind::OpenAi, Kind::Anthropic, Kind::Gemini];

fn timeouts() -> Timeouts {
    Timeouts {
        connect_ms: 1000,
        first_token_ms: 2000,
        idle_ms: 300,
        total_ms: 800,
    }
}

fn provider(kind: Kind, sim: &SimServer, key: &str) -> DynProvider {
    let s = |base: String| HttpSettings::new(base).api_key(key).timeouts(timeouts());
    match kind {
        Kind::OpenAi => Arc::new(OpenAi::new("openai-sim", &s(sim.openai_base())).unwrap()),
        Kind::Anthropic => Arc::new(Anthropic::new("anthropic-sim", &s(sim.anthropic_base())).unwrap()),
        Kind::Gemini => Arc::new(Gemini::new("gemini-sim", &s(sim.gemini_base())).unwrap()),
    }
}

async fn sim() -> SimServer {
    SimServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        SimulatorConfig::instant(),
        Some("sk-test".into()),
    )
    .await
    .unwrap()
}

fn step(fault: Fault) -> ScriptStep {
    ScriptStep {
        fault: Some(fault),
        reply: None,
        tool_call: None,
        latency_ms: None,
        retry_after_s: Some(2),
    }
}

async fn collect(p: &DynProvider, req: &ChatRequest) -> Result<(ChatResponse, usize), breakwater::Error> {
    let mut s = p.chat_stream(req, &CallOptions::default()).await?;
    let mut a = StreamAssembler::new();
    let mut n = 0;
    while let Some(c) = s.next().await {
        a.push(&c?);
        n += 1;
    }
    Ok((a.finish(), n))
}

#[tokio::test]
async fn plain_and_streamed_replies_agree() {
    let sim = sim().await;
    for kind in ALL {
        let p = provider(kind, &sim, "sk-test");
        let req = ChatRequest::user("sim-1", "say something steady");
        let plain = p.chat(&req, &CallOptions::default()).await.unwrap();
        assert!(!plain.text().is_empty(), "{kind:?}");
        assert_eq!(plain.finish_reason(), Some(&FinishReason::Stop), "{kind:?}");
        let u = plain.usage.clone().unwrap();
        assert!(u.prompt_tokens > 0 && u.completion_tokens > 0, "{kind:?}");
        let (streamed, chunks) = collect(&p, &req).await.unwrap();
        assert!(chunks > 3, "{kind:?} streamed in pieces");
        assert_eq!(streamed.text(), plain.text(), "{kind:?}");
        assert_eq!(streamed.finish_reason(), Some(&FinishReason::Stop), "{kind:?}");
        assert_eq!(
            streamed.usage.map(|u| u.completion_tokens),
            Some(u.completion_tokens),
            "{kind:?}"
        );
    }
    let st = sim.stats();
    assert_eq!(st.requests, 6);
    assert_eq!(st.streams_completed, 3);
    for route in ["openai", "anthropic", "gemini"] {
        assert_eq!(st.by_route.get(route), Some(&2), "{route}");
    }
}

fn tool_request() -> ChatRequest {
    let mut req = ChatRequest::user("sim-1", "dim the lights");
    req.tools = Some(vec![Tool::function(
        "set_brightness",
        "Set a light's brightness",
        json!({"type": "object", "properties": {"device": {"type": "string", "enum": ["lamp"]}, "level": {"type": "integer", "minimum": 0, "maximum": 100}}, "required": ["device", "level"]}),
    )]);
    req.tool_choice = Some(ToolChoice::Required);
    req
}

#[tokio::test]
async fn tool_calls_plain_and_streamed() {
    let sim = sim().await;
    for kind in ALL {
        let p = provider(kind, &sim, "sk-test");
        let req = tool_request();
        let plain = p.chat(&req, &CallOptions::default()).await.unwrap();
        let (streamed, _) = collect(&p, &req).await.unwrap();
        for r in [&plain, &streamed] {
            assert_eq!(r.finish_reason(), Some(&FinishReason::ToolCalls), "{kind:?}");
            let call = &r.tool_calls()[0];
            assert_eq!(call.function.name, "set_brightness");
            let args: serde_json::Value = serde_json::from_str(&call.function.arguments).unwrap();
            assert_eq!(args["device"], "lamp", "{kind:?}");
            assert!((0..=100).contains(&args["level"].as_i64().unwrap()));
        }
        // The tool result goes back and a text answer comes.
        let mut follow = req.clone();
        let call = plain.tool_calls()[0].clone();
        let mut asst = Message::assistant("");
        asst.content = None;
        asst.tool_calls = Some(vec![call.clone()]);
        follow.messages.push(asst);
        follow.messages.push(Message::tool(call.id, "{\"ok\": true}"));
        follow.tool_choice = Some(ToolChoice::Auto);
        let answer = p.chat(&follow, &CallOptions::default()).await.unwrap();
        assert!(answer.tool_calls().is_empty(), "{kind:?}");
        assert!(!answer.text().is_empty());
    }
}

#[tokio::test]
async fn faults_map_to_kinds() {
    let sim = sim().await;
    let cases = [
        (Fault::RateLimited, ErrorKind::RateLimited),
        (Fault::ServerError, ErrorKind::ServerError),
        (Fault::Unavailable, ErrorKind::Overloaded),
        (Fault::Overloaded, ErrorKind::Overloaded),
        (Fault::Auth, ErrorKind::Authentication),
        (Fault::Reset, ErrorKind::Network),
        (Fault::Malformed, ErrorKind::UpstreamUnparseable),
        (Fault::CutStream, ErrorKind::Network),
        (Fault::Hang, ErrorKind::Timeout),
        (Fault::Stall, ErrorKind::Timeout),
    ];
    for kind in ALL {
        let p = provider(kind, &sim, "sk-test");
        for (fault, expected) in cases {
            sim.engine().push_script([step(fault)]);
            let e = p
                .chat(&ChatRequest::user("sim-1", "x"), &CallOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind, expected, "{kind:?} {fault:?}: {e}");
            assert!(e.provider.is_some(), "{kind:?} {fault:?} names the provider");
            if fault == Fault::RateLimited {
                assert_eq!(e.retry_after, Some(Duration::from_secs(2)), "{kind:?}");
                assert_eq!(e.status, Some(429));
            }
            if fault == Fault::Overloaded && matches!(kind, Kind::Anthropic) {
                assert_eq!(e.status, Some(529));
            }
            if fault == Fault::Reset {
                assert_eq!(e.cause, Some(TransportCause::ConnectionReset), "{kind:?}: {e}");
            }
        }
    }
}

#[tokio::test]
async fn stream_faults_never_look_like_success() {
    let sim = sim().await;
    let cases = [
        (Fault::CutStream, ErrorKind::Network, None),
        (Fault::Malformed, ErrorKind::UpstreamUnparseable, None),
        (Fault::Stall, ErrorKind::Timeout, Some(TimeoutPhase::Idle)),
        (Fault::Hang, ErrorKind::Timeout, Some(TimeoutPhase::FirstToken)),
        (Fault::RateLimited, ErrorKind::RateLimited, None),
        (Fault::Reset, ErrorKind::Network, None),
    ];
    for kind in ALL {
        let p = provider(kind, &sim, "sk-test");
        for (fault, expected, phase) in cases {
            sim.engine().push_script([step(fault)]);
            let req = ChatRequest::user("sim-1", "a long story please");
            let opts = CallOptions {
                deadline: Some(
                    tokio::time::Instant::now() + Duration::from_millis(if fault == Fault::Hang { 400 } else { 5000 }),
                ),
                request_id: None,
            };
            let res = async {
                let mut s = p.chat_stream(&req, &opts).await?;
                let mut n = 0;
                while let Some(c) = s.next().await {
                    c?;
                    n += 1;
                }
                Ok::<usize, breakwater::Error>(n)
            }
            .await;
            let e = res.expect_err(&format!("{kind:?} {fault:?} must fail"));
            assert_eq!(e.kind, expected, "{kind:?} {fault:?}: {e}");
            if let Some(ph) = phase {
                // A hang before headers is bounded by the deadline or the first-token clock.
                if fault == Fault::Stall {
                    assert_eq!(e.phase, Some(ph), "{kind:?}: {e}");
                } else {
                    assert!(
                        matches!(e.phase, Some(TimeoutPhase::FirstToken | TimeoutPhase::Total)),
                        "{kind:?}: {e}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn wrong_key_is_authentication() {
    let sim = sim().await;
    for kind in ALL {
        let p = provider(kind, &sim, "sk-wrong");
        let e = p
            .chat(&ChatRequest::user("sim-1", "x"), &CallOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Authentication, "{kind:?}: {e}");
        assert!(!e.to_string().contains("sk-wrong"), "the key never appears in errors");
    }
}

#[tokio::test]
async fn embeddings_and_probes() {
    let sim = sim().await;
    for kind in [Kind::OpenAi, Kind::Gemini] {
        let p = provider(kind, &sim, "sk-test");
        let req = EmbeddingRequest::new("sim-embed", vec!["alpha".into(), "beta".into()]);
        let r = p.embed(&req, &CallOptions::default()).await.unwrap();
        assert_eq!(r.data.len(), 2, "{kind:?}");
        match &r.data[1].embedding {
            EmbeddingVector::Float(v) => assert_eq!(v.len(), 64),
            other => panic!("{other:?}"),
        }
    }
    let a = provider(Kind::Anthropic, &sim, "sk-test");
    let e = a
        .embed(&EmbeddingRequest::new("x", vec!["a".into()]), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    for kind in [Kind::OpenAi, Kind::Gemini] {
        provider(kind, &sim, "sk-test")
            .probe(&CallOptions::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn connection_refused_and_bad_hosts_are_network_errors() {
    let port = breakwater_testkit::free_port();
    let p = OpenAi::new(
        "nowhere",
        &HttpSettings::new(format!("http://127.0.0.1:{port}/v1")).timeouts(timeouts()),
    )
    .unwrap();
    let e = breakwater::provider::Provider::chat(&p, &ChatRequest::user("m", "x"), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.cause),
        (ErrorKind::Network, Some(TransportCause::ConnectionRefused)),
        "{e}"
    );
    assert!(e.hint().contains("base_url"));
    let p = OpenAi::new(
        "bad-dns",
        &HttpSettings::new("http://no-such-host.invalid/v1").timeouts(timeouts()),
    )
    .unwrap();
    let e = breakwater::provider::Provider::chat(&p, &ChatRequest::user("m", "x"), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.cause),
        (ErrorKind::Network, Some(TransportCause::Dns)),
        "{e}"
    );
}

/// Garbage answers become typed errors, never panics.
#[tokio::test]
async fn garbage_upstreams_become_typed_errors() {
    let huge = vec![b'a'; 3 * 1024 * 1024];
    let cases: Vec<(Vec<u8>, ErrorKind)> = vec![
        (
            RawServer::response(200, "application/json", b"\xff\xfe\xfd not utf8"),
            ErrorKind::UpstreamUnparseable,
        ),
        (
            RawServer::response(200, "application/json", b""),
            ErrorKind::UpstreamUnparseable,
        ),
        (
            RawServer::response(200, "application/json", b"{\"id\": 1}"),
            ErrorKind::UpstreamUnparseable,
        ),
        (
            RawServer::response(200, "application/json", &huge),
            ErrorKind::UpstreamUnparseable,
        ),
        (
            RawServer::response(503, "text/html", b"\xff<html>"),
            ErrorKind::Overloaded,
        ),
        (
            RawServer::response(200, "text/event-stream", b"data: \xff\xff\n\n"),
            ErrorKind::UpstreamUnparseable,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort".to_vec(),
            ErrorKind::Network,
        ),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), ErrorKind::Network),
    ];
    for (i, (raw, expected)) in cases.into_iter().enumerate() {
        let server = RawServer::start(raw).await.unwrap();
        for kind in ALL {
            let mut s = HttpSettings::new(format!("{}/v1", server.url())).timeouts(timeouts());
            s.max_response_bytes = 1024 * 1024;
            let p: DynProvider = match kind {
                Kind::OpenAi => Arc::new(OpenAi::new("raw", &s).unwrap()),
                Kind::Anthropic => Arc::new(Anthropic::new("raw", &s).unwrap()),
                Kind::Gemini => Arc::new(Gemini::new("raw", &s).unwrap()),
            };
            let e = p
                .chat(&ChatRequest::user("m", "x"), &CallOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind, expected, "case {i} {kind:?}: {e}");
            // Streams of garbage fail too.
            let r = async {
                let mut st = p
                    .chat_stream(&ChatRequest::user("m", "x"), &CallOptions::default())
                    .await?;
                while let Some(c) = st.next().await {
                    c?;
                }
                Ok::<(), breakwater::Error>(())
            }
            .await;
            assert!(r.is_err(), "case {i} {kind:?}: a garbage stream is not a success");
        }
    }
}

#[tokio::test]
async fn a_request_goes_to_the_model_asked_for_whatever_its_own_model_and_stream_fields_say() {
    let sim = sim().await;
    for kind in ALL {
        let p = provider(kind, &sim, "sk-test");
        // As the client hands it over: the alias the caller named, and the
        // caller's stream settings.
        let mut req = ChatRequest::user("my-alias", "say something steady");
        req.stream = Some(true);
        req.stream_options = Some(StreamOptions {
            include_usage: Some(false),
            ..Default::default()
        });
        let plain = p.chat_as("sim-7", &req, &CallOptions::default()).await.unwrap();
        assert_eq!(plain.model, "sim-7", "{kind:?}");
        assert!(!plain.text().is_empty(), "{kind:?}: a complete answer, not a stream");
        req.stream = None;
        let mut s = p.chat_stream_as("sim-7", &req, &CallOptions::default()).await.unwrap();
        let mut a = StreamAssembler::new();
        while let Some(c) = s.next().await {
            a.push(&c.unwrap());
        }
        let streamed = a.finish();
        assert_eq!(streamed.model, "sim-7", "{kind:?}");
        assert_eq!(streamed.text(), plain.text(), "{kind:?}");
        assert!(streamed.usage.is_some(), "{kind:?}: usage is always asked for");
    }
    let st = sim.stats();
    assert_eq!(st.streams_completed, 3);
}
