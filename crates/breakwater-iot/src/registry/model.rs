//! The registry's data model: floors, rooms, devices, capabilities and the
//! actions they offer, as read from YAML.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A floor of the home ("ground", "first", "basement").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floor {
    /// Stable id, `[a-z][a-z0-9_]*`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Other ways people say it ("downstairs", "ground floor").
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A room, on one floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Room {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The floor id.
    pub floor: String,
    /// Other names ("lounge" for the living room).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What kind of thing a device is; decides the nouns people use for it
/// ("lights", "blinds", "doors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// A lamp or light fitting.
    Light,
    /// A smart plug or switch.
    Plug,
    /// A heating or cooling thermostat.
    Thermostat,
    /// A radiator valve.
    Radiator,
    /// Blinds, shades, curtains, shutters.
    Blind,
    /// A door lock.
    Lock,
    /// A garage door or gate.
    GarageDoor,
    /// An alarm or security system.
    Alarm,
    /// A speaker.
    Speaker,
    /// A television.
    Tv,
    /// A fan.
    Fan,
    /// An oven or hob.
    Oven,
    /// Any other appliance (kettle, coffee machine, washer…).
    Appliance,
}

impl DeviceType {
    /// Every type.
    pub const ALL: [DeviceType; 13] = [
        DeviceType::Light,
        DeviceType::Plug,
        DeviceType::Thermostat,
        DeviceType::Radiator,
        DeviceType::Blind,
        DeviceType::Lock,
        DeviceType::GarageDoor,
        DeviceType::Alarm,
        DeviceType::Speaker,
        DeviceType::Tv,
        DeviceType::Fan,
        DeviceType::Oven,
        DeviceType::Appliance,
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Light => "light",
            DeviceType::Plug => "plug",
            DeviceType::Thermostat => "thermostat",
            DeviceType::Radiator => "radiator",
            DeviceType::Blind => "blind",
            DeviceType::Lock => "lock",
            DeviceType::GarageDoor => "garage_door",
            DeviceType::Alarm => "alarm",
            DeviceType::Speaker => "speaker",
            DeviceType::Tv => "tv",
            DeviceType::Fan => "fan",
            DeviceType::Oven => "oven",
            DeviceType::Appliance => "appliance",
        }
    }

    /// Nouns that name devices of this type: (singular, plural) pairs.
    pub fn nouns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            DeviceType::Light => &[("light", "lights"), ("lamp", "lamps"), ("lighting", "lighting")],
            DeviceType::Plug => &[("plug", "plugs"), ("socket", "sockets"), ("outlet", "outlets")],
            DeviceType::Thermostat => &[("thermostat", "thermostats"), ("heating", "heating")],
            DeviceType::Radiator => &[("radiator", "radiators")],
            DeviceType::Blind => &[
                ("blind", "blinds"),
                ("shade", "shades"),
                ("curtain", "curtains"),
                ("shutter", "shutters"),
            ],
            // not "lock": as the first word it is the verb
            DeviceType::Lock => &[("door", "doors"), ("door lock", "door locks")],
            DeviceType::GarageDoor => &[("garage door", "garage doors"), ("gate", "gates")],
            DeviceType::Alarm => &[("alarm", "alarms"), ("security system", "security systems")],
            DeviceType::Speaker => &[("speaker", "speakers"), ("music", "music")],
            DeviceType::Tv => &[("tv", "tvs"), ("television", "televisions")],
            DeviceType::Fan => &[("fan", "fans")],
            DeviceType::Oven => &[("oven", "ovens")],
            DeviceType::Appliance => &[("appliance", "appliances")],
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A numeric range a capability accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// Granularity (values must be multiples of it); `None` = any.
    #[serde(default)]
    pub step: Option<f64>,
}

/// A capability with no parameters (`power: {}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A capability whose parameter is one of named values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modes {
    /// Allowed values, lowercase.
    pub values: Vec<String>,
}

