//! How requests reach an upstream: hyper's pooled client over TCP, with TLS
//! (rustls, certificates checked by the platform's verifier) and the proxy
//! the environment names for the upstream (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, as curl reads them), decided once per upstream;
//! plain `http://` upstreams reached directly go through the lighter
//! client of [`super::h1`].
//!
//! Why not reqwest: per request it parsed the URL twice (its redirect
//! layer and its response), ran retry and redirect layers we never use,
//! and moved large futures through them — together about a fifth of the
//! gateway's CPU per request. The pieces it assembled are used directly.

use super::h1;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Request bodies for hyper: always whole (JSON), so their length is known.
pub(crate) type Body = Full<Bytes>;

/// Why a request or the reading of an answer failed: hyper's error types
/// or [`h1::H1Error`], for [`crate::error::classify_transport`] to read.
pub(crate) type TransportFailure = Box<dyn std::error::Error + Send + Sync>;

/// What a transport could not be built for.
#[derive(Debug)]
pub(crate) struct TransportError(pub String);

/// One upstream's connection pool and the route to it.
#[derive(Clone)]
pub(crate) struct Transport {
    route: Route,
    /// `Proxy-Authorization` for requests forwarded through an HTTP proxy.
    proxy_auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let route = match &self.route {
            Route::Plain(_) => "direct (plain HTTP/1.1)",
            Route::Direct(_) => "direct",
            Route::Tunnel(_) => "https through an HTTP proxy (CONNECT)",
            Route::Forward(_) => "http through an HTTP proxy",
            Route::Socks(_) => "through a SOCKS5 proxy",
        };
        f.debug_struct("Transport").field("route", &route).finish()
    }
}

#[derive(Clone)]
enum Route {
    Plain(h1::Pool),
    Direct(Client<HttpsConnector<HttpConnector>, Body>),
    Tunnel(Client<HttpsConnector<Tunnel<HttpConnector>>, Body>),
    Forward(Client<Forward, Body>),
    Socks(Client<HttpsConnector<SocksV5<HttpConnector>>, Body>),
}

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub connect_timeout: Duration,
}

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections kept per upstream and worker.
const MAX_IDLE: usize = 256;
/// TCP keepalive probes' idle time.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

fn tcp(s: Settings) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.enforce_http(false);
    c.set_nodelay(true);
    c.set_connect_timeout(Some(s.connect_timeout));
    c.set_keepalive(Some(TCP_KEEPALIVE));
    c
}

/// The TLS settings, made once per process: the platform verifier reads
/// the system's certificates, milliseconds of work that every connection
/// pool (one per worker and upstream) would otherwise repeat.
fn tls_config() -> Result<rustls::ClientConfig, TransportError> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            Ok(rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_platform_verifier()
                .map_err(|e| e.to_string())?
                .with_no_client_auth())
        })
        .clone()
        .map_err(|e| TransportError(format!("cannot set up TLS: {e}")))
}

fn tls<C>(inner: C) -> Result<HttpsConnector<C>, TransportError> {
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(inner))
}

/// The read buffer of each HTTP/1 upstream connection, bytes.
const UPSTREAM_READ_BUF: usize = 4096;

fn pool<C>(connector: C) -> Client<C, Body>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE)
        // HTTP/1 reads of 4 KiB instead of hyper's adaptive 8 KiB and up:
        // an upstream's head and a streamed event fit many times over, and
        // each held stream's connection keeps its read buffer for its life.
        .http1_read_buf_exact_size(UPSTREAM_READ_BUF)
        .http2_adaptive_window(true)
        .build(connector)
}

