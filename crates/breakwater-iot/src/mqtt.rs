//! The MQTT side shared by the dispatcher and the simulated devices: the
//! broker URL, topics, and the messages on them.
//!
//! Topics (`P` is `mqtt.topic_prefix`, `D` a device id):
//! - `P/D/set`: a command, QoS 1: `{"id", "action", "value", "delta", "attempt"}`;
//! - `P/D/ack`: the device's answer, QoS 1: `{"id", "ok", "duplicate", "state", "error"}`;
//! - `P/D/state`: the device's state, retained.
//!
//! The command id is the idempotency key: a device that receives the same id
//! twice acknowledges again without acting again, so redelivery (a retry, a
//! broker replaying its queue) is safe — exactly-once *effect*.

use crate::command::Value as CmdValue;
use crate::registry::Action;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// `mqtt://host:port` (or `tcp://`), default port 1883.
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{url:?} is not an mqtt:// URL"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') {
        return Err(format!("{url:?}: only mqtt://host:port is supported"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_string(), port))
}

/// Client options with our defaults: a short keep-alive so a dead broker is
/// noticed within seconds.
pub(crate) fn options(client_id: &str, url: &str, clean_session: bool) -> Result<rumqttc::MqttOptions, String> {
    let (host, port) = parse_url(url)?;
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(clean_session);
    o.set_inflight(200);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    Ok(o)
}

/// `P/D/set`.
pub fn set_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}/set")
}

/// `P/D/ack`.
pub fn ack_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}/ack")
}

/// `P/D/state`.
pub fn state_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}/state")
}

/// Splits `P/D/kind` into (device, kind) when it is under `prefix`.
pub fn split_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, kind) = rest.split_once('/')?;
    (!device.is_empty() && !kind.contains('/')).then_some((device, kind))
}

/// A command on `P/D/set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMessage {
    /// The command id (idempotency key).
    pub id: String,
    /// The action.
    pub action: Action,
    /// Absolute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<CmdValue>,
    /// Relative change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Which send this is (1 = first).
    #[serde(default)]
    pub attempt: i64,
}

/// A device's answer on `P/D/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckMessage {
    /// The command id.
    pub id: String,
    /// Whether the command was applied (now or the first time).
    pub ok: bool,
    /// Whether this id had been seen before (not applied again).
    #[serde(default)]
    pub duplicate: bool,
    /// The device's state after the command.
    #[serde(default)]
    pub state: Value,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_topics() {
        assert_eq!(parse_url("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884));
        assert_eq!(parse_url("tcp://broker").unwrap(), ("broker".into(), 1883));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://:1").is_err());
        assert!(parse_url("mqtt://h:99999").is_err());
        assert_eq!(split_topic("home", "home/lamp/ack"), Some(("lamp", "ack")));
        assert_eq!(split_topic("home", "house/lamp/ack"), None);
        assert_eq!(split_topic("home", "home/lamp/ack/x"), None);
        assert_eq!(split_topic("home", "home//ack"), None);
    }
}
