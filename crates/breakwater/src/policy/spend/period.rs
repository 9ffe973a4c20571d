//! Calendar periods in UTC, without a date library: days since the Unix
//! epoch to civil dates and back (Howard Hinnant's algorithms).

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The period a budget renews over, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// From 00:00 UTC to the next.
    Day,
    /// ISO weeks: from Monday 00:00 UTC.
    Week,
    /// From the 1st of the month, 00:00 UTC.
    #[default]
    Month,
}

/// One concrete period: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First second.
    pub start: u64,
    /// First second of the next period.
    pub end: u64,
}

impl Window {
    /// Time left in the period at `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now = unix_secs(now);
        Duration::from_secs(self.end.saturating_sub(now))
    }
}

const DAY: u64 = 86_400;

/// Seconds since the epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day count since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Period {
    /// The period containing `now`.
    pub fn window(self, now: SystemTime) -> Window {
        let secs = unix_secs(now);
        let days = (secs / DAY) as i64;
        let (start, end) = match self {
            Period::Day => (days, days + 1),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday.
                let start = days - (days + 3).rem_euclid(7);
                (start, start + 7)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
            }
        };
        Window {
            start: start.max(0) as u64 * DAY,
            end: end.max(0) as u64 * DAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // 2024-02-29T13:00:00Z (a Thursday in a leap year).
    const LEAP_DAY: u64 = 1_709_211_600;

    #[test]
    fn calendar_periods() {
        let d = Period::Day.window(at(LEAP_DAY));
        assert_eq!((d.start, d.end), (1_709_164_800, 1_709_251_200));
        let w = Period::Week.window(at(LEAP_DAY));
        // Monday 2024-02-26 to Monday 2024-03-04.
        assert_eq!((w.start, w.end), (1_708_905_600, 1_709_510_400));
        let m = Period::Month.window(at(LEAP_DAY));
        // 2024-02-01 to 2024-03-01: 29 days.
        assert_eq!((m.start, m.end), (1_706_745_600, 1_709_251_200));
        assert_eq!((m.end - m.start) / DAY, 29);
        let dec = Period::Month.window(at(1_735_603_200)); // 2024-12-31
        assert_eq!((dec.start, dec.end), (1_733_011_200, 1_735_689_600)); // → 2025-01-01
        assert_eq!(m.remaining(at(LEAP_DAY)), Duration::from_secs(11 * 3600));
    }

    #[test]
    fn round_trip_over_centuries() {
        for days in (-800_000i64..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        }
        // Every period contains its instant and starts where the last ended.
        for secs in (0..4_000_000_000u64).step_by(7_777_777) {
            for p in [Period::Day, Period::Week, Period::Month] {
                let w = p.window(at(secs));
                assert!(w.start <= secs && secs < w.end, "{p:?} {secs}");
                assert_eq!(p.window(at(w.end)).start, w.end);
            }
        }
    }
}
