//! The `iot:` section of `breakwater.yaml` (see CONFIG.md). Unknown keys are
//! errors; every key but `registry` has the documented default. Keys added
//! beyond CONFIG.md are marked as extensions.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `iot:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IotConfig {
    /// The device registry file (*required*).
    pub registry: PathBuf,
    /// The model alias used to understand utterances.
    #[serde(default = "default_model")]
    pub model: String,
    /// The broker.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `sqlite://PATH` (default) or `postgres://…` when several instances share it.
    #[serde(default = "default_store")]
    pub store: String,
    /// How long a sensitive command waits for its confirmation.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_s: u64,
    /// Per-user limits.
    #[serde(default)]
    pub limits: IotLimits,
}

/// `iot.mqtt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port`.
    #[serde(default = "default_mqtt_url")]
    pub url: String,
    /// Topics are `<topic_prefix>/<device>/set|ack|state`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// How long to wait for a device's acknowledgement before resending.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// Extension: sends per command (first included) before it stays
    /// `unacknowledged`. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Extension: the MQTT client id of this instance (default: random, so
    /// several instances never collide).
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `iot.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IotLimits {
    /// Utterances per user per minute (bursts up to this many).
    #[serde(default = "default_rpm")]
    pub per_user_rpm: u32,
}

fn default_model() -> String {
    "fast".into()
}
fn default_store() -> String {
    "sqlite://breakwater-iot.db".into()
}
fn default_confirm_timeout() -> u64 {
    60
}
fn default_mqtt_url() -> String {
    "mqtt://127.0.0.1:1883".into()
}
fn default_prefix() -> String {
    "home".into()
}
fn default_ack_timeout() -> u64 {
    3000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_rpm() -> u32 {
    30
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: default_mqtt_url(),
            topic_prefix: default_prefix(),
            ack_timeout_ms: default_ack_timeout(),
            max_attempts: default_max_attempts(),
            client_id: None,
        }
    }
}

impl Default for IotLimits {
    fn default() -> Self {
        IotLimits {
            per_user_rpm: default_rpm(),
        }
    }
}

impl IotConfig {
    /// A config with defaults for everything but the registry.
    pub fn new(registry: impl Into<PathBuf>) -> Self {
        IotConfig {
            registry: registry.into(),
            model: default_model(),
            mqtt: MqttConfig::default(),
            store: default_store(),
            confirm_timeout_s: default_confirm_timeout(),
            limits: IotLimits::default(),
        }
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        crate::mqtt::parse_url(&self.mqtt.url).map_err(|e| format!("iot.mqtt.url: {e}"))?;
        let p = &self.mqtt.topic_prefix;
        if p.is_empty() || p.contains(['+', '#']) || p.starts_with('/') || p.ends_with('/') {
            return Err(format!(
                "iot.mqtt.topic_prefix: {p:?} must be non-empty, without + or #, and not start or end with /"
            ));
        }
        if self.mqtt.ack_timeout_ms == 0 {
            return Err("iot.mqtt.ack_timeout_ms: must be at least 1".into());
        }
        if self.mqtt.max_attempts == 0 {
            return Err("iot.mqtt.max_attempts: must be at least 1".into());
        }
        if !(self.store.starts_with("sqlite:") || self.store.starts_with("postgres")) {
            return Err(format!(
                "iot.store: {:?} must be sqlite://PATH or postgres://…",
                self.store
            ));
        }
        if self.confirm_timeout_s == 0 {
            return Err("iot.confirm_timeout_s: must be at least 1".into());
        }
        if self.limits.per_user_rpm == 0 {
            return Err("iot.limits.per_user_rpm: must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_config_md() {
        let c: IotConfig = serde_saphyr::from_str("registry: examples/home.yaml\n").unwrap();
        assert_eq!(c, IotConfig::new("examples/home.yaml"));
        assert_eq!(c.model, "fast");
        assert_eq!(c.mqtt.url, "mqtt://127.0.0.1:1883");
        assert_eq!(c.mqtt.topic_prefix, "home");
        assert_eq!(c.mqtt.ack_timeout_ms, 3000);
        assert_eq!(c.store, "sqlite://breakwater-iot.db");
        assert_eq!(c.confirm_timeout_s, 60);
        assert_eq!(c.limits.per_user_rpm, 30);
        c.validate().unwrap();
    }

    #[test]
    fn the_full_section_parses() {
        let yaml = r#"
registry: "examples/home.yaml"
model: fast
mqtt: { url: "mqtt://127.0.0.1:1883", topic_prefix: home, ack_timeout_ms: 3000 }
store: "sqlite://breakwater-iot.db"
confirm_timeout_s: 60
limits: { per_user_rpm: 30 }
"#;
        let c: IotConfig = serde_saphyr::from_str(yaml).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = serde_saphyr::from_str::<IotConfig>("registry: x\nmqtt: { urll: y }\n").unwrap_err();
        assert!(e.to_string().contains("urll"), "{e}");
        let e = serde_saphyr::from_str::<IotConfig>("model: fast\n").unwrap_err();
        assert!(e.to_string().contains("registry"), "{e}");
        let mut c = IotConfig::new("x");
        c.mqtt.topic_prefix = "home/#".into();
        assert!(c.validate().unwrap_err().starts_with("iot.mqtt.topic_prefix"));
        let mut c = IotConfig::new("x");
        c.store = "mysql://x".into();
        assert!(c.validate().unwrap_err().starts_with("iot.store"));
    }
}
