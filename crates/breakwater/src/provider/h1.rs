//! A small HTTP/1.1 client for plain `http://` upstreams reached directly:
//! local model servers (llama-server, vLLM, Ollama), sidecars, the
//! simulator.
//!
//! Why not hyper's pooled client here: it runs every connection as a task
//! of its own, fed by the request through a channel, and keeps an 8 KiB
//! write buffer and the channel's 32-slot block (9.5 KiB) for the
//! connection's life — about 20 KiB for each held stream, and a second
//! task and a channel hop per request. Here the request's own task drives
//! its connection (the head is written and read by the response future, the
//! body by whoever polls it), a connection holds one 4 KiB read buffer, and
//! idle connections wait in a last-in-first-out list per worker.
//! TLS, proxies and HTTP/2 stay with hyper (see `transport`).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How much a connection reads at a time: an answer's head and a streamed
/// event fit many times over.
const READ_CHUNK: usize = 4096;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Settings of one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// How long connecting may take (all addresses together).
    pub connect_timeout: Duration,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// The most idle connections kept.
    pub max_idle: usize,
    /// TCP keepalive probes' idle time.
    pub tcp_keepalive: Duration,
}

/// The connections to one `host:port`.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    host: String,
    port: u16,
    /// `Host` for requests that carry none.
    host_header: HeaderValue,
    settings: PoolSettings,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Oldest first; taken from the end.
    conns: Vec<(Conn, Instant)>,
    /// Whether a task is dropping expired connections.
    reaping: bool,
}

/// One connection and what was read from it but not yet used.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// Why a request failed.
#[derive(Debug)]
pub(crate) struct H1Error {
    kind: H1ErrorKind,
    io: Option<io::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H1ErrorKind {
    Connect,
    Write,
    Read,
    /// The connection ended before the answer did.
    Incomplete,
    /// The answer is not HTTP/1.x as it should be.
    Parse(&'static str),
}

impl H1Error {
    fn new(kind: H1ErrorKind, io: Option<io::Error>) -> Self {
        H1Error { kind, io }
    }

    /// Failed before a connection was made: nothing was sent.
    pub fn is_connect(&self) -> bool {
        self.kind == H1ErrorKind::Connect
    }

    /// The answer broke off.
    pub fn is_incomplete(&self) -> bool {
        self.kind == H1ErrorKind::Incomplete
    }
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            H1ErrorKind::Connect => f.write_str("error trying to connect"),
            H1ErrorKind::Write => f.write_str("error writing the request"),
            H1ErrorKind::Read => f.write_str("error reading the answer"),
            H1ErrorKind::Incomplete => f.write_str("connection closed before the message completed"),
            H1ErrorKind::Parse(what) => write!(f, "invalid HTTP answer: {what}"),
        }
    }
}

impl std::error::Error for H1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io.as_ref().map(|e| e as _)
    }
}

fn parse_error(what: &'static str) -> H1Error {
    H1Error::new(H1ErrorKind::Parse(what), None)
}

