//! A rule as written (`RuleSpec`), and the checked, compiled form the engine
//! runs (`Rule`). Everything a user can get wrong is refused here, at write
//! time, with the field and the position.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::expr::{Expr, ExprError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Once per binding, where the bound resource is held.
    #[default]
    Local,
    /// Once per epoch, at the coordinator.
    Global,
}

/// The rule as its owner wrote it (JSON, YAML or TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub when: String,
    #[serde(default = "one")]
    pub for_epochs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    #[serde(default)]
    pub actions: Vec<Json>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A rule that cannot be stored: which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    fn expr(field: &str, e: ExprError) -> Self {
        Self::new(field, e.to_string())
    }
}

/// What a firing does. Paths are relative to the binding (or absolute, `./…`).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set a node; the value is a constant or a CEL expression.
    Set {
        path: String,
        value: SetValue,
    },
    Exec {
        path: String,
        data: Option<Json>,
    },
    /// Create a resource of this type through a factory resource's manager.
    Create {
        resource_type: String,
        data: Option<Json>,
    },
    /// Shut the bound (or named) resource down through its manager.
    Shutdown {
        path: String,
    },
    /// Emit a ContextEvent.
    Event {
        kind: String,
        payload: Json,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Constant(Json),
    Computed(Expr),
}

impl Action {
    /// The tree node the action writes, for the "two rules write one node" check.
    pub fn target(&self) -> Option<&str> {
        match self {
            Action::Set { path, .. } | Action::Exec { path, .. } | Action::Shutdown { path } => Some(path),
            Action::Create { .. } | Action::Event { .. } => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Set { .. } => "set",
            Action::Exec { .. } => "exec",
            Action::Create { .. } => "create",
            Action::Shutdown { .. } => "shutdown",
            Action::Event { .. } => "event",
        }
    }
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub owner: String,
    pub spec: RuleSpec,
    pub filter: Option<Expr>,
    pub when: Expr,
    pub clear_when: Option<Expr>,
    pub verify: Option<Expr>,
    pub cooldown: Option<Duration>,
    pub actions: Vec<Action>,
}

pub const MAX_ACTIONS: usize = 16;
pub const MAX_FOR_EPOCHS: u32 = 10_000;

impl Rule {
    pub fn compile(name: &str, owner: &str, spec: RuleSpec) -> Result<Self, SpecError> {
        let for_each = spec.for_each.as_deref().map(str::trim).filter(|s| !s.is_empty());
        match (spec.scope, for_each) {
            (Scope::Local, None) => return Err(SpecError::new("for_each", "a local rule needs a pattern to bind")),
            (_, Some(p)) => {
                check_pattern(p).map_err(|m| SpecError::new("for_each", m))?;
                // A resource is evaluated where it is held: bind the resource, read below it.
                if p.starts_with("./managers/resources/") && p.split('/').count() > 4 {
                    return Err(SpecError::new(
                        "for_each",
                        "bind ./managers/resources/* and read below it, e.g. value('properties/load')",
                    ));
                }
            }
            (Scope::Global, None) => {}
        }
        if spec.for_epochs == 0 || spec.for_epochs > MAX_FOR_EPOCHS {
            return Err(SpecError::new("for_epochs", format!("must be 1-{MAX_FOR_EPOCHS}")));
        }
        let cooldown =
            spec.cooldown.as_deref().map(parse_duration).transpose().map_err(|m| SpecError::new("cooldown", m))?;
        let condition = |field: &str, src: &Option<String>| {
            src.as_deref().map(|s| Expr::condition(s).map_err(|e| SpecError::expr(field, e))).transpose()
        };
        let when = Expr::condition(&spec.when).map_err(|e| SpecError::expr("when", e))?;
        let filter = condition("where", &spec.filter)?;
        let clear_when = condition("clear_when", &spec.clear_when)?;
        let verify = condition("verify", &spec.verify)?;
        if spec.actions.len() > MAX_ACTIONS {
            return Err(SpecError::new("actions", format!("at most {MAX_ACTIONS}")));
        }
        let actions = spec
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| parse_action(a).map_err(|e| SpecError { field: format!("actions[{i}].{}", e.field), ..e }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_owned(),
            owner: owner.to_owned(),
            spec,
            filter,
            when,
            clear_when,
            verify,
            cooldown,
            actions,
        })
    }

    pub fn scope(&self) -> Scope {
        self.spec.scope
    }

    pub fn for_each(&self) -> Option<&str> {
        self.spec.for_each.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// Longest duration a rule may give (a cooldown, a window).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `5s`, `10m`, `1h30m`, `2d` (humantime), from a millisecond to a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); e.g. 30s, 10m, 1h"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("{text:?}: a duration must be at least 1ms"));
    }
    if d > MAX_DURATION {
        return Err(format!("{text:?}: a duration must be at most a year"));
    }
    Ok(d)
}

/// A `for_each` pattern: absolute, literal segments and `*` (one segment each).
pub fn check_pattern(p: &str) -> Result<(), String> {
    if !(p == "." || p.starts_with("./")) {
        return Err(format!("{p:?} must be absolute, starting with \"./\""));
    }
    for seg in p.split('/').skip(1) {
        if seg.is_empty() || seg == ".." || seg == "." {
            return Err(format!("{p:?} has an empty or relative segment"));
        }
        if seg == "**" {
            return Err(format!("{p:?}: \"**\" cannot bind; use \"*\" for each level"));
        }
        if seg.contains('*') && seg != "*" {
            return Err(format!("{p:?}: \"*\" must be a whole segment"));
        }
    }
    Ok(())
}