/// What a device can do. Each capability brings its actions; ranges
/// default to the capability's usual range and may be narrowed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `turn_on`, `turn_off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Empty>,
    /// `set_brightness` in percent (default 0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brightness: Option<Range>,
    /// `set_color_temperature` in kelvin (default 2200–6500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_temperature: Option<Range>,
    /// `set_temperature` in °C (default 5–30, step 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_temperature: Option<Range>,
    /// `set_mode` among named values (heat, cool, auto…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Modes>,
    /// `set_position` in percent open (default 0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Range>,
    /// `open`, `close`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_close: Option<Empty>,
    /// `lock`, `unlock` (unlock is always sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Empty>,
    /// `arm` (with a mode, default `away`/`home`), `disarm` (always sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Modes>,
    /// `set_volume` in percent (default 0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Range>,
}

/// A device of the home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Stable id, `[a-z][a-z0-9_]*` (it is also the MQTT topic segment).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Other names people use ("bedroom light", "big light").
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The room id.
    pub room: String,
    /// The floor id; defaults to the room's floor.
    #[serde(default)]
    pub floor: Option<String>,
    /// The kind of device.
    #[serde(rename = "type")]
    pub kind: DeviceType,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Actions that need the user's confirmation, beyond the ones that always
    /// do (`unlock`, `disarm`).
    #[serde(default)]
    pub sensitive: Vec<Action>,
}

/// Every action a command can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Power on.
    TurnOn,
    /// Power off.
    TurnOff,
    /// Brightness in percent.
    SetBrightness,
    /// Colour temperature in kelvin.
    SetColorTemperature,
    /// Target temperature in °C.
    SetTemperature,
    /// A named mode.
    SetMode,
    /// Position in percent open.
    SetPosition,
    /// Open fully.
    Open,
    /// Close fully.
    Close,
    /// Lock.
    Lock,
    /// Unlock.
    Unlock,
    /// Arm the alarm (value: mode).
    Arm,
    /// Disarm the alarm.
    Disarm,
    /// Volume in percent.
    SetVolume,
}

