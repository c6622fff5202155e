use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A fixed table of values: enough to test the language, not the tree.
struct Table(HashMap<String, Json>);

impl Reader for Table {
    fn value(&self, uri: &str) -> Result<Json, String> {
        Ok(self.0.get(uri).cloned().unwrap_or(Json::Null))
    }
    fn window(&self, uri: &str, f: Window, over: Duration) -> Result<Json, String> {
        Ok(json!(format!("{}:{uri}:{}", f.name(), over.as_secs())))
    }
    fn age(&self, _uri: &str) -> Result<Json, String> {
        Ok(json!(42))
    }
    fn bindings(&self, _pattern: &str) -> Result<Vec<Binding>, String> {
        let vars = |t: &str, s: &str| json!({"type": t, "status": s}).as_object().cloned().unwrap_or_default();
        Ok(vec![Binding::new("./r/a", vars("Registry", "down")), Binding::new("./r/b", vars("service", "up"))])
    }
    fn charge(&self) -> Result<(), String> {
        Ok(())
    }
}

fn env() -> Env {
    let t = [("./svc/a/load", json!(0.9)), ("./svc/a/cap", json!(2)), ("./members/m1/load", json!(0.5))];
    Env::new(Arc::new(Table(t.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())))
}

fn binding() -> Binding {
    Binding::new("./svc/a", json!({"type": "service", "manager": "m1"}).as_object().cloned().unwrap_or_default())
}

fn eval(src: &str) -> Result<Json, String> {
    let env = env();
    Expr::value(src).map_err(|e| e.to_string())?.eval(&env.scope(&binding()))
}

#[test]
fn reads_relative_and_absolute_paths_and_variables() {
    assert_eq!(eval("value('load') > 0.8"), Ok(json!(true)));
    assert_eq!(eval("value('./svc/a/cap') * 2"), Ok(json!(4)));
    assert_eq!(eval("value('../../members/' + manager + '/load')"), Ok(json!(0.5)));
    assert_eq!(eval("type == 'service' && id == 'a' && uri == './svc/a'"), Ok(json!(true)));
    assert_eq!(eval("value('missing') == null"), Ok(json!(true)));
}

#[test]
fn windows_ages_and_builtins() {
    assert_eq!(eval("avg('load', '5m')"), Ok(json!("avg:./svc/a/load:300")));
    assert_eq!(eval("changes('load', '1h')"), Ok(json!("changes:./svc/a/load:3600")));
    assert_eq!(eval("age('load')"), Ok(json!(42)));
    assert_eq!(eval("max(1, 5, 3)"), Ok(json!(5)));
    assert_eq!(eval("min([4, 2])"), Ok(json!(2)));
}

#[test]
fn quantifiers_see_each_match() {
    assert_eq!(eval("exists('./r/*', type == 'Registry')"), Ok(json!(true)));
    assert_eq!(eval("exists('./r/*', type == 'Registry' && status == 'up')"), Ok(json!(false)));
    assert_eq!(eval("all('./r/*', status != 'gone')"), Ok(json!(true)));
    // The outer binding's variables stay visible inside.
    assert_eq!(eval("exists('./r/*', manager == 'm1' && id == 'b')"), Ok(json!(true)));
}

#[test]
fn write_time_errors_have_positions() {
    let err = |src: &str| Expr::condition(src).unwrap_err().to_string();
    assert!(err("value('x') >").starts_with("1:"), "{}", err("value('x') >"));
    assert_eq!(err("true && nope(1)"), "1:9: unknown function nope()");
    assert_eq!(err("avg('x', '5 parsecs') > 1").split(':').take(2).collect::<Vec<_>>(), ["1", "1"]);
    assert!(err("avg('x', '5m') > 'high'").contains("cannot compare a number with a string"));
    assert!(err("avg(1, '5m') > 0").contains("must be a string"));
    assert!(err("value('a', 'b')").contains("takes 1 argument"));
    assert!(err("1 + 2").contains("must be a boolean"));
    assert!(err("count('x', '1m')").contains("must be a boolean"));
    assert!(err("exists('r/*', true)").contains("must be absolute"));
    assert!(err(&"(".repeat(100)).contains("nested"));
}

#[test]
fn runtime_errors_are_values_not_panics() {
    assert!(eval("value(1)").is_err());
    assert!(eval("undefined_var > 1").unwrap_err().contains("not defined"));
    assert!(eval("1 / 0").is_err());
}

#[test]
fn resolve_climbs_and_refuses_escape() {
    assert_eq!(resolve("./a/b", "../c"), Ok("./a/c".into()));
    assert_eq!(resolve("./a/b", "./x"), Ok("./x".into()));
    assert_eq!(resolve("./a/b", "."), Ok("./a/b".into()));
    assert_eq!(resolve("", "."), Ok(".".into()));
    assert!(resolve("./a", "../../x").is_err());
    assert!(resolve("", "x").is_err());
}

proptest! {
    /// Whatever a user types, compiling and evaluating never panics.
    #[test]
    fn arbitrary_source_never_panics(src in "[a-z0-9 ()'.,<>=!&|+*/%\\-\\[\\]{}:?\"]{0,60}") {
        if let Ok(e) = Expr::value(&src) {
            let env = env();
            let _ = e.eval(&env.scope(&binding()));
        }
    }

    #[test]
    fn resolved_paths_stay_absolute(path in "(\\.\\./|[a-z]{1,3}/){0,5}[a-z]{1,3}") {
        if let Ok(p) = resolve("./a/b/c", &path) {
            prop_assert!(p.starts_with("./"));
            prop_assert!(!p.split('/').any(|s| s == ".."));
        }
    }
}
