//! Typed leaf values, as DmtData: the format travels with the value.
//!
//! Variants keep their payload boxed so that a `Value` is 24 bytes: the config
//! store holds a million of them in memory.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Int,
    Float,
    Bool,
    String,
    Date,
    Time,
    Datetime,
    Binary,
    Base64,
    Json,
    Null,
}

impl Format {
    pub const ALL: [Format; 11] = [
        Format::Int,
        Format::Float,
        Format::Bool,
        Format::String,
        Format::Date,
        Format::Time,
        Format::Datetime,
        Format::Binary,
        Format::Base64,
        Format::Json,
        Format::Null,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Int => "int",
            Format::Float => "float",
            Format::Bool => "bool",
            Format::String => "string",
            Format::Date => "date",
            Format::Time => "time",
            Format::Datetime => "datetime",
            Format::Binary => "binary",
            Format::Base64 => "base64",
            Format::Json => "json",
            Format::Null => "null",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| ValueError(format!("unknown format {s:?}; expected one of int, float, bool, string, date, time, datetime, binary, base64, json, null")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ValueError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(Box<str>),
    Date(NaiveDate),
    Time(NaiveTime),
    Datetime(DateTime<Utc>),
    Binary(Box<[u8]>),
    Base64(Box<[u8]>),
    Json(Box<Json>),
    Null,
}

impl Value {
    pub fn format(&self) -> Format {
        match self {
            Value::Int(_) => Format::Int,
            Value::Float(_) => Format::Float,
            Value::Bool(_) => Format::Bool,
            Value::String(_) => Format::String,
            Value::Date(_) => Format::Date,
            Value::Time(_) => Format::Time,
            Value::Datetime(_) => Format::Datetime,
            Value::Binary(_) => Format::Binary,
            Value::Base64(_) => Format::Base64,
            Value::Json(_) => Format::Json,
            Value::Null => Format::Null,
        }
    }

    pub fn string(s: impl Into<Box<str>>) -> Self {
        Value::String(s.into())
    }

    /// Size in bytes of the value's natural encoding (the DMT `size` property).
    pub fn size(&self) -> u64 {
        let n = match self {
            Value::Int(_) | Value::Float(_) => 8,
            Value::Bool(_) => 1,
            Value::String(s) => s.len(),
            Value::Binary(b) | Value::Base64(b) => b.len(),
            Value::Json(j) => j.to_string().len(),
            Value::Null => 0,
            Value::Date(_) | Value::Time(_) | Value::Datetime(_) => self.to_json().as_str().map_or(0, str::len),
        };
        n as u64
    }

    /// Decodes a JSON value. Without a format, the format follows the JSON type:
    /// integers are `int`, other numbers `float`, objects and arrays `json`.
    pub fn from_json(json: &Json, format: Option<Format>) -> Result<Value, ValueError> {
        let Some(format) = format else {
            if let Json::Number(n) = json
                && n.is_u64()
                && !n.is_i64()
            {
                return Err(ValueError(format!("integer {n} is outside the int range (64-bit signed)")));
            }
            return Ok(infer(json));
        };
        let mismatch = || ValueError(format!("value {} is not a valid {format}", short(json)));
        let text = || json.as_str().ok_or_else(mismatch);
        Ok(match format {
            Format::Int => Value::Int(json.as_i64().ok_or_else(mismatch)?),
            Format::Float => Value::Float(json.as_f64().filter(|f| f.is_finite()).ok_or_else(mismatch)?),
            Format::Bool => Value::Bool(json.as_bool().ok_or_else(mismatch)?),
            Format::String => Value::String(text()?.into()),
            Format::Date => Value::Date(NaiveDate::parse_from_str(text()?, "%Y-%m-%d").map_err(|_| mismatch())?),
            Format::Time => Value::Time(NaiveTime::from_str(text()?).map_err(|_| mismatch())?),
            Format::Datetime => {
                Value::Datetime(DateTime::parse_from_rfc3339(text()?).map_err(|_| mismatch())?.with_timezone(&Utc))
            }
            Format::Binary => Value::Binary(B64.decode(text()?).map_err(|_| mismatch())?.into()),
            Format::Base64 => Value::Base64(B64.decode(text()?).map_err(|_| mismatch())?.into()),
            Format::Json => Value::Json(Box::new(json.clone())),
            Format::Null if json.is_null() => Value::Null,
            Format::Null => return Err(mismatch()),
        })
    }

    /// Parses command-line text. Without a format: int, then float, then bool, then string.
    pub fn from_text(text: &str, format: Option<Format>) -> Result<Value, ValueError> {
        match format {
            None => Ok(text
                .parse::<i64>()
                .map(Value::Int)
                .or_else(|_| text.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::Float).ok_or(()))
                .or_else(|_| text.parse::<bool>().map(Value::Bool))
                .unwrap_or_else(|_| Value::string(text))),
            Some(Format::String) => Ok(Value::string(text)),
            Some(Format::Null) => Ok(Value::Null),
            Some(Format::Json) => serde_json::from_str(text)
                .map(|j| Value::Json(Box::new(j)))
                .map_err(|e| ValueError(format!("invalid json: {e}"))),
            Some(f @ (Format::Int | Format::Float | Format::Bool)) => {
                let json: Json =
                    serde_json::from_str(text).map_err(|_| ValueError(format!("{text:?} is not a valid {f}")))?;
                Value::from_json(&json, Some(f))
            }
            Some(f) => Value::from_json(&Json::String(text.to_owned()), Some(f)),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => Json::from(*f),
            Value::Bool(b) => Json::Bool(*b),
            Value::String(s) => Json::String(s.to_string()),
            Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
            Value::Time(t) => Json::String(t.to_string()),
            Value::Datetime(dt) => Json::String(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Binary(b) | Value::Base64(b) => Json::String(B64.encode(b)),
            Value::Json(j) => (**j).clone(),
            Value::Null => Json::Null,
        }
    }

    /// The number a `min`/`max` constraint compares against, if any.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// The first integer literal in a JSON text that a 64-bit int cannot hold
/// exactly, if any. serde_json would read it as a lossy float; callers refuse
/// it instead, so no value is ever silently rounded.
pub fn inexact_integer(raw: &[u8]) -> Option<&str> {
    let (mut i, mut in_string) = (0, false);
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                while raw.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let integer = !matches!(raw.get(i), Some(b'.' | b'e' | b'E'));
                while raw.get(i).is_some_and(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
                    i += 1;
                }
                let literal = std::str::from_utf8(&raw[start..i]).unwrap_or_default();
                if integer && literal != "-" && literal.parse::<i64>().is_err() {
                    return Some(literal);
                }
            }
            _ => {}
        }
    }
    None
}

