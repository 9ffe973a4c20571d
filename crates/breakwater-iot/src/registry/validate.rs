//! Consistency checks of a registry file; every problem names its path.

use super::model::*;
use super::{RegistryFile, RegistryIssue};
use std::collections::HashSet;

fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

struct Checker {
    issues: Vec<RegistryIssue>,
}

impl Checker {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(RegistryIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn id(&mut self, path: &str, id: &str, seen: &mut HashSet<String>) {
        if !valid_id(id) {
            self.add(
                format!("{path}.id"),
                format!(
                    "{id:?} is not a valid id: use a lowercase letter, then lowercase letters, digits or _ (at most 64)"
                ),
            );
        }
        if !seen.insert(id.to_string()) {
            self.add(format!("{path}.id"), format!("duplicate id {id:?}"));
        }
    }

    fn names(&mut self, path: &str, name: &str, aliases: &[String]) {
        if name.trim().is_empty() {
            self.add(format!("{path}.name"), "must not be empty");
        }
        for (i, a) in aliases.iter().enumerate() {
            if a.trim().is_empty() {
                self.add(format!("{path}.aliases[{i}]"), "must not be empty");
            }
        }
    }

    fn range(&mut self, path: &str, r: &Range, d: &NumericDefaults) {
        let min = r.min.unwrap_or(d.min);
        let max = r.max.unwrap_or(d.max);
        for (key, v) in [("min", min), ("max", max)] {
            if !v.is_finite() || v < d.hard_min || v > d.hard_max {
                self.add(
                    format!("{path}.{key}"),
                    format!("{v} is outside the possible {}–{} {}", d.hard_min, d.hard_max, d.unit),
                );
            }
        }
        if min >= max {
            self.add(path.to_string(), format!("min ({min}) must be below max ({max})"));
        }
        if let Some(step) = r.step
            && !(step.is_finite() && step > 0.0)
        {
            self.add(format!("{path}.step"), "must be a positive number");
        }
    }

    fn modes(&mut self, path: &str, m: &Modes, allow_empty: bool) {
        if m.values.is_empty() && !allow_empty {
            self.add(format!("{path}.values"), "needs at least one value");
        }
        let mut seen = HashSet::new();
        for (i, v) in m.values.iter().enumerate() {
            if !valid_id(v) {
                self.add(
                    format!("{path}.values[{i}]"),
                    format!("{v:?} must be lowercase letters, digits or _"),
                );
            }
            if !seen.insert(v) {
                self.add(format!("{path}.values[{i}]"), format!("duplicate value {v:?}"));
            }
        }
    }
}

/// Every problem in `file`; empty when it is consistent.
pub(crate) fn check(file: &RegistryFile) -> Vec<RegistryIssue> {
    let mut c = Checker { issues: Vec::new() };
    if file.devices.is_empty() {
        c.add("devices", "the registry has no devices");
    }
    let mut floor_ids = HashSet::new();
    for (i, f) in file.floors.iter().enumerate() {
        let p = format!("floors[{i}]");
        c.id(&p, &f.id, &mut floor_ids);
        c.names(&p, &f.name, &f.aliases);
    }
    let mut room_ids = HashSet::new();
    for (i, r) in file.rooms.iter().enumerate() {
        let p = format!("rooms[{i}]");
        c.id(&p, &r.id, &mut room_ids);
        c.names(&p, &r.name, &r.aliases);
        if !floor_ids.contains(&r.floor) {
            c.add(format!("{p}.floor"), format!("unknown floor {:?}", r.floor));
        }
    }
    let mut device_ids = HashSet::new();
    for (i, d) in file.devices.iter().enumerate() {
        let p = format!("devices[{i}]");
        c.id(&p, &d.id, &mut device_ids);
        c.names(&p, &d.name, &d.aliases);
        if !room_ids.contains(&d.room) {
            c.add(format!("{p}.room"), format!("unknown room {:?}", d.room));
        }
        if let Some(f) = &d.floor
            && !floor_ids.contains(f)
        {
            c.add(format!("{p}.floor"), format!("unknown floor {f:?}"));
        }
        let caps = &d.capabilities;
        let cp = format!("{p}.capabilities");
        if caps.actions().is_empty() {
            c.add(cp.clone(), "the device has no capabilities");
        }
        if let Some(r) = &caps.brightness {
            c.range(&format!("{cp}.brightness"), r, &BRIGHTNESS);
        }
        if let Some(r) = &caps.color_temperature {
            c.range(&format!("{cp}.color_temperature"), r, &COLOR_TEMPERATURE);
        }
        if let Some(r) = &caps.target_temperature {
            c.range(&format!("{cp}.target_temperature"), r, &TARGET_TEMPERATURE);
        }
        if let Some(r) = &caps.position {
            c.range(&format!("{cp}.position"), r, &POSITION);
        }
        if let Some(r) = &caps.volume {
            c.range(&format!("{cp}.volume"), r, &VOLUME);
        }
        if let Some(m) = &caps.mode {
            c.modes(&format!("{cp}.mode"), m, false);
        }
        if let Some(m) = &caps.alarm {
            c.modes(&format!("{cp}.alarm"), m, true);
        }
        for (j, a) in d.sensitive.iter().enumerate() {
            if !d.supports(*a) {
                c.add(
                    format!("{p}.sensitive[{j}]"),
                    format!("{a} is not an action of this device"),
                );
            }
        }
    }
    c.issues
}