impl Transport {
    /// The transport for `base` (the upstream's base URL), through the
    /// proxy `proxies` names for it, if any.
    pub fn new(base: &Uri, s: Settings, proxies: &Matcher) -> Result<Self, TransportError> {
        let Some(proxy) = proxies.intercept(base) else {
            if base.scheme_str() == Some("http")
                && let Some(host) = base.host()
            {
                let pool = h1::Pool::new(
                    host,
                    base.port_u16().unwrap_or(80),
                    h1::PoolSettings {
                        connect_timeout: s.connect_timeout,
                        idle_timeout: IDLE_TIMEOUT,
                        max_idle: MAX_IDLE,
                        tcp_keepalive: TCP_KEEPALIVE,
                    },
                )
                .map_err(TransportError)?;
                return Ok(Transport {
                    route: Route::Plain(pool),
                    proxy_auth: None,
                });
            }
            return Ok(Transport {
                route: Route::Direct(pool(tls(tcp(s))?)),
                proxy_auth: None,
            });
        };
        let proxy_uri = proxy.uri().clone();
        let shown = format!(
            "{}://{}",
            proxy_uri.scheme_str().unwrap_or("?"),
            proxy_uri.authority().map_or("?", |a| a.host())
        );
        match proxy_uri.scheme_str() {
            Some("http") => {
                let auth = proxy.basic_auth().cloned().map(|mut v| {
                    v.set_sensitive(true);
                    v
                });
                if base.scheme_str() == Some("https") {
                    let mut tunnel = Tunnel::new(proxy_uri, tcp(s));
                    if let Some(a) = auth {
                        tunnel = tunnel.with_auth(a);
                    }
                    Ok(Transport {
                        route: Route::Tunnel(pool(tls(tunnel)?)),
                        proxy_auth: None,
                    })
                } else {
                    Ok(Transport {
                        route: Route::Forward(pool(Forward {
                            proxy: proxy_uri,
                            tcp: tcp(s),
                        })),
                        proxy_auth: auth,
                    })
                }
            }
            Some("socks5" | "socks5h") => {
                let mut socks =
                    SocksV5::new(proxy_uri.clone(), tcp(s)).local_dns(proxy_uri.scheme_str() == Some("socks5"));
                if let Some((user, pass)) = proxy.raw_auth() {
                    socks = socks.with_auth(user.to_string(), pass.to_string());
                }
                Ok(Transport {
                    route: Route::Socks(pool(tls(socks)?)),
                    proxy_auth: None,
                })
            }
            _ => Err(TransportError(format!(
                "the proxy {shown} from the environment is not supported (http:// and socks5:// proxies are)"
            ))),
        }
    }

    /// Sends `req`; the answer's head arrives with the future.
    pub fn request(
        &self,
        mut req: Request<Bytes>,
    ) -> impl Future<Output = Result<UpstreamResponse, TransportFailure>> + Send + 'static {
        if let Some(a) = &self.proxy_auth {
            req.headers_mut().insert(http::header::PROXY_AUTHORIZATION, a.clone());
        }
        let pooled = match &self.route {
            Route::Plain(pool) => {
                let sending = pool.send(req);
                return futures::future::Either::Left(async move { Ok(sending.await?.map(UpstreamBody::Plain)) });
            }
            Route::Direct(c) => c.request(req.map(Full::new)),
            Route::Tunnel(c) => c.request(req.map(Full::new)),
            Route::Forward(c) => c.request(req.map(Full::new)),
            Route::Socks(c) => c.request(req.map(Full::new)),
        };
        futures::future::Either::Right(async move { Ok(pooled.await?.map(UpstreamBody::Pooled)) })
    }
}

/// Plain-HTTP requests through an HTTP proxy: every connection goes to the
/// proxy, marked as proxied so that requests carry their absolute URI.
#[derive(Clone)]
struct Forward {
    proxy: Uri,
    tcp: HttpConnector,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Proxied, Box<dyn std::error::Error + Send + Sync>>> + Send>>;

impl Service<Uri> for Forward {
    type Response = Proxied;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let connecting = self.tcp.call(self.proxy.clone());
        Box::pin(async move { Ok(Proxied(connecting.await?)) })
    }
}