/// The parameter an action takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSpec {
    /// No parameter.
    None,
    /// A number within a range, possibly changed relatively (`delta`).
    Number {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Granularity, if any.
        step: Option<f64>,
        /// Unit shown to people.
        unit: &'static str,
    },
    /// One of named values.
    Choice(Vec<String>),
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 14] = [
        Action::TurnOn,
        Action::TurnOff,
        Action::SetBrightness,
        Action::SetColorTemperature,
        Action::SetTemperature,
        Action::SetMode,
        Action::SetPosition,
        Action::Open,
        Action::Close,
        Action::Lock,
        Action::Unlock,
        Action::Arm,
        Action::Disarm,
        Action::SetVolume,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::TurnOn => "turn_on",
            Action::TurnOff => "turn_off",
            Action::SetBrightness => "set_brightness",
            Action::SetColorTemperature => "set_color_temperature",
            Action::SetTemperature => "set_temperature",
            Action::SetMode => "set_mode",
            Action::SetPosition => "set_position",
            Action::Open => "open",
            Action::Close => "close",
            Action::Lock => "lock",
            Action::Unlock => "unlock",
            Action::Arm => "arm",
            Action::Disarm => "disarm",
            Action::SetVolume => "set_volume",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Actions that need confirmation on every device, whatever the
    /// registry says: opening the house or switching off its alarm.
    pub fn always_sensitive(self) -> bool {
        matches!(self, Action::Unlock | Action::Disarm)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default and hard limits of each numeric capability: (default min,
/// default max, hard min, hard max, default step, unit).
pub(crate) struct NumericDefaults {
    pub min: f64,
    pub max: f64,
    pub hard_min: f64,
    pub hard_max: f64,
    pub step: Option<f64>,
    pub unit: &'static str,
}

pub(crate) const BRIGHTNESS: NumericDefaults = NumericDefaults {
    min: 0.0,
    max: 100.0,
    hard_min: 0.0,
    hard_max: 100.0,
    step: Some(1.0),
    unit: "%",
};
pub(crate) const COLOR_TEMPERATURE: NumericDefaults = NumericDefaults {
    min: 2200.0,
    max: 6500.0,
    hard_min: 1000.0,
    hard_max: 10000.0,
    step: Some(1.0),
    unit: "K",
};
pub(crate) const TARGET_TEMPERATURE: NumericDefaults = NumericDefaults {
    min: 5.0,
    max: 30.0,
    hard_min: -30.0,
    hard_max: 300.0,
    step: Some(0.5),
    unit: "°C",
};
pub(crate) const POSITION: NumericDefaults = NumericDefaults {
    min: 0.0,
    max: 100.0,
    hard_min: 0.0,
    hard_max: 100.0,
    step: Some(1.0),
    unit: "%",
};
pub(crate) const VOLUME: NumericDefaults = NumericDefaults {
    min: 0.0,
    max: 100.0,
    hard_min: 0.0,
    hard_max: 100.0,
    step: Some(1.0),
    unit: "%",
};

/// The alarm modes when the registry names none.
pub(crate) fn default_alarm_modes() -> Vec<String> {
    vec!["away".to_string(), "home".to_string()]
}

fn number(r: &Range, d: &NumericDefaults) -> ParamSpec {
    ParamSpec::Number {
        min: r.min.unwrap_or(d.min),
        max: r.max.unwrap_or(d.max),
        step: r.step.or(d.step),
        unit: d.unit,
    }
}

impl Capabilities {
    /// The actions these capabilities offer, each with its parameter.
    pub fn actions(&self) -> Vec<(Action, ParamSpec)> {
        let mut out = Vec::new();
        if self.power.is_some() {
            out.push((Action::TurnOn, ParamSpec::None));
            out.push((Action::TurnOff, ParamSpec::None));
        }
        if let Some(r) = &self.brightness {
            out.push((Action::SetBrightness, number(r, &BRIGHTNESS)));
        }
        if let Some(r) = &self.color_temperature {
            out.push((Action::SetColorTemperature, number(r, &COLOR_TEMPERATURE)));
        }
        if let Some(r) = &self.target_temperature {
            out.push((Action::SetTemperature, number(r, &TARGET_TEMPERATURE)));
        }
        if let Some(m) = &self.mode {
            out.push((Action::SetMode, ParamSpec::Choice(m.values.clone())));
        }
        if let Some(r) = &self.position {
            out.push((Action::SetPosition, number(r, &POSITION)));
        }
        if self.open_close.is_some() || self.position.is_some() {
            out.push((Action::Open, ParamSpec::None));
            out.push((Action::Close, ParamSpec::None));
        }
        if self.lock.is_some() {
            out.push((Action::Lock, ParamSpec::None));
            out.push((Action::Unlock, ParamSpec::None));
        }
        if let Some(m) = &self.alarm {
            let modes = if m.values.is_empty() {
                default_alarm_modes()
            } else {
                m.values.clone()
            };
            out.push((Action::Arm, ParamSpec::Choice(modes)));
            out.push((Action::Disarm, ParamSpec::None));
        }
        if let Some(r) = &self.volume {
            out.push((Action::SetVolume, number(r, &VOLUME)));
        }
        out
    }
}

impl Device {
    /// The parameter of `action` on this device, or `None` when the device
    /// does not offer it.
    pub fn param(&self, action: Action) -> Option<ParamSpec> {
        self.capabilities
            .actions()
            .into_iter()
            .find(|(a, _)| *a == action)
            .map(|(_, p)| p)
    }

    /// Whether the device offers `action`.
    pub fn supports(&self, action: Action) -> bool {
        self.param(action).is_some()
    }

    /// Whether `action` on this device needs confirmation.
    pub fn is_sensitive(&self, action: Action) -> bool {
        action.always_sensitive() || self.sensitive.contains(&action)
    }
}
