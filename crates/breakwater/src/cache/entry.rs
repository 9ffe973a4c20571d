//! A cached answer with its lifetimes, and its compact encoding for Redis.
//!
//! Encoding (version 1): a 27-byte header — magic `b'B'`, format version,
//! flags (0; bit 0 reserved for compression), then stored-at, fresh-until and
//! stale-until as little-endian Unix milliseconds — followed by the response
//! as JSON. JSON because the response type carries arbitrary pass-through
//! fields (`extra`) that only a self-describing format keeps; the header is
//! binary so freshness is read without parsing the body. Compression is not
//! applied: typical answers are a few KB, where it would cost more CPU than
//! the bytes it saves on a local network.

use crate::types::ChatResponse;
use std::sync::Arc;

const MAGIC: u8 = b'B';
const FORMAT: u8 = 1;
const HEADER: usize = 27;

/// A cached response and when it expires.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The answer.
    pub response: Arc<ChatResponse>,
    /// When it was stored (Unix ms).
    pub stored_at_ms: u64,
    /// Until when it answers normal lookups (Unix ms).
    pub fresh_until_ms: u64,
    /// Until when it may answer as stale, after failures (Unix ms).
    pub stale_until_ms: u64,
    /// Its encoded size, which the memory bound counts.
    pub size: u32,
}

/// How usable an entry is at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within its TTL.
    Fresh,
    /// Past its TTL, within the grace period.
    Stale,
    /// Past the grace period: as good as absent.
    Dead,
}

impl Entry {
    /// How usable the entry is at `now_ms`.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if now_ms < self.fresh_until_ms {
            Freshness::Fresh
        } else if now_ms < self.stale_until_ms {
            Freshness::Stale
        } else {
            Freshness::Dead
        }
    }

    /// The encoded form (header + JSON).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        encode_parts(
            &self.response,
            self.stored_at_ms,
            self.fresh_until_ms,
            self.stale_until_ms,
        )
    }

    /// Decodes [`Entry::encode`]'s output; `None` for anything else
    /// (another format version included, so an upgrade reads old entries as
    /// misses instead of failing).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() < HEADER || bytes[0] != MAGIC || bytes[1] != FORMAT || bytes[2] != 0 {
            return None;
        }
        let u = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?)) };
        let response: ChatResponse = crate::types::from_json_bytes(&bytes[HEADER..]).ok()?;
        Some(Entry {
            response: Arc::new(response),
            stored_at_ms: u(3)?,
            fresh_until_ms: u(11)?,
            stale_until_ms: u(19)?,
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        })
    }
}

/// Encodes a response with its lifetimes without building an [`Entry`].
pub(crate) fn encode_parts(
    resp: &ChatResponse,
    stored_at_ms: u64,
    fresh_until_ms: u64,
    stale_until_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(HEADER + 512);
    out.extend_from_slice(&[MAGIC, FORMAT, 0]);
    out.extend_from_slice(&stored_at_ms.to_le_bytes());
    out.extend_from_slice(&fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&stale_until_ms.to_le_bytes());
    serde_json::to_writer(&mut out, resp)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::{Choice, Extra, FinishReason, Message, Usage};

    pub(crate) fn response(text: &str) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            object: "chat.completion".into(),
            created: 1,
            model: "gpt-4o-mini".into(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                finish_reason: Some(FinishReason::Stop),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(Usage::new(10, 5)),
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let e = Entry {
            response: Arc::new(response("hi")),
            stored_at_ms: 1,
            fresh_until_ms: 2,
            stale_until_ms: 3,
            size: 0,
        };
        let bytes = e.encode().unwrap();
        let d = Entry::decode(&bytes).unwrap();
        assert_eq!(*d.response, *e.response);
        assert_eq!((d.stored_at_ms, d.fresh_until_ms, d.stale_until_ms), (1, 2, 3));
        assert_eq!(d.size as usize, bytes.len());
        assert!(Entry::decode(b"").is_none());
        assert!(Entry::decode(&bytes[..20]).is_none());
        let mut other = bytes.clone();
        other[1] = 2;
        assert!(Entry::decode(&other).is_none());
        assert_eq!(d.freshness(1), Freshness::Fresh);
        assert_eq!(d.freshness(2), Freshness::Stale);
        assert_eq!(d.freshness(3), Freshness::Dead);
    }
}
