//! Deserialization of the wire types that keep unknown fields in `extra`.
//!
//! serde's derive handles `#[serde(flatten)]` by first buffering the whole
//! object — every key and value, nested arrays and objects included — into
//! an intermediate tree, then deserializing each field again from that
//! tree. For the chat types that run on every proxied call (the client's
//! request, the upstream's answer, each stream chunk) that buffering was
//! most of the parsing cost and about nine allocations per request.
//! [`deserialize_with_extra!`] writes the visitor the derive would write
//! without `flatten`: known keys are deserialized in place, the others are
//! collected into `extra`. `Serialize` stays derived (flatten costs little
//! there).

use serde::de::{Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Parses JSON from bytes: the bytes are checked to be UTF-8 once, in one
/// fast pass, and parsed as text. `serde_json::from_slice` checks each
/// string on its own instead, which for the many short strings of a chat
/// request or answer cost more than the rest of their parsing. Invalid
/// UTF-8 is parsed as bytes, so that the error says where it is.
pub fn from_json_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A map key, borrowed from the input where the input allows it.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Implements `Deserialize` for a struct with an `extra: Extra` field that
/// takes every key not listed. Each field is listed as
/// `field: "wire name" => when_missing`, where `when_missing` is
/// `required` (a missing-field error), `default` (`Default::default()`) or
/// the name of a function that makes the value.
///
/// Like the derive without `flatten`, a known field given twice is an
/// error; an unknown one given twice keeps its last value.
macro_rules! deserialize_with_extra {
    ($ty:ident { $($field:ident : $wire:literal => $missing:ident),* $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct FieldsVisitor;
                impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = $crate::types::Extra::new();
                        while let Some(key) = map.next_key::<$crate::types::de::Key<'de>>()? {
                            match key.0.as_ref() {
                                $($wire => {
                                    if $field.is_some() {
                                        return Err(<A::Error as serde::de::Error>::duplicate_field($wire));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    extra.insert(key.0.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: match $field {
                                Some(v) => v,
                                None => deserialize_with_extra!(@missing A, $wire, $missing),
                            },)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(FieldsVisitor)
            }
        }
    };
    (@missing $a:ident, $wire:literal, required) => {
        return Err(<$a::Error as serde::de::Error>::missing_field($wire))
    };
    (@missing $a:ident, $wire:literal, default) => {
        Default::default()
    };
    (@missing $a:ident, $wire:literal, $make:ident) => {
        $make()
    };
}
pub(crate) use deserialize_with_extra;

/// Deserializes a value that is either a string (`one`) or an array of `E`
/// (`many`), what `#[serde(untagged)]` would do without buffering the value
/// first, and with an error that says what was expected.
pub(crate) fn string_or_seq<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    one: fn(String) -> T,
    many: fn(Vec<E>) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: Deserialize<'de>,
{
    struct OneOrMany<T, E> {
        expecting: &'static str,
        one: fn(String) -> T,
        many: fn(Vec<E>) -> T,
    }
    impl<'de, T, E: Deserialize<'de>> Visitor<'de> for OneOrMany<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<Er>(self, v: &str) -> Result<T, Er> {
            Ok((self.one)(v.to_owned()))
        }
        fn visit_string<Er>(self, v: String) -> Result<T, Er> {
            Ok((self.one)(v))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            let items = Vec::<E>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
            Ok((self.many)(items))
        }
    }
    d.deserialize_any(OneOrMany { expecting, one, many })
}

#[cfg(test)]
mod tests {
    use crate::types::{ChatRequest, ChatResponse, Content, EmbeddingResponse, Stop, Tool};
    use serde_json::json;

    #[test]
    fn bytes_parse_as_text_and_bad_utf8_is_an_error_with_a_position() {
        let r: ChatRequest =
            super::from_json_bytes(r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 é"}]}"#.as_bytes())
                .expect("parses");
        assert_eq!(r.messages[0].text(), "hé é");
        let bad = b"{\"model\":\"m\xff\",\"messages\":[]}";
        let e = super::from_json_bytes::<ChatRequest>(bad).expect_err("invalid UTF-8");
        assert!(e.to_string().contains("invalid unicode"), "{e}");
        assert!(e.to_string().contains("column"), "{e}");
    }

    #[test]
    fn unknown_fields_land_in_extra_and_survive_a_round_trip() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"hi","x_msg":1}],"metadata":{"a":[1,2]},"store":true}"#;
        let r: ChatRequest = serde_json::from_str(text).expect("parses");
        assert_eq!(r.extra.get("metadata"), Some(&json!({"a": [1, 2]})));
        assert_eq!(r.extra.get("store"), Some(&json!(true)));
        assert_eq!(r.messages[0].extra.get("x_msg"), Some(&json!(1)));
        let back: serde_json::Value = serde_json::to_value(&r).expect("encodes");
        let orig: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(back, orig);
    }

    /// Every field set: a field missing from the hand-written encoding
    /// (`ChatRequestAs`) is lost in the round trip.
    const EVERY_FIELD: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"top_p":0.9,"n":2,"stream":true,"stream_options":{"include_usage":true,"x":1},"stop":["a","b"],"max_tokens":10,"max_completion_tokens":20,"presence_penalty":0.1,"frequency_penalty":0.2,"seed":7,"user":"u","tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}],"tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"json_object"},"metadata":{"k":"v"}}"#;

    #[test]
    fn every_field_survives_a_round_trip_in_declaration_order() {
        let r: ChatRequest = serde_json::from_str(EVERY_FIELD).expect("parses");
        // Byte for byte what the derived encoding wrote.
        assert_eq!(serde_json::to_string(&r).expect("encodes"), EVERY_FIELD);
        let mut small = ChatRequest::user("m", "q");
        small.temperature = Some(0.0);
        assert_eq!(
            serde_json::to_string(&small).expect("encodes"),
            r#"{"model":"m","messages":[{"role":"user","content":"q"}],"temperature":0.0}"#
        );
    }

    #[test]
    fn a_request_is_sent_as_another_model_and_stream_setting_without_a_copy() {
        let r: ChatRequest = serde_json::from_str(EVERY_FIELD).expect("parses");
        let so = crate::types::StreamOptions {
            include_usage: Some(false),
            ..Default::default()
        };
        let sent = |stream, stream_options| {
            let view = crate::types::ChatRequestAs {
                req: &r,
                model: "upstream-\"1\"",
                stream,
                stream_options,
            };
            let v: serde_json::Value = serde_json::to_value(view).expect("encodes");
            let back: ChatRequest = serde_json::from_value(v).expect("parses back");
            back
        };
        let mut expected = r.clone();
        expected.model = "upstream-\"1\"".into();
        expected.stream = None;
        expected.stream_options = None;
        assert_eq!(sent(None, None), expected);
        expected.stream = Some(false);
        expected.stream_options = Some(so.clone());
        assert_eq!(sent(Some(false), Some(&so)), expected);
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let e = serde_json::from_str::<ChatRequest>(r#"{"model":"m"}"#).expect_err("no messages");
        assert!(e.to_string().starts_with("missing field `messages`"), "{e}");
        let e = serde_json::from_str::<ChatRequest>(r#"{"messages":[]}"#).expect_err("no model");
        assert!(e.to_string().starts_with("missing field `model`"), "{e}");
    }

    #[test]
    fn a_known_field_given_twice_is_an_error() {
        let e = serde_json::from_str::<ChatRequest>(r#"{"model":"a","model":"b","messages":[]}"#).expect_err("twice");
        assert!(e.to_string().starts_with("duplicate field `model`"), "{e}");
    }

    #[test]
    fn defaults_apply_to_missing_fields() {
        let t: Tool = serde_json::from_str(r#"{"function":{"name":"f"}}"#).expect("parses");
        assert_eq!(t.kind, "function");
        let r: ChatResponse =
            serde_json::from_str(r#"{"id":"x","choices":[{"message":{"role":"assistant","content":"ok"}}]}"#)
                .expect("parses");
        assert_eq!(r.object, "chat.completion");
        assert_eq!(r.created, 0);
        assert_eq!(r.choices[0].index, 0);
        assert_eq!(r.usage, None);
        let e: EmbeddingResponse = serde_json::from_str(r#"{"data":[]}"#).expect("parses");
        assert_eq!(e.object, "list");
    }

    #[test]
    fn wrong_types_are_errors_with_a_position() {
        let e = serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[],"temperature":"hot"}"#)
            .expect_err("a string temperature");
        assert!(e.to_string().contains("invalid type: string \"hot\""), "{e}");
        assert!(e.to_string().contains("column"), "serde_json's position: {e}");
        let e = serde_json::from_str::<ChatRequest>(r#"[1]"#).expect_err("not an object");
        assert!(e.to_string().contains("expected struct ChatRequest"), "{e}");
    }

    #[test]
    fn the_path_of_a_bad_nested_field_is_tracked() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":5}]}"#;
        let de = &mut serde_json::Deserializer::from_str(text);
        let e = serde_path_to_error::deserialize::<_, ChatRequest>(de).expect_err("a number as content");
        assert_eq!(e.path().to_string(), "messages[1].content");
        assert!(
            e.inner()
                .to_string()
                .contains("expected a string or a list of content parts"),
            "{}",
            e.inner()
        );
    }

    #[test]
    fn values_with_owned_keys_parse_too() {
        let v = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       "stop": ["a", "b"], "custom": 1});
        let r: ChatRequest = serde_json::from_value(v).expect("parses from a Value");
        assert_eq!(r.stop, Some(Stop::Many(vec!["a".into(), "b".into()])));
        assert!(matches!(r.messages[0].content, Some(Content::Parts(ref p)) if p[0].text.as_deref() == Some("hi")));
        assert_eq!(r.extra.get("custom"), Some(&json!(1)));
        let one: Stop = serde_json::from_value(json!("x")).expect("one stop");
        assert_eq!(one, Stop::One("x".into()));
    }
}
