//! The JSON shapes of the REST API. A leaf reads as `{uri, kind, format,
//! value}`, an interior node as `{uri, kind, children: {name: node}}`.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use dmtree_core::{
    Acl, Content, DmtError, Format, NodeKind, NodeView, PropsPatch, SessionInfo, Uri, UriLimits, Value, Write,
    WriteOutcome,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeJson {
    /// Canonical OMA-DM URI, e.g. `./config/x`.
    pub uri: String,
    /// `leaf` or `interior`; absent when the caller may not read the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// The value, in the JSON form of its format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
    /// `false` when the node is listed but not readable by the caller.
    #[serde(skip_serializing_if = "is_true")]
    pub readable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub props: Option<PropsJson>,
    /// Present when the value is the last known one (its source is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<StaleJson>,
    /// Child nodes by name (to the requested depth).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, additional_properties)]
    pub children: Option<BTreeMap<String, NodeJson>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaleJson {
    /// How old the value is, in milliseconds.
    pub age_ms: u64,
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PropsJson {
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub mime: Option<String>,
    pub format: &'static str,
    pub size: Option<u64>,
    /// Last change, RFC 3339.
    pub timestamp: Option<String>,
    /// Increases on every change; the ETag.
    pub version: u64,
    /// The ACL set on this node, if any.
    pub acl: Option<String>,
    /// The ACL that governs this node (its own or its nearest ancestor's).
    pub effective_acl: String,
}

fn kind_str(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Leaf => "leaf",
        NodeKind::Interior => "interior",
    }
}

impl NodeJson {
    pub fn from_view(view: &NodeView, props: bool) -> Self {
        let Some(node) = &view.node else {
            return NodeJson {
                uri: view.uri.to_string(),
                kind: None,
                format: None,
                value: None,
                readable: false,
                props: None,
                stale: None,
                children: None,
            };
        };
        let children = view.children.as_ref().map(|cs| {
            cs.iter().map(|c| (c.uri.name().unwrap_or_default().to_owned(), NodeJson::from_view(c, props))).collect()
        });
        NodeJson {
            uri: view.uri.to_string(),
            kind: Some(kind_str(node.kind)),
            format: node.format().map(Format::as_str),
            value: node.value.as_ref().map(Value::to_json),
            readable: true,
            props: props.then(|| PropsJson {
                title: node.props.title.clone(),
                mime: node.props.mime.clone(),
                format: node.format().map_or("node", Format::as_str),
                size: node.size(),
                timestamp: node.props.timestamp.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                version: node.props.version,
                acl: view.acl.as_ref().map(|a| a.to_string()),
                effective_acl: view.effective_acl.to_string(),
            }),
            stale: node.props.stale_ms.map(|age_ms| StaleJson { age_ms }),
            children,
        }
    }
}

/// Parses `fields=a;b/c` (`,` also separates).
pub fn parse_fields(text: &str) -> Result<Vec<Vec<String>>, ApiError> {
    text.split([';', ','])
        .map(|f| {
            let parts: Vec<String> = f.split('/').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) {
                return Err(ApiError::param("fields", format!("{f:?} is not a path of child names")));
            }
            Ok(parts)
        })
        .collect()
}

/// A write body for PUT and POST. `value` and `children` are exclusive.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// POST only: the new child's name (generated when absent): 1-255 bytes,
    /// no control characters, not `.` or `..`.
    #[schema(pattern = "^(?!\\.{1,2}$)[^\\u0000-\\u001f\\u007f]{1,255}$")]
    pub name: Option<String>,
    /// A leaf value; `null` is a valid value of format `null`.
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Json>,
    /// int, float, bool, string, date, time, datetime, binary, base64, json or null; inferred when absent.
    #[schema(pattern = "^(int|float|bool|string|date|time|datetime|binary|base64|json|null)$")]
    pub format: Option<String>,
    /// An interior node's children, replacing any it had.
    #[schema(value_type = Option<Object>, additional_properties)]
    pub children: Option<BTreeMap<String, NodeBody>>,
    /// The node's title; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub title: Option<Json>,
    /// The node's MIME type; `null` clears it.
    #[serde(rename = "type", default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub mime: Option<Json>,
    /// The node's own ACL, e.g. `Get=*&Replace=admin`; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, pattern = "^((Add|Delete|Exec|Get|Replace)=[A-Za-z0-9._@:*-]{1,128}(\\+[A-Za-z0-9._@:*-]{1,128})*(&(Add|Delete|Exec|Get|Replace)=[A-Za-z0-9._@:*-]{1,128}(\\+[A-Za-z0-9._@:*-]{1,128})*)*)?$")]
    pub acl: Option<Json>,
}

