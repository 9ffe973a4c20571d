//! Text handling for the rule-based parser: normalisation into tokens,
//! number words, clause splitting, and time expressions.

use crate::command::{Day, When};

/// Lowercases, separates numbers from units (`30%` → `30 %`, `7am` →
/// `7 am`, `21°c` → `21 degrees`), turns number words into digits, and
/// splits into tokens. Punctuation other than `,` `;` (kept as tokens, they
/// separate clauses) and `:`/`.` inside numbers is dropped.
pub(crate) fn tokenize(text: &str) -> Vec<String> {
    let mut s = String::with_capacity(text.len() + 16);
    let lower = text.to_lowercase().replace(['’', '`'], "'").replace("°c", " degrees ");
    let chars: Vec<char> = lower.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let prev = if i > 0 { chars[i - 1] } else { ' ' };
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        match c {
            '%' => s.push_str(" % "),
            '°' => s.push_str(" degrees "),
            ',' | ';' => {
                s.push(' ');
                s.push(c);
                s.push(' ');
            }
            ':' | '.' if prev.is_ascii_digit() && next.is_ascii_digit() => s.push(c),
            '\'' if prev.is_alphabetic() && next.is_alphabetic() => s.push(c),
            c if c.is_alphanumeric() => {
                // split "7am", "21c", "2700k": digits followed by letters
                if c.is_alphabetic() && prev.is_ascii_digit() {
                    s.push(' ');
                }
                s.push(c);
            }
            _ => s.push(' '),
        }
    }
    let raw: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    numbers_from_words(raw)
}