/// A connection to an HTTP proxy.
struct Proxied(hyper_util::rt::TokioIo<tokio::net::TcpStream>);

impl Connection for Proxied {
    fn connected(&self) -> Connected {
        self.0.connected().proxy(true)
    }
}

impl Read for Proxied {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for Proxied {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

/// The head and body of an upstream's answer.
pub(crate) type UpstreamResponse = Response<UpstreamBody>;

/// The body of an upstream's answer, from whichever client sent the request.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From hyper's pooled client.
    Pooled(Incoming),
    /// From the plain HTTP/1.1 client.
    Plain(h1::H1Body),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = TransportFailure;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, TransportFailure>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Plain(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Plain(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SETTINGS: Settings = Settings {
        connect_timeout: Duration::from_secs(5),
    };

    /// A one-connection HTTP proxy on loopback: returns its address and a
    /// task yielding the request head it received, after answering `reply`.
    async fn proxy(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending a whole head");
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(reply.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8(head).unwrap()
        });
        (format!("http://user:secret@{addr}"), task)
    }

    fn get(uri: &str) -> Request<Bytes> {
        Request::get(uri).body(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn plain_http_goes_through_an_http_proxy_with_an_absolute_uri_and_credentials() {
        let (url, seen) = proxy("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        let proxies = Matcher::builder().http(url).build();
        let base: Uri = "http://upstream.invalid:9/v1".parse().unwrap();
        let t = Transport::new(&base, SETTINGS, &proxies).unwrap();
        assert!(format!("{t:?}").contains("http through an HTTP proxy"));
        let resp = t.request(get("http://upstream.invalid:9/v1/models")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get http://upstream.invalid:9/v1/models http/1.1\r\n"),
            "{head}"
        );
        // base64("user:secret")
        assert!(head.contains("proxy-authorization: basic dxnlcjpzzwnyzxq="), "{head}");
    }

    #[tokio::test]
    async fn https_is_tunnelled_through_an_http_proxy_with_connect() {
        let (url, seen) = proxy("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let proxies = Matcher::builder().https(url).build();
        let base: Uri = "https://api.example.test/v1".parse().unwrap();
        let t = Transport::new(&base, SETTINGS, &proxies).unwrap();
        assert!(format!("{t:?}").contains("CONNECT"));
        // The proxy refuses the tunnel, so the request fails — after the
        // proxy was asked for it, with the credentials.
        let err = t.request(get("https://api.example.test/v1/models")).await.unwrap_err();
        let err = err
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .expect("hyper's error");
        assert!(err.is_connect(), "{err:?}");
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("connect api.example.test:443 http/1.1\r\n"), "{head}");
        assert!(head.contains("proxy-authorization: basic dxnlcjpzzwnyzxq="), "{head}");
    }

    #[tokio::test]
    async fn no_proxy_hosts_and_unproxied_schemes_go_direct() {
        let proxies = Matcher::builder()
            .https("http://127.0.0.1:9")
            .no("internal.test")
            .build();
        let direct = |base: &str| {
            let t = Transport::new(&base.parse().unwrap(), SETTINGS, &proxies).unwrap();
            format!("{t:?}").contains("direct")
        };
        assert!(direct("https://llm.internal.test/v1"));
        assert!(direct("http://api.example.test/v1"));
        assert!(!direct("https://api.example.test/v1"));
    }

    #[test]
    fn an_unsupported_proxy_scheme_is_refused_with_its_name() {
        let proxies = Matcher::builder().https("socks4://proxy.test:1080").build();
        let base: Uri = "https://api.example.test/v1".parse().unwrap();
        match Transport::new(&base, SETTINGS, &proxies) {
            Err(TransportError(msg)) => assert!(msg.contains("socks4://proxy.test"), "{msg}"),
            Ok(t) => panic!("accepted: {t:?}"),
        }
    }
}
