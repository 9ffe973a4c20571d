//! Server-sent events: an incremental parser that gives the same events
//! however the bytes are split (CRLF, CR or LF line ends, multi-line `data:`,
//! comments, a BOM), and a writer.
//!
//! The parser follows the WHATWG event-stream rules: a blank line dispatches
//! the event being built; an event without data is not dispatched.

use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen.
    pub id: Option<String>,
    /// A `retry:` reconnection time, in milliseconds.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The event type, `message` when unnamed.
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether this is OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Why the byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line is not UTF-8.
    InvalidUtf8,
    /// A line or event grew past the limit.
    TooLarge(usize),
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::InvalidUtf8 => f.write_str("event stream is not valid UTF-8"),
            SseError::TooLarge(n) => write!(f, "event larger than {n} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// The default bound on one event (16 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<u64>,
    /// The previous byte was a CR, so a following LF ends nothing.
    after_cr: bool,
    /// At the very start of the stream, where a BOM is skipped.
    at_start: bool,
    max_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default size bound.
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that rejects lines or events larger than `max_bytes`.
    pub fn with_max_event_bytes(max_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            retry: None,
            after_cr: false,
            at_start: true,
            max_bytes,
        }
    }

    /// Feeds bytes; completed events are appended to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_start && !chunk.is_empty() {
            // The BOM may itself be split; hold back a partial prefix of it.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            self.line.extend_from_slice(chunk);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return Ok(());
            }
            self.at_start = false;
            let pending = std::mem::take(&mut self.line);
            let body = pending.strip_prefix(BOM).unwrap_or(&pending);
            return self.feed_lines(body, out);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.after_cr && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        self.feed_lines(chunk, out)
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let is_cr = chunk[pos] == b'\r';
            if self.line.is_empty() {
                self.process_line(&chunk[..pos], out)?;
            } else {
                self.line.extend_from_slice(&chunk[..pos]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out)?;
                self.line = line;
                self.line.clear();
            }
            chunk = &chunk[pos + 1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if self.line.len() + chunk.len() > self.max_bytes {
            return Err(SseError::TooLarge(self.max_bytes));
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment / keep-alive
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value).map_err(|_| SseError::InvalidUtf8)?;
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_bytes {
                    return Err(SseError::TooLarge(self.max_bytes));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.to_string()),
            b"id" if !value.contains('\0') => {
                self.last_id = Some(value.to_string());
            }
            b"retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                }
            }
            _ => {} // unknown fields are ignored
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let retry = self.retry.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry,
        });
    }

    /// Ends the stream. Per the spec an event not followed by a blank line is
    /// discarded; this returns whether such an incomplete event (or line) was
    /// pending, which callers treat as a truncated stream.
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || self.has_data;
        self.line.clear();
        self.data.clear();
        self.has_data = false;
        pending
    }
}

/// Adapts a stream of byte chunks into a stream of events.
pub struct SseStream<S> {
    inner: S,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
    scratch: Vec<SseEvent>,
    done: bool,
}

/// An item of [`SseStream`]: an event, or why the stream cannot go on.
#[derive(Debug)]
pub enum SseItem<E> {
    /// A parsed event.
    Event(SseEvent),
    /// The bytes were not a valid event stream.
    Invalid(SseError),
    /// The byte stream failed.
    Transport(E),
}

impl<S> SseStream<S> {
    /// Wraps a byte stream.
    pub fn new(inner: S) -> Self {
        Self::with_parser(inner, SseParser::new())
    }

    /// Wraps a byte stream with a configured parser.
    pub fn with_parser(inner: S, parser: SseParser) -> Self {
        SseStream {
            inner,
            parser,
            ready: Default::default(),
            scratch: Vec::new(),
            done: false,
        }
    }
}

impl<S, B, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    type Item = SseItem<E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.ready.pop_front() {
                return Poll::Ready(Some(SseItem::Event(ev)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    this.parser.finish();
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(SseItem::Transport(e)));
                }
                Poll::Ready(Some(Ok(bytes))) => {
                    this.scratch.clear();
                    if let Err(e) = this.parser.feed(bytes.as_ref(), &mut this.scratch) {
                        this.done = true;
                        return Poll::Ready(Some(SseItem::Invalid(e)));
                    }
                    this.ready.extend(this.scratch.drain(..));
                }
            }
        }
    }
}

