//! The limit sections of the config: `keys[].limits` and `providers.*.limits`.

use super::Algorithm;
use crate::policy::config::InvalidConfig;
use serde::{Deserialize, Serialize};

fn positive(path: &str, v: Option<u64>) -> Result<(), InvalidConfig> {
    match v {
        Some(0) => Err(InvalidConfig::new(path, "must be ≥ 1 (null means unlimited)")),
        _ => Ok(()),
    }
}

/// `keys[].limits`: per virtual key, in any 60-second window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per minute; `null` = unlimited.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute; `null` = unlimited.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// The algorithm (an addition to the documented keys).
    #[serde(default)]
    pub algorithm: Algorithm,
}

impl KeyLimits {
    /// Checks the values; paths are relative (`limits.rpm`), to be put
    /// under the key's own path with [`InvalidConfig::under`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive("limits.rpm", self.rpm)?;
        positive("limits.tpm", self.tpm)
    }
}

/// `providers.*.limits`: what one upstream allows us, and how many calls
/// may be in flight to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Requests per minute; `null` = unlimited.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute; `null` = unlimited.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Calls in flight at once; `null` = unlimited.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Calls that may wait for a slot when all are busy (an addition);
    /// `null` = as many as `max_in_flight`.
    #[serde(default)]
    pub max_queue: Option<u32>,
    /// Adapt the in-flight limit to the upstream's behaviour (AIMD, an
    /// addition): `max_in_flight` becomes the ceiling.
    #[serde(default)]
    pub adaptive: bool,
    /// The rate-limiting algorithm (an addition).
    #[serde(default)]
    pub algorithm: Algorithm,
}

impl ProviderLimits {
    /// Checks the values; paths are relative (`limits.rpm`).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        positive("limits.rpm", self.rpm)?;
        positive("limits.tpm", self.tpm)?;
        positive("limits.max_in_flight", self.max_in_flight.map(u64::from))?;
        if self.adaptive && self.max_in_flight.is_none() {
            return Err(InvalidConfig::new(
                "limits.adaptive",
                "needs max_in_flight as the ceiling of the adaptive limit",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_unlimited_and_typos_are_refused() {
        let k: KeyLimits = serde_json::from_str(r#"{"rpm":null,"tpm":null}"#).unwrap();
        assert_eq!(k, KeyLimits::default());
        assert_eq!((k.rpm, k.tpm, k.algorithm), (None, None, Algorithm::TokenBucket));
        let p: ProviderLimits = serde_json::from_str(r#"{"rpm":null,"tpm":null,"max_in_flight":null}"#).unwrap();
        assert_eq!(p, ProviderLimits::default());
        let p: ProviderLimits =
            serde_json::from_str(r#"{"rpm":500,"tpm":30000,"max_in_flight":8,"algorithm":"gcra"}"#).unwrap();
        assert_eq!(
            (p.rpm, p.tpm, p.max_in_flight, p.algorithm),
            (Some(500), Some(30000), Some(8), Algorithm::Gcra)
        );
        assert!(serde_json::from_str::<KeyLimits>(r#"{"rps":1}"#).is_err());
        assert!(serde_json::from_str::<ProviderLimits>(r#"{"max_inflight":1}"#).is_err());
        assert!(serde_json::from_str::<KeyLimits>(r#"{"algorithm":"leaky"}"#).is_err());
        for a in ["token_bucket", "gcra", "sliding_log", "sliding_window"] {
            assert!(serde_json::from_str::<KeyLimits>(&format!(r#"{{"algorithm":"{a}"}}"#)).is_ok());
        }
    }

    #[test]
    fn validation_names_the_key() {
        let k = KeyLimits {
            rpm: Some(0),
            ..Default::default()
        };
        assert_eq!(k.validate().unwrap_err().under("keys[0]").path, "keys[0].limits.rpm");
        let p = ProviderLimits {
            adaptive: true,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().path, "limits.adaptive");
    }
}
