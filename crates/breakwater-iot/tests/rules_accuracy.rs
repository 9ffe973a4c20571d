//! The rule-based parser against the labelled utterances in
//! `tests/data/utterances.jsonl`: exact-match accuracy, refusals, and wrong
//! actions (reported separately; wrong sensitive actions must be zero).

mod common;

use breakwater_iot::command::check_command;
use breakwater_iot::eval::{Grade, Tally, grade, parse_cases};
use breakwater_iot::status::initial_status;
use breakwater_iot::understand::Outcome;
use breakwater_iot::understand::rules::RuleParser;
use std::collections::BTreeMap;

const DATA: &str = include_str!("data/utterances.jsonl");

#[test]
fn the_labelled_set_is_large_varied_and_consistent() {
    let reg = common::home();
    let cases = parse_cases(DATA).unwrap();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        *outcomes.entry(c.expect.outcome.as_str()).or_default() += 1;
        for cmd in c.expect.commands.iter().flatten() {
            check_command(&reg, cmd).unwrap_or_else(|e| panic!("{:?}: {cmd} is invalid: {e}", c.utterance));
        }
        if let Some(cmds) = &c.expect.commands {
            let status = initial_status(&reg, &Outcome::Commands(cmds.clone()));
            assert_eq!(status.as_str(), c.expect.outcome, "{:?}: outcome label", c.utterance);
        }
    }
    for o in [
        "dispatched",
        "pending_confirmation",
        "scheduled",
        "clarification",
        "not_understood",
        "safe",
    ] {
        assert!(
            outcomes.get(o).copied().unwrap_or(0) >= 5,
            "few {o} cases: {outcomes:?}"
        );
    }
    // every device type of the example home is exercised
    let types: std::collections::HashSet<_> = cases
        .iter()
        .flat_map(|c| c.expect.commands.iter().flatten())
        .filter_map(|cmd| reg.device(&cmd.device).map(|d| d.kind))
        .collect();
    let home_types: std::collections::HashSet<_> = reg.devices().iter().map(|d| d.kind).collect();
    assert_eq!(types, home_types, "every device type appears in an expected command");
}

#[test]
fn rule_based_parser_accuracy() {
    let reg = common::home();
    let parser = RuleParser::new(reg.clone());
    let cases = parse_cases(DATA).unwrap();
    let mut all = Tally::default();
    let mut by_split: BTreeMap<String, Tally> = BTreeMap::new();
    for c in &cases {
        let got = parser.parse(&c.utterance);
        let g = grade(&reg, c, &got);
        all.add(g);
        by_split.entry(c.split.clone()).or_default().add(g);
        match g {
            Grade::Exact => {}
            Grade::Refusal => println!("REFUSAL {:?}: expected {}, got {got:?}", c.utterance, c.expect.outcome),
            Grade::Wrong { sensitive } => println!(
                "WRONG{} {:?}: expected {} {:?}, got {got:?}",
                if sensitive { " SENSITIVE" } else { "" },
                c.utterance,
                c.expect.outcome,
                c.expect.commands
            ),
        }
    }
    println!("rule-based parser: {}", all.summary());
    for (split, t) in &by_split {
        println!("  {split}: {}", t.summary());
    }
    assert_eq!(all.wrong_sensitive, 0, "a wrong sensitive action is never acceptable");
    // The floor: the `dev` part was written together with the rules and
    // they match it fully; the `holdout` part was written afterwards and
    // scored 88.6% before any change (see EVAL.md). 90% overall keeps a
    // regression in any family of phrasings from passing unnoticed.
    assert!(
        all.accuracy() >= 0.90,
        "exact-match accuracy {:.1}% is below 90%",
        100.0 * all.accuracy()
    );
    // Wrong actions are worse than refusals: at most 2% of the set.
    assert!(all.wrong * 50 <= all.total, "{} wrong actions", all.wrong);
}
