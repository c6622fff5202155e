//! `dmtree rules apply|explain`: many rules from one file, and a readable dry run.

use std::path::Path;

use anyhow::{Context as _, bail};
use dmtree_rules::rule::{Rule, RuleSpec};
use serde_json::{Value as Json, json};

use crate::client::{Client, parse_uri};

/// Reads rules from YAML, TOML or JSON: a list of rules with `name`, or
/// `rule:` / `rules:` holding one (TOML: `[[rule]]` tables).
pub fn read(path: &Path) -> anyhow::Result<Vec<(String, RuleSpec)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let doc: Json = match ext {
        "toml" => toml::from_str(&text).context("not valid TOML")?,
        "json" => serde_json::from_str(&text).context("not valid JSON")?,
        _ => serde_norway::from_str(&text).context("not valid YAML")?,
    };
    let list = match doc {
        Json::Array(list) => list,
        Json::Object(mut o) => match o.remove("rules").or_else(|| o.remove("rule")) {
            Some(Json::Array(list)) => list,
            _ => bail!("expected a list of rules, or `rules:` (TOML: [[rule]]) holding one"),
        },
        _ => bail!("expected a list of rules"),
    };
    let mut out = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, mut item) in list.into_iter().enumerate() {
        let name = item.as_object_mut().and_then(|o| o.remove("name")).and_then(|n| n.as_str().map(str::to_owned));
        let Some(name) = name else {
            errors.push(format!("rule #{}: a name is required", i + 1));
            continue;
        };
        // The same checks as the server's, so that nothing is sent unless all are good.
        match serde_json::from_value::<RuleSpec>(item)
            .map_err(|e| e.to_string())
            .and_then(|spec| Rule::compile(&name, "you", spec.clone()).map(|_| spec).map_err(|e| e.to_string()))
        {
            Ok(spec) => out.push((name, spec)),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!("nothing applied:\n  {}", errors.join("\n  "));
    }
    Ok(out)
}

pub async fn apply(client: &Client, path: &Path) -> anyhow::Result<()> {
    let rules = read(path)?;
    for (name, spec) in &rules {
        let uri = parse_uri(&format!("./rules/{name}"))?;
        client.put_json(&uri, &json!({ "value": spec })).await.with_context(|| format!("rule {name}"))?;
        println!("applied {name}");
    }
    Ok(())
}

pub async fn explain(client: &Client, name: &str, raw: bool) -> anyhow::Result<()> {
    let out = client.exec_json(&parse_uri(&format!("./rules/{name}/explain"))?, &Json::Null).await?;
    let out = out.get("result").cloned().unwrap_or(out);
    if raw {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", render(&out));
    Ok(())
}

/// One block per binding: what was read, what the condition gave, and the verdict.
pub fn render(out: &Json) -> String {
    let mut s = format!("rule {} — epoch {}", out["rule"].as_str().unwrap_or("?"), out["epoch"]);
    if out["evaluated_here"] == json!(false) {
        s.push_str(" (not evaluated on this member: global rules run at the coordinator)");
    }
    s.push('\n');
    for key in ["suspended", "error"] {
        if let Some(e) = out[key].as_str() {
            s.push_str(&format!("  {key}: {e}\n"));
        }
    }
    let bindings = out["bindings"].as_array().cloned().unwrap_or_default();
    if bindings.is_empty() {
        s.push_str("  no bindings\n");
    }
    for b in bindings {
        let name = b["binding"].as_str().filter(|n| !n.is_empty()).unwrap_or("(global)");
        let verdict = if b["would_fire"] == json!(true) { "WOULD FIRE".to_owned() } else { why(&b["why_not"]) };
        s.push_str(&format!("  {name}: {verdict}\n"));
        if let Some(values) = b["values"].as_object() {
            for (k, v) in values {
                s.push_str(&format!("      read {k} = {v}\n"));
            }
        }
        let c = &b["counters"];
        let last = c["last_fired_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        s.push_str(&format!(
            "      condition {} · consecutive {} · armed {} · last fired {last}\n",
            b["condition"], c["consecutive"], c["armed"]
        ));
        for a in b["actions"].as_array().into_iter().flatten() {
            s.push_str(&format!("      action {a}\n"));
        }
    }
    s
}

fn why(w: &Json) -> String {
    let reason = w["reason"].as_str().unwrap_or("?");
    match reason {
        "for_epochs" => format!("waiting: condition held {} of {} epochs", w["have"], w["need"]),
        "cooldown" => format!("cooling down for {} ms more", w["remaining_ms"]),
        "not_armed" => "fired already; not re-armed (clear_when, or a false condition, not seen since)".into(),
        "lower_priority" => format!("blocked: {} has higher priority in the group", w["winner"]),
        "write_conflict" => format!("blocked: {} writes {} with higher priority", w["winner"], w["node"]),
        "verify_false" => "blocked: verify is false".into(),
        "condition_false" => "condition false".into(),
        "filtered" => "excluded by where".into(),
        "error" => format!("error: {}", w["message"].as_str().unwrap_or("")),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_and_toml_and_reports_every_bad_rule() {
        let dir = std::env::temp_dir().join(format!("dmtree-rules-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("r.yaml");
        std::fs::write(&yaml, "rules:\n  - name: a\n    scope: global\n    when: \"true\"\n  - name: b\n    for_each: ./x/*\n    when: value('v') > 1\n").unwrap();
        assert_eq!(read(&yaml).unwrap().len(), 2);
        let toml = dir.join("r.toml");
        std::fs::write(
            &toml,
            "[[rule]]\nname = \"a\"\nscope = \"global\"\nwhen = \"nope(\"\n[[rule]]\nname = \"b\"\nwhen = \"true\"\n",
        )
        .unwrap();
        let err = read(&toml).unwrap_err().to_string();
        assert!(err.contains("a: when: 1:") && err.contains("b: for_each"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renders_each_reason() {
        let out = json!({"rule": "r", "epoch": 7, "bindings": [
            {"binding": "./x/a", "would_fire": false, "why_not": {"reason": "for_epochs", "have": 1, "need": 3},
             "values": {"./x/a/v": 2}, "condition": true, "counters": {"consecutive": 1, "armed": true}, "actions": []},
            {"binding": "./x/b", "would_fire": true, "condition": true, "counters": {}, "actions": [{"kind": "exec"}]}]});
        let text = render(&out);
        assert!(text.contains("./x/a: waiting: condition held 1 of 3 epochs"), "{text}");
        assert!(text.contains("read ./x/a/v = 2"));
        assert!(text.contains("./x/b: WOULD FIRE"));
    }
}