fn parse_action(a: &Json) -> Result<Action, SpecError> {
    let Some(obj) = a.as_object() else {
        return Err(SpecError::new("", "an action is an object such as {\"exec\": \"actions/restart\"}"));
    };
    let kinds: Vec<&str> =
        ["set", "exec", "create", "shutdown", "event"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    let [kind] = kinds[..] else {
        return Err(SpecError::new("", "name exactly one of set, exec, create, shutdown, event"));
    };
    let allowed: &[&str] = match kind {
        "set" => &["set", "value", "expr"],
        "exec" => &["exec", "data"],
        "create" => &["create", "data"],
        "shutdown" => &["shutdown"],
        _ => &["event"],
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(SpecError::new(extra.as_str(), format!("not a field of a {kind} action")));
    }
    let path = |key: &str| -> Result<String, SpecError> {
        let p = obj.get(key).and_then(Json::as_str).ok_or_else(|| SpecError::new(key, "must be a path (a string)"))?;
        check_path(p).map_err(|m| SpecError::new(key, m))?;
        Ok(p.to_owned())
    };
    let data = obj.get("data").cloned();
    Ok(match kind {
        "set" => {
            let value = match (obj.get("value"), obj.get("expr")) {
                (Some(v), None) => SetValue::Constant(v.clone()),
                (None, Some(Json::String(src))) => {
                    SetValue::Computed(Expr::value(src).map_err(|e| SpecError::expr("expr", e))?)
                }
                (None, Some(_)) => return Err(SpecError::new("expr", "must be a CEL expression (a string)")),
                _ => return Err(SpecError::new("value", "give either value (a constant) or expr (CEL)")),
            };
            Action::Set { path: path("set")?, value }
        }
        "exec" => Action::Exec { path: path("exec")?, data },
        "shutdown" => Action::Shutdown { path: path("shutdown")? },
        "create" => {
            let t = match obj.get("create") {
                Some(Json::String(t)) => t.clone(),
                Some(Json::Object(o)) => o
                    .get("type")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| SpecError::new("create.type", "the resource type to create"))?,
                _ => return Err(SpecError::new("create", "a resource type, or {\"type\": …}")),
            };
            if t.is_empty() || t.len() > 128 {
                return Err(SpecError::new("create", "a resource type of 1-128 characters"));
            }
            Action::Create { resource_type: t, data }
        }
        _ => {
            let e = obj
                .get("event")
                .and_then(Json::as_object)
                .ok_or_else(|| SpecError::new("event", "an object such as {\"type\": \"scaled\", \"payload\": {…}}"))?;
            let kind = e.get("type").and_then(Json::as_str).unwrap_or_default();
            if !valid_event_type(kind) {
                return Err(SpecError::new("event.type", "letters, digits and ._- (1-64)"));
            }
            let payload = e.get("payload").cloned().unwrap_or(Json::Object(Map::new()));
            Action::Event { kind: kind.to_owned(), payload }
        }
    })
}

fn valid_event_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// An action's path: `.` (the binding itself), relative, or absolute; `..` climbs.
fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.ends_with('/') || p.contains("//") {
        return Err(format!("{p:?} is not a path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Json) -> RuleSpec {
        serde_json::from_value(v).unwrap()
    }

    fn compile(v: Json) -> Result<Rule, SpecError> {
        Rule::compile("r", "admin", spec(v))
    }

    #[test]
    fn the_issue_example_compiles() {
        let r = compile(json!({"scope": "local", "for_each": "./managers/resources/*", "where": "type == 'service'",
            "when": "avg('properties/load', '5m') > 0.8", "for_epochs": 3, "clear_when": "avg('properties/load', '5m') < 0.6",
            "cooldown": "10m", "priority": 10, "group": "scaling", "verify": "value('../../members/' + manager + '/load') < 0.9",
            "actions": [{"exec": "actions/scale_out", "data": {"by": 1}}, {"event": {"type": "scaled", "payload": {"resource": "$id"}}}]}))
        .unwrap();
        assert_eq!(r.cooldown, Some(Duration::from_secs(600)));
        assert_eq!(r.actions.len(), 2);
        assert_eq!(r.actions[0].target(), Some("actions/scale_out"));
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |v: Json, field: &str| {
            let e = compile(v).unwrap_err();
            assert!(e.field.starts_with(field), "{e}");
        };
        bad(json!({"when": "true"}), "for_each");
        bad(json!({"for_each": "config/*", "when": "true"}), "for_each");
        bad(json!({"for_each": "./a/**", "when": "true"}), "for_each");
        bad(json!({"for_each": "./managers/resources/*/properties", "when": "true"}), "for_each");
        bad(json!({"scope": "global", "when": "true", "cooldown": "10 parsecs"}), "cooldown");
        bad(json!({"scope": "global", "when": "true", "for_epochs": 0}), "for_epochs");
        bad(json!({"scope": "global", "when": "1 +"}), "when");
        bad(json!({"scope": "global", "when": "true", "verify": "nope(1)"}), "verify");
        bad(json!({"scope": "global", "when": "true", "actions": [{"exec": "a", "set": "b"}]}), "actions[0]");
        bad(json!({"scope": "global", "when": "true", "actions": [{"set": "a", "expr": "1 +"}]}), "actions[0].expr");
        bad(
            json!({"scope": "global", "when": "true", "actions": [{"event": {"type": "a b"}}]}),
            "actions[0].event.type",
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("9223372036854775s 809ms").is_err());
        assert!(parse_duration("367d").is_err());
    }
}
