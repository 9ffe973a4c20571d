//! Request JSON in every format the gateway accepts never panics, and a
//! parsed canonical request survives a serialise/parse round trip.
#![no_main]

use breakwater::types::{ChatRequest, EmbeddingRequest};
use breakwater::wire::{anthropic, gemini};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        let text = serde_json::to_vec(&req).expect("a parsed request serialises");
        let again: ChatRequest = serde_json::from_slice(&text).expect("and parses back");
        assert_eq!(serde_json::to_value(&again).ok(), serde_json::to_value(&req).ok());
        let _ = anthropic::to_anthropic_request(&req);
        let _ = gemini::to_gemini_request(&req);
        let _ = req.estimate_prompt_tokens();
    }
    if let Ok(req) = serde_json::from_slice::<anthropic::MessagesRequest>(data) {
        let _ = anthropic::from_anthropic_request(req);
    }
    if let Ok(req) = serde_json::from_slice::<gemini::GenerateContentRequest>(data) {
        let _ = gemini::from_gemini_request("m", req);
    }
    let _ = serde_json::from_slice::<EmbeddingRequest>(data);
});
