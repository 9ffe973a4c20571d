//! The [`Embedder`] trait and a tiny deterministic embedder for tests.

use super::SemanticError;
use super::index::normalize;
use async_trait::async_trait;

/// Turns texts into unit-length vectors whose dot product measures how close
/// their meanings are.
///
/// Implementations must not block the async runtime: heavy work belongs on a
/// thread of its own (see [`MiniLmEmbedder`](super::MiniLmEmbedder)).
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Components per vector.
    fn dimension(&self) -> usize;

    /// A short name for logs and stats (e.g. `all-MiniLM-L6-v2`).
    fn name(&self) -> &str;

    /// One unit vector per text, in order. An empty slice gives an empty
    /// result. Fails as a whole when any text cannot be embedded (too long,
    /// the embedder overloaded or stopped).
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError>;
}

/// A deterministic bag-of-words embedder: each lower-cased word is hashed to
/// a signed component. Texts with the same words get the same vector, texts
/// sharing most words get close ones. It has no idea of meaning; it exists so
/// the index and cache logic can be tested quickly and exactly.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl HashEmbedder {
    /// An embedder producing `dim`-component vectors (at least 1).
    pub fn new(dim: usize) -> Self {
        HashEmbedder { dim: dim.max(1) }
    }

    /// The vector for one text, synchronously.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
        {
            let h = fnv1a(word.as_bytes());
            let slot = (h % self.dim as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            v[slot] += sign;
        }
        normalize(&mut v);
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn dimension(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        "hash-bag-of-words"
    }

    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::semantic::index::dot;

    #[tokio::test]
    async fn hash_embedder_is_deterministic_and_normalised() {
        let e = HashEmbedder::new(64);
        let v = e
            .embed(&["Hello world", "hello, WORLD!", "", "🦀 ünïcödé"])
            .await
            .unwrap();
        assert_eq!(v.len(), 4);
        assert!(
            (dot(&v[0], &v[1]) - 1.0).abs() < 1e-6,
            "case and punctuation do not matter"
        );
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-6);
        assert_eq!(dot(&v[2], &v[2]), 0.0, "empty text is the zero vector");
        assert!((dot(&v[3], &v[3]) - 1.0).abs() < 1e-6);
        assert!(e.embed(&[]).await.unwrap().is_empty());
        assert_eq!(HashEmbedder::new(0).dimension(), 1);
    }
}
