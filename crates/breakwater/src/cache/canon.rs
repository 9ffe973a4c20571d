//! A canonical, unambiguous byte form of request fields, streamed into a
//! blake3 hasher through a small fixed buffer.
//!
//! Why not hash `serde_json::to_string(&req)`? Object key order would change
//! the hash (serde_json keeps insertion order when a dependency enables
//! `preserve_order`), it would allocate a string as large as the prompt on
//! every request, and it would include fields that do not change the answer.
//! Here every value is written with a type tag and every string with its
//! length, so two different inputs can never produce the same byte sequence,
//! and objects are written with their keys sorted, recursively.

use serde_json::{Map, Value};

/// Bytes buffered before they are handed to the hasher. Most requests fit,
/// and are hashed in one call (blake3 hashes several 1 KiB chunks in
/// parallel only when one `update` hands it several); larger ones go to the
/// hasher in pieces of this size, so the buffer stays bounded.
const BUF: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffer, reused from one hash to the next: a request
    /// hashes twice (fingerprint, key), and a fresh buffer (or a hasher and
    /// an array on the stack, moved around) cost more than the hashing.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Type tags, so `"1"` and `1`, or an absent and an empty field, differ.
pub(crate) mod tag {
    pub const NONE: u8 = 0;
    pub const NULL: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const TRUE: u8 = 3;
    pub const INT: u8 = 4;
    pub const UINT: u8 = 5;
    pub const FLOAT: u8 = 6;
    pub const STR: u8 = 7;
    pub const ARRAY: u8 = 8;
    pub const OBJECT: u8 = 9;
    pub const SOME: u8 = 10;
    pub const FIELD: u8 = 11;
}

/// Writes canonical values into a blake3 hasher.
pub(crate) struct Canon {
    buf: Vec<u8>,
    /// Made only when the input outgrows the buffer.
    hasher: Option<Box<blake3::Hasher>>,
}

