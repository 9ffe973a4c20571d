//! The vocabulary of the rule-based parser: verbs, comparatives, units,
//! the settings a number can be for, and the word lists that make an
//! utterance refused (negations, meta-instructions, questions, repeats).

use super::text::number;
use crate::registry::{Action, DeviceType};

/// A numeric capability, for picking which setting a value or change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cap {
    Brightness,
    ColorTemp,
    Temperature,
    Position,
    Volume,
}

impl Cap {
    pub(super) fn action(self) -> Action {
        match self {
            Cap::Brightness => Action::SetBrightness,
            Cap::ColorTemp => Action::SetColorTemperature,
            Cap::Temperature => Action::SetTemperature,
            Cap::Position => Action::SetPosition,
            Cap::Volume => Action::SetVolume,
        }
    }

    /// The step of "a bit" / "brighter" / "turn up" without a number.
    pub(super) fn step(self) -> f64 {
        match self {
            Cap::Temperature => 1.0,
            Cap::ColorTemp => 500.0,
            _ => 10.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    On,
    Off,
    Set,
    Dim,
    Brighten,
    Up,
    Down,
    Open,
    Close,
    Lock,
    Unlock,
    Arm,
    Disarm,
    Mute,
    Preheat,
}

impl Verb {
    pub(super) fn word(self) -> &'static str {
        match self {
            Verb::On => "turn on",
            Verb::Off => "turn off",
            Verb::Set => "set",
            Verb::Dim => "dim",
            Verb::Brighten => "brighten",
            Verb::Up => "turn up",
            Verb::Down => "turn down",
            Verb::Open => "open",
            Verb::Close => "close",
            Verb::Lock => "lock",
            Verb::Unlock => "unlock",
            Verb::Arm => "arm",
            Verb::Disarm => "disarm",
            Verb::Mute => "mute",
            Verb::Preheat => "preheat",
        }
    }

    /// The device type a verb implies when no device is named
    /// ("unlock" → locks).
    pub(super) fn implied_types(self) -> &'static [DeviceType] {
        match self {
            Verb::Lock | Verb::Unlock => &[DeviceType::Lock],
            Verb::Arm | Verb::Disarm => &[DeviceType::Alarm],
            Verb::Dim | Verb::Brighten => &[DeviceType::Light],
            Verb::Preheat => &[DeviceType::Oven],
            Verb::Mute => &[DeviceType::Speaker, DeviceType::Tv],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Unit {
    Percent,
    Degrees,
    Kelvin,
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Amount {
    /// "to 30%", "21 degrees".
    To(f64, Unit),
    /// "by 10".
    By(f64, Unit),
    /// "full", "max".
    Max,
    /// "minimum", "lowest".
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparative {
    Brighter,
    Dimmer,
    Warmer,
    Cooler,
    Louder,
    Quieter,
    Higher,
    Lower,
}

impl Comparative {
    pub(super) fn sign(self) -> f64 {
        match self {
            Comparative::Brighter | Comparative::Warmer | Comparative::Louder | Comparative::Higher => 1.0,
            _ => -1.0,
        }
    }
}

/// Words that change the meaning of a command in ways the rules do not
/// model; an utterance containing one is refused rather than half-understood.
pub(super) const REFUSE: &[&str] = &[
    "not", "don't", "dont", "never", "except", "but", "unless", "without", "if", "until", "whenever", "instead",
];

/// Words that address the system rather than a device (prompt injection).
pub(super) const META: &[&str] = &[
    "ignore",
    "instructions",
    "instruction",
    "bypass",
    "override",
    "confirmation",
    "confirm",
    "pretend",
    "prompt",
    "admin",
    "sudo",
    "jailbreak",
    "developer",
    "confirmed",
    "authorise",
    "authorize",
    "authorised",
    "authorized",
    "password",
    "permission",
    "safety",
];

/// Words the rules know without them naming a device: articles, particles,
/// politeness, quantifiers, units, modifiers and verbs. Anything else that
/// is not a device, room, floor or noun is an unknown word.
pub(super) fn known_word(w: &str) -> bool {
    const KNOWN: &[&str] = &[
        "the",
        "a",
        "an",
        "my",
        "our",
        "your",
        "in",
        "on",
        "off",
        "of",
        "to",
        "at",
        "by",
        "for",
        "me",
        "us",
        "please",
        "could",
        "would",
        "can",
        "will",
        "you",
        "kindly",
        "hey",
        "ok",
        "okay",
        "now",
        "right",
        "just",
        "up",
        "down",
        "it",
        "them",
        "those",
        "that",
        "these",
        "this",
        "all",
        "every",
        "everything",
        "both",
        "everywhere",
        "each",
        "thanks",
        "thank",
        "house",
        "home",
        "whole",
        "entire",
        "room",
        "rooms",
        "floor",
        "mode",
        "level",
        "setting",
        "bit",
        "little",
        "slightly",
        "touch",
        "tad",
        "lot",
        "much",
        "lots",
        "way",
        "white",
        "warm",
        "cool",
        "daylight",
        "candlelight",
        "full",
        "max",
        "maximum",
        "fully",
        "minimum",
        "min",
        "lowest",
        "half",
        "halfway",
        "%",
        "percent",
        "per",
        "cent",
        "degrees",
        "degree",
        "c",
        "celsius",
        "k",
        "kelvin",
        "more",
        "again",
        "too",
        "so",
        "i",
        "want",
        "like",
        "need",
        "let's",
        "lets",
        "go",
        "get",
        "with",
        "there",
        "here",
        "way",
        "turn",
        "switch",
        "power",
        "flip",
        "shut",
        "start",
        "stop",
        "set",
        "change",
        "put",
        "adjust",
        "make",
        "bring",
        "dim",
        "brighten",
        "increase",
        "raise",
        "boost",
        "bump",
        "decrease",
        "reduce",
        "lower",
        "drop",
        "open",
        "close",
        "lock",
        "unlock",
        "arm",
        "disarm",
        "mute",
        "preheat",
        "activate",
        "enable",
        "deactivate",
        "disable",
        "kill",
        "devices",
        "device",
        "things",
        "stuff",
        "in",
        "inside",
        "outside",
        "around",
    ];
    KNOWN.contains(&w) || number(w).is_some() || comparative(w).is_some()
}

pub(super) const QUESTION: &[&str] = &[
    "is", "are", "what", "what's", "whats", "how", "why", "which", "who", "does", "did", "was", "were",
];

pub(super) const RECURRING: &[&str] = &[
    "day",
    "days",
    "morning",
    "mornings",
    "night",
    "nights",
    "evening",
    "evenings",
    "week",
    "weekday",
    "weekdays",
    "weekend",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "hour",
    "minute",
];

pub(super) const SEPARATORS: &[&str] = &[",", ";", "and", "then", "also", "plus"];

pub(super) fn comparative(t: &str) -> Option<Comparative> {
    Some(match t {
        "brighter" | "lighter" => Comparative::Brighter,
        "dimmer" | "darker" => Comparative::Dimmer,
        "warmer" | "hotter" => Comparative::Warmer,
        "cooler" | "colder" => Comparative::Cooler,
        "louder" => Comparative::Louder,
        "quieter" | "softer" => Comparative::Quieter,
        "higher" => Comparative::Higher,
        "lower" => Comparative::Lower,
        _ => return None,
    })
}

pub(super) fn unit_at(tokens: &[String], i: usize) -> (Unit, usize) {
    let t = |k: usize| tokens.get(k).map(String::as_str).unwrap_or("");
    match t(i) {
        "%" | "percent" => (Unit::Percent, 1),
        "per" if t(i + 1) == "cent" => (Unit::Percent, 2),
        "degrees" | "degree" | "c" | "celsius" => (Unit::Degrees, 1),
        "k" | "kelvin" => (Unit::Kelvin, 1),
        _ => (Unit::Bare, 0),
    }
}

pub(super) fn cap_name(c: Cap) -> &'static str {
    match c {
        Cap::Brightness => "brightness",
        Cap::ColorTemp => "colour temperature",
        Cap::Temperature => "temperature",
        Cap::Position => "position",
        Cap::Volume => "volume",
    }
}

/// The verb of a clause, from its non-target words.
pub(super) fn detect_verb(words: &[&str], has_amount: bool) -> Option<Verb> {
    let later = |i: usize, set: &[&str]| words[i + 1..].iter().find(|w| set.contains(w)).copied();
    for (i, &w) in words.iter().enumerate() {
        let v = match w {
            "turn" | "switch" | "power" | "flip" => match later(i, &["on", "off", "up", "down"]) {
                Some("on") => Verb::On,
                Some("off") => Verb::Off,
                Some("up") => Verb::Up,
                Some("down") => Verb::Down,
                _ if has_amount => Verb::Set,
                _ => continue,
            },
            "shut" => match later(i, &["off"]) {
                Some(_) => Verb::Off,
                None => Verb::Close,
            },
            "kill" | "stop" | "deactivate" | "disable" => Verb::Off,
            "start" | "activate" | "enable" => Verb::On,
            "set" | "change" | "put" | "adjust" | "make" | "bring" => match later(i, &["up", "down"]) {
                Some("up") => Verb::Up,
                Some("down") => Verb::Down,
                _ => Verb::Set,
            },
            "dim" => Verb::Dim,
            "brighten" => Verb::Brighten,
            "increase" | "raise" | "boost" | "bump" => Verb::Up,
            "decrease" | "reduce" | "lower" | "drop" => Verb::Down,
            "open" => Verb::Open,
            "close" => Verb::Close,
            "lock" => Verb::Lock,
            "unlock" => Verb::Unlock,
            "arm" => Verb::Arm,
            "disarm" => Verb::Disarm,
            "mute" => Verb::Mute,
            "preheat" => Verb::Preheat,
            _ => continue,
        };
        return Some(v);
    }
    // "kitchen light off", "lights on", "heating up"
    for (i, &w) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let next = words.get(i + 1).copied().unwrap_or("");
        let v = match w {
            "on" if last || !matches!(next, "the" | "a" | "my" | "our") => Verb::On,
            "off" => Verb::Off,
            "up" => Verb::Up,
            "down" => Verb::Down,
            _ => continue,
        };
        return Some(v);
    }
    has_amount.then_some(Verb::Set)
}
