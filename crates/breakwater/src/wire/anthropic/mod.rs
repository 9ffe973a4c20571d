//! Anthropic Messages: wire types and translation to and from the canonical
//! types, requests, responses and streams.

mod convert;
mod stream;
mod types;

pub use convert::*;
pub use stream::{StreamDecoder, StreamEncoder};
pub use types::*;