impl Canon {
    /// A writer whose output starts with `domain` (so hashes for different
    /// purposes can never be confused).
    pub(crate) fn new(domain: &str) -> Self {
        let mut buf = SPARE.with(|s| s.take());
        buf.clear();
        let mut c = Canon { buf, hasher: None };
        c.str(domain);
        c
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.hasher.get_or_insert_with(Default::default).update(&self.buf);
            self.buf.clear();
        }
    }

    /// Raw bytes, no framing (callers add tags and lengths).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > BUF {
            self.flush();
            if bytes.len() >= BUF {
                self.hasher.get_or_insert_with(Default::default).update(bytes);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// One tag byte.
    pub(crate) fn tag(&mut self, t: u8) {
        self.raw(&[t]);
    }

    /// A length or count.
    pub(crate) fn len_prefix(&mut self, n: usize) {
        self.raw(&(n as u64).to_le_bytes());
    }

    /// A field marker: the tag plus a small field number, so fields that
    /// are absent shift nothing and can never be mistaken for each other.
    pub(crate) fn field(&mut self, n: u8) {
        self.raw(&[tag::FIELD, n]);
    }

    /// A string.
    pub(crate) fn str(&mut self, s: &str) {
        self.tag(tag::STR);
        self.len_prefix(s.len());
        self.raw(s.as_bytes());
    }

    /// An optional string.
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.tag(tag::NONE),
        }
    }

    /// An unsigned integer.
    pub(crate) fn u64(&mut self, n: u64) {
        self.tag(tag::UINT);
        self.raw(&n.to_le_bytes());
    }

    /// A signed integer.
    pub(crate) fn i64(&mut self, n: i64) {
        self.tag(tag::INT);
        self.raw(&n.to_le_bytes());
    }

    /// A float; `-0.0` is written as `0.0`, and integral floats that fit an
    /// i64 as that integer, so `0` and `0.0` in JSON hash alike.
    pub(crate) fn f64(&mut self, x: f64) {
        if x.fract() == 0.0 && x.abs() < 9.0e15 {
            self.i64(x as i64);
        } else {
            self.tag(tag::FLOAT);
            self.raw(&x.to_bits().to_le_bytes());
        }
    }

    /// An optional float.
    pub(crate) fn opt_f64(&mut self, x: Option<f64>) {
        match x {
            Some(x) => self.f64(x),
            None => self.tag(tag::NONE),
        }
    }

    /// An optional sampling parameter (temperature, top_p, penalties),
    /// quantised to 1e-6: no provider resolves them finer, and it keeps the
    /// key stable when a float is printed and parsed again (serde_json's
    /// default parser may land one ulp away).
    pub(crate) fn opt_param(&mut self, x: Option<f64>) {
        match x {
            Some(x) if x.is_finite() && x.abs() < 1e12 => self.i64((x * 1e6).round() as i64),
            other => self.opt_f64(other),
        }
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self, b: Option<bool>) {
        self.tag(match b {
            None => tag::NONE,
            Some(false) => tag::FALSE,
            Some(true) => tag::TRUE,
        });
    }

    /// A JSON value, objects with their keys sorted at every depth.
    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.tag(tag::NULL),
            Value::Bool(false) => self.tag(tag::FALSE),
            Value::Bool(true) => self.tag(tag::TRUE),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.i64(i);
                } else if let Some(u) = n.as_u64() {
                    self.u64(u);
                } else if let Some(f) = n.as_f64() {
                    self.f64(f);
                } else {
                    self.str(&n.to_string());
                }
            }
            Value::String(s) => self.str(s),
            Value::Array(a) => {
                self.tag(tag::ARRAY);
                self.len_prefix(a.len());
                for x in a {
                    self.value(x);
                }
            }
            Value::Object(o) => self.object(o, |_| true),
        }
    }

    /// An optional JSON value.
    pub(crate) fn opt_value(&mut self, v: Option<&Value>) {
        match v {
            Some(v) => {
                self.tag(tag::SOME);
                self.value(v);
            }
            None => self.tag(tag::NONE),
        }
    }

    /// An object with sorted keys, keeping only the keys `keep` accepts.
    pub(crate) fn object(&mut self, o: &Map<String, Value>, keep: impl Fn(&str) -> bool) {
        self.tag(tag::OBJECT);
        // serde_json's map is sorted unless `preserve_order` is on somewhere
        // in the build: check before paying for a sort.
        let sorted = o.keys().zip(o.keys().skip(1)).all(|(a, b)| a <= b);
        if sorted {
            let n = o.keys().filter(|k| keep(k)).count();
            self.len_prefix(n);
            for (k, v) in o {
                if keep(k) {
                    self.str(k);
                    self.value(v);
                }
            }
        } else {
            let mut entries: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| keep(k)).collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            self.len_prefix(entries.len());
            for (k, v) in entries {
                self.str(k);
                self.value(v);
            }
        }
    }

    /// The 32-byte digest.
    pub(crate) fn finish(mut self) -> [u8; 32] {
        let digest = match self.hasher.take() {
            None => blake3::hash(&self.buf),
            Some(mut h) => {
                h.update(&self.buf);
                h.finalize()
            }
        };
        let buf = std::mem::take(&mut self.buf);
        SPARE.with(|s| s.set(buf));
        *digest.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOLDEN: &str = "909b6f9ee51eb75e57b28f700ad1cbda2237dbd6677c40607ed218f8dee2112b";

    fn h(v: &Value) -> [u8; 32] {
        let mut c = Canon::new("t");
        c.value(v);
        c.finish()
    }

    #[test]
    fn digests_do_not_depend_on_how_the_input_was_buffered() {
        // Larger than the buffer, written whole and in pieces that straddle
        // its edge: one byte sequence, one digest, whatever the flushes.
        let big: Vec<u8> = (0..3 * BUF + 123).map(|i| (i % 251) as u8).collect();
        let mut whole = Canon::new("t");
        whole.raw(&big);
        let mut pieces = Canon::new("t");
        for p in big.chunks(1000) {
            pieces.raw(p);
        }
        let mut small = Canon::new("t");
        small.raw(b"x");
        let small = small.finish();
        assert_eq!(whole.finish(), pieces.finish());
        let mut again = Canon::new("t");
        again.raw(b"x");
        assert_eq!(again.finish(), small, "a reused buffer starts empty");
    }

    #[test]
    fn the_byte_form_is_stable() {
        // Cache keys live in Redis across deploys and are shared by
        // instances of different versions: a change of this digest is a
        // change of every key (bump KEY_VERSION instead).
        let mut c = Canon::new("breakwater.test");
        c.value(&json!({"b": [1, 2.5, "x", null, true], "a": {"z": false}}));
        c.opt_param(Some(0.7));
        c.opt_str(None);
        let hex: String = c.finish().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN);
    }

    #[test]
    fn key_order_does_not_matter_at_any_depth() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":3}],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"p":3,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(h(&a), h(&b));
    }

    #[test]
    fn types_and_boundaries_are_unambiguous() {
        assert_ne!(h(&json!("1")), h(&json!(1)));
        assert_ne!(h(&json!(["ab", "c"])), h(&json!(["a", "bc"])));
        assert_ne!(h(&json!({"a": "b"})), h(&json!(["a", "b"])));
        assert_ne!(h(&json!(null)), h(&json!(false)));
        assert_eq!(h(&json!(0.0)), h(&json!(0)));
        assert_eq!(h(&json!(-0.0)), h(&json!(0)));
        assert_ne!(h(&json!(0.5)), h(&json!(0.25)));
    }

    #[test]
    fn long_strings_cross_the_buffer() {
        let long = "x".repeat(5000);
        let mut a = Canon::new("t");
        a.str(&long);
        a.str("tail");
        let mut b = Canon::new("t");
        b.str(&long);
        b.str("tail");
        assert_eq!(a.finish(), b.finish());
        let mut c = Canon::new("t");
        c.str(&long);
        c.str("tail2");
        let mut d = Canon::new("t");
        d.str(&long);
        d.str("tail");
        assert_ne!(c.finish(), d.finish());
    }
}
