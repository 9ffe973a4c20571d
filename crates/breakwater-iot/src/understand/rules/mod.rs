//! The rule-based parser: understanding without a model, for when every
//! provider is down. It covers the common phrasings — on/off, set, dim,
//! brighten, relative changes, lock/unlock, open/close, arm/disarm, rooms,
//! floors, "all", "everything", percentages, temperatures, times — and
//! refuses the rest. Its rule is: a refusal or a question is always better
//! than a wrong action, so anything it is unsure about (negations,
//! exceptions, conditions, ambiguous references) is not acted on.

mod text;
mod vocab;

use super::Outcome;
use crate::command::{Command, When, check_command};
use crate::registry::{Action, Device, DeviceType, ParamSpec, Registry};
use std::collections::BTreeSet;
use std::sync::Arc;
use text::{TimeFound, number, take_time, tokenize};
use vocab::*;

#[derive(Debug, Clone)]
enum Target {
    Devices(Vec<usize>),
    Room(usize),
    Floor(usize),
    Type(DeviceType),
    Cap(Cap),
}

#[derive(Debug, Clone)]
struct Phrase {
    words: Vec<String>,
    target: Target,
    plural: bool,
    /// Ties of equal length go to the more specific: device > room > floor > noun.
    rank: u8,
}

/// The rule-based parser for one registry.
#[derive(Debug, Clone)]
pub struct RuleParser {
    reg: Arc<Registry>,
    phrases: Vec<Phrase>,
}