fn unit_word(w: &str) -> Option<u32> {
    Some(match w {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens_word(w: &str) -> Option<u32> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

/// "twenty one" → "21", "a hundred" → "100".
fn numbers_from_words(tokens: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if let Some(tens) = tens_word(t) {
            let mut n = tens;
            let next = tokens.get(i + 1).map(String::as_str).unwrap_or("");
            if let Some(u) = unit_word(next).filter(|u| (1..10).contains(u)) {
                n += u;
                i += 1;
            }
            out.push(n.to_string());
        } else if t == "hundred" {
            if matches!(out.last().map(String::as_str), Some("a") | Some("1")) {
                out.pop();
            }
            out.push("100".into());
        } else if let Some(u) = unit_word(t) {
            // "one" in "turn on one light" is rare in commands; numbers win
            if tokens.get(i + 1).map(String::as_str) == Some("hundred") {
                out.push("100".into());
                i += 1;
            } else {
                out.push(u.to_string());
            }
        } else {
            out.push(tokens[i].clone());
        }
        i += 1;
    }
    out
}

/// Parses a token as a number ("21", "21.5").
pub(crate) fn number(t: &str) -> Option<f64> {
    if t.starts_with(|c: char| c.is_ascii_digit()) && !t.contains(':') {
        t.parse::<f64>().ok().filter(|n| n.is_finite())
    } else {
        None
    }
}

/// A time expression found in a clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimeFound {
    /// None.
    None,
    /// A complete time.
    When(When),
    /// A day without a clock time ("tomorrow"): ask for the time.
    DayOnly,
}

fn minutes_unit(t: &str) -> Option<u32> {
    match t {
        "minute" | "minutes" | "min" | "mins" => Some(1),
        "hour" | "hours" | "hr" | "hrs" => Some(60),
        _ => None,
    }
}

/// Finds and removes a time expression: "at 7am", "at 19:30", "7 pm",
/// "at noon", "tomorrow", "tonight", "in 10 minutes", "in an hour",
/// "in half an hour", "in the morning/evening".
pub(crate) fn take_time(tokens: &mut Vec<String>) -> Result<TimeFound, String> {
    let mut day: Option<Day> = None;
    let mut pm_hint: Option<bool> = None;
    let mut keep = vec![true; tokens.len()];
    let mut clock: Option<(u32, u32, Option<bool>)> = None;
    let mut in_minutes: Option<u32> = None;
    let t = |i: usize| tokens.get(i).map(String::as_str).unwrap_or("");
    let mut i = 0;
    while i < tokens.len() {
        match t(i) {
            "tomorrow" => {
                day = Some(Day::Tomorrow);
                keep[i] = false;
            }
            "today" => {
                day = Some(Day::Today);
                keep[i] = false;
            }
            "tonight" => {
                day = Some(Day::Today);
                pm_hint = Some(true);
                keep[i] = false;
            }
            "noon" | "midday" if clock.is_none() => {
                clock = Some((12, 0, None));
                keep[i] = false;
                if i > 0 && t(i - 1) == "at" {
                    keep[i - 1] = false;
                }
            }
            "midnight" if clock.is_none() => {
                clock = Some((0, 0, None));
                day.get_or_insert(Day::Next);
                keep[i] = false;
                if i > 0 && t(i - 1) == "at" {
                    keep[i - 1] = false;
                }
            }
            "in" => {
                // in N minutes / in an hour / in half an hour / in the morning
                let (n, unit_at) = match (t(i + 1), t(i + 2), t(i + 3)) {
                    ("half", "an", "hour") => (Some(30), i + 3),
                    ("a", u, _) | ("an", u, _) if minutes_unit(u).is_some() => (Some(1), i + 2),
                    (n, u, _) if number(n).is_some() && minutes_unit(u).is_some() => {
                        (number(n).map(|x| x as u32), i + 2)
                    }
                    ("the", "morning", _) => {
                        pm_hint = Some(false);
                        keep[i] = false;
                        keep[i + 1] = false;
                        keep[i + 2] = false;
                        i += 3;
                        continue;
                    }
                    ("the", "evening", _) | ("the", "afternoon", _) => {
                        pm_hint = Some(true);
                        keep[i] = false;
                        keep[i + 1] = false;
                        keep[i + 2] = false;
                        i += 3;
                        continue;
                    }
                    _ => (None, i),
                };
                if let Some(n) = n {
                    let mult = if t(i + 1) == "half" {
                        1
                    } else {
                        minutes_unit(t(unit_at)).unwrap_or(1)
                    };
                    in_minutes = Some(n.saturating_mul(mult));
                    for k in keep.iter_mut().take(unit_at + 1).skip(i) {
                        *k = false;
                    }
                    i = unit_at + 1;
                    continue;
                }
            }
            "morning" => {
                pm_hint = Some(false);
                keep[i] = false;
            }
            "evening" | "afternoon" => {
                pm_hint = Some(true);
                keep[i] = false;
            }
            tok => {
                // "at 7", "at 7:30", "7 am", "7:30 pm"
                let after_at = i > 0 && t(i - 1) == "at";
                let ampm = match t(i + 1) {
                    "am" | "a.m" => Some(false),
                    "pm" | "p.m" => Some(true),
                    "o'clock" | "oclock" => None,
                    _ => None,
                };
                let unit_next = matches!(
                    t(i + 1),
                    "%" | "percent" | "per" | "degrees" | "degree" | "k" | "kelvin"
                );
                let is_clock =
                    !unit_next && (tok.contains(':') || ampm.is_some() || (after_at && number(tok).is_some()));
                if is_clock && clock.is_none() {
                    let (h, m) = match tok.split_once(':') {
                        Some((h, m)) => (h.parse::<u32>().ok(), m.parse::<u32>().ok()),
                        None => (tok.parse::<u32>().ok(), Some(0)),
                    };
                    let (Some(h), Some(m)) = (h, m) else {
                        return Err(format!("{tok:?} is not a time"));
                    };
                    clock = Some((h, m, ampm));
                    keep[i] = false;
                    if after_at {
                        keep[i - 1] = false;
                    }
                    if matches!(t(i + 1), "am" | "pm" | "a.m" | "p.m" | "o'clock" | "oclock") {
                        keep[i + 1] = false;
                        i += 1;
                    }
                }
            }
        }
        i += 1;
    }
    let mut k = keep.iter();
    tokens.retain(|_| *k.next().unwrap_or(&true));
    if let Some(m) = in_minutes {
        if clock.is_some() || day.is_some() {
            return Err("give either a time or a delay, not both".into());
        }
        if m == 0 || m > 10_080 {
            return Err(format!("{m} minutes is outside 1 minute–1 week"));
        }
        return Ok(TimeFound::When(When::In { in_minutes: m }));
    }
    match clock {
        None if day.is_some() => Ok(TimeFound::DayOnly),
        None => Ok(TimeFound::None),
        Some((h, m, ampm)) => {
            let pm = ampm.or(pm_hint);
            let h24 = match pm {
                _ if h > 23 || m > 59 => return Err(format!("{h}:{m:02} is not a time of day")),
                Some(true) if h < 12 => h + 12,
                Some(false) if h == 12 => 0,
                Some(_) if h > 12 => return Err(format!("{h} with am/pm is not a time of day")),
                _ => h,
            };
            Ok(TimeFound::When(When::Clock {
                time: format!("{h24:02}:{m:02}"),
                day: day.unwrap_or(Day::Next),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        tokenize(s)
    }

    #[test]
    fn tokens_separate_numbers_and_units() {
        assert_eq!(
            toks("Dim the lights to 30%!"),
            ["dim", "the", "lights", "to", "30", "%"]
        );
        assert_eq!(
            toks("set it to 21°C at 7am"),
            ["set", "it", "to", "21", "degrees", "at", "7", "am"]
        );
        assert_eq!(toks("2700K, please"), ["2700", "k", ",", "please"]);
        assert_eq!(toks("twenty one degrees"), ["21", "degrees"]);
        assert_eq!(toks("at 7:30pm"), ["at", "7:30", "pm"]);
        assert_eq!(toks("kids' room"), ["kids", "room"]);
        assert_eq!(toks("a hundred percent"), ["100", "percent"]);
    }

    fn time(s: &str) -> (Result<TimeFound, String>, Vec<String>) {
        let mut t = tokenize(s);
        let r = take_time(&mut t);
        (r, t)
    }

    fn clock(t: &str, day: Day) -> TimeFound {
        TimeFound::When(When::Clock { time: t.into(), day })
    }

    #[test]
    fn times_are_found_and_removed() {
        let (r, rest) = time("set the heating to 21 at 7am tomorrow");
        assert_eq!(r.unwrap(), clock("07:00", Day::Tomorrow));
        assert_eq!(rest, ["set", "the", "heating", "to", "21"]);
        assert_eq!(time("at 19:30").0.unwrap(), clock("19:30", Day::Next));
        assert_eq!(time("at 7 pm").0.unwrap(), clock("19:00", Day::Next));
        assert_eq!(time("at 12am").0.unwrap(), clock("00:00", Day::Next));
        assert_eq!(time("tonight at 11").0.unwrap(), clock("23:00", Day::Today));
        assert_eq!(time("at noon").0.unwrap(), clock("12:00", Day::Next));
        assert_eq!(
            time("in 10 minutes").0.unwrap(),
            TimeFound::When(When::In { in_minutes: 10 })
        );
        assert_eq!(
            time("in an hour").0.unwrap(),
            TimeFound::When(When::In { in_minutes: 60 })
        );
        assert_eq!(
            time("in half an hour").0.unwrap(),
            TimeFound::When(When::In { in_minutes: 30 })
        );
        assert_eq!(time("tomorrow").0.unwrap(), TimeFound::DayOnly);
        assert_eq!(time("turn on the lights").0.unwrap(), TimeFound::None);
        assert!(time("at 25:00").0.is_err());
        assert!(time("at 13 pm").0.is_err());
    }
}
