//! The Prometheus text exposition format (version 0.0.4): `# HELP`/`# TYPE`
//! lines and samples `name{label="value",…} value [timestamp]`, with
//! `\\`, `\"` and `\n` escapes in label values.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// Label names and values, in the order given.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Error, PartialEq)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses a whole scrape into families, in order of first appearance. A
/// sample belongs to the family its `# TYPE` names (`x_bucket` to histogram
/// `x`), or to a family of its own, untyped.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| ParseError { line: i + 1, reason };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(err("a TYPE line needs a name and a type".into()));
                };
                let kind = match kind {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    "untyped" => MetricType::Untyped,
                    other => return Err(err(format!("unknown metric type {other:?}"))),
                };
                families.push(Family { name: name.to_owned(), kind, samples: Vec::new() });
            }
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        match families.iter_mut().rev().find(|f| belongs(f, &sample.name)) {
            Some(family) => family.samples.push(sample),
            None => {
                families.push(Family { name: sample.name.clone(), kind: MetricType::Untyped, samples: vec![sample] })
            }
        }
    }
    Ok(families)
}

fn belongs(family: &Family, sample: &str) -> bool {
    let suffixes: &[&str] = match family.kind {
        MetricType::Histogram => &["_bucket", "_sum", "_count"],
        MetricType::Summary => &["_sum", "_count"],
        _ => &[],
    };
    sample == family.name || suffixes.iter().any(|s| sample.strip_suffix(s) == Some(family.name.as_str()))
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let mut words = rest.split_whitespace();
    let value = words.next().ok_or("a sample needs a value")?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>().map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if words.next().is_some() {
        return Err("trailing text after the timestamp".into());
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Labels up to the closing `}`; returns them and the text after it.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("a label needs name=\"value\"")?;
        let name = s[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("invalid label name {name:?}"));
        }
        s = s[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("invalid escape in a label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_owned(), value));
        s = s[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCRAPE: &str = r#"
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.25
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1234.5
node_cpu_seconds_total{cpu="0",mode="user"} 12 1700000000000
# TYPE http_duration_seconds histogram
http_duration_seconds_bucket{le="0.1"} 3
http_duration_seconds_bucket{le="+Inf"} 5
http_duration_seconds_sum 1.5
http_duration_seconds_count 5
# TYPE rpc summary
rpc{quantile="0.5"} 0.01
rpc_sum 2
rpc_count 9
node_uname_info{release="6.1, \"x\"\\y\n"} 1
"#;

    #[test]
    fn a_scrape_becomes_families() {
        let f = parse(SCRAPE).unwrap();
        let names: Vec<_> = f.iter().map(|f| (f.name.as_str(), f.kind, f.samples.len())).collect();
        assert_eq!(
            names,
            vec![
                ("node_load1", MetricType::Gauge, 1),
                ("node_cpu_seconds_total", MetricType::Counter, 2),
                ("http_duration_seconds", MetricType::Histogram, 4),
                ("rpc", MetricType::Summary, 3),
                ("node_uname_info", MetricType::Untyped, 1),
            ]
        );
        assert_eq!(f[1].samples[1].labels, vec![("cpu".into(), "0".into()), ("mode".into(), "user".into())]);
        assert_eq!(f[2].samples[1].labels[0].1, "+Inf");
        assert_eq!(f[4].samples[0].labels[0].1, "6.1, \"x\"\\y\n");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        assert_eq!(parse("ok 1\nbad{x=1} 2").unwrap_err().line, 2);
        assert!(parse("x{a=\"1\"}").is_err());
        assert!(parse("x 1 2 3").is_err());
        assert!(parse("# TYPE x bogus").is_err());
        assert!(parse("9x 1").is_err());
    }

    fn escape(v: &str) -> String {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    }

    proptest! {
        #[test]
        fn samples_round_trip(
            name in "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
            labels in proptest::collection::vec(("[a-z_][a-z0-9_]{0,6}", any::<String>()), 0..4),
            value in proptest::num::f64::NORMAL,
        ) {
            let text = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",");
            let line = format!("{name}{{{text}}} {value}");
            let families = parse(&line).unwrap();
            prop_assert_eq!(&families[0].samples[0].labels, &labels);
            prop_assert_eq!(families[0].samples[0].value, value);
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in any::<String>()) {
            let _ = parse(&text);
        }
    }
}
