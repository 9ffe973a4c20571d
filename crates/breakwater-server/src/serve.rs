//! Serving: the accept loop (HTTP/1.1 and HTTP/2 cleartext, `TCP_NODELAY`,
//! header-read timeout and header limits against slow-loris), graceful
//! shutdown (stop accepting, drain in-flight requests and streams up to the
//! grace period), and reloads (SIGHUP, a changed file, or `POST
//! /admin/reload`) with an atomic swap: a bad new config is refused and the
//! old one stays.

use crate::config::{self, GatewayConfig};
use crate::live::Live;
use crate::routes::common::Peer;
use crate::state::{self, AppState};
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the server starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The config file; `None` → zero-config start.
    pub config: Option<PathBuf>,
    /// Overrides `server.listen`.
    pub listen: Option<String>,
    /// Poll the config file for changes every this often (`None` = off).
    pub watch: Option<Duration>,
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub app: Arc<AppState>,
    /// Finishes when the server has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.app.shutdown.cancel();
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Loads the configuration (or discovers one) — an error names the path.
pub async fn load(opts: &Options) -> Result<(GatewayConfig, String), String> {
    match &opts.config {
        Some(path) => {
            let mut cfg = config::load(path).map_err(|e| e.to_string())?;
            if let Some(l) = &opts.listen {
                cfg.server.listen.clone_from(l);
            }
            let origin = format!("from {}", path.display());
            Ok((cfg, origin))
        }
        None => {
            let listen = opts.listen.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
            Ok(crate::zero_config::config(&listen).await)
        }
    }
}

/// Starts serving `cfg` (already loaded) in the background: worker 0 on
/// the caller's runtime, the other `server.workers` on threads of their own,
/// each with a single-threaded runtime and a listening socket of its own on
/// the same address (`SO_REUSEPORT`: the kernel spreads connections over
/// them). A request then runs on one thread from its first byte to its
/// last, with no task ever waking another thread: measured, a third less
/// CPU per request than one multi-threaded runtime (bench/RESULTS.md).
pub async fn start(cfg: GatewayConfig, origin: String, opts: &Options) -> Result<Running, String> {
    let listen = cfg.server.listen.clone();
    let workers = cfg.server.worker_count();
    // Install the metrics recorder first: whatever is recorded before it
    // is lost.
    crate::metrics::handle();
    let gw = state::build(cfg, origin).await.map_err(|e| e.to_string())?;
    let listeners = bind(&listen, workers).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(AppState {
        gateway: ArcSwap::from_pointee(gw),
        live: Live::new(),
        started: std::time::Instant::now(),
        config_path: opts.config.clone(),
        shutdown: CancellationToken::new(),
        reloads: Default::default(),
        reload_failures: Default::default(),
        iot: Default::default(),
        dash: Default::default(),
        connections: (0..listeners.len()).map(|_| Default::default()).collect(),
    });
    let iot_cfg = app.gateway.load().config.iot.clone();
    if let Some(iot_cfg) = iot_cfg {
        let backend: breakwater_iot::understand::llm::DynBackend = Arc::new(crate::iot::CurrentClient(app.clone()));
        let svc = breakwater_iot::IotService::start(iot_cfg, Some(backend))
            .await
            .map_err(|e| format!("iot: {e}"))?;
        let _ = app.iot.set(svc);
    }
    if let (Some(every), Some(path)) = (opts.watch, opts.config.clone()) {
        tokio::spawn(watch_file(app.clone(), path, every));
    }
    tokio::spawn(crate::dashboard::history::record(app.clone()));
    tokio::spawn(crate::memory::trim_until(app.shutdown.clone()));
    tokio::spawn(crate::metrics::upkeep_until(app.shutdown.clone()));
    let mut listeners = listeners.into_iter();
    let first = listeners.next().ok_or("no listener")?;
    let first = TcpListener::from_std(first).map_err(|e| e.to_string())?;
    let mut others = Vec::new();
    for (i, l) in listeners.enumerate() {
        others.push(spawn_worker(i + 1, l, app.clone()).map_err(|e| format!("cannot start worker {}: {e}", i + 1))?);
    }
    let done = {
        let app = app.clone();
        tokio::spawn(async move {
            accept_loop(0, first, app.clone()).await;
            for w in others {
                let _ = w.await;
            }
            if let Some(iot) = app.iot.get() {
                iot.shutdown().await;
            }
        })
    };
    Ok(Running { addr, app, done })
}

