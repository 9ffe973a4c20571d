//! Google Gemini `generateContent`: wire types and translation to and from
//! the canonical types, requests, responses, streams and embeddings.

mod convert;
mod stream;
mod types;

pub use convert::*;
pub use stream::{StreamDecoder, StreamEncoder};
pub use types::*;
