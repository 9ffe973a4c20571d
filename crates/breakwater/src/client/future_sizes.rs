//! The sizes of the futures one request builds. An async fn's future holds
//! every future it awaits, so sizes add up through the call chain, and a
//! future passed by value is stored twice (the caller's local and the
//! callee's copy). Before these bounds, a complete request's future was
//! 32 KB in a debug build (the hedged pair alone five times a call), and
//! every request allocated and copied it, which flushed the CPU caches and
//! cost more than much of the gateway's real work.
//!
//! An `async fn` also stores each argument twice: as the argument and as
//! the local it is moved into when the body starts (a 1,000-byte argument
//! makes a 2,032-byte future). The calls that take the request by value are
//! plain functions returning an `async move` block, which holds it once.
//! While a stream waits for its first token all of this is held, once per
//! stream: the stream's future went from 6,776 to 4,032 bytes.

use super::call::{self, TryOpts};
use super::*;
use crate::simulator::{Simulator, SimulatorConfig};

fn client() -> Client {
    Client::builder()
        .provider(Arc::new(Simulator::new("a", SimulatorConfig::instant())))
        .provider(Arc::new(Simulator::new("b", SimulatorConfig::instant())))
        .model(
            "m",
            ModelConfig::new(vec![TargetConfig::new("a", "sim-1"), TargetConfig::new("b", "sim-1")]),
        )
        .active_probes(false)
        .build()
        .expect("a valid client")
}

/// Prints the size (see it with `--nocapture`) and notes it when over its
/// bound.
fn check(over: &mut Vec<String>, what: &str, size: usize, bound: usize) {
    eprintln!("future size of {what}: {size} bytes (bound {bound})");
    if size > bound {
        over.push(format!("{what}: {size} bytes, over its bound of {bound}"));
    }
}

#[tokio::test]
async fn request_futures_stay_small() {
    let c = client();
    let req = ChatRequest::user("m", "hello");
    let opts = RequestOptions::default();
    let alias = c.resolve("m").expect("the alias");
    let deadline = Instant::now() + Duration::from_secs(5);
    let rid: Arc<str> = Arc::from("req_1");
    let tenant: Arc<str> = Arc::from("");
    let target = alias.targets[0].0.clone();
    let o = TryOpts {
        deadline,
        others_left: true,
        hedge: false,
        force_probe: false,
    };
    let mut meta = CallMeta::new(rid.clone(), "m");
    let mut over = Vec::new();

    check(
        &mut over,
        "call::complete",
        size_of_val(&call::complete(&c.inner, &target, &req, &rid, o)),
        2 * 1024,
    );
    check(
        &mut over,
        "route::complete",
        size_of_val(&route::complete(&c.inner, &alias, &req, &rid, deadline)),
        2560,
    );
    check(
        &mut over,
        "route::stream",
        size_of_val(&route::stream(&c.inner, &alias, &req, &rid, deadline)),
        2560,
    );
    let origin = origin(
        c.inner.clone(),
        alias.clone(),
        Arc::new(req.clone()),
        rid.clone(),
        deadline,
        UpstreamMode::Complete,
        None,
    );
    check(&mut over, "origin", size_of_val(&origin), 2560);
    let shared = Arc::new(req.clone());
    let answer = c.answer(
        &shared,
        &alias,
        &opts,
        &tenant,
        deadline,
        UpstreamMode::Complete,
        &mut meta,
        0,
    );
    check(&mut over, "Client::answer", size_of_val(&answer), 3 * 1024);
    drop(answer);
    check(
        &mut over,
        "Client::chat_inner",
        size_of_val(&c.chat_inner(req.clone(), opts.clone(), 0)),
        4 * 1024,
    );
    check(
        &mut over,
        "Client::stream_inner",
        size_of_val(&c.stream_inner(req.clone(), opts.clone(), 0)),
        4608,
    );
    // The public calls hand back the boxed future itself.
    check(
        &mut over,
        "Client::chat",
        size_of_val(&c.chat(req.clone(), opts.clone())),
        64,
    );
    check(
        &mut over,
        "Client::chat_stream",
        size_of_val(&c.chat_stream(req.clone(), opts.clone())),
        64,
    );
    // Held in every request's future and every open stream.
    check(&mut over, "Admission", size_of::<super::target::Admission>(), 128);
    assert!(over.is_empty(), "futures too large: {over:#?}");
}