fn list_names(devs: &[&Device]) -> String {
    let names: Vec<&str> = devs.iter().take(6).map(|d| d.name.as_str()).collect();
    let mut s = match names.len() {
        0 => String::new(),
        1 => names[0].to_string(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    };
    if devs.len() > 6 {
        s.push_str(&format!(" (and {} more)", devs.len() - 6));
    }
    s
}

/// What one clause says, before devices are resolved.
#[derive(Debug, Default)]
struct Clause {
    verb: Option<Verb>,
    amount: Option<Amount>,
    comparative: Option<Comparative>,
    scale: f64,
    mode: Option<String>,
    kelvin_word: Option<f64>,
    explicit: Vec<(Vec<usize>, bool)>,
    rooms: Vec<usize>,
    floors: Vec<usize>,
    nouns: Vec<(DeviceType, bool)>,
    caps: Vec<Cap>,
    all: bool,
    pronoun: bool,
    when: Option<When>,
    words: Vec<String>,
    unknown: Vec<String>,
}

impl Clause {
    fn has_target(&self) -> bool {
        !self.explicit.is_empty() || !self.rooms.is_empty() || !self.floors.is_empty() || !self.nouns.is_empty()
    }
}

impl RuleParser {
    /// A parser for `reg`.
    pub fn new(reg: Arc<Registry>) -> Self {
        let mut phrases = Vec::new();
        let mut add = |text: &str, target: Target, plural: bool, rank: u8| {
            let words = tokenize(text);
            if !words.is_empty() {
                phrases.push(Phrase {
                    words,
                    target,
                    plural,
                    rank,
                });
            }
        };
        // device names and aliases; an alias shared by several devices also
        // matches in the plural ("bedside lamps")
        let mut by_alias: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (i, d) in reg.devices().iter().enumerate() {
            let mut names: BTreeSet<String> = d.aliases.iter().map(|a| a.to_lowercase()).collect();
            names.insert(d.name.to_lowercase());
            names.insert(d.id.replace('_', " "));
            for n in names {
                by_alias.entry(n).or_default().push(i);
            }
        }
        for (alias, devs) in by_alias {
            if devs.len() > 1 {
                add(&format!("{alias}s"), Target::Devices(devs.clone()), true, 4);
            }
            add(&alias, Target::Devices(devs), false, 4);
        }
        for (i, r) in reg.rooms().iter().enumerate() {
            add(&r.name, Target::Room(i), false, 3);
            add(&r.id.replace('_', " "), Target::Room(i), false, 3);
            for a in &r.aliases {
                add(a, Target::Room(i), false, 3);
            }
        }
        for (i, f) in reg.floors().iter().enumerate() {
            add(&f.name, Target::Floor(i), false, 2);
            for a in &f.aliases {
                add(a, Target::Floor(i), false, 2);
            }
        }
        for t in DeviceType::ALL {
            for (sing, plur) in t.nouns() {
                add(sing, Target::Type(t), false, 1);
                if plur != sing {
                    add(plur, Target::Type(t), true, 1);
                }
            }
        }
        for (w, c) in [
            ("brightness", Cap::Brightness),
            ("colour temperature", Cap::ColorTemp),
            ("color temperature", Cap::ColorTemp),
            ("colour", Cap::ColorTemp),
            ("color", Cap::ColorTemp),
            ("temperature", Cap::Temperature),
            ("temp", Cap::Temperature),
            ("position", Cap::Position),
            ("volume", Cap::Volume),
        ] {
            add(w, Target::Cap(c), false, 1);
        }
        RuleParser { reg, phrases }
    }

    /// Parses an utterance.
    pub fn parse(&self, utterance: &str) -> Outcome {
        let tokens = tokenize(utterance);
        if tokens.is_empty() {
            return Outcome::NotUnderstood("the command is empty".into());
        }
        if let Some(w) = tokens.iter().find(|t| META.contains(&t.as_str())) {
            return Outcome::NotUnderstood(format!(
                "this reads like an instruction to the system ({w:?}), not a command for a device; \
                 nothing was done"
            ));
        }
        if let Some(w) = tokens.iter().find(|t| REFUSE.contains(&t.as_str())) {
            return Outcome::NotUnderstood(format!(
                "could not understand a command with {w:?} safely; please say it more simply"
            ));
        }
        if QUESTION.contains(&tokens[0].as_str()) {
            return Outcome::NotUnderstood("questions about the home are not supported; give a command".into());
        }
        for w in tokens.windows(2) {
            if matches!(w[0].as_str(), "every" | "each") && RECURRING.contains(&w[1].as_str()) {
                return Outcome::NotUnderstood("repeating schedules are not supported; give a single time".into());
            }
        }
        let segments = self.segments(&tokens);
        let mut clauses: Vec<Clause> = Vec::new();
        for seg in segments {
            let mut c = match self.clause(seg) {
                Ok(c) => c,
                Err(outcome) => return outcome,
            };
            let starts_new = c.verb.is_some()
                || c.amount.is_some()
                || c.comparative.is_some()
                || c.mode.is_some()
                || c.when.is_some();
            match clauses.last_mut() {
                Some(prev) if !starts_new => {
                    // "... and the hallway light": more targets for the same command
                    prev.explicit.append(&mut c.explicit);
                    prev.rooms.append(&mut c.rooms);
                    prev.floors.append(&mut c.floors);
                    prev.nouns.append(&mut c.nouns);
                    prev.caps.append(&mut c.caps);
                    prev.all |= c.all;
                    prev.pronoun |= c.pronoun;
                    prev.words.append(&mut c.words);
                    prev.unknown.append(&mut c.unknown);
                }
                Some(prev) => {
                    // "... and the bedroom lights to 20%": same verb, new target
                    if c.verb.is_none() {
                        c.verb = prev.verb;
                    }
                    clauses.push(c);
                }
                None => clauses.push(c),
            }
        }
        let mut commands = Vec::new();
        let mut previous: Vec<usize> = Vec::new();
        for c in &clauses {
            match self.resolve(c, &previous) {
                Ok((cmds, devs)) => {
                    commands.extend(cmds);
                    previous = devs;
                }
                Err(outcome) => return outcome,
            }
        }
        if commands.is_empty() {
            return Outcome::NotUnderstood("could not find a command in that".into());
        }
        if commands.len() > crate::registry::MAX_COMMANDS {
            return Outcome::NotUnderstood(format!(
                "that would be {} commands; the most at once is {}",
                commands.len(),
                crate::registry::MAX_COMMANDS
            ));
        }
        for cmd in &commands {
            if let Err(e) = check_command(&self.reg, cmd) {
                return Outcome::NotUnderstood(format!("cannot do that: {}", e.message));
            }
        }
        Outcome::Commands(commands)
    }

    /// Splits at separators ("and", ",", "then").
    fn segments(&self, tokens: &[String]) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = vec![Vec::new()];
        for t in tokens {
            if SEPARATORS.contains(&t.as_str()) {
                if out.last().is_some_and(|s| !s.is_empty()) {
                    out.push(Vec::new());
                }
            } else if let Some(last) = out.last_mut() {
                last.push(t.clone());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Reads one segment: time, targets, amounts, verb.
    fn clause(&self, mut tokens: Vec<String>) -> Result<Clause, Outcome> {
        let mut c = Clause {
            scale: 1.0,
            ..Default::default()
        };
        match take_time(&mut tokens) {
            Err(e) => return Err(Outcome::NotUnderstood(format!("could not understand the time: {e}"))),
            Ok(TimeFound::DayOnly) => {
                return Err(Outcome::Clarify("At what time should I do that?".into()));
            }
            Ok(TimeFound::When(w)) => c.when = Some(w),
            Ok(TimeFound::None) => {}
        }
        // targets: longest phrases first, most specific on ties
        let mut used = vec![false; tokens.len()];
        let mut hits: Vec<(usize, &Phrase)> = Vec::new();
        for p in &self.phrases {
            let n = p.words.len();
            if n > tokens.len() {
                continue;
            }
            for s in 0..=tokens.len() - n {
                if tokens[s..s + n] == p.words[..] {
                    hits.push((s, p));
                }
            }
        }
        hits.sort_by(|a, b| {
            b.1.words
                .len()
                .cmp(&a.1.words.len())
                .then(b.1.rank.cmp(&a.1.rank))
                .then(a.0.cmp(&b.0))
        });
        for (s, p) in hits {
            let n = p.words.len();
            if used[s..s + n].iter().any(|u| *u) {
                continue;
            }
            used[s..s + n].iter_mut().for_each(|u| *u = true);
            match &p.target {
                Target::Devices(d) => c.explicit.push((d.clone(), p.plural)),
                Target::Room(r) => c.rooms.push(*r),
                Target::Floor(f) => c.floors.push(*f),
                Target::Type(t) => c.nouns.push((*t, p.plural)),
                Target::Cap(cap) => c.caps.push(*cap),
            }
        }
        let rest: Vec<(usize, &str)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, t)| (i, t.as_str()))
            .collect();
        let t = |i: usize| tokens.get(i).map(String::as_str).unwrap_or("");
        let mut numbers = 0;
        for &(i, w) in &rest {
            match w {
                "all" | "every" | "everything" | "both" | "everywhere" | "each" => c.all = true,
                "it" | "them" | "those" | "that" | "these" => c.pronoun = true,
                "full" | "max" | "maximum" | "fully" => c.amount = Some(Amount::Max),
                "minimum" | "min" | "lowest" => c.amount = Some(Amount::Min),
                "half" | "halfway" => c.amount = Some(Amount::To(50.0, Unit::Percent)),
                "bit" | "little" | "slightly" | "touch" | "tad" => c.scale = 1.0,
                "lot" | "much" | "lots" | "way" => c.scale = 3.0,
                "warm" if t(i + 1) == "white" => c.kelvin_word = Some(2700.0),
                "cool" if t(i + 1) == "white" => c.kelvin_word = Some(4000.0),
                "daylight" => c.kelvin_word = Some(6500.0),
                "candlelight" => c.kelvin_word = Some(2200.0),
                _ => {}
            }
            if let Some(cmp) = comparative(w)
                // "lower" opening a clause is the verb, not a comparative
                && !(w == "lower" && rest.first().map(|r| r.0) == Some(i))
            {
                c.comparative = Some(cmp);
            }
            if let Some(n) = number(w) {
                numbers += 1;
                let (unit, _) = unit_at(&tokens, i + 1);
                let by = i > 0 && t(i - 1) == "by";
                c.amount = Some(if by { Amount::By(n, unit) } else { Amount::To(n, unit) });
            }
            if !known_word(w) && !self.is_mode(w) {
                c.unknown.push(w.to_string());
            }
            if self.is_mode(w) && !used[i] {
                let after_to = i > 0 && matches!(t(i - 1), "to" | "on" | "in");
                let before_mode = t(i + 1) == "mode";
                if after_to || before_mode || rest.len() <= 3 {
                    c.mode = Some(w.to_string());
                }
            }
        }
        if numbers > 1 {
            return Err(Outcome::NotUnderstood(
                "more than one number in one command; say each setting separately".into(),
            ));
        }
        c.verb = detect_verb(&rest.iter().map(|(_, w)| *w).collect::<Vec<_>>(), c.amount.is_some());
        // "arm the alarm for the night": with "arm", a mode word anywhere is the mode
        if c.verb == Some(Verb::Arm) && c.mode.is_none() {
            c.mode = rest
                .iter()
                .map(|(_, w)| *w)
                .find(|w| self.is_mode(w))
                .map(str::to_string);
        }
        if c.verb == Some(Verb::Down)
            && c.comparative == Some(Comparative::Lower)
            && rest.iter().filter(|(_, w)| *w == "lower").count() == 1
        {
            c.comparative = None;
        }
        c.words = tokens;
        Ok(c)
    }

    fn is_mode(&self, w: &str) -> bool {
        self.reg.devices().iter().any(|d| {
            d.capabilities.actions().iter().any(|(a, p)| {
                matches!(a, Action::SetMode | Action::Arm)
                    && matches!(p, ParamSpec::Choice(v) if v.iter().any(|x| x == w))
            })
        })
    }

    fn in_scope(&self, d: &Device, c: &Clause) -> bool {
        let rooms = self.reg.rooms();
        let floors = self.reg.floors();
        (c.rooms.is_empty() || c.rooms.iter().any(|&r| rooms[r].id == d.room))
            && (c.floors.is_empty() || c.floors.iter().any(|&f| floors[f].id == self.reg.floor_of(d)))
    }

    /// Turns a clause into commands for concrete devices.
    fn resolve(&self, c: &Clause, previous: &[usize]) -> Result<(Vec<Command>, Vec<usize>), Outcome> {
        let devices = self.reg.devices();
        let Some(verb) = c
            .verb
            .or_else(|| (c.comparative.is_some() || c.kelvin_word.is_some() || c.mode.is_some()).then_some(Verb::Set))
        else {
            return Err(Outcome::NotUnderstood(format!(
                "could not understand what to do in {:?}",
                c.words.join(" ")
            )));
        };
        if !c.unknown.is_empty() && c.explicit.is_empty() && c.nouns.is_empty() {
            return Err(Outcome::NotUnderstood(format!(
                "could not understand {:?}: no such device or action in this home",
                c.unknown.join(" ")
            )));
        }
        let plan = |i: usize| self.plan(&devices[i], verb, c);
        // 1. devices named explicitly
        if !c.explicit.is_empty() {
            let mut chosen = Vec::new();
            for (set, plural) in &c.explicit {
                let mut set = set.clone();
                if !c.rooms.is_empty() || !c.floors.is_empty() {
                    // "the bedroom fan" when the only fan is in the office: refuse, don't guess
                    set.retain(|&i| self.in_scope(&devices[i], c));
                    if set.is_empty() {
                        return Err(Outcome::NotUnderstood(format!(
                            "there is no such device {}",
                            self.scope_words(c).trim_end()
                        )));
                    }
                }
                if set.len() > 1 && !plural && !c.all {
                    let devs: Vec<&Device> = set.iter().map(|&i| &devices[i]).collect();
                    return Err(Outcome::Clarify(format!(
                        "Which one do you mean: {}?",
                        list_names(&devs)
                    )));
                }
                chosen.extend(set);
            }
            chosen.sort_unstable();
            chosen.dedup();
            let mut cmds = Vec::new();
            for &i in &chosen {
                match plan(i) {
                    Ok(mut v) => cmds.append(&mut v),
                    Err(why) => return Err(Outcome::NotUnderstood(why)),
                }
            }
            return Ok((cmds, chosen));
        }
        // 2. "it" / "them", or no target at all after an earlier clause
        if !c.has_target() && !c.all && !previous.is_empty() && (c.pronoun || c.caps.is_empty()) {
            let mut cmds = Vec::new();
            for &i in previous {
                match plan(i) {
                    Ok(mut v) => cmds.append(&mut v),
                    Err(why) => return Err(Outcome::NotUnderstood(why)),
                }
            }
            return Ok((cmds, previous.to_vec()));
        }
        // 3. nouns, rooms, floors, "everything", or a type the verb implies
        let mut types: Vec<DeviceType> = c.nouns.iter().map(|(t, _)| *t).collect();
        let plural = c.all || c.nouns.iter().any(|(_, p)| *p);
        if types.is_empty() {
            types.extend_from_slice(verb.implied_types());
        }
        if types.is_empty() && !c.all {
            // "set to 21 degrees" → thermostats; "turn up the volume" → whatever has volume
            let by_value = matches!(
                c.amount,
                Some(Amount::To(_, Unit::Degrees)) | Some(Amount::By(_, Unit::Degrees))
            );
            if !by_value && c.caps.is_empty() {
                let what = if c.rooms.is_empty() && c.floors.is_empty() {
                    "which device".to_string()
                } else {
                    "which device there".to_string()
                };
                return Err(Outcome::Clarify(format!("Sorry, {what} should I {}?", verb.word())));
            }
        }
        let candidates: Vec<usize> = (0..devices.len())
            .filter(|&i| {
                let d = &devices[i];
                (types.is_empty() || types.contains(&d.kind)) && self.in_scope(d, c) && plan(i).is_ok()
            })
            .collect();
        // "the radiator" when there are two: ask, even if only one of them could do it
        if !plural && !c.nouns.is_empty() {
            let same_kind: Vec<&Device> = devices
                .iter()
                .filter(|d| types.contains(&d.kind) && self.in_scope(d, c))
                .collect();
            if same_kind.len() > 1 {
                return Err(Outcome::Clarify(format!(
                    "Which one do you mean: {}?",
                    list_names(&same_kind)
                )));
            }
        }
        let noun = c
            .nouns
            .first()
            .map(|(t, p)| {
                let (s, pl) = t.nouns()[0];
                if *p { pl } else { s }
            })
            .unwrap_or("device");
        match candidates.len() {
            0 => Err(Outcome::NotUnderstood(format!(
                "there is no {noun} {}that can {}",
                self.scope_words(c),
                verb.word()
            ))),
            1 => {
                let cmds = plan(candidates[0]).map_err(Outcome::NotUnderstood)?;
                Ok((cmds, candidates))
            }
            _ if plural && (c.all || !c.rooms.is_empty() || !c.floors.is_empty()) => {
                let mut cmds = Vec::new();
                for &i in &candidates {
                    cmds.extend(plan(i).map_err(Outcome::NotUnderstood)?);
                }
                Ok((cmds, candidates))
            }
            _ => {
                let devs: Vec<&Device> = candidates.iter().map(|&i| &devices[i]).collect();
                let hint = if plural {
                    format!(" Say a room, or \"all the {noun}\".")
                } else {
                    String::new()
                };
                Err(Outcome::Clarify(format!(
                    "Which {noun} do you mean: {}?{hint}",
                    list_names(&devs)
                )))
            }
        }
    }

    fn scope_words(&self, c: &Clause) -> String {
        let mut parts: Vec<String> = c
            .rooms
            .iter()
            .map(|&r| format!("in the {}", self.reg.rooms()[r].name))
            .collect();
        parts.extend(
            c.floors
                .iter()
                .map(|&f| format!("on the {}", self.reg.floors()[f].name)),
        );
        if parts.is_empty() {
            String::new()
        } else {
            format!("{} ", parts.join(" or "))
        }
    }

    /// The commands `verb` means for device `d`, or why it cannot.
    fn plan(&self, d: &Device, verb: Verb, c: &Clause) -> Result<Vec<Command>, String> {
        let cannot = || format!("{} cannot {}", d.name, verb.word());
        let with_time = |mut cmd: Command| {
            cmd.at = c.when.clone();
            cmd
        };
        let one = |cmd: Command| Ok(vec![with_time(cmd)]);
        let id = d.id.as_str();
        match verb {
            Verb::Lock | Verb::Unlock | Verb::Disarm | Verb::Close => {
                let action = match verb {
                    Verb::Lock => Action::Lock,
                    Verb::Unlock => Action::Unlock,
                    Verb::Disarm => Action::Disarm,
                    _ => Action::Close,
                };
                if d.supports(action) {
                    one(Command::new(id, action))
                } else {
                    Err(cannot())
                }
            }
            Verb::Arm => self.arm(d, c).map(|cmd| vec![with_time(cmd)]).ok_or_else(cannot),
            Verb::Open => match c.amount {
                Some(Amount::To(n, Unit::Percent | Unit::Bare)) if d.supports(Action::SetPosition) => {
                    one(Command::new(id, Action::SetPosition).value(n))
                }
                None if d.supports(Action::Open) => one(Command::new(id, Action::Open)),
                _ => Err(cannot()),
            },
            Verb::On | Verb::Off if c.amount.is_none() && c.comparative.is_none() && c.mode.is_none() => {
                let (power, alarm) = if verb == Verb::On {
                    (Action::TurnOn, None)
                } else {
                    (Action::TurnOff, Some(Action::Disarm))
                };
                if d.supports(power) {
                    one(Command::new(id, power))
                } else if d.kind == DeviceType::Alarm && !c.all {
                    // only when the alarm is named: "turn off everything" must never disarm it
                    match alarm {
                        Some(a) => one(Command::new(id, a)),
                        None => self.arm(d, c).map(|cmd| vec![with_time(cmd)]).ok_or_else(cannot),
                    }
                } else {
                    Err(cannot())
                }
            }
            Verb::Mute => {
                if d.supports(Action::SetVolume) {
                    one(Command::new(id, Action::SetVolume).value(0.0))
                } else {
                    Err(cannot())
                }
            }
            Verb::Preheat => match c.amount {
                Some(Amount::To(n, Unit::Degrees | Unit::Bare)) if d.supports(Action::SetTemperature) => {
                    let mut v = Vec::new();
                    if d.supports(Action::TurnOn) {
                        v.push(with_time(Command::new(id, Action::TurnOn)));
                    }
                    v.push(with_time(Command::new(id, Action::SetTemperature).value(n)));
                    Ok(v)
                }
                _ => Err(format!("{} needs a temperature to preheat to", d.name)),
            },
            _ => self.numeric(d, verb, c).map(|cmd| vec![with_time(cmd)]),
        }
    }

    fn arm(&self, d: &Device, c: &Clause) -> Option<Command> {
        let Some(ParamSpec::Choice(modes)) = d.param(Action::Arm) else {
            return None;
        };
        let mode = match &c.mode {
            Some(m) if modes.contains(m) => m.clone(),
            Some(_) => return None,
            None if modes.iter().any(|m| m == "away") => "away".to_string(),
            None => modes.first()?.clone(),
        };
        Some(Command::new(&d.id, Action::Arm).text(mode))
    }

    /// Set / dim / brighten / up / down / comparatives: picks the setting,
    /// then an absolute value or a change.
    fn numeric(&self, d: &Device, verb: Verb, c: &Clause) -> Result<Command, String> {
        let id = d.id.as_str();
        let cannot = || format!("{} cannot {}", d.name, verb.word());
        if let Some(m) = &c.mode {
            if matches!(&d.param(Action::SetMode), Some(ParamSpec::Choice(v)) if v.contains(m)) {
                return Ok(Command::new(id, Action::SetMode).text(m.clone()));
            }
            if d.kind == DeviceType::Alarm
                && let Some(cmd) = self.arm(d, c)
            {
                return Ok(cmd);
            }
            return Err(format!("{} has no mode {m:?}", d.name));
        }
        if let Some(k) = c.kelvin_word {
            return if d.supports(Action::SetColorTemperature) {
                Ok(Command::new(id, Action::SetColorTemperature).value(k))
            } else {
                Err(format!("{} cannot change colour", d.name))
            };
        }
        let has = |cap: Cap| d.supports(cap.action());
        let default_cap = || -> Option<Cap> {
            let order: &[Cap] = match d.kind {
                DeviceType::Light => &[Cap::Brightness],
                DeviceType::Blind => &[Cap::Position],
                DeviceType::Speaker | DeviceType::Tv => &[Cap::Volume],
                DeviceType::Thermostat | DeviceType::Radiator | DeviceType::Oven => &[Cap::Temperature],
                _ => &[Cap::Brightness, Cap::Position, Cap::Volume, Cap::Temperature],
            };
            order.iter().copied().find(|&cap| has(cap))
        };
        let unit = match c.amount {
            Some(Amount::To(_, u)) | Some(Amount::By(_, u)) => Some(u),
            _ => None,
        };
        let cap = if let Some(&cap) = c.caps.first() {
            Some(cap)
        } else if matches!(verb, Verb::Dim | Verb::Brighten) {
            Some(Cap::Brightness)
        } else if unit == Some(Unit::Degrees) {
            Some(Cap::Temperature)
        } else if unit == Some(Unit::Kelvin) {
            Some(Cap::ColorTemp)
        } else {
            match c.comparative {
                Some(Comparative::Brighter | Comparative::Dimmer) => Some(Cap::Brightness),
                Some(Comparative::Louder | Comparative::Quieter) => Some(Cap::Volume),
                Some(Comparative::Warmer | Comparative::Cooler) if d.kind == DeviceType::Light => Some(Cap::ColorTemp),
                Some(Comparative::Warmer | Comparative::Cooler) => Some(Cap::Temperature),
                _ => default_cap(),
            }
        };
        let Some(cap) = cap.filter(|&cap| has(cap)) else {
            return Err(cannot());
        };
        if unit == Some(Unit::Percent) && matches!(cap, Cap::Temperature | Cap::ColorTemp) {
            return Err(format!("a percentage does not fit the {} of {}", cap_name(cap), d.name));
        }
        // direction of a change: from the verb, else the comparative
        let mut sign = match verb {
            Verb::Dim | Verb::Down => Some(-1.0),
            Verb::Brighten | Verb::Up => Some(1.0),
            _ => c.comparative.map(Comparative::sign),
        };
        // a warmer light is a lower colour temperature
        if cap == Cap::ColorTemp && matches!(c.comparative, Some(Comparative::Warmer | Comparative::Cooler)) {
            sign = sign.map(|s| -s);
        }
        let spec = d.param(cap.action());
        let (min, max) = match spec {
            Some(ParamSpec::Number { min, max, .. }) => (min, max),
            _ => return Err(cannot()),
        };
        let action = cap.action();
        match c.amount {
            Some(Amount::To(n, _)) => Ok(Command::new(id, action).value(n)),
            Some(Amount::Max) => Ok(Command::new(id, action).value(max)),
            Some(Amount::Min) => Ok(Command::new(id, action).value(min)),
            Some(Amount::By(n, _)) => match sign {
                Some(s) => Ok(Command::new(id, action).delta(s * n)),
                None => Err(format!(
                    "say whether to raise or lower the {} of {}",
                    cap_name(cap),
                    d.name
                )),
            },
            None => match (verb, sign) {
                // "raise the blinds" = open them; "lower the blinds" = close them
                (Verb::Up, _) if cap == Cap::Position && c.comparative.is_none() && d.supports(Action::Open) => {
                    Ok(Command::new(id, Action::Open))
                }
                (Verb::Down, _) if cap == Cap::Position && c.comparative.is_none() && d.supports(Action::Close) => {
                    Ok(Command::new(id, Action::Close))
                }
                (_, Some(s)) => Ok(Command::new(id, action).delta(s * cap.step() * c.scale)),
                (_, None) => Err(format!("to what should I set the {} of {}?", cap_name(cap), d.name)),
            },
        }
    }
}

#[cfg(test)]
mod tests;
