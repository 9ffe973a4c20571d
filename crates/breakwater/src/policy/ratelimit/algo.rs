//! The four algorithms as pure state machines over integer time (the
//! in-memory store's nanoseconds). The Redis store runs the same logic in
//! Lua (see `redis.rs`); keep the two in step.
//!
//! Token bucket and GCRA work in scaled integers so that no rounding can
//! admit a fraction of a token too many: the bucket level is kept in
//! `tokens × period` and GCRA's theoretical arrival time in `ns × limit`,
//! which turns the refill rate `limit / period` into whole numbers.

use super::Algorithm;
use std::collections::VecDeque;

/// A quota in the store's time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) limit: u64,
    /// The period, ≥ 1.
    pub(crate) period: u64,
}

/// What one decision found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    /// Until the key is back to its full allowance.
    pub(crate) reset_after: u64,
    /// Until the same cost would be admitted (0 when allowed).
    pub(crate) retry_after: u64,
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Level in `tokens × period`, and when it was last refilled.
    Bucket { level: i128, last: u64 },
    /// Theoretical arrival time in `ns × limit`.
    Gcra { tat: i128 },
    /// Admitted `(time, cost)` in time order, and their sum.
    Log { entries: VecDeque<(u64, u64)>, sum: u64 },
    /// Counts of the current window (`idx`) and the one before.
    Window { idx: u64, prev: u64, cur: u64 },
}

// 128-bit division is a slow library call; the operands almost always fit
// in 64 bits, where it is one instruction.
fn ceil_div(a: i128, b: i128) -> u64 {
    if a <= 0 || b <= 0 {
        return 0;
    }
    if let (Ok(a), Ok(b)) = (u64::try_from(a), u64::try_from(b)) {
        return a.div_ceil(b);
    }
    u64::try_from((a + b - 1) / b).unwrap_or(u64::MAX)
}

fn floor_div(a: i128, b: i128) -> u64 {
    if a <= 0 || b <= 0 {
        return 0;
    }
    if let (Ok(a), Ok(b)) = (u64::try_from(a), u64::try_from(b)) {
        return a / b;
    }
    u64::try_from(a / b).unwrap_or(u64::MAX)
}

impl State {
    /// A key never seen, or idle long enough to be back to full.
    pub(crate) fn fresh(algo: Algorithm, p: Params, now: u64) -> State {
        match algo {
            Algorithm::TokenBucket => State::Bucket {
                level: i128::from(p.limit) * i128::from(p.period),
                last: now,
            },
            Algorithm::Gcra => State::Gcra {
                tat: i128::from(now) * i128::from(p.limit),
            },
            Algorithm::SlidingLog => State::Log {
                entries: VecDeque::new(),
                sum: 0,
            },
            Algorithm::SlidingWindow => State::Window {
                idx: now / p.period,
                prev: 0,
                cur: 0,
            },
        }
    }

    /// Brings the state forward to `now` (refill, expiry, window roll).
    fn advance(&mut self, p: Params, now: u64) {
        let (l, per) = (i128::from(p.limit), i128::from(p.period));
        match self {
            State::Bucket { level, last } => {
                if now > *last {
                    *level = (*level + i128::from(now - *last) * l).min(l * per);
                    *last = now;
                }
            }
            State::Gcra { tat } => {
                let now_s = i128::from(now) * l;
                if *tat < now_s {
                    *tat = now_s;
                }
            }
            State::Log { entries, sum } => {
                while let Some(&(t, c)) = entries.front() {
                    if t.saturating_add(p.period) > now {
                        break;
                    }
                    entries.pop_front();
                    *sum = sum.saturating_sub(c);
                }
            }
            State::Window { idx, prev, cur } => {
                let now_idx = now / p.period;
                if now_idx == *idx + 1 {
                    *prev = *cur;
                    *cur = 0;
                    *idx = now_idx;
                } else if now_idx > *idx + 1 {
                    *prev = 0;
                    *cur = 0;
                    *idx = now_idx;
                }
            }
        }
    }

