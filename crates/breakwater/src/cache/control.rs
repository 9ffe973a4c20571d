//! The request's `Cache-Control` header, reduced to what a cache of LLM
//! answers can honour.

/// What the caller asked of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheControl {
    /// `no-cache` (or `max-age=0`): do not answer from the cache, but store
    /// the fresh answer (a refresh).
    pub no_cache: bool,
    /// `no-store`: neither read nor write the cache.
    pub no_store: bool,
}

impl CacheControl {
    /// Parses one header value: comma-separated directives, case-insensitive,
    /// unknown ones ignored (as HTTP says a cache must).
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        cc.merge(value);
        cc
    }

    /// Parses every value of a repeated header.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut cc = CacheControl::default();
        for v in values {
            cc.merge(v);
        }
        cc
    }

    fn merge(&mut self, value: &str) {
        for directive in value.split(',') {
            let d = directive.trim();
            let (name, arg) = match d.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (d, None),
            };
            if name.eq_ignore_ascii_case("no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case("max-age") && arg == Some("0") {
                self.no_cache = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives() {
        assert_eq!(CacheControl::parse(""), CacheControl::default());
        assert!(CacheControl::parse("no-cache").no_cache);
        assert!(CacheControl::parse("No-Store").no_store);
        let both = CacheControl::parse(" no-cache , private, no-store ");
        assert!(both.no_cache && both.no_store);
        assert!(CacheControl::parse("max-age=0").no_cache);
        assert!(!CacheControl::parse("max-age=60").no_cache);
        assert!(!CacheControl::parse("no-cachex, x=no-store").no_cache);
        let all = CacheControl::parse_all(["no-cache", "no-store"]);
        assert!(all.no_cache && all.no_store);
    }
}
