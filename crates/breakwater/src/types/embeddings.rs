//! Embeddings request and response, in OpenAI's shape.

use super::chat::Extra;
use serde::{Deserialize, Serialize};

/// An embeddings request (`POST /v1/embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingRequest {
    /// Model alias or upstream model.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Output dimensions, for models that allow shortening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// End-user identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(EmbeddingRequest {
    model: "model" => required,
    input: "input" => required,
    encoding_format: "encoding_format" => default,
    dimensions: "dimensions" => default,
    user: "user" => default,
});

impl EmbeddingRequest {
    /// A request for the given texts.
    pub fn new(model: impl Into<String>, texts: Vec<String>) -> Self {
        EmbeddingRequest {
            model: model.into(),
            input: EmbeddingInput::Many(texts),
            encoding_format: None,
            dimensions: None,
            user: None,
            extra: Extra::new(),
        }
    }
}

/// Embedding input: text(s) or token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// One token-id sequence.
    Tokens(Vec<u32>),
    /// Several token-id sequences.
    TokenBatches(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// The number of inputs.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::One(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Many(v) => v.len(),
            EmbeddingInput::TokenBatches(v) => v.len(),
        }
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs as texts, when they are texts.
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            EmbeddingInput::One(s) => Some(vec![s.as_str()]),
            EmbeddingInput::Many(v) => Some(v.iter().map(String::as_str).collect()),
            _ => None,
        }
    }
}

/// An embeddings response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingResponse {
    /// `list`.
    pub object: String,
    /// One embedding per input, in input order.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Token usage.
    pub usage: EmbeddingUsage,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(EmbeddingResponse {
    object: "object" => object_list,
    data: "data" => required,
    model: "model" => default,
    usage: "usage" => default,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_floats() {
        // 1.0f32 = 00 00 80 3f little-endian.
        assert_eq!(EmbeddingVector::base64_of(&[1.0]), "AACAPw==");
        assert_eq!(EmbeddingVector::base64_of(&[]), "");
        let mut v = EmbeddingVector::Float(vec![1.0, 0.0]);
        v.make_base64();
        assert_eq!(v, EmbeddingVector::Base64("AACAPwAAAAA=".into()));
    }
}

fn object_list() -> String {
    "list".to_string()
}

fn object_embedding() -> String {
    "embedding".to_string()
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    #[serde(default = "object_embedding")]
    pub object: String,
    /// Position of its input.
    #[serde(default)]
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
}

impl Embedding {
    /// An embedding of floats.
    pub fn new(index: u32, values: Vec<f32>) -> Self {
        Embedding {
            object: object_embedding(),
            index,
            embedding: EmbeddingVector::Float(values),
        }
    }
}

/// The vector as floats or as base64 of little-endian f32 (what the OpenAI
/// SDKs ask for by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// Plain floats.
    Float(Vec<f32>),
    /// Base64 of little-endian f32 values.
    Base64(String),
}

impl EmbeddingVector {
    /// The base64 form of float values (little-endian f32), as OpenAI sends
    /// for `encoding_format: base64`.
    pub fn base64_of(values: &[f32]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
                | u32::from(c.get(2).copied().unwrap_or(0));
            out.push(T[(n >> 18) as usize & 63] as char);
            out.push(T[(n >> 12) as usize & 63] as char);
            out.push(if c.len() > 1 {
                T[(n >> 6) as usize & 63] as char
            } else {
                '='
            });
            out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
        }
        out
    }

    /// Converts floats to base64 in place.
    pub fn make_base64(&mut self) {
        if let EmbeddingVector::Float(v) = self {
            *self = EmbeddingVector::Base64(Self::base64_of(v));
        }
    }
}

/// Token usage of an embeddings call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the input.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// The same number.
    #[serde(default)]
    pub total_tokens: u32,
}