/// `workers` listening sockets on `listen` (the port of the first when it
/// asks for port 0), each with `SO_REUSEPORT` when there are several.
fn bind(listen: &str, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr: SocketAddr = listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not host:port: {e}")))?;
    #[cfg(unix)]
    if workers > 1 && addr.port() != 0 {
        // With SO_REUSEPORT, a second gateway (any process of the same
        // user) started on this address would bind too and silently take
        // part of the connections. A socket without it cannot share the
        // port: if it cannot bind, someone listens there already.
        let probe = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        #[cfg(unix)]
        {
            s.set_reuse_address(true)?;
            if workers > 1 {
                s.set_reuse_port(true)?;
            }
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        // A deep accept queue (the kernel caps it at `net.core.somaxconn`):
        // a burst of thousands of clients overflows 1,024, and each dropped
        // SYN costs its client a second or more.
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Worker `index` on a thread of its own; the receiver fires when it has
/// stopped (after draining its connections).
fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    app: Arc<AppState>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("breakwater-worker-{index}"))
        .spawn(move || {
            breakwater::runtime::set_worker(index);
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(index, l, app).await,
                        Err(e) => tracing::error!(worker = index, error = %e, "worker cannot listen"),
                    }
                }),
                Err(e) => tracing::error!(worker = index, error = %e, "worker cannot start its runtime"),
            }
            let _ = tx.send(());
        })?;
    Ok(rx)
}

/// Accepts and serves connections until shutdown, then drains them up to
/// the grace period.
async fn accept_loop(worker: usize, listener: TcpListener, app: Arc<AppState>) {
    let tick = tokio::spawn(tick_until(app.shutdown.clone()));
    let router = crate::routes::router(app.clone());
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper's default limit of 100 headers (more: 431) is kept: setting
        // `max_headers` moves the header index from the stack to a heap
        // allocation on every request.
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new()).max_header_list_size(64 * 1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(n) = app.connections.get(worker) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        // The peer goes into each request's extensions; layering the router
        // per connection instead would rebuild its whole route table for
        // every connection (measured: the largest share of a stream's memory).
        let router = router.clone();
        let svc = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let (h1, h2, watcher, stop) = (h1.clone(), h2.clone(), graceful.watcher(), app.shutdown.clone());
        tokio::spawn(async move {
            let protocol = tokio::select! {
                p = tokio::time::timeout(HEADER_READ_TIMEOUT, sniff(&stream)) => p,
                // not a byte yet: nothing in flight to drain
                _ = stop.cancelled() => return,
            };
            match protocol {
                Ok(Ok(Protocol::Http1)) => {
                    let _ = watcher.watch(h1.serve_connection(TokioIo::new(stream), svc)).await;
                }
                Ok(Ok(Protocol::Http2)) => {
                    let _ = watcher.watch(h2.serve_connection(TokioIo::new(stream), svc)).await;
                }
                // silent for the header-read timeout, or gone: close
                _ => {}
            }
        });
    }
    drop(listener);
    tick.abort();
    let grace = Duration::from_secs(app.gateway.load().config.server.shutdown_grace_s);
    tracing::info!(grace_s = grace.as_secs(), "shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over: closing the remaining connections"),
    }
}

/// How long a client may take to send a request's head (slow-loris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of every HTTP/2 cleartext (prior knowledge) connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/2 from HTTP/1 by peeking at the first bytes, leaving them in
/// the socket. Why not hyper-util's `auto` builder: it reads the first 24
/// bytes itself and hands them to hyper in front of the socket, so hyper's
/// first read returns only those and its second must reserve 8 KiB more on
/// top of them — which doubles the read buffer to 16 KiB for the whole life
/// of every connection (heaptrack: 16 MiB of 1,000 held streams).
async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of the preface so far (rare: clients send it in one write).
        // A peek returns at once while any byte is unread, so wait a moment
        // rather than spin; the caller bounds the whole wait.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How often a worker's timer wheel is made to wake, see [`tick_until`].
const TICK: Duration = Duration::from_millis(500);

/// Wakes the worker's runtime every [`TICK`] until `stop`, so that it never
/// parks for longer. Why: tokio's time driver wakes its own thread (an
/// eventfd write, then an extra `epoll_wait`) whenever a timer is registered
/// with a deadline earlier than the one it last parked for — even when that
/// thread is the one registering it and is not parked at all. hyper arms a
/// 10 s header-read timer for every request on a kept-alive connection;
/// with nothing else due sooner the driver had parked for longer, so every
/// request paid two extra system calls (measured with strace: 7 per request
/// instead of 6 at concurrency 1). Two wakeups a second cost nothing by
/// comparison.
async fn tick_until(stop: tokio_util::sync::CancellationToken) {
    crate::periodic::every(TICK, stop, || async {}).await;
}

