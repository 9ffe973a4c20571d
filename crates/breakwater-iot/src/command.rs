//! Commands: what understanding produces and dispatch sends. A command
//! names a device, an action, an absolute `value` or a relative `delta`,
//! and optionally when (`at`). Every command is checked against the
//! registry in Rust ([`check_command`]), whatever produced it.

use crate::registry::{Action, ParamSpec, Registry};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The parameter of a command: a number or a named value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number (percent, kelvin, °C).
    Number(f64),
    /// A named value (a mode).
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// Which day a clock time refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    /// Today (an error if the time has passed).
    Today,
    /// Tomorrow.
    Tomorrow,
    /// The next time the clock shows it (today if still ahead, else tomorrow).
    Next,
}

/// When a command should run, as said (resolved to UTC at submission, so a
/// cached parse never carries a stale time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum When {
    /// At a clock time (`"07:00"`, 24 h) in the home's time zone.
    Clock {
        /// `HH:MM`.
        time: String,
        /// Which day.
        day: Day,
    },
    /// After a number of minutes.
    In {
        /// Minutes from now, 1–10080.
        in_minutes: u32,
    },
}

impl When {
    /// The UTC instant (ms since the epoch) this refers to, seen from `now_ms`
    /// in time zone `tz`.
    pub fn resolve(&self, now_ms: i64, tz: &jiff::tz::TimeZone) -> Result<i64, String> {
        match self {
            When::In { in_minutes } => {
                if *in_minutes == 0 || *in_minutes > 10_080 {
                    return Err(format!("{in_minutes} minutes is outside 1–10080"));
                }
                Ok(now_ms + i64::from(*in_minutes) * 60_000)
            }
            When::Clock { time, day } => {
                let (h, m) = parse_hhmm(time).ok_or_else(|| format!("{time:?} is not a time of day (HH:MM)"))?;
                let now = jiff::Timestamp::from_millisecond(now_ms)
                    .map_err(|e| e.to_string())?
                    .to_zoned(tz.clone());
                let at = |date: jiff::civil::Date| -> Result<i64, String> {
                    let z = date.at(h, m, 0, 0).to_zoned(tz.clone()).map_err(|e| e.to_string())?;
                    Ok(z.timestamp().as_millisecond())
                };
                let today = now.date();
                let tomorrow = today.tomorrow().map_err(|e| e.to_string())?;
                match day {
                    Day::Tomorrow => at(tomorrow),
                    Day::Today => {
                        let t = at(today)?;
                        if t <= now_ms {
                            Err(format!("{time} today has already passed"))
                        } else {
                            Ok(t)
                        }
                    }
                    Day::Next => {
                        let t = at(today)?;
                        if t > now_ms { Ok(t) } else { at(tomorrow) }
                    }
                }
            }
        }
    }
}

/// Parses `HH:MM` (24 h).
pub fn parse_hhmm(s: &str) -> Option<(i8, i8)> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

/// One command for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The device id.
    pub device: String,
    /// The action.
    pub action: Action,
    /// Absolute parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Relative change of a numeric parameter (applied by the device to its
    /// current value, clamped to its range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// When to run it; `None` = now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<When>,
}

impl Command {
    /// A command without parameter, to run now.
    pub fn new(device: impl Into<String>, action: Action) -> Self {
        Command {
            device: device.into(),
            action,
            value: None,
            delta: None,
            at: None,
        }
    }

    /// With an absolute numeric value.
    pub fn value(mut self, v: f64) -> Self {
        self.value = Some(Value::Number(v));
        self
    }

    /// With a named value.
    pub fn text(mut self, v: impl Into<String>) -> Self {
        self.value = Some(Value::Text(v.into()));
        self
    }

    /// With a relative change.
    pub fn delta(mut self, d: f64) -> Self {
        self.delta = Some(d);
        self
    }

    /// At a time.
    pub fn at(mut self, w: When) -> Self {
        self.at = Some(w);
        self
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.device)?;
        if let Some(v) = &self.value {
            write!(f, " to {v}")?;
        }
        if let Some(d) = self.delta {
            write!(f, " by {d:+}")?;
        }
        match &self.at {
            Some(When::Clock { time, day }) => write!(f, " at {time} ({day:?})")?,
            Some(When::In { in_minutes }) => write!(f, " in {in_minutes} min")?,
            None => {}
        }
        Ok(())
    }
}

/// A command the registry does not allow: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandIssue {
    /// The field at fault (`device`, `action`, `value`, `delta`, `at`).
    pub field: &'static str,
    /// What is wrong, in words a person understands.
    pub message: String,
}

impl fmt::Display for CommandIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn issue(field: &'static str, message: impl Into<String>) -> CommandIssue {
    CommandIssue {
        field,
        message: message.into(),
    }
}

