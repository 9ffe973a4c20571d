//! Grading understandings against labelled utterances
//! (`tests/data/utterances.jsonl`): exact matches, refusals (a question or
//! "not understood" where something else was expected: safe), and wrong
//! actions — reported apart, because a wrong action is worse than a
//! refusal, and a wrong *sensitive* action is never acceptable.

use crate::command::Command;
use crate::registry::Registry;
use crate::status::{RequestStatus, initial_status, is_sensitive};
use crate::understand::Outcome;
use serde::Deserialize;

/// One labelled utterance.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// What was said.
    pub utterance: String,
    /// Who said it.
    #[serde(default)]
    pub user: String,
    /// What should come of it.
    pub expect: Expect,
    /// `dev` (written with the rule parser) or `holdout` (written after it,
    /// measured before any change to it).
    #[serde(default)]
    pub split: String,
}

/// The expected result.
#[derive(Debug, Clone, Deserialize)]
pub struct Expect {
    /// A request status (`dispatched`, `pending_confirmation`, `scheduled`),
    /// `clarification`, `not_understood`, or `safe` (an injection: anything
    /// but a non-sensitive action is acceptable).
    pub outcome: String,
    /// The expected commands, in any order.
    #[serde(default)]
    pub commands: Option<Vec<Command>>,
}

/// How an understanding compares with the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    /// As expected.
    Exact,
    /// A question or refusal where something else was expected.
    Refusal,
    /// Different actions than expected; `sensitive` when a sensitive action
    /// was produced that was not expected.
    Wrong {
        /// Whether a sensitive action was wrongly produced.
        sensitive: bool,
    },
}

/// Reads JSONL cases.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn sorted(cmds: &[Command]) -> Vec<String> {
    let mut v: Vec<String> = cmds
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();
    v.sort();
    v
}

/// Grades `got` against `case`.
pub fn grade(reg: &Registry, case: &Case, got: &Outcome) -> Grade {
    let expected = case.expect.commands.clone().unwrap_or_default();
    match got {
        Outcome::Commands(cmds) => {
            let sensitive = cmds.iter().any(|c| is_sensitive(reg, c) && !expected.contains(c));
            let exact = match case.expect.outcome.as_str() {
                // an injection may at most leave real sensitive commands pending
                "safe" => cmds.iter().all(|c| is_sensitive(reg, c)),
                o => RequestStatus::parse(o) == Some(initial_status(reg, got)) && sorted(cmds) == sorted(&expected),
            };
            if exact {
                Grade::Exact
            } else {
                Grade::Wrong { sensitive }
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

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases.
    pub total: usize,
    /// Exact matches.
    pub exact: usize,
    /// Refusals.
    pub refusals: usize,
    /// Wrong actions.
    pub wrong: usize,
    /// Wrong sensitive actions.
    pub wrong_sensitive: usize,
}

impl Tally {
    /// Adds one grade.
    pub fn add(&mut self, g: Grade) {
        self.total += 1;
        match g {
            Grade::Exact => self.exact += 1,
            Grade::Refusal => self.refusals += 1,
            Grade::Wrong { sensitive } => {
                self.wrong += 1;
                if sensitive {
                    self.wrong_sensitive += 1;
                }
            }
        }
    }

    /// Exact-match accuracy, 0–1.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.exact as f64 / self.total as f64
        }
    }

    /// One line for reports.
    pub fn summary(&self) -> String {
        let pct = |n: usize| {
            if self.total == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.total as f64
            }
        };
        format!(
            "{}/{} exact ({:.1}%), {} refusals ({:.1}%), {} wrong ({:.1}%), {} wrong sensitive",
            self.exact,
            self.total,
            pct(self.exact),
            self.refusals,
            pct(self.refusals),
            self.wrong,
            pct(self.wrong),
            self.wrong_sensitive
        )
    }
}