/// Appends one event in wire form to `buf`. Multi-line data becomes several
/// `data:` lines, so the parser gives back exactly `data`.
pub fn write_event(buf: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(e) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(e.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    buf.extend_from_slice(b"\n");
}

/// One event in wire form.
pub fn encode_event(event: Option<&str>, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 16);
    write_event(&mut buf, event, data);
    buf.freeze()
}

/// OpenAI's end-of-stream marker in wire form.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: None,
            retry: None,
        }
    }

    #[test]
    fn basic_forms() {
        let input = b"\xEF\xBB\xBF: keep-alive\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata: line1\ndata: line2\n\ndata:no-space\rdata:  two spaces\r\r\nevent: ping\n\ndata: [DONE]\n\n";
        let got = parse_all(&[input]);
        assert_eq!(
            got,
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "line1\nline2"),
                ev(None, "no-space\n two spaces"),
                ev(None, "[DONE]"),
            ]
        );
        assert!(got[3].is_done());
    }

    #[test]
    fn id_and_retry() {
        let got = parse_all(&[b"id: 7\nretry: 1500\ndata: x\n\ndata: y\n\n"]);
        assert_eq!(got[0].id.as_deref(), Some("7"));
        assert_eq!(got[0].retry, Some(1500));
        assert_eq!(got[1].id.as_deref(), Some("7"), "id persists");
        assert_eq!(got[1].retry, None);
    }

    #[test]
    fn data_field_without_colon_is_empty_line() {
        let got = parse_all(&[b"data\ndata\n\n"]);
        assert_eq!(got, vec![ev(None, "\n")]);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        assert_eq!(p.feed(b"data: \xff\xfe\n\n", &mut out), Err(SseError::InvalidUtf8));
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut p = SseParser::with_max_event_bytes(16);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456789", &mut out).is_ok());
        assert_eq!(p.feed(b"0123456789", &mut out), Err(SseError::TooLarge(16)));
        let mut p = SseParser::with_max_event_bytes(16);
        assert_eq!(
            p.feed(b"data: 0123456789\ndata: 0123456789\n", &mut out),
            Err(SseError::TooLarge(16))
        );
    }

    #[test]
    fn finish_reports_a_pending_event() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: partial", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.finish());
        let mut p = SseParser::new();
        p.feed(b"data: whole\n\n", &mut out).unwrap();
        assert!(!p.finish());
    }

    #[test]
    fn writer_round_trips() {
        let mut buf = BytesMut::new();
        write_event(&mut buf, Some("content_block_delta"), "a\nb\r\nc");
        write_event(&mut buf, None, "");
        let got = parse_all(&[&buf]);
        assert_eq!(got, vec![ev(Some("content_block_delta"), "a\nb\nc"), ev(None, "")]);
    }

    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let line_end = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let field = prop_oneof![
            "[a-z {}\":,\\[\\]0-9é]{0,20}".prop_map(|s| format!("data: {s}")),
            "[a-z_]{1,12}".prop_map(|s| format!("event: {s}")),
            "[a-z ]{0,10}".prop_map(|s| format!(": {s}")),
            "[0-9]{1,4}".prop_map(|s| format!("id: {s}")),
            Just(String::new()),
        ];
        proptest::collection::vec((field, line_end), 0..40).prop_map(|lines| {
            let mut s = String::new();
            for (l, e) in lines {
                s.push_str(&l);
                s.push_str(e);
            }
            s.push_str("\n\n");
            s.into_bytes()
        })
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(stream in arb_stream(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let whole = parse_all(&[&stream]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            prop_assert_eq!(parse_all(&chunks), whole.clone());
            // Byte by byte too.
            let singles: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(parse_all(&singles), whole);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = SseParser::with_max_event_bytes(64);
            let mut out = Vec::new();
            let _ = p.feed(&bytes, &mut out);
            p.finish();
        }
    }
}
