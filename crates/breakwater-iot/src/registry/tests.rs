use super::*;

pub(crate) fn home() -> Registry {
    Registry::from_yaml(include_str!("../../../../examples/home.yaml")).expect("examples/home.yaml is valid")
}

#[test]
fn the_example_home_loads_with_25_plus_devices_of_every_type() {
    let reg = home();
    assert!(reg.devices().len() >= 25, "{} devices", reg.devices().len());
    for t in DeviceType::ALL {
        if t == DeviceType::Plug {
            continue; // the example home has no smart plug
        }
        assert!(reg.devices().iter().any(|d| d.kind == t), "no {t} in the example");
    }
    assert_eq!(reg.version().len(), 16);
    let oven = reg.device("oven").unwrap();
    assert!(oven.is_sensitive(Action::TurnOn));
    assert!(!oven.is_sensitive(Action::TurnOff));
    assert!(reg.device("front_door_lock").unwrap().is_sensitive(Action::Unlock));
    assert!(!reg.device("front_door_lock").unwrap().is_sensitive(Action::Lock));
    assert_eq!(reg.floor_of(reg.device("office_fan").unwrap()), "first");
}

#[test]
fn the_version_follows_content_not_formatting() {
    let text = include_str!("../../../../examples/home.yaml");
    let a = Registry::from_yaml(text).unwrap();
    let b = Registry::from_yaml(&format!("# a comment\n{text}\n\n")).unwrap();
    assert_eq!(a.version(), b.version());
    let c = Registry::from_yaml(&text.replace("max: 80", "max: 70")).unwrap();
    assert_ne!(a.version(), c.version());
}

const SMALL: &str = r#"
floors: [{ id: ground, name: ground }]
rooms: [{ id: hall, name: hall, floor: ground }]
devices:
  - { id: lamp, name: lamp, room: hall, type: light, capabilities: { power: {}, brightness: {} } }
"#;

fn issues(yaml: &str) -> Vec<String> {
    match Registry::from_yaml(yaml) {
        Err(RegistryError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
        Ok(_) => vec![],
    }
}

#[test]
fn errors_name_the_path_and_the_reason() {
    assert!(issues(SMALL).is_empty());
    let bad_range = SMALL.replace("brightness: {}", "brightness: { min: 80, max: 20 }");
    assert_eq!(
        issues(&bad_range),
        ["devices[0].capabilities.brightness: min (80) must be below max (20)"]
    );
    let bad_room = SMALL.replace("room: hall,", "room: attic,");
    assert_eq!(issues(&bad_room), ["devices[0].room: unknown room \"attic\""]);
    let bad_id = SMALL.replace("id: lamp", "id: Lamp/1");
    assert!(issues(&bad_id)[0].starts_with("devices[0].id: \"Lamp/1\" is not a valid id"));
    let dup = SMALL.replace(
        "devices:\n",
        "devices:\n  - { id: lamp, name: other, room: hall, type: light, capabilities: { power: {} } }\n",
    );
    assert_eq!(issues(&dup), ["devices[1].id: duplicate id \"lamp\""]);
    let bad_sensitive = SMALL.replace("brightness: {} }", "brightness: {} }, sensitive: [unlock]");
    assert_eq!(
        issues(&bad_sensitive),
        ["devices[0].sensitive[0]: unlock is not an action of this device"]
    );
    let too_hot = SMALL.replace("brightness: {}", "brightness: { max: 150 }");
    assert!(issues(&too_hot)[0].starts_with("devices[0].capabilities.brightness.max: 150 is outside"));
    let tz = SMALL.replace("floors:", "timezone: Mars/Olympus\nfloors:");
    assert!(issues(&tz)[0].starts_with("timezone: unknown time zone"));
}

#[test]
fn unknown_keys_and_capabilities_are_rejected() {
    let typo = SMALL.replace("power: {}", "powr: {}");
    let e = issues(&typo);
    assert!(e[0].contains("powr"), "{e:?}");
    let bad_type = SMALL.replace("type: light", "type: toaster");
    assert!(issues(&bad_type)[0].contains("toaster"));
}

#[test]
fn the_schema_only_admits_real_devices_actions_and_ranges() {
    let reg = home();
    let schema = command_schema(&reg);
    let v = jsonschema::validator_for(&schema).unwrap();
    let ok = serde_json::json!({"commands": [
        {"device": "master_bedroom_light", "action": "set_brightness", "value": 30, "delta": null, "at": null},
        {"device": "thermostat", "action": "set_temperature", "value": 21.5, "delta": null,
         "at": {"time": "07:00", "day": "tomorrow"}}
    ], "question": null});
    assert!(
        v.is_valid(&ok),
        "{:?}",
        v.iter_errors(&ok).map(|e| e.to_string()).collect::<Vec<_>>()
    );
    for bad in [
        serde_json::json!({"device": "bank_vault", "action": "unlock", "value": null, "delta": null, "at": null}),
        serde_json::json!({"device": "kettle", "action": "set_brightness", "value": 30, "delta": null, "at": null}),
        serde_json::json!({"device": "thermostat", "action": "set_temperature", "value": 45, "delta": null, "at": null}),
        serde_json::json!({"device": "alarm", "action": "arm", "value": "party", "delta": null, "at": null}),
        serde_json::json!({"device": "oven", "action": "turn_on", "value": null, "delta": null, "at": {"time": "7am", "day": "next"}}),
    ] {
        let doc = serde_json::json!({"commands": [bad.clone()], "question": null});
        assert!(!v.is_valid(&doc), "accepted {bad}");
    }
}
