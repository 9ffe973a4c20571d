//! Reading `Retry-After` and the providers' rate-limit headers.

use http::HeaderMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait we believe from any header (a day); anything longer is
/// treated as garbage rather than obeyed.
const MAX_BELIEVABLE_WAIT: Duration = Duration::from_secs(86_400);

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// How long the upstream asks us to wait, from `retry-after-ms` (OpenAI,
/// Azure), `retry-after` in seconds (fractions accepted) or as an HTTP-date
/// (relative to `now`). `None` when absent or unreadable.
pub fn parse_retry_after(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(h, "retry-after-ms").and_then(|s| s.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0).min(MAX_BELIEVABLE_WAIT));
    }
    let v = header_str(h, "retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs).min(MAX_BELIEVABLE_WAIT));
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_BELIEVABLE_WAIT),
    )
}

/// Parses durations as providers write them: `1s`, `20ms`, `6m0s`,
/// `1h2m3.5s`, `37s`, `1.5s`, or a bare number of seconds.
pub fn parse_duration_text(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_BELIEVABLE_WAIT));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total).min(MAX_BELIEVABLE_WAIT))
}

/// Parses an RFC 3339 timestamp (`2026-11-22T10:00:00Z`,
/// `…T10:00:00.5+01:00`) as Anthropic sends in its reset headers.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { std::str::from_utf8(b.get(r)?).ok()?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = std::str::from_utf8(&b[start..i]).ok()?;
        let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The rate-limit state an upstream reports in its headers (OpenAI's
/// `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitHeaders {
    /// Requests allowed per window.
    pub limit_requests: Option<u64>,
    /// Requests left in the window.
    pub remaining_requests: Option<u64>,
    /// Time until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Tokens allowed per window.
    pub limit_tokens: Option<u64>,
    /// Tokens left in the window.
    pub remaining_tokens: Option<u64>,
    /// Time until the token window resets.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitHeaders {
    /// Reads whichever provider's headers are present.
    pub fn parse(h: &HeaderMap, now: SystemTime) -> Self {
        let num = |name: &str| header_str(h, name).and_then(|s| s.parse::<u64>().ok());
        let openai_reset = |name: &str| header_str(h, name).and_then(parse_duration_text);
        let anthropic_reset = |name: &str| {
            header_str(h, name)
                .and_then(parse_rfc3339)
                .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
        };
        RateLimitHeaders {
            limit_requests: num("x-ratelimit-limit-requests").or_else(|| num("anthropic-ratelimit-requests-limit")),
            remaining_requests: num("x-ratelimit-remaining-requests")
                .or_else(|| num("anthropic-ratelimit-requests-remaining")),
            reset_requests: openai_reset("x-ratelimit-reset-requests")
                .or_else(|| anthropic_reset("anthropic-ratelimit-requests-reset")),
            limit_tokens: num("x-ratelimit-limit-tokens").or_else(|| num("anthropic-ratelimit-tokens-limit")),
            remaining_tokens: num("x-ratelimit-remaining-tokens")
                .or_else(|| num("anthropic-ratelimit-tokens-remaining")),
            reset_tokens: openai_reset("x-ratelimit-reset-tokens")
                .or_else(|| anthropic_reset("anthropic-ratelimit-tokens-reset")),
        }
    }

    /// Whether no header was present.
    pub fn is_empty(&self) -> bool {
        *self == RateLimitHeaders::default()
    }

    /// When a window is exhausted, how long until it resets (the longer of
    /// the exhausted ones). Used as a retry-after when a 429 carries none.
    pub fn exhausted_wait(&self) -> Option<Duration> {
        let req = (self.remaining_requests == Some(0))
            .then_some(self.reset_requests)
            .flatten();
        let tok = (self.remaining_tokens == Some(0))
            .then_some(self.reset_tokens)
            .flatten();
        match (req, tok) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]), now),
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "99999999999")]), now),
            Some(MAX_BELIEVABLE_WAIT)
        );
    }

    #[test]
    fn duration_texts() {
        let cases = [
            ("1s", Some(1000)),
            ("20ms", Some(20)),
            ("6m0s", Some(360_000)),
            ("1h2m3.5s", Some(3_723_500)),
            ("37s", Some(37_000)),
            ("1.5s", Some(1500)),
            ("12", Some(12_000)),
            ("", None),
            ("abc", None),
            ("5x", None),
            ("s", None),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_text(text).map(|d| d.as_millis() as u64), ms, "{text:?}");
        }
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_700_000_000);
        let t = parse_rfc3339("2023-11-14T23:13:20.250+01:00").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_millis(), 1_700_000_000_250);
        assert!(parse_rfc3339("2023-13-14T22:13:20Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2023-11-14T22:13:20").is_none());
    }

    #[test]
    fn provider_rate_limit_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let openai = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let r = RateLimitHeaders::parse(&openai, now);
        assert_eq!(r.limit_requests, Some(60));
        assert_eq!(r.remaining_tokens, Some(149_984));
        assert_eq!(r.reset_tokens, Some(Duration::from_secs(360)));
        assert_eq!(r.exhausted_wait(), Some(Duration::from_secs(1)));

        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:25Z"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:13:40Z"),
        ]);
        let r = RateLimitHeaders::parse(&anthropic, now);
        assert_eq!(r.limit_requests, Some(50));
        assert_eq!(r.reset_requests, Some(Duration::from_secs(5)));
        assert_eq!(r.exhausted_wait(), Some(Duration::from_secs(20)));
        assert!(RateLimitHeaders::parse(&HeaderMap::new(), now).is_empty());
    }
}
