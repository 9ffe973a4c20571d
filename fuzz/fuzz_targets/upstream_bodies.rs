//! Whatever an upstream sends, classification and stream decoding never panic.
#![no_main]

use breakwater::error::{classify_http, classify_stream_error};
use breakwater::wire::{anthropic, gemini};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let status = 400 + u16::from(data.first().copied().unwrap_or(0)) % 200;
    let _ = classify_http(status, &http_headers(), data);
    let _ = classify_stream_error(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = breakwater::provider::openai::parse_stream_event(text);
        let mut d = anthropic::StreamDecoder::new();
        for line in text.lines() {
            let _ = d.push(line);
        }
    }
    if let Ok(piece) = serde_json::from_slice::<gemini::GenerateContentResponse>(data) {
        let mut d = gemini::StreamDecoder::new("m");
        let _ = d.push(piece);
        let _ = d.end();
    }
});

fn http_headers() -> breakwater::error::HeaderMap {
    breakwater::error::HeaderMap::new()
}
