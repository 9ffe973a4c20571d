//! Canonical request, response and stream types, in OpenAI's
//! chat-completions shape (the lingua franca every adapter translates to and
//! from). Unknown fields survive a round trip in each type's `extra`.

mod assemble;
#[macro_use]
pub(crate) mod de;
mod chat;
mod embeddings;

pub use assemble::{StreamAssembler, response_to_chunks};
pub use chat::*;
pub use de::from_json_bytes;
pub use embeddings::*;

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