/// Distinguishes a field set to `null` (`Some(Null)`) from an absent one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

impl NodeBody {
    pub fn content(&self, uri: &Uri) -> Result<Option<Content>, ApiError> {
        let format = self
            .format
            .as_deref()
            .map(|f| f.parse::<Format>().map_err(|e| DmtError::invalid_data(uri, e.0)))
            .transpose()?;
        match (&self.value, &self.children) {
            (Some(_), Some(_)) => Err(DmtError::invalid_data(uri, "a node has a value or children, not both").into()),
            (Some(v), None) => {
                Ok(Some(Content::Leaf(Value::from_json(v, format).map_err(|e| DmtError::invalid_data(uri, e.0))?)))
            }
            (None, Some(children)) => {
                if format.is_some() {
                    return Err(DmtError::invalid_data(uri, "an interior node has no format").into());
                }
                let mut out = Vec::with_capacity(children.len());
                for (name, child) in children {
                    let child_uri = uri.join_name(name);
                    if child.name.is_some() || child.title.is_some() || child.mime.is_some() || child.acl.is_some() {
                        return Err(DmtError::invalid_data(
                            &child_uri,
                            "children take value, format and children only",
                        )
                        .into());
                    }
                    let content = child.content(&child_uri)?.unwrap_or(Content::Interior(Vec::new()));
                    out.push((name.clone(), content));
                }
                Ok(Some(Content::Interior(out)))
            }
            (None, None) if format.is_some() => Err(DmtError::invalid_data(uri, "format without a value").into()),
            (None, None) => Ok(None),
        }
    }

    pub fn write(&self, uri: &Uri) -> Result<Write, ApiError> {
        let text = |field: &str, v: &Option<Json>| -> Result<Option<Option<String>>, ApiError> {
            match v {
                None => Ok(None),
                Some(Json::Null) => Ok(Some(None)),
                Some(Json::String(s)) => Ok(Some(Some(s.clone()))),
                Some(_) => Err(DmtError::invalid_data(uri, format!("{field} must be a string or null")).into()),
            }
        };
        let acl = text("acl", &self.acl)?
            .map(|a| a.map(|s| s.parse::<Acl>().map_err(|e| DmtError::from_acl(uri, e))).transpose())
            .transpose()?;
        Ok(Write {
            content: self.content(uri)?,
            props: PropsPatch { title: text("title", &self.title)?, mime: text("type", &self.mime)? },
            acl,
            precondition: Default::default(),
        })
    }
}

