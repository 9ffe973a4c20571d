//! Maps whose keys are hashes already (of a key seeded per process): the
//! map passes them through instead of hashing them again, which with std's
//! SipHash cost more than the rest of a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher that passes a `u64` key through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are meant; kept correct for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map from already-hashed `u64` keys.
pub type PrehashedMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_keys_pass_through() {
        let mut h = IdHasher::default();
        h.write_u64(0xdead_beef);
        assert_eq!(h.finish(), 0xdead_beef);
        let mut m: PrehashedMap<&str> = PrehashedMap::default();
        m.insert(7, "seven");
        assert_eq!(m.get(&7), Some(&"seven"));
    }
}
