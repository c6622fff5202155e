//! Values from JSON and from text, in every format: never a panic, an
//! explicit format is never coerced, and no integer is silently rounded.
#![no_main]

use dmtree_core::value::inexact_integer;
use dmtree_core::{Format, Value};
use libfuzzer_sys::fuzz_target;

const FORMATS: [&str; 11] = ["int", "float", "bool", "string", "date", "time", "datetime", "binary", "base64", "json", "null"];

fuzz_target!(|data: &[u8]| {
    let lossy = inexact_integer(data).is_some();
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(v) = Value::from_json(&json, None)
            && !lossy
            && let serde_json::Value::Number(n) = &json
            && n.is_i64()
        {
            assert_eq!(v, Value::Int(n.as_i64().unwrap_or_default()));
        }
        for name in FORMATS {
            let format: Format = name.parse().expect("a known format");
            if let Ok(v) = Value::from_json(&json, Some(format)) {
                assert_eq!(v.format(), format, "an explicit format is kept");
                let back = Value::from_json(&v.to_json(), Some(format)).expect("a value's JSON decodes");
                assert_eq!(back.format(), format);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for name in FORMATS {
            let _ = Value::from_text(text, name.parse().ok());
        }
        let _ = Value::from_text(text, None);
    }
});