/// PATCH: relative paths to values. A value is either `{"value": v, "format": f}`
/// or any other JSON, whose format is then inferred.
pub fn patch_leaves(
    base: &Uri,
    body: BTreeMap<String, Json>,
    limits: &UriLimits,
) -> Result<Vec<(Uri, Value)>, ApiError> {
    body.into_iter()
        .map(|(path, spec)| {
            let rel = Uri::parse_relative(&Uri::root(), &path, limits)?;
            let uri = base.concat(&rel);
            let value = match spec {
                Json::Object(map) if map.contains_key("value") && map.keys().all(|k| k == "value" || k == "format") => {
                    let format = match map.get("format") {
                        None => None,
                        Some(Json::String(f)) => {
                            Some(f.parse::<Format>().map_err(|e| DmtError::invalid_data(&uri, e.0))?)
                        }
                        Some(_) => return Err(DmtError::invalid_data(&uri, "format must be a string").into()),
                    };
                    Value::from_json(&map["value"], format)
                }
                other => Value::from_json(&other, None),
            }
            .map_err(|e| DmtError::invalid_data(&uri, e.0))?;
            Ok((rel, value))
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteJson {
    pub uri: String,
    pub version: u64,
    pub created: bool,
}

impl From<&WriteOutcome> for WriteJson {
    fn from(o: &WriteOutcome) -> Self {
        WriteJson { uri: o.uri.to_string(), version: o.version, created: o.created }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    /// The node's new name (same parent).
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyBody {
    /// Absolute URI of the copy.
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecJson {
    pub uri: String,
    #[schema(value_type = Object)]
    pub result: Json,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// The subtree the session covers and locks.
    pub root: String,
    /// shared (read-only), exclusive, or atomic.
    pub lock: String,
    /// How long to wait for an overlapping session, in ms.
    pub lock_timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionJson {
    pub id: String,
    pub root: String,
    pub lock: &'static str,
    pub principal: String,
    pub opened: String,
    pub idle_timeout_ms: u64,
}

impl From<&SessionInfo> for SessionJson {
    fn from(s: &SessionInfo) -> Self {
        SessionJson {
            id: s.id.clone(),
            root: s.root.to_string(),
            lock: s.mode.as_str(),
            principal: s.principal.to_string(),
            opened: s.opened.to_rfc3339_opts(SecondsFormat::Millis, true),
            idle_timeout_ms: s.idle_timeout.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn u(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    #[test]
    fn node_body_distinguishes_null_from_absent() {
        let body: NodeBody = serde_json::from_value(json!({"value": null})).unwrap();
        assert_eq!(body.content(&u("./x")).unwrap(), Some(Content::Leaf(Value::Null)));
        let body: NodeBody = serde_json::from_value(json!({"title": "t"})).unwrap();
        assert_eq!(body.content(&u("./x")).unwrap(), None);
        let w = body.write(&u("./x")).unwrap();
        assert_eq!(w.props.title, Some(Some("t".into())));
    }

    #[test]
    fn node_body_rejects_contradictions() {
        for bad in [
            json!({"value": 1, "children": {}}),
            json!({"format": "int"}),
            json!({"value": "x", "format": "int"}),
            json!({"value": 1, "format": "nope"}),
            json!({"acl": "Get"}),
        ] {
            let body: NodeBody = serde_json::from_value(bad.clone()).unwrap();
            assert!(body.write(&u("./x")).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<NodeBody>(json!({"valeu": 1})).is_err());
    }

    #[test]
    fn nested_children_become_content() {
        let body: NodeBody =
            serde_json::from_value(json!({"children": {"a": {"value": 1}, "b": {"children": {}}, "c": {}}})).unwrap();
        let Some(Content::Interior(children)) = body.content(&u("./x")).unwrap() else { panic!() };
        assert_eq!(children.len(), 3);
        assert_eq!(children[2], ("c".into(), Content::Interior(vec![])));
    }

    #[test]
    fn patch_specs_and_raw_values() {
        let body =
            serde_json::from_value(json!({"a": 1, "b/c": {"value": "2026-01-01", "format": "date"}, "d": {"x": 1}}))
                .unwrap();
        let leaves = patch_leaves(&u("./base"), body, &UriLimits::default()).unwrap();
        assert_eq!(leaves[0], (Uri::from_key("a"), Value::Int(1)));
        assert_eq!(leaves[1].1.format(), Format::Date);
        assert_eq!(leaves[2].1.format(), Format::Json);
        let bad = serde_json::from_value(json!({"../x": 1})).unwrap();
        assert!(patch_leaves(&u("./base"), bad, &UriLimits::default()).is_err());
    }
}