/// Checks a command against the registry: the device exists, offers the
/// action, and the value (or change) is of the right kind and in range.
/// This is the safety net behind the JSON Schema: whatever text or model
/// produced the command, nothing outside the registry passes.
pub fn check_command(reg: &Registry, cmd: &Command) -> Result<(), CommandIssue> {
    let dev = reg
        .device(&cmd.device)
        .ok_or_else(|| issue("device", format!("there is no device {:?}", cmd.device)))?;
    let spec = dev
        .param(cmd.action)
        .ok_or_else(|| issue("action", format!("{} cannot {}", dev.name, cmd.action)))?;
    match (&spec, &cmd.value, cmd.delta) {
        (ParamSpec::None, None, None) => {}
        (ParamSpec::None, _, _) => return Err(issue("value", format!("{} takes no value", cmd.action))),
        (ParamSpec::Number { .. }, Some(_), Some(_)) => {
            return Err(issue("delta", "give either a value or a change, not both"));
        }
        (ParamSpec::Number { .. }, None, None) => {
            return Err(issue("value", format!("{} needs a value", cmd.action)));
        }
        (ParamSpec::Number { min, max, step, unit }, Some(v), None) => {
            let Value::Number(n) = v else {
                return Err(issue("value", format!("{} needs a number", cmd.action)));
            };
            if !n.is_finite() || n < min || n > max {
                return Err(issue(
                    "value",
                    format!("{n}{unit} is outside {min}–{max}{unit} for {}", dev.name),
                ));
            }
            if let Some(s) = step {
                let k = (n - min) / s;
                if (k - k.round()).abs() > 1e-6 {
                    return Err(issue("value", format!("{n}{unit} is not a multiple of {s}{unit}")));
                }
            }
        }
        (ParamSpec::Number { min, max, unit, .. }, None, Some(d)) => {
            let span = max - min;
            if !d.is_finite() || d == 0.0 || d.abs() > span {
                return Err(issue(
                    "delta",
                    format!(
                        "a change of {d}{unit} is not possible for {} (range {min}–{max}{unit})",
                        dev.name
                    ),
                ));
            }
        }
        (ParamSpec::Choice(values), v, d) => {
            if d.is_some() {
                return Err(issue("delta", format!("{} takes no relative change", cmd.action)));
            }
            match v {
                Some(Value::Text(s)) if values.iter().any(|x| x == s) => {}
                Some(other) => {
                    return Err(issue(
                        "value",
                        format!("{other} is not one of {} for {}", values.join(", "), dev.name),
                    ));
                }
                None => {
                    return Err(issue(
                        "value",
                        format!("{} needs one of {}", cmd.action, values.join(", ")),
                    ));
                }
            }
        }
    }
    if let Some(When::Clock { time, .. }) = &cmd.at
        && parse_hhmm(time).is_none()
    {
        return Err(issue("at", format!("{time:?} is not a time of day (HH:MM)")));
    }
    if let Some(When::In { in_minutes }) = &cmd.at
        && (*in_minutes == 0 || *in_minutes > 10_080)
    {
        return Err(issue("at", format!("{in_minutes} minutes is outside 1–10080")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::UTC
    }

    // 2026-03-10T10:00:00Z
    const NOW: i64 = 1_773_136_800_000;

    #[test]
    fn clock_times_resolve_to_the_next_occurrence() {
        let next7 = When::Clock {
            time: "07:00".into(),
            day: Day::Next,
        };
        // 07:00 has passed at 10:00: tomorrow.
        assert_eq!(next7.resolve(NOW, &utc()).unwrap(), NOW + 21 * 3_600_000);
        let next11 = When::Clock {
            time: "11:30".into(),
            day: Day::Next,
        };
        assert_eq!(next11.resolve(NOW, &utc()).unwrap(), NOW + 90 * 60_000);
        let today7 = When::Clock {
            time: "07:00".into(),
            day: Day::Today,
        };
        assert!(today7.resolve(NOW, &utc()).unwrap_err().contains("already passed"));
        let tomorrow = When::Clock {
            time: "07:00".into(),
            day: Day::Tomorrow,
        };
        assert_eq!(tomorrow.resolve(NOW, &utc()).unwrap(), NOW + 21 * 3_600_000);
        assert_eq!(
            When::In { in_minutes: 30 }.resolve(NOW, &utc()).unwrap(),
            NOW + 30 * 60_000
        );
        assert!(When::In { in_minutes: 0 }.resolve(NOW, &utc()).is_err());
    }

    #[test]
    fn clock_times_follow_the_home_time_zone() {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 10:00Z is 11:00 in Berlin (CET); 07:00 tomorrow Berlin is 06:00Z.
        let w = When::Clock {
            time: "07:00".into(),
            day: Day::Tomorrow,
        };
        assert_eq!(w.resolve(NOW, &tz).unwrap(), NOW + 20 * 3_600_000);
    }

    #[test]
    fn hhmm_parsing_rejects_nonsense() {
        assert_eq!(parse_hhmm("7:05"), Some((7, 5)));
        assert_eq!(parse_hhmm("23:59"), Some((23, 59)));
        for bad in ["24:00", "7", "07:5", "aa:bb", "-1:00", "07:60", ""] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }

    #[test]
    fn commands_round_trip_as_json() {
        let c = Command::new("bedroom_light", Action::SetBrightness)
            .value(30.0)
            .at(When::In { in_minutes: 5 });
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(
            j,
            r#"{"device":"bedroom_light","action":"set_brightness","value":30.0,"at":{"in_minutes":5}}"#
        );
        let back: Command = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
    }
}
