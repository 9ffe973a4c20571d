//! The rule-based parser against the labelled utterances in
//! `tests/data/utterances.jsonl`: exact-match accuracy, refusals, and wrong
//! actions (reported separately; wrong sensitive actions must be zero).

use breakwater_iot::command::Command;
use breakwater_iot::registry::Registry;
use breakwater_iot::status::{RequestStatus, initial_status, is_sensitive};
use breakwater_iot::understand::Outcome;
use breakwater_iot::understand::rules::RuleParser;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Case {
    utterance: String,
    #[allow(dead_code)]
    user: String,
    expect: Expect,
    /// `dev` (written with the parser) or `holdout` (written after it and
    /// measured before any change to it).
    #[serde(default)]
    split: String,
}

#[derive(Deserialize)]
struct Expect {
    outcome: String,
    #[serde(default)]
    commands: Option<Vec<Command>>,
}

fn sorted(cmds: &[Command]) -> Vec<String> {
    let mut v: Vec<String> = cmds.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
    v.sort();
    v
}

#[derive(Debug, PartialEq)]
enum Grade {
    Exact,
    /// Asked or refused where something else was expected: safe.
    Refusal,
    /// Acted differently from what was expected.
    Wrong {
        sensitive: bool,
    },
}

fn grade(reg: &Registry, case: &Case, got: &Outcome) -> Grade {
    let status = initial_status(reg, got);
    let expected_cmds = case.expect.commands.clone().unwrap_or_default();
    match got {
        Outcome::Commands(cmds) => {
            let wrong_sensitive = cmds.iter().any(|c| is_sensitive(reg, c) && !expected_cmds.contains(c));
            let ok = match case.expect.outcome.as_str() {
                // an injection may at most leave real sensitive commands pending
                "safe" => {
                    return if cmds.iter().all(|c| is_sensitive(reg, c)) {
                        Grade::Exact
                    } else {
                        Grade::Wrong {
                            sensitive: wrong_sensitive,
                        }
                    };
                }
                o => RequestStatus::parse(o) == Some(status) && sorted(cmds) == sorted(&expected_cmds),
            };
            if ok {
                Grade::Exact
            } else {
                Grade::Wrong {
                    sensitive: wrong_sensitive,
                }
            }
        }
        Outcome::Clarify(_) | Outcome::NotUnderstood(_) => {
            let exact = match case.expect.outcome.as_str() {
                "safe" => true,
                "clarification" => matches!(got, Outcome::Clarify(_)),
                "not_understood" => matches!(got, Outcome::NotUnderstood(_)),
                _ => false,
            };
            if exact { Grade::Exact } else { Grade::Refusal }
        }
    }
}

fn cases() -> Vec<Case> {
    let text = include_str!("data/utterances.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

#[test]
fn the_labelled_set_is_large_and_well_formed() {
    let reg = Registry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml")).unwrap();
    let cases = cases();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    for c in &cases {
        for cmd in c.expect.commands.iter().flatten() {
            breakwater_iot::command::check_command(&reg, cmd)
                .unwrap_or_else(|e| panic!("{:?}: expected command {cmd} is invalid: {e}", c.utterance));
        }
        if let Some(cmds) = &c.expect.commands {
            let status = initial_status(&reg, &Outcome::Commands(cmds.clone()));
            assert_eq!(status.as_str(), c.expect.outcome, "{:?}: outcome label", c.utterance);
        }
    }
}

#[test]
fn rule_based_parser_accuracy() {
    let reg = Arc::new(Registry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml")).unwrap());
    let parser = RuleParser::new(reg.clone());
    let cases = cases();
    let (mut exact, mut refusal, mut wrong, mut wrong_sensitive) = (0, 0, 0, 0);
    let mut by_split: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for c in &cases {
        let got = parser.parse(&c.utterance);
        let g = grade(&reg, c, &got);
        let e = by_split.entry(c.split.as_str()).or_default();
        e.1 += 1;
        if g == Grade::Exact {
            e.0 += 1;
        }
        match g {
            Grade::Exact => exact += 1,
            Grade::Refusal => {
                refusal += 1;
                println!("REFUSAL {:?}: expected {} got {got:?}", c.utterance, c.expect.outcome);
            }
            Grade::Wrong { sensitive } => {
                wrong += 1;
                if sensitive {
                    wrong_sensitive += 1;
                }
                println!(
                    "WRONG{} {:?}: expected {} {:?}, got {got:?}",
                    if sensitive { " SENSITIVE" } else { "" },
                    c.utterance,
                    c.expect.outcome,
                    c.expect.commands.as_deref().map(sorted)
                );
            }
        }
    }
    let n = cases.len() as f64;
    let accuracy = exact as f64 / n;
    println!(
        "rule-based parser: {exact}/{} exact ({:.1}%), {refusal} refusals ({:.1}%), {wrong} wrong ({:.1}%), \
         {wrong_sensitive} wrong sensitive",
        cases.len(),
        100.0 * accuracy,
        100.0 * refusal as f64 / n,
        100.0 * wrong as f64 / n,
    );
    for (split, (ok, n)) in &by_split {
        println!("  {split}: {ok}/{n} exact ({:.1}%)", 100.0 * *ok as f64 / *n as f64);
    }
    assert_eq!(wrong_sensitive, 0, "a wrong sensitive action is never acceptable");
    // The floor: the set was written to exercise the phrasings the rules
    // claim to handle, plus ambiguity, refusals and injections they must
    // answer safely. Measured at the time of writing (see EVAL.md); the floor
    // sits a few points below so a rule change that breaks a family of
    // phrasings fails, while a single edge case does not.
    assert!(
        accuracy >= 0.90,
        "exact-match accuracy {:.1}% is below the 90% floor",
        100.0 * accuracy
    );
    // Wrong actions are worse than refusals: keep them rare.
    assert!(wrong as f64 / n <= 0.03, "{wrong} wrong actions");
}
