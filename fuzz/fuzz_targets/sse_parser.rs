//! The SSE parser never panics, and splitting the input anywhere gives the
//! same events as feeding it whole.
#![no_main]

use breakwater::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let body = &data[1..];
    let cut = cut.min(body.len());
    let mut whole = Vec::new();
    let mut p = SseParser::with_max_event_bytes(4096);
    let r1 = p.feed(body, &mut whole);
    p.finish();
    let mut split = Vec::new();
    let mut q = SseParser::with_max_event_bytes(4096);
    let r2 = q.feed(&body[..cut], &mut split).and_then(|_| q.feed(&body[cut..], &mut split));
    q.finish();
    if r1.is_ok() && r2.is_ok() {
        assert_eq!(whole, split);
    }
});