/// Re-reads the config file and swaps the gateway; the old one stays on
/// any error.
pub async fn reload(app: &AppState) -> Result<(), String> {
    let Some(path) = &app.config_path else {
        return Err("started without a config file: nothing to reload".into());
    };
    let result = async {
        let mut cfg = config::load(path).map_err(|e| e.to_string())?;
        // The listener stays where it is.
        cfg.server.listen.clone_from(&app.gateway.load().config.server.listen);
        let gw = state::build(cfg, format!("from {}", path.display()))
            .await
            .map_err(|e| e.to_string())?;
        app.gateway.store(Arc::new(gw));
        Ok::<(), String>(())
    }
    .await;
    match &result {
        Ok(()) => {
            app.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            app.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "reload refused: the previous configuration stays");
        }
    }
    result
}

async fn watch_file(app: Arc<AppState>, path: PathBuf, every: Duration) {
    let stamp = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamp(&path);
        if now.is_some() && now != last {
            last = now;
            let _ = reload(&app).await;
        }
    }
}

/// Runs until SIGTERM or Ctrl-C (reloading on SIGHUP), printing what it
/// serves.
pub async fn run(opts: Options) -> Result<(), String> {
    let (cfg, origin) = load(&opts).await?;
    let zero = opts.config.is_none();
    let running = start(cfg, origin.clone(), &opts).await?;
    let url = running.url();
    eprintln!("breakwater gateway on {url}");
    if zero {
        eprintln!("no config file: zero-config start — {origin}");
    } else {
        eprintln!("configuration {origin}");
    }
    eprintln!(
        "try: curl -s {url}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"default\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    let app = running.app.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    let _ = reload(&app).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown();
    let _ = running.done.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_in_use_is_refused_even_with_several_workers() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let addr = taken.local_addr().expect("its address").to_string();
        for workers in [1, 2] {
            let e = super::bind(&addr, workers).expect_err("the port is taken");
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{workers} workers");
        }
        drop(taken);
        // A gateway's own workers share a port; a second gateway does not.
        let first = super::bind(&addr, 2).expect("free again");
        assert_eq!(first.len(), 2);
        let e = super::bind(&addr, 2).expect_err("a second gateway on the same address");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }

    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair: what the client writes, the server peeks at.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("a loopback listener");
        let client = tokio::net::TcpStream::connect(l.local_addr().expect("its address"))
            .await
            .expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn sniffing_tells_the_protocols_apart_and_consumes_nothing() {
        let (mut c, s) = pair().await;
        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
            .await
            .expect("write");
        assert_eq!(sniff(&s).await.expect("sniff"), Protocol::Http1);
        let mut buf = [0u8; 4];
        assert_eq!(s.peek(&mut buf).await.expect("peek"), 4);
        assert_eq!(&buf, b"POST", "the bytes stay for hyper");

        let (mut c, s) = pair().await;
        c.write_all(H2_PREFACE).await.expect("write");
        assert_eq!(sniff(&s).await.expect("sniff"), Protocol::Http2);

        // closed before a byte: HTTP/1, which then sees the end
        let (c, s) = pair().await;
        drop(c);
        assert_eq!(sniff(&s).await.expect("sniff"), Protocol::Http1);
    }

    #[tokio::test]
    async fn a_preface_sent_in_pieces_is_waited_for() {
        let (mut c, s) = pair().await;
        c.write_all(&H2_PREFACE[..10]).await.expect("write");
        let sniffing = tokio::spawn(async move { sniff(&s).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sniffing.is_finished(), "decided on 10 bytes of the preface");
        c.write_all(&H2_PREFACE[10..]).await.expect("write");
        assert_eq!(sniffing.await.expect("joins").expect("sniff"), Protocol::Http2);

        // a prefix that stops matching is HTTP/1 (a method that starts with P)
        let (mut c, s) = pair().await;
        c.write_all(b"PRI").await.expect("write");
        let sniffing = tokio::spawn(async move { sniff(&s).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(b"NT / HTTP/1.1\r\n").await.expect("write");
        assert_eq!(sniffing.await.expect("joins").expect("sniff"), Protocol::Http1);
    }
}
