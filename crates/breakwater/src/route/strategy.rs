//! Load-balancing strategies: the order in which a model alias's targets
//! are tried. The first is the pick; the rest are the failover order.

use super::stats::TargetStats;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// How an alias spreads requests over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In configured order: the first healthy target takes everything.
    #[default]
    Priority,
    /// Randomly in proportion to the weights.
    Weighted,
    /// Lowest peak-EWMA latency first (first-token time for streams).
    LeastLatency,
    /// Fewest calls in flight first.
    LeastBusy,
    /// Power of two choices: of two random targets, the one with the lower
    /// peak-EWMA latency × load.
    P2c,
}

/// What the strategies need to know of a target.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Relative weight (for `weighted`).
    pub weight: u32,
    /// Live statistics.
    pub stats: &'a TargetStats,
}

/// Orders the candidates (indices into `targets`).
pub fn order<R: Rng + ?Sized>(strategy: Strategy, targets: &[Candidate<'_>], stream: bool, rng: &mut R) -> Vec<usize> {
    let n = targets.len();
    let mut idx: Vec<usize> = (0..n).collect();
    if n < 2 {
        return idx;
    }
    match strategy {
        Strategy::Priority => {}
        Strategy::Weighted => {
            // Efraimidis–Spirakis: key = u^(1/w); larger keys first. Zero
            // weights go last, in configured order (failover only).
            let keys: Vec<f64> = targets
                .iter()
                .map(|t| {
                    if t.weight == 0 {
                        -1.0
                    } else {
                        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                        u.powf(1.0 / f64::from(t.weight))
                    }
                })
                .collect();
            idx.sort_by(|a, b| keys[*b].total_cmp(&keys[*a]));
        }
        Strategy::LeastLatency => {
            let lat = |i: usize| {
                let s = targets[i].stats;
                // Unknown latency sorts first, so new targets get measured.
                (if stream { s.ttft_ms() } else { s.total_ms() }).unwrap_or(0.0)
            };
            idx.sort_by(|a, b| lat(*a).total_cmp(&lat(*b)));
        }
        Strategy::LeastBusy => idx.sort_by_key(|i| targets[*i].stats.in_flight()),
        Strategy::P2c => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let cost = |i: usize| targets[i].stats.cost(stream);
            let first = if cost(b) < cost(a) { b } else { a };
            idx.sort_by(|x, y| cost(*x).total_cmp(&cost(*y)));
            if let Some(pos) = idx.iter().position(|i| *i == first) {
                idx.remove(pos);
            }
            idx.insert(0, first);
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    fn stats(n: usize) -> Vec<TargetStats> {
        (0..n).map(|_| TargetStats::new()).collect()
    }

    fn cands<'a>(s: &'a [TargetStats], weights: &[u32]) -> Vec<Candidate<'a>> {
        s.iter()
            .zip(weights)
            .map(|(stats, w)| Candidate { weight: *w, stats })
            .collect()
    }

    #[test]
    fn priority_keeps_config_order() {
        let s = stats(3);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            order(Strategy::Priority, &cands(&s, &[1, 1, 1]), false, &mut rng),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn weighted_follows_weights() {
        let s = stats(3);
        let c = cands(&s, &[1, 3, 0]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut firsts = [0u32; 3];
        for _ in 0..4000 {
            let o = order(Strategy::Weighted, &c, false, &mut rng);
            assert_eq!(o[2], 2, "zero weight is last");
            firsts[o[0]] += 1;
        }
        assert_eq!(firsts[2], 0);
        let share = f64::from(firsts[1]) / 4000.0;
        assert!((0.70..0.80).contains(&share), "{share}");
    }

    #[tokio::test(start_paused = true)]
    async fn least_latency_and_least_busy() {
        let s = stats(3);
        s[0].observe_success(Duration::from_millis(300));
        s[1].observe_success(Duration::from_millis(100));
        s[2].observe_success(Duration::from_millis(200));
        let mut rng = StdRng::seed_from_u64(1);
        let c = cands(&s, &[1, 1, 1]);
        assert_eq!(order(Strategy::LeastLatency, &c, false, &mut rng), vec![1, 2, 0]);
        let _g1 = s[1].start();
        let _g2 = s[1].start();
        let _g3 = s[0].start();
        assert_eq!(order(Strategy::LeastBusy, &c, false, &mut rng), vec![2, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_avoids_the_slow_target() {
        let s = stats(3);
        s[0].observe_success(Duration::from_millis(1000));
        s[1].observe_success(Duration::from_millis(10));
        s[2].observe_success(Duration::from_millis(10));
        let c = cands(&s, &[1, 1, 1]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut slow_first = 0;
        for _ in 0..1000 {
            let o = order(Strategy::P2c, &c, false, &mut rng);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2], "a permutation");
            if o[0] == 0 {
                slow_first += 1;
            }
        }
        // The slow one only wins when it is drawn twice, which p2c never does.
        assert_eq!(slow_first, 0);
    }
}
