//! Response caching: exact-key tiers and the semantic (embedding) cache.

pub mod semantic;
