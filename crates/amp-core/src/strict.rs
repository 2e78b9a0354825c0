//! Strict JSON reading: duplicate keys are errors.
//!
//! `serde_json` keeps the last of two equal keys when it builds a `Value`
//! (and derived structs reject only duplicates of their own fields), so a
//! file saying `"micro_batch": 1, ..., "micro_batch": 8` would be read
//! silently. Every JSON reader of amp runs [`check_json`] first.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// `Err(message with line and column)` when `text` is not JSON or some
/// object in it repeats a key.
pub fn check_json(text: &str) -> std::result::Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    NoDuplicates::deserialize(&mut de)?;
    de.end()
}

struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_none<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NoDuplicates, D::Error> {
        NoDuplicates::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut keys = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !keys.insert(k.clone()) {
                return Err(de::Error::custom(format!(
                    "duplicate key `{k}`; give each key once"
                )));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert!(check_json(r#"{"a": 1, "b": [{"c": 2}]}"#).is_ok());
        let e = check_json(r#"{"a": 1, "a": 2}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key `a`"), "{e}");
        let e = check_json(r#"{"x": [{"c": 2, "d": 1, "c": 3}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("duplicate key `c`") && e.contains("line 1"),
            "{e}"
        );
        assert!(check_json(r#"{"a": 1} x"#).is_err());
    }
}
