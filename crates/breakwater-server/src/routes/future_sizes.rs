//! The sizes of the handler futures. axum boxes each request's handler
//! future, and a streamed request keeps it until its first token arrives,
//! so with many streams opening at once these sizes add up to a large part
//! of the gateway's peak memory (heaptrack, release build: two boxes of
//! ~3.3 KiB per request before the limiter and budget calls, the stream
//! branch and the embeddings batcher were boxed). The bounds are for the
//! debug build the tests run in, where futures are larger (admit was
//! 3.5 KiB there, chat_completions 6.4 KiB). The handlers are plain
//! functions returning an `async move` block, since an `async fn` stores
//! its arguments twice (chat_completions went from 2,984 to 1,872 bytes).

use super::common::{Hold, Peer, admit};
use crate::serve::{self, Options};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use breakwater::policy::spend::Spend;

/// Prints the size (see it with `--nocapture`) and notes it when over its
/// bound.
fn check(over: &mut Vec<String>, what: &str, size: usize, bound: usize) {
    eprintln!("future size of {what}: {size} bytes (bound {bound})");
    if size > bound {
        over.push(format!("{what}: {size} bytes, over its bound of {bound}"));
    }
}

#[tokio::test]
async fn handler_futures_stay_small() {
    let yaml = r#"
server: { listen: "127.0.0.1:0", workers: 1 }
providers:
  sim: { kind: simulator }
models:
  m: { targets: [ { provider: sim, model: sim-1 } ] }
"#;
    let cfg = crate::config::parse(yaml, "test", &|_| None).expect("a valid config");
    let running = serve::start(cfg, "test".into(), &Options::default())
        .await
        .expect("the gateway starts");
    let app = running.app.clone();
    let peer = Extension(Peer(running.addr));
    let mut over = Vec::new();
    let cost = Spend::default();
    check(&mut over, "admit", size_of_val(&admit(None, 0, cost)), 1024);
    check(
        &mut over,
        "Hold::settle",
        size_of_val(&Hold::default().settle(None, 0.0)),
        256,
    );
    check(
        &mut over,
        "chat_completions",
        size_of_val(&super::openai::chat_completions(
            State(app.clone()),
            peer,
            HeaderMap::new(),
            Body::empty(),
        )),
        2 * 1024,
    );
    check(
        &mut over,
        "messages",
        size_of_val(&super::anthropic::messages(
            State(app.clone()),
            peer,
            HeaderMap::new(),
            Body::empty(),
        )),
        2560,
    );
    check(
        &mut over,
        "embeddings",
        size_of_val(&super::openai::embeddings(
            State(app.clone()),
            peer,
            HeaderMap::new(),
            Body::empty(),
        )),
        2 * 1024,
    );
    check(&mut over, "Hold", size_of::<Hold>(), 192);
    running.shutdown();
    assert!(over.is_empty(), "futures too large: {over:#?}");
}
