//! The HTTP simulator: a deterministic fake LLM server that speaks the
//! OpenAI (`/v1/chat/completions`, `/v1/embeddings`), Anthropic
//! (`/v1/messages`) and Gemini (`/v1beta/models/{m}:generateContent`,
//! `:streamGenerateContent?alt=sse`, `:batchEmbedContents`) wire formats,
//! streams included, and injects faults: 429 with `Retry-After`, 500, 503,
//! 529, 401, connection resets, hangs, malformed JSON, cut and stalled
//! streams.
//!
//! Admin routes for tests: `GET /_sim/stats` (request counts by route and
//! outcome, streams completed and cancelled), `POST /_sim/reset`,
//! `GET|PUT /_sim/config` (live reconfiguration), `POST /_sim/script`
//! (scripted answers for the next requests).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use breakwater::simulator::SimulatorConfig;
//! let sim = breakwater_simulator::SimServer::start(SimulatorConfig::default()).await?;
//! println!("OpenAI-compatible base URL: {}", sim.openai_base());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
// Handlers return early with a ready `Response` as the error: idiomatic in
// axum, and these are test-upstream paths, not hot ones.
#![allow(clippy::result_large_err)]

mod conn;
mod routes;

pub use conn::ConnReset;
pub use routes::{Ctx, router};

use breakwater::simulator::{SimEngine, SimStats, SimulatorConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running HTTP simulator; stops when dropped.
pub struct SimServer {
    addr: SocketAddr,
    engine: Arc<SimEngine>,
    stop: CancellationToken,
}

/// Listens on `addr` with a deep accept queue: a gateway opening thousands
/// of upstream streams at once overflows the default of 1,024 (tokio's), and
/// each dropped SYN costs its client a second or more before it retries.
/// The kernel caps the depth at `net.core.somaxconn`.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

impl SimServer {
    /// Starts on a free loopback port.
    pub async fn start(config: SimulatorConfig) -> std::io::Result<SimServer> {
        Self::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?, config, None).await
    }

    /// Starts on `addr`; with `api_key`, requests must carry that key.
    pub async fn bind(
        addr: SocketAddr,
        config: SimulatorConfig,
        api_key: Option<String>,
    ) -> std::io::Result<SimServer> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let engine = Arc::new(SimEngine::new(config));
        let ctx = Ctx {
            engine: engine.clone(),
            api_key: api_key.map(Arc::from),
        };
        let stop = CancellationToken::new();
        tokio::spawn(conn::serve(listener, router(ctx), stop.clone()));
        Ok(SimServer { addr, engine, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL for OpenAI-compatible clients (`…/v1`).
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Base URL for Anthropic clients (`…/v1`).
    pub fn anthropic_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Base URL for Gemini clients (`…/v1beta`).
    pub fn gemini_base(&self) -> String {
        format!("{}/v1beta", self.url())
    }

    /// The engine: live config, scripts, counters.
    pub fn engine(&self) -> &Arc<SimEngine> {
        &self.engine
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        self.engine.stats()
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