fn infer(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => Value::String(s.as_str().into()),
        other => Value::Json(Box::new(other.clone())),
    }
}

fn short(json: &Json) -> String {
    let s = json.to_string();
    if s.len() > 64 { format!("{}…", &s[..s.floor_char_boundary(64)]) } else { s }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_json() {
            Json::String(s) => f.write_str(&s),
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn value_stays_small() {
        assert!(std::mem::size_of::<Value>() <= 24);
    }

    #[test]
    fn infers_format_from_json() {
        assert_eq!(Value::from_json(&json!(42), None).unwrap(), Value::Int(42));
        assert_eq!(Value::from_json(&json!(1.5), None).unwrap(), Value::Float(1.5));
        assert_eq!(Value::from_json(&json!("x"), None).unwrap().format(), Format::String);
        assert_eq!(Value::from_json(&json!({"a": 1}), None).unwrap().format(), Format::Json);
        assert_eq!(Value::from_json(&json!(null), None).unwrap(), Value::Null);
    }

    #[test]
    fn integers_beyond_i64_are_found_not_rounded() {
        assert_eq!(inexact_integer(br#"{"value": 9223372036854775808}"#), Some("9223372036854775808"));
        assert_eq!(inexact_integer(br#"[1, -9223372036854775809]"#), Some("-9223372036854775809"));
        assert_eq!(
            inexact_integer(br#"{"v": 123456789012345678901234567890}"#),
            Some("123456789012345678901234567890")
        );
        assert_eq!(inexact_integer(br#"{"v": 9223372036854775807, "w": -9223372036854775808}"#), None);
        assert_eq!(inexact_integer(br#"{"v": 1e400, "w": 123456789012345678901.5}"#), None, "floats say so");
        assert_eq!(inexact_integer(br#"{"v": "99999999999999999999", "w\"": "1\"99999999999999999999"}"#), None);
        assert!(Value::from_json(&json!(u64::MAX), None).is_err());
    }

    proptest! {
        #[test]
        fn every_i64_is_exact(n: i64, pad in "[ \t]{0,3}") {
            let text = format!("{{\"a\":{pad}{n}{pad}}}");
            prop_assert_eq!(inexact_integer(text.as_bytes()), None);
        }

        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = inexact_integer(&raw);
        }
    }

    #[test]
    fn explicit_formats_are_strict() {
        assert!(Value::from_json(&json!("42"), Some(Format::Int)).is_err());
        assert!(Value::from_json(&json!(1.5), Some(Format::Int)).is_err());
        assert!(Value::from_json(&json!("2026-13-01"), Some(Format::Date)).is_err());
        assert!(Value::from_json(&json!("not base64!"), Some(Format::Binary)).is_err());
        assert!(Value::from_json(&json!(1), Some(Format::Null)).is_err());
        assert_eq!(
            Value::from_json(&json!("2026-11-22T10:00:00+01:00"), Some(Format::Datetime)).unwrap().to_json(),
            json!("2026-11-22T09:00:00Z")
        );
        assert_eq!(Value::from_json(&json!("aGk="), Some(Format::Binary)).unwrap(), Value::Binary((*b"hi").into()));
    }

    #[test]
    fn parses_text() {
        assert_eq!(Value::from_text("7", None).unwrap(), Value::Int(7));
        assert_eq!(Value::from_text("true", None).unwrap(), Value::Bool(true));
        assert_eq!(Value::from_text("hello", None).unwrap(), Value::string("hello"));
        assert_eq!(Value::from_text("7", Some(Format::String)).unwrap(), Value::string("7"));
        assert!(Value::from_text("x", Some(Format::Int)).is_err());
        assert_eq!(Value::from_text("12:30:00", Some(Format::Time)).unwrap().format(), Format::Time);
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Float),
            any::<bool>().prop_map(Value::Bool),
            ".{0,20}".prop_map(Value::string),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(|b| Value::Binary(b.into())),
            (0i64..4_000_000_000).prop_map(|s| Value::Datetime(DateTime::from_timestamp(s, 0).unwrap())),
            Just(Value::Null),
        ]
    }

    proptest! {
        #[test]
        fn json_round_trip(v in any_value()) {
            let back = Value::from_json(&v.to_json(), Some(v.format())).unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn decoder_never_panics(s in "\\PC{0,40}", f in prop::sample::select(Format::ALL.to_vec())) {
            let _ = Value::from_json(&Json::String(s.clone()), Some(f));
            let _ = Value::from_text(&s, Some(f));
            let _ = Value::from_text(&s, None);
        }
    }
}