    /// Takes `cost` if the quota allows it now.
    pub(crate) fn take(&mut self, p: Params, now: u64, cost: u64) -> Verdict {
        self.advance(p, now);
        let (l, per, c) = (i128::from(p.limit), i128::from(p.period), i128::from(cost));
        let mut v = Verdict::default();
        match self {
            State::Bucket { level, .. } => {
                let need = c * per;
                if *level >= need {
                    *level -= need;
                    v.allowed = true;
                } else {
                    v.retry_after = ceil_div(need - *level, l);
                }
                v.remaining = floor_div(*level, per);
                v.reset_after = ceil_div(l * per - *level, l);
            }
            State::Gcra { tat } => {
                let now_s = i128::from(now) * l;
                let new_tat = *tat + c * per;
                if new_tat - now_s <= l * per {
                    *tat = new_tat;
                    v.allowed = true;
                } else {
                    v.retry_after = ceil_div(new_tat - now_s - l * per, l);
                }
                v.remaining = floor_div(l * per - (*tat - now_s), per);
                v.reset_after = ceil_div(*tat - now_s, l);
            }
            State::Log { entries, sum } => {
                if sum.saturating_add(cost) <= p.limit {
                    if cost > 0 {
                        entries.push_back((now, cost));
                        *sum += cost;
                    }
                    v.allowed = true;
                } else if cost <= p.limit {
                    // The oldest entries leave first: wait until enough did.
                    let need = *sum + cost - p.limit;
                    let mut freed = 0;
                    for &(t, ec) in entries.iter() {
                        freed += ec;
                        if freed >= need {
                            v.retry_after = (t + p.period).saturating_sub(now);
                            break;
                        }
                    }
                } else {
                    v.retry_after = u64::MAX;
                }
                v.remaining = p.limit.saturating_sub(*sum);
                v.reset_after = entries.back().map_or(0, |&(t, _)| (t + p.period).saturating_sub(now));
            }
            State::Window { idx, prev, cur } => {
                let e = i128::from(now.saturating_sub(*idx * p.period).min(p.period));
                let (pv, cu) = (i128::from(*prev), i128::from(*cur));
                let est = pv * (per - e) + cu * per;
                if est + c * per <= l * per {
                    *cur += cost;
                    v.allowed = true;
                } else if cu + c <= l && pv > 0 {
                    // The previous window's weight fades within this one.
                    let fits = floor_div((l - cu - c) * per, pv);
                    let at = per - i128::from(fits);
                    v.retry_after = u64::try_from((at - e).max(1)).unwrap_or(u64::MAX);
                } else if c <= l {
                    // Only in the next window, as this one fades.
                    let at = if cu > 0 {
                        per - i128::from(floor_div((l - c) * per, cu).min(p.period))
                    } else {
                        0
                    };
                    v.retry_after = u64::try_from(per - e + at).unwrap_or(u64::MAX);
                } else {
                    v.retry_after = u64::MAX;
                }
                let est = pv * (per - e) + i128::from(*cur) * per;
                v.remaining = floor_div(l * per - est, per);
                v.reset_after = if *cur > 0 {
                    u64::try_from(2 * per - e).unwrap_or(u64::MAX)
                } else if *prev > 0 {
                    u64::try_from(per - e).unwrap_or(u64::MAX)
                } else {
                    0
                };
            }
        }
        v
    }

    /// Adds `delta` to what the take at time `at` cost: a refund when
    /// negative, an extra charge when positive. Never refuses: the extra is
    /// owed (the level may go below zero and delays later takes).
    pub(crate) fn adjust(&mut self, p: Params, now: u64, at: u64, delta: i64) {
        self.advance(p, now);
        let (l, per, d) = (i128::from(p.limit), i128::from(p.period), i128::from(delta));
        match self {
            State::Bucket { level, .. } => *level = (*level - d * per).min(l * per),
            State::Gcra { tat } => {
                let now_s = i128::from(now) * l;
                *tat = (*tat + d * per).max(now_s);
            }
            State::Log { entries, sum } => {
                let start = entries.partition_point(|&(t, _)| t < at);
                let end = entries.partition_point(|&(t, _)| t <= at);
                if delta >= 0 {
                    let extra = delta.unsigned_abs();
                    match entries.range_mut(start..end).next() {
                        Some(e) => e.1 += extra,
                        None => entries.push_back((now, extra)),
                    }
                    *sum += extra;
                } else {
                    let mut refund = delta.unsigned_abs();
                    for e in entries.range_mut(start..end) {
                        let r = refund.min(e.1);
                        e.1 -= r;
                        *sum -= r;
                        refund -= r;
                    }
                    entries.retain(|e| e.1 > 0);
                }
            }
            State::Window { idx, prev, cur } => {
                let at_idx = at / p.period;
                let apply = |n: &mut u64| *n = n.saturating_add_signed(delta);
                if at_idx == *idx {
                    apply(cur);
                } else if at_idx + 1 == *idx {
                    apply(prev);
                } else if delta > 0 {
                    apply(cur);
                }
            }
        }
    }

