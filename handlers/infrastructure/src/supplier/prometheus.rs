//! A Prometheus exposition endpoint, mapped into nodes:
//!
//! - a family is a node named after it (`node_load1`);
//! - a sample without labels is the family's value; with labels it sits at
//!   one level per label, in label-name order, each named `label=value`
//!   (`node_cpu_seconds_total/cpu=0/mode=idle`);
//! - a histogram's series hold `buckets/<le>`, `sum` and `count`; a
//!   summary's `quantiles/<q>`, `sum` and `count`;
//! - values are floats (as in Prometheus); NaN and ±Inf are the strings
//!   `NaN`, `+Inf`, `-Inf`.

use async_trait::async_trait;
use serde_json::{Map, Value as Json};

use super::{Endpoint, Supplier, SupplyError};
use crate::exposition::{self, Family, Labels, MetricType, Sample};

/// A Prometheus `/metrics` endpoint.
pub struct Exporter(pub(super) Endpoint);

#[async_trait]
impl Supplier for Exporter {
    async fn poll(&self) -> Result<Json, SupplyError> {
        let text = self.0.fetch().await?;
        let families = exposition::parse(&text).map_err(|e| self.0.bad_answer(e))?;
        Ok(Json::Object(families.iter().map(|f| (f.name.clone(), family_node(f))).collect()))
    }
}

pub fn family_node(family: &Family) -> Json {
    let mut root = Json::Null;
    for sample in &family.samples {
        let (series, part) = split(family, sample);
        let mut labels: Vec<&(String, String)> = series.iter().collect();
        labels.sort();
        let mut path: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", v.replace('/', "_"))).collect();
        path.extend(part);
        insert(&mut root, &path, number(sample.value));
    }
    root
}

/// A sample's series labels, and where under the series it goes.
fn split(family: &Family, sample: &Sample) -> (Labels, Vec<String>) {
    let suffix = sample.name.strip_prefix(family.name.as_str()).unwrap_or("");
    let (special, part): (&str, &str) = match (family.kind, suffix) {
        (MetricType::Histogram, "_bucket") => ("le", "buckets"),
        (MetricType::Summary, "") => ("quantile", "quantiles"),
        (MetricType::Histogram | MetricType::Summary, "_sum") => ("", "sum"),
        (MetricType::Histogram | MetricType::Summary, "_count") => ("", "count"),
        _ => ("", ""),
    };
    let mut rest = Vec::new();
    let mut at = Vec::new();
    if !part.is_empty() {
        at.push(part.to_owned());
    }
    for (k, v) in &sample.labels {
        if !special.is_empty() && k == special {
            at.push(v.clone());
        } else {
            rest.push((k.clone(), v.clone()));
        }
    }
    (rest, at)
}

/// Puts `value` at `path`; a leaf meeting an interior node moves to its `value` child.
fn insert(node: &mut Json, path: &[String], value: Json) {
    let Some((first, rest)) = path.split_first() else {
        match node {
            Json::Object(map) => {
                map.insert("value".into(), value);
            }
            _ => *node = value,
        }
        return;
    };
    if !node.is_object() {
        let old = std::mem::replace(node, Json::Object(Map::new()));
        if !old.is_null() {
            node.as_object_mut().map(|m| m.insert("value".into(), old));
        }
    }
    if let Json::Object(map) = node {
        insert(map.entry(first.clone()).or_insert(Json::Null), rest, value);
    }
}

fn number(v: f64) -> Json {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        Json::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(text: &str) -> Json {
        let families = exposition::parse(text).unwrap();
        Json::Object(families.iter().map(|f| (f.name.clone(), family_node(f))).collect())
    }

    #[test]
    fn families_labels_histograms_and_summaries_map_to_nodes() {
        let tree = map(concat!(
            "# TYPE node_load1 gauge\nnode_load1 0.25\n",
            "# TYPE c counter\nc{mode=\"idle\",cpu=\"0\"} 10\nc{cpu=\"0\",mode=\"user\"} 2.5\n",
            "# TYPE h histogram\nh_bucket{path=\"/a\",le=\"0.1\"} 1\nh_bucket{path=\"/a\",le=\"+Inf\"} 2\n",
            "h_sum{path=\"/a\"} 0.3\nh_count{path=\"/a\"} 2\n",
            "# TYPE s summary\ns{quantile=\"0.5\"} NaN\ns_sum 1\ns_count 0\n",
        ));
        assert_eq!(tree["node_load1"], json!(0.25));
        assert_eq!(tree["c"], json!({"cpu=0": {"mode=idle": 10.0, "mode=user": 2.5}}));
        assert_eq!(tree["h"], json!({"path=_a": {"buckets": {"0.1": 1.0, "+Inf": 2.0}, "sum": 0.3, "count": 2.0}}));
        assert_eq!(tree["s"], json!({"quantiles": {"0.5": "NaN"}, "sum": 1.0, "count": 0.0}));
    }

    #[test]
    fn a_series_that_is_also_a_prefix_keeps_both_values() {
        let tree = map("x 1\nx{a=\"1\"} 2\n");
        assert_eq!(tree["x"], json!({"value": 1.0, "a=1": 2.0}));
    }
}
