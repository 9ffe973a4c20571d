//! Pure translations between the canonical (OpenAI-shaped) types and the
//! other providers' wire formats, in both directions: adapters use one
//! direction to call upstreams; the gateway's compatible routes and the
//! simulator use the other.

pub mod anthropic;
pub mod gemini;
pub mod openai;