impl Pool {
    /// A pool for `host:port`.
    pub fn new(host: &str, port: u16, settings: PoolSettings) -> Result<Self, String> {
        let authority = if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let host_header =
            HeaderValue::from_str(&authority).map_err(|_| format!("`{authority}` is not a valid host"))?;
        // `[::1]` in a URL is `::1` to connect to.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Pool {
            shared: Arc::new(Shared {
                host,
                port,
                host_header,
                settings,
                idle: Mutex::new(Idle::default()),
            }),
        })
    }

    /// Sends `req` (origin-form: only the URI's path and query are used);
    /// the answer's head arrives with the future, its body as it is read.
    /// A request on a reused connection that the upstream had closed is sent
    /// again on a new one when that is safe: when writing failed, or for a
    /// GET when the connection ended before any answer.
    pub fn send(
        &self,
        req: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<H1Body>, H1Error>> + Send + 'static {
        let shared = self.shared.clone();
        let head = encode(&req, &shared.host_header);
        let retry_unanswered = req.method() == Method::GET;
        let body = req.into_body();
        async move {
            loop {
                let (mut conn, reused) = match shared.checkout() {
                    Some(c) => (c, true),
                    None => (shared.connect().await?, false),
                };
                // Head and body in one vectored write, the body not copied.
                let mut out = (&head[..]).chain(&body[..]);
                let answer = match std::future::poll_fn(|cx| poll_send(&mut conn, &mut out, cx)).await {
                    Ok(Sent::All) => read_head(&mut conn).await,
                    // The connection cannot carry another request: the
                    // upstream did not read all of this one.
                    Ok(Sent::Answered((resp, framing, _))) => Ok((resp, framing, false)),
                    Err(e) if e.kind != H1ErrorKind::Write => return Err(e),
                    // An answer sent before the upstream broke the
                    // connection (a 413 for too large a body, say) is still
                    // the answer; anything less, a reused connection is
                    // tried again, a new one reports the failed write.
                    Err(e) => match read_head(&mut conn).await {
                        Ok((resp, framing, _)) => Ok((resp, framing, false)),
                        Err(_) if reused => continue,
                        Err(_) => return Err(e),
                    },
                };
                match answer {
                    Ok((resp, framing, keep_alive)) => {
                        let mut body = H1Body {
                            conn: Some(conn),
                            framing,
                            keep_alive,
                            pool: Arc::downgrade(&shared),
                            whole: None,
                        };
                        body.take_whole();
                        body.release_if_done();
                        return Ok(resp.map(|()| body));
                    }
                    // The upstream closed (or reset) the connection as it
                    // was reused, before answering anything.
                    Err(e)
                        if reused
                            && retry_unanswered
                            && conn.buf.is_empty()
                            && matches!(e.kind, H1ErrorKind::Incomplete | H1ErrorKind::Read) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.idle().conns.len()
    }
}

impl Shared {
    /// The idle list. Nothing panics while holding it, but if something
    /// did, the list is still whole: pooling goes on rather than stopping.
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest idle connection still usable; older expired or closed ones
    /// are dropped on the way.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle();
        let now = Instant::now();
        while let Some((conn, since)) = idle.conns.pop() {
            if now.duration_since(since) < self.settings.idle_timeout && conn.is_idle_and_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, conn: Conn) {
        let mut idle = self.idle();
        if idle.conns.len() >= self.settings.max_idle {
            return;
        }
        idle.conns.push((conn, Instant::now()));
        if !idle.reaping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            idle.reaping = true;
            rt.spawn(reap(Arc::downgrade(self)));
        }
    }

    async fn connect(&self) -> Result<Conn, H1Error> {
        let fail = |e| H1Error::new(H1ErrorKind::Connect, Some(e));
        let timeout = self.settings.connect_timeout;
        let io = tokio::time::timeout(timeout, async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
                .await?
                .collect();
            connect_any(addrs).await
        })
        .await
        .map_err(|_| fail(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
        .map_err(fail)?;
        // Small writes (a streamed request head, an event) go out at once.
        io.set_nodelay(true).map_err(fail)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(self.settings.tcp_keepalive);
        // Keepalive only finds dead peers sooner; a socket without it works.
        let _ = socket2::SockRef::from(&io).set_tcp_keepalive(&keepalive);
        Ok(Conn {
            io,
            buf: BytesMut::new(),
        })
    }
}

/// How long an attempt to connect to one address has before the next
/// address is tried beside it (RFC 8305's "connection attempt delay").
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` that answers, "happy eyeballs" style
/// (RFC 8305): address families alternate, the next address is tried when
/// an attempt fails or has not finished within [`ATTEMPT_DELAY`], and the
/// first connection made wins (the others are dropped). A host whose IPv6
/// (or IPv4) route silently drops packets thus costs 250 ms, not the whole
/// connect timeout.
async fn connect_any(addrs: Vec<SocketAddr>) -> io::Result<TcpStream> {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    let mut next = interleave(addrs).into_iter();
    let mut attempts = FuturesUnordered::new();
    let mut last = None;
    loop {
        if attempts.is_empty() {
            match next.next() {
                Some(a) => attempts.push(TcpStream::connect(a)),
                None => {
                    return Err(
                        last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))
                    );
                }
            }
        }
        let more = next.len() > 0;
        tokio::select! {
            done = attempts.next() => match done {
                Some(Ok(io)) => return Ok(io),
                Some(Err(e)) => {
                    last = Some(e);
                    if let Some(a) = next.next() {
                        attempts.push(TcpStream::connect(a));
                    }
                }
                None => {}
            },
            () = tokio::time::sleep(ATTEMPT_DELAY), if more => {
                if let Some(a) = next.next() {
                    attempts.push(TcpStream::connect(a));
                }
            }
        }
    }
}

/// The addresses with the two families alternating, the first address's
/// family first (the resolver's order is kept within each family).
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (a, b): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(addrs.len());
    for i in 0..a.len().max(b.len()) {
        out.extend(a.get(i).into_iter().chain(b.get(i)));
    }
    out
}

/// Drops idle connections once they expire; ends when none are left or the
/// pool is gone.
async fn reap(pool: Weak<Shared>) {
    loop {
        let Some(every) = pool.upgrade().map(|p| p.settings.idle_timeout) else {
            return;
        };
        tokio::time::sleep(every / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle();
        let now = Instant::now();
        let keep = pool.settings.idle_timeout;
        idle.conns
            .retain(|(conn, since)| now.duration_since(*since) < keep && conn.is_idle_and_open());
        if idle.conns.is_empty() {
            idle.reaping = false;
            return;
        }
    }
}

impl Conn {
    /// Whether nothing arrived since the last answer: neither bytes (which
    /// nobody asked for) nor the upstream closing. Without a readiness
    /// event since the last short read there is nothing to look at, so the
    /// usual case costs no system call.
    fn is_idle_and_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// How writing a request ended.
enum Sent {
    /// All of it was written.
    All,
    /// The upstream answered before taking all of it (the answer's head).
    Answered(Head),
}

/// Writes `out` to the connection. While the upstream takes no more, what
/// it sends is read: an upstream may answer before the body is in (a 413
/// for too large a body) and then stop reading, and waiting only to write
/// would never see that answer. Informational answers (`100 Continue`) are
/// skipped and writing goes on.
fn poll_send(conn: &mut Conn, out: &mut impl Buf, cx: &mut Context<'_>) -> Poll<Result<Sent, H1Error>> {
    let write_error = |e| H1Error::new(H1ErrorKind::Write, Some(e));
    while out.has_remaining() {
        match tokio_util::io::poll_write_buf(Pin::new(&mut conn.io), cx, out) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_error(io::ErrorKind::WriteZero.into()))),
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(write_error(e))),
            Poll::Pending => {}
        }
        loop {
            if !conn.buf.is_empty() {
                match parse_head(&mut conn.buf)? {
                    Some(Some(head)) => return Poll::Ready(Ok(Sent::Answered(head))),
                    // An informational answer: keep writing.
                    Some(None) => break,
                    None if conn.buf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(parse_error("the head is larger than 64 KiB")));
                    }
                    None => {}
                }
            }
            match ready!(conn.poll_fill(cx)) {
                // Closed without an answer: like a failed write (a reused
                // connection is tried again).
                Ok(0) => {
                    let closed = io::Error::new(io::ErrorKind::BrokenPipe, "the upstream closed the connection");
                    return Poll::Ready(Err(write_error(closed)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(write_error(e))),
            }
        }
    }
    Poll::Ready(Ok(Sent::All))
}

/// The request's head as it goes on the wire (the body follows it).
fn encode(req: &Request<Bytes>, host: &HeaderValue) -> Vec<u8> {
    let body = req.body();
    let headers = req.headers();
    let mut out = Vec::with_capacity(128 + headers.len() * 48);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        line(&mut out, HOST.as_str(), host.as_bytes());
    }
    for (name, value) in headers {
        line(&mut out, name.as_str(), value.as_bytes());
    }
    let sends_body = !body.is_empty() || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if sends_body && !headers.contains_key(CONTENT_LENGTH) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With a zero-size chunk.
    Chunked(Chunk),
    /// When the upstream closes the connection.
    Eof,
    /// It has ended.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Reads the answer's head (skipping informational answers); returns it
/// with how its body ends and whether the connection may be used again.
async fn read_head(conn: &mut Conn) -> Result<(Response<()>, Framing, bool), H1Error> {
    loop {
        if !conn.buf.is_empty()
            && let Some(parsed) = parse_head(&mut conn.buf)?
        {
            match parsed {
                Some(head) => return Ok(head),
                None => continue,
            }
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(parse_error("the head is larger than 64 KiB"));
        }
        match conn.fill().await {
            Ok(0) => return Err(H1Error::new(H1ErrorKind::Incomplete, None)),
            Ok(_) => {}
            Err(e) => return Err(H1Error::new(H1ErrorKind::Read, Some(e))),
        }
    }
}

type Head = (Response<()>, Framing, bool);

/// Parses a head at the start of `buf` and removes it: `None` when more
/// bytes are needed, `Some(None)` for an informational answer (skipped).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Option<Head>>, H1Error> {
    // Not zeroed first (100 slots of 32 bytes, for every answer).
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(parse_error("more than 100 headers")),
        Err(_) => return Err(parse_error("malformed head")),
    };
    let code = parsed.code.unwrap_or(0);
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(parse_error("an unrequested protocol switch"));
        }
        let _ = buf.split_to(len);
        return Ok(Some(None));
    }
    let status = StatusCode::from_u16(code).map_err(|_| parse_error("invalid status code"))?;
    // Where each header is in the head: its bytes are kept once, and the
    // values point into them.
    let n = parsed.headers.len();
    let start = buf.as_ptr() as usize;
    // (A head is under 4 GiB: offsets fit in u32, and the array is half
    // the size to clear.)
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = h.name.as_ptr() as usize - start;
        let value = h.value.as_ptr() as usize - start;
        let at = |n: usize| n as u32;
        *span = (at(name), at(name + h.name.len()), at(value), at(value + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(n);
    for &(name_at, name_end, value_at, value_end) in &spans[..n] {
        let (name_at, name_end, value_at, value_end) = (
            name_at as usize,
            name_end as usize,
            value_at as usize,
            value_end as usize,
        );
        let name = HeaderName::from_bytes(&head[name_at..name_end]).map_err(|_| parse_error("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_end))
            .map_err(|_| parse_error("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = framing(status, &headers)?;
    let keep_alive = framing != Framing::Eof && keeps_alive(version, &headers);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Some((resp, framing, keep_alive))))
}

/// How the body ends, from the status and the framing headers (RFC 9112
/// section 6.3).
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, H1Error> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if let Some(te) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let last = te.to_str().ok().and_then(|s| s.rsplit(',').next()).map(str::trim);
        return Ok(if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Eof
        });
    }
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| parse_error("invalid content-length"))?
            .split(',')
        {
            let n: u64 = part.trim().parse().map_err(|_| parse_error("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(parse_error("conflicting content-length headers"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Eof, Framing::Length))
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// An answer's body, read from its connection as it is polled. Read to
/// the end, the connection goes back to its pool; dropped before, the
/// connection closes, which tells the upstream to stop.
pub(crate) struct H1Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Weak<Shared>,
    /// A sized body that came whole with the head, taken out of the
    /// connection so that the connection is free at once.
    whole: Option<Bytes>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body").field("framing", &self.framing).finish()
    }
}

impl H1Body {
    /// Takes a sized body out of the connection's buffer when all of it is
    /// there (and nothing more).
    fn take_whole(&mut self) {
        if let (Framing::Length(n), Some(conn)) = (self.framing, self.conn.as_mut())
            && n > 0
            && conn.buf.len() as u64 == n
        {
            self.whole = Some(conn.buf.split().freeze());
            self.framing = Framing::Length(0);
        }
    }

    /// Once the body has ended, the connection goes back to the pool when
    /// it may be used again and nothing unasked for came after the answer.
    fn release_if_done(&mut self) {
        if !matches!(self.framing, Framing::Length(0) | Framing::Done) {
            return;
        }
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.put(conn);
        }
    }

    fn fail(&mut self, kind: H1ErrorKind, io: Option<io::Error>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(H1Error::new(kind, io))))
    }

    /// A data frame of up to `max` buffered bytes.
    fn take(conn: &mut Conn, max: u64) -> Bytes {
        let n = conn.buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        conn.buf.split_to(n).freeze()
    }
}

/// The next line (without its CRLF) at the start of `buf`, removed.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, H1Error> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(parse_error("a chunk line is too long")),
        None => Ok(None),
    }
}

/// A chunk-size line's size; extensions after `;` are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(parse_error("invalid chunk size"));
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| parse_error("invalid chunk size"))
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        if let Some(whole) = this.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        // The end of a chunk's data, held while the framing after it is
        // read from what is already buffered: an answer whose last chunk
        // and end marker came together ends (and frees its connection) with
        // its last data, even when nobody polls again.
        let mut last: Option<Bytes> = None;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(last.map(|d| Ok(Frame::data(d))));
            };
            // What the buffer holds is used before anything more is read.
            match this.framing {
                Framing::Done | Framing::Length(0) => {
                    this.release_if_done();
                    return Poll::Ready(last.map(|d| Ok(Frame::data(d))));
                }
                Framing::Length(left) if !conn.buf.is_empty() => {
                    let data = Self::take(conn, left);
                    this.framing = Framing::Length(left - data.len() as u64);
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Eof if !conn.buf.is_empty() => {
                    let data = Self::take(conn, u64::MAX);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(Chunk::Data(left)) if !conn.buf.is_empty() => {
                    let data = Self::take(conn, left);
                    let left = left - data.len() as u64;
                    if left > 0 {
                        this.framing = Framing::Chunked(Chunk::Data(left));
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.framing = Framing::Chunked(Chunk::DataEnd);
                    last = Some(data);
                    continue;
                }
                Framing::Chunked(Chunk::Size) => match take_line(&mut conn.buf) {
                    Err(e) => return this.fail(e.kind, None),
                    Ok(Some(line)) => match chunk_size(&line) {
                        Err(e) => return this.fail(e.kind, None),
                        Ok(0) => {
                            this.framing = Framing::Chunked(Chunk::Trailers);
                            continue;
                        }
                        Ok(n) => {
                            this.framing = Framing::Chunked(Chunk::Data(n));
                            if let Some(d) = last.take() {
                                return Poll::Ready(Some(Ok(Frame::data(d))));
                            }
                            continue;
                        }
                    },
                    Ok(None) => {}
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() >= 2 || conn.buf.first() == Some(&b'\n') {
                        match take_line(&mut conn.buf) {
                            Ok(Some(line)) if line.is_empty() => {
                                this.framing = Framing::Chunked(Chunk::Size);
                                continue;
                            }
                            _ => return this.fail(H1ErrorKind::Parse("no line end after a chunk"), None),
                        }
                    }
                }
                Framing::Chunked(Chunk::Trailers) => match take_line(&mut conn.buf) {
                    Err(e) => return this.fail(e.kind, None),
                    Ok(Some(line)) if line.is_empty() => {
                        this.framing = Framing::Done;
                        continue;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                },
                Framing::Length(_) | Framing::Eof | Framing::Chunked(Chunk::Data(_)) => {}
            }
            // More must be read; what was taken goes out first.
            if let Some(d) = last.take() {
                return Poll::Ready(Some(Ok(Frame::data(d))));
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Eof => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(H1ErrorKind::Incomplete, None),
                Ok(_) => {}
                Err(e) => return this.fail(H1ErrorKind::Read, Some(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none() && matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        let whole = self.whole.as_ref().map_or(0, |w| w.len() as u64);
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n + whole),
            Framing::Done => SizeHint::with_exact(whole),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SETTINGS: PoolSettings = PoolSettings {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(90),
        max_idle: 8,
        tcp_keepalive: Duration::from_secs(30),
    };

    /// A loopback server that answers each request on a connection with the
    /// next of `replies` (and closes the connection after the last); returns
    /// its port, how many connections it accepted, and the request heads.
    async fn server(replies: Vec<&'static [u8]>) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (acc, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            let replies = Arc::new(Mutex::new(replies.into_iter()));
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (replies, seen) = (replies.clone(), seen.clone());
                tokio::spawn(async move {
                    loop {
                        let mut req = Vec::new();
                        let mut b = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => req.extend_from_slice(&b[..n]),
                            }
                        }
                        seen.lock().unwrap().push(String::from_utf8_lossy(&req).into_owned());
                        let next = replies.lock().unwrap().next();
                        let Some(reply) = next else { return };
                        if sock.write_all(reply).await.is_err() {
                            return;
                        }
                        // After the last reply (or one that says so) the
                        // connection closes.
                        let more = replies.lock().unwrap().len() > 0;
                        if !more || reply.windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close")) {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted, heads)
    }

    fn pool(port: u16) -> Pool {
        Pool::new("127.0.0.1", port, SETTINGS).unwrap()
    }

    fn post(body: &'static str) -> Request<Bytes> {
        let mut req = Request::new(Bytes::from_static(body.as_bytes()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "http://127.0.0.1/v1/chat?x=1".parse().unwrap();
        req.headers_mut().insert("x-test", HeaderValue::from_static("yes"));
        req
    }

    fn get() -> Request<Bytes> {
        let mut req = Request::new(Bytes::new());
        *req.uri_mut() = "http://127.0.0.1/v1/models".parse().unwrap();
        req
    }

    async fn body_text(resp: Response<H1Body>) -> Result<String, H1Error> {
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_sized_answer_is_read_and_its_connection_reused() {
        let (port, accepted, heads) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: a\r\nX-Up: b\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nbye",
        ])
        .await;
        let p = pool(port);
        let resp = p.send(post("{\"a\":1}")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_11);
        let ups: Vec<_> = resp.headers().get_all("x-up").iter().collect();
        assert_eq!(ups, ["a", "b"]);
        assert_eq!(
            p.idle_count(),
            1,
            "a body already in the buffer frees its connection at once"
        );
        assert_eq!(body_text(resp).await.unwrap(), "hello");
        let resp = p.send(get()).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(body_text(resp).await.unwrap(), "bye");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for both");
        let heads = heads.lock().unwrap().clone();
        assert_eq!(
            heads[0],
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:".to_string()
                + &port.to_string()
                + "\r\nx-test: yes\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
        assert!(heads[1].starts_with("GET /v1/models HTTP/1.1\r\n"), "{}", heads[1]);
        assert!(!heads[1].contains("content-length"), "a GET without body has no length");
    }

    #[tokio::test]
    async fn a_large_body_goes_out_whole_after_its_head() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut b = vec![0u8; 64 * 1024];
            let head_end = loop {
                let n = sock.read(&mut b).await.unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&b[..n]);
                if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&got[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            while got.len() < head_end + len {
                let n = sock.read(&mut b).await.unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&b[..n]);
            }
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            got.split_off(head_end)
        });
        let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let expect = big.clone().into_bytes();
        let mut req = Request::new(Bytes::from(big));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "http://127.0.0.1/v1/chat".parse().unwrap();
        let resp = pool(port).send(req).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(server.await.unwrap(), expect);
    }

    /// A server that reads a request's head only, then answers at once
    /// (`100 Continue` first when `interim`) and, when `close`, closes with
    /// the body unread; otherwise it holds the connection without reading
    /// until the client goes.
    async fn early_answer_server(interim: bool, close: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut b).await.unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&b[..n]);
            }
            if interim {
                sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
            }
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
            sock.write_all(answer).await.unwrap();
            if close {
                return;
            }
            // Not reading: the client's writes stall until it gives up.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sock);
        });
        port
    }

    /// A POST with a body far larger than the socket buffers hold.
    fn huge_post() -> Request<Bytes> {
        let mut req = Request::new(Bytes::from(vec![b'x'; 64 * 1024 * 1024]));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "http://127.0.0.1/v1/chat".parse().unwrap();
        req
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_body_was_taken_is_the_answer() {
        for interim in [false, true] {
            let p = pool(early_answer_server(interim, false).await);
            let resp = tokio::time::timeout(Duration::from_secs(20), p.send(huge_post()))
                .await
                .expect("the early answer is seen while the write stalls")
                .unwrap();
            assert_eq!(resp.status(), 413, "interim answer first: {interim}");
            assert_eq!(body_text(resp).await.unwrap(), "too large");
            assert_eq!(p.idle_count(), 0, "a connection with an unfinished request is not kept");
        }
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_upstream_closed_on_an_unread_body_is_the_answer() {
        // The upstream closes with the body unread (the kernel resets the
        // connection); the answer it sent first still arrives.
        for _ in 0..5 {
            let p = pool(early_answer_server(false, true).await);
            let resp = p.send(huge_post()).await.unwrap();
            assert_eq!(resp.status(), 413);
            assert_eq!(body_text(resp).await.unwrap(), "too large");
        }
    }

    #[test]
    fn address_families_alternate_first_family_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("[::3]:1"),
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
        ]);
        assert_eq!(
            got,
            [
                a("[::1]:1"),
                a("10.0.0.1:1"),
                a("[::2]:1"),
                a("10.0.0.2:1"),
                a("[::3]:1")
            ]
        );
        let got = interleave(vec![a("10.0.0.1:1"), a("[::1]:1")]);
        assert_eq!(got, [a("10.0.0.1:1"), a("[::1]:1")]);
        assert!(interleave(vec![]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_never_answers_does_not_hold_up_the_next() {
        // A listener with a full accept queue drops new SYNs: connecting to
        // it hangs, like an address whose route drops packets.
        let hang = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        hang.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        hang.listen(0).unwrap();
        let hang_addr = hang.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&hang_addr.into());
            fillers.push(s);
        }
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        // Paused time runs ahead whenever the runtime waits: without the
        // next attempt after 250 ms this would reach the 10 s timeout.
        let t0 = Instant::now();
        let io = tokio::time::timeout(Duration::from_secs(10), connect_any(vec![hang_addr, good_addr]))
            .await
            .expect("the second address is tried while the first hangs")
            .unwrap();
        assert_eq!(io.peer_addr().unwrap(), good_addr);
        assert!(t0.elapsed() >= ATTEMPT_DELAY, "{:?}", t0.elapsed());
        // A refused address moves on at once, and all failing reports the last error.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let t0 = Instant::now();
        let io = connect_any(vec![closed, good_addr]).await.unwrap();
        assert_eq!(io.peer_addr().unwrap(), good_addr);
        assert!(t0.elapsed() < ATTEMPT_DELAY, "{:?}", t0.elapsed());
        let e = connect_any(vec![closed]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        drop(fillers);
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_with_extensions_and_trailers() {
        let (port, accepted, _) = server(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ])
        .await;
        let p = pool(port);
        let mut body = p.send(get()).await.unwrap().into_body();
        let mut got = Vec::new();
        while got.concat() != b"hello 0123456789" {
            let frame = body.frame().await.unwrap().unwrap();
            got.push(frame.into_data().unwrap().to_vec());
        }
        assert_eq!(
            p.idle_count(),
            1,
            "the end marker came with the last chunk: the connection is free with the last data"
        );
        assert!(body.frame().await.is_none());
        let resp = p.send(get()).await.unwrap();
        assert_eq!(body_text(resp).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_ended_by_closing_is_read_whole_and_its_connection_not_kept() {
        let (port, accepted, _) = server(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let p = pool(port);
        let resp = p.send(get()).await.unwrap();
        assert_eq!(body_text(resp).await.unwrap(), "until the end");
        assert_eq!(p.idle_count(), 0);
        let resp = p.send(get()).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_10);
        assert_eq!(body_text(resp).await.unwrap(), "ok");
        assert_eq!(p.idle_count(), 0, "HTTP/1.0 without keep-alive is not reused");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_empty_statuses_have_no_body() {
        let (port, _, _) = server(vec![
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let p = pool(port);
        let resp = p.send(get()).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_end_stream());
        assert_eq!(body_text(resp).await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_incomplete_message() {
        let (port, _, _) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhalf",
        ])
        .await;
        let p = pool(port);
        let resp = p.send(get()).await.unwrap();
        let err = body_text(resp).await.unwrap_err();
        assert!(err.is_incomplete(), "{err:?}");
        let e = crate::error::classify_transport(&err, crate::error::TimeoutPhase::Idle);
        assert_eq!(e.cause, Some(crate::error::TransportCause::ConnectionReset), "{e:?}");
        let (port, _, _) = server(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhel",
        ])
        .await;
        let resp = pool(port).send(get()).await.unwrap();
        assert!(body_text(resp).await.unwrap_err().is_incomplete());
    }

    #[tokio::test]
    async fn malformed_answers_are_errors_that_say_what_is_wrong() {
        for (reply, what) in [
            (&b"NOT HTTP\r\n\r\n"[..], "malformed head"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
                "conflicting",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "content-length"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "protocol switch"),
        ] {
            let (port, _, _) = server(vec![reply]).await;
            let err = pool(port).send(get()).await.unwrap_err();
            assert!(err.to_string().contains(what), "{err} for {reply:?}");
        }
        let (port, _, _) = server(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"]).await;
        let resp = pool(port).send(get()).await.unwrap();
        assert!(body_text(resp).await.unwrap_err().to_string().contains("chunk size"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = pool(port).send(get()).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let e = crate::error::classify_transport(&err, crate::error::TimeoutPhase::Total);
        assert_eq!(e.cause, Some(crate::error::TransportCause::ConnectionRefused), "{e:?}");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
        // The server answers once and then closes the idle connection.
        let (port, accepted, _) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
        let p = pool(port);
        let resp = p.send(get()).await.unwrap();
        assert_eq!(body_text(resp).await.unwrap(), "ok");
        let conn = p.shared.idle.lock().unwrap().conns.pop().unwrap().0;
        // Waits (without a clock) for the reactor to see the close.
        conn.io.readable().await.unwrap();
        assert!(!conn.is_idle_and_open(), "the close is seen without sending anything");
        p.shared.idle.lock().unwrap().conns.push((conn, Instant::now()));
        assert!(p.shared.checkout().is_none(), "and the connection is dropped");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_get_on_a_reused_connection_that_closed_is_sent_again_on_a_new_one() {
        let (port, accepted, _) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain",
        ])
        .await;
        let p = pool(port);
        assert_eq!(body_text(p.send(get()).await.unwrap()).await.unwrap(), "ok");
        // The idle connection breaks (shut down here, as if the upstream
        // had reset it): the next GET still gets its answer.
        let conn = p.shared.idle.lock().unwrap().conns.pop().unwrap().0;
        let std = conn.io.into_std().unwrap();
        std.shutdown(std::net::Shutdown::Both).unwrap();
        let io = TcpStream::from_std(std).unwrap();
        p.shared.idle.lock().unwrap().conns.push((
            Conn {
                io,
                buf: BytesMut::new(),
            },
            Instant::now(),
        ));
        let resp = p.send(get()).await.unwrap();
        assert_eq!(body_text(resp).await.unwrap(), "again");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn dropping_a_body_closes_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = sock.read(&mut b).await.unwrap();
            sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await
                .unwrap();
            // The client reads the first chunk and drops the body: this
            // read then ends (0) instead of waiting for ever.
            sock.read(&mut b).await.unwrap()
        });
        let p = pool(port);
        let resp = p.send(get()).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first");
        drop(body);
        assert_eq!(server.await.unwrap(), 0);
        assert_eq!(p.idle_count(), 0);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (port, accepted, _) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let p = pool(port);
        assert_eq!(body_text(p.send(get()).await.unwrap()).await.unwrap(), "ok");
        assert_eq!(p.idle_count(), 1);
        tokio::time::pause();
        // Paused, the clock jumps to each timer when nothing else can run.
        tokio::time::sleep(SETTINGS.idle_timeout / 4).await;
        assert_eq!(p.idle_count(), 1, "not yet");
        tokio::time::sleep(SETTINGS.idle_timeout * 2).await;
        assert_eq!(p.idle_count(), 0, "the reaper dropped it");
        tokio::time::resume();
        assert_eq!(body_text(p.send(get()).await.unwrap()).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn chunk_sizes_parse_as_hex_and_reject_junk() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"A ; name=value").unwrap(), 10);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"g").is_err());
        assert!(chunk_size(b"ffffffffffffffff").is_err(), "too large");
    }
}