    /// Whether the key is back to its full allowance, so forgetting it
    /// changes nothing.
    pub(crate) fn is_idle(&self, p: Params, now: u64) -> bool {
        let (l, per) = (i128::from(p.limit), i128::from(p.period));
        match self {
            State::Bucket { level, last } => *level + i128::from(now.saturating_sub(*last)) * l >= l * per,
            State::Gcra { tat } => *tat <= i128::from(now) * l,
            State::Log { entries, .. } => entries.back().is_none_or(|&(t, _)| t.saturating_add(p.period) <= now),
            State::Window { idx, prev, cur } => {
                let now_idx = now / p.period;
                now_idx > *idx + 1 || (*cur == 0 && (now_idx > *idx || *prev == 0))
            }
        }
    }

    /// When (in the store's time) the key will be idle, for choosing what
    /// to evict first.
    pub(crate) fn idle_at(&self, p: Params, now: u64) -> u64 {
        let (l, per) = (i128::from(p.limit), i128::from(p.period));
        match self {
            State::Bucket { level, last } => last.saturating_add(ceil_div(l * per - *level, l)),
            State::Gcra { tat } => ceil_div(*tat, l),
            State::Log { entries, .. } => entries.back().map_or(now, |&(t, _)| t.saturating_add(p.period)),
            State::Window { idx, .. } => (idx + 2).saturating_mul(p.period),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Algorithm; 4] = [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
    ];

    fn p(limit: u64, period: u64) -> Params {
        Params { limit, period }
    }

    #[test]
    fn a_fresh_key_admits_a_burst_of_the_limit_then_refuses() {
        for algo in ALL {
            let q = p(5, 1000);
            let mut s = State::fresh(algo, q, 0);
            for i in 0..5 {
                let v = s.take(q, 0, 1);
                assert!(v.allowed, "{algo:?} #{i}");
                assert_eq!(v.remaining, 4 - i, "{algo:?}");
            }
            let v = s.take(q, 0, 1);
            assert!(!v.allowed, "{algo:?}");
            // The two-counter window spreads the old count over the window,
            // so it may ask for up to two periods.
            assert!(
                v.retry_after > 0 && v.retry_after <= 2000,
                "{algo:?}: {}",
                v.retry_after
            );
            // And it is admitted at exactly the time it was told.
            let mut again = s.clone();
            assert!(
                !again.take(q, v.retry_after - 1, 1).allowed,
                "{algo:?} early at {}",
                v.retry_after - 1
            );
            assert!(s.take(q, v.retry_after, 1).allowed, "{algo:?} at {}", v.retry_after);
        }
    }

    #[test]
    fn retry_after_is_exact_for_bucket_and_gcra() {
        for algo in [Algorithm::TokenBucket, Algorithm::Gcra] {
            let q = p(60, 60_000);
            let mut s = State::fresh(algo, q, 0);
            assert!(s.take(q, 0, 60).allowed);
            let v = s.take(q, 0, 3);
            assert_eq!(
                (v.allowed, v.retry_after, v.reset_after),
                (false, 3000, 60_000),
                "{algo:?}"
            );
            let v = s.take(q, 3000, 3);
            assert!(v.allowed, "{algo:?}");
            assert!(!s.take(q, 3000, 1).allowed);
        }
    }

    #[test]
    fn refunds_and_extra_charges() {
        for algo in ALL {
            let q = p(100, 1000);
            let mut s = State::fresh(algo, q, 0);
            assert!(s.take(q, 10, 80).allowed);
            assert!(!s.take(q, 10, 30).allowed, "{algo:?}");
            s.adjust(q, 10, 10, -50); // used 30 of the 80
            assert!(s.take(q, 10, 60).allowed, "{algo:?} after the refund");
            assert!(!s.take(q, 10, 20).allowed, "{algo:?}: 90 used");
            s.adjust(q, 10, 10, 40); // an extra charge is owed even over the limit
            let v = s.take(q, 10, 1);
            assert!(!v.allowed, "{algo:?}");
            assert_eq!(v.remaining, 0);
        }
    }

    #[test]
    fn keys_go_idle_when_back_to_full() {
        for algo in ALL {
            let q = p(10, 1000);
            let mut s = State::fresh(algo, q, 0);
            assert!(s.is_idle(q, 0), "{algo:?} fresh");
            s.take(q, 0, 5);
            assert!(!s.is_idle(q, 1), "{algo:?}");
            let at = s.idle_at(q, 1);
            assert!(s.is_idle(q, at), "{algo:?} idle at {at}");
            assert!(at <= 2000, "{algo:?}");
            assert_eq!(s.clone().take(q, at, 10).remaining, 0, "{algo:?}: full again at {at}");
            let mut fresh = State::fresh(algo, q, at);
            assert_eq!(s.take(q, at, 10), fresh.take(q, at, 10), "{algo:?}: idle = fresh");
        }
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let q = p(10, 1000);
        let mut s = State::fresh(Algorithm::SlidingWindow, q, 0);
        for _ in 0..10 {
            assert!(s.take(q, 900, 1).allowed);
        }
        // At 1250 the previous window weighs 75%: 7.5 of 10 used.
        let v = s.take(q, 1250, 1);
        assert!(v.allowed);
        assert!(s.take(q, 1250, 1).allowed);
        let v2 = s.take(q, 1250, 1);
        assert!(!v2.allowed, "{v:?} {v2:?}");
        // 9 + 1 ≤ 10 once the weight is ≤ 0.7 → at 1300.
        assert_eq!(v2.retry_after, 50);
    }

    fn algo() -> impl Strategy<Value = Algorithm> {
        prop_oneof![
            Just(Algorithm::TokenBucket),
            Just(Algorithm::Gcra),
            Just(Algorithm::SlidingLog),
            Just(Algorithm::SlidingWindow)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// In any interval of length t, the admitted cost is at most
        /// `rate × t + burst` (= limit × t / period + limit).
        #[test]
        fn never_more_than_rate_times_t_plus_burst(
            algo in algo(),
            limit in 1u64..20,
            period in 1u64..5_000,
            steps in prop::collection::vec((0u64..3_000, 1u64..6), 1..300),
        ) {
            let q = p(limit, period);
            let mut s = State::fresh(algo, q, 0);
            let mut now = 0u64;
            let mut admitted: Vec<(u64, u64)> = vec![];
            for (dt, cost) in steps {
                now += dt;
                if s.take(q, now, cost).allowed {
                    admitted.push((now, cost));
                }
            }
            for i in 0..admitted.len() {
                let mut total = 0u128;
                for j in i..admitted.len() {
                    total += u128::from(admitted[j].1);
                    let t = u128::from(admitted[j].0 - admitted[i].0);
                    // total ≤ limit × t / period + limit, in integers.
                    let bound = u128::from(limit) * t + u128::from(limit) * u128::from(period);
                    prop_assert!(
                        total * u128::from(period) <= bound,
                        "{:?}: {} admitted in {} (limit {}/{})", algo, total, t, limit, period
                    );
                }
            }
        }

        /// A refused take is admitted at its retry_after, never later (for
        /// the exact algorithms: nothing else happens meanwhile).
        #[test]
        fn retry_after_is_enough(
            algo in algo(),
            limit in 1u64..20,
            period in 1u64..5_000,
            steps in prop::collection::vec((0u64..3_000, 1u64..6), 1..100),
        ) {
            let q = p(limit, period);
            let mut s = State::fresh(algo, q, 0);
            let mut now = 0u64;
            for (dt, cost) in steps {
                now += dt;
                let cost = cost.min(limit);
                let v = s.take(q, now, cost);
                if !v.allowed {
                    let mut probe = s.clone();
                    prop_assert!(probe.take(q, now + v.retry_after, cost).allowed,
                        "{:?} not admitted at +{}", algo, v.retry_after);
                }
            }
        }
    }
}
