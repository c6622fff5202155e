//! The rule layer end to end on one server (SQLite): a CPU rule with
//! `for_epochs`, oscillation with and without hysteresis, priorities and
//! write conflicts, `verify`, the owner's rights, explain, bad input, and
//! kill -9 while a rule fires (it acts exactly once).

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::{Http, Server, config_with, eventually};
use serde_json::{Value, json};

/// One-second epochs; the CPU figures come from a memory mount the test writes.
fn config() -> String {
    config_with(
        r#"
[infrastructure]
localhost = false

[managers]
enabled = false

[rules]
epoch = "1s"

[[mounts]]
id = "cpu"
at = "./infrastructure/localhost/monitoring/cpu"
handler = "memory"
"#,
    )
}

static SERVER: LazyLock<Server> = LazyLock::new(|| Server::start(&config()));

fn admin() -> Http {
    SERVER.as_admin()
}

async fn put_rule(http: &Http, name: &str, rule: Value) -> common::Reply {
    http.put(&format!("/tree/rules/{name}"), json!({ "value": rule })).await
}

async fn set(http: &Http, path: &str, value: Value) {
    let r = http.put(&format!("/tree/{path}"), json!({ "value": value })).await;
    assert!(r.status == 200 || r.status == 201, "PUT {path}: {}", r.body);
}

async fn value(http: &Http, path: &str) -> Value {
    http.get(&format!("/tree/{path}")).await.body["value"].clone()
}

async fn monitoring(http: &Http, name: &str) -> Value {
    let r = http.get(&format!("/tree/rules/{name}/monitoring?depth=2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = json!({});
    for (k, v) in r.body["children"].as_object().cloned().unwrap_or_default() {
        out[&k] = match v["children"].as_object() {
            Some(c) => c.iter().map(|(k, v)| (k.clone(), v["value"].clone())).collect(),
            None => v["value"].clone(),
        };
    }
    out
}

async fn explain(http: &Http, name: &str) -> Value {
    let r = http.send(http.request(reqwest::Method::POST, &format!("/exec/rules/{name}/explain"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["result"].clone()
}

fn reason(binding: &Value) -> String {
    binding["why_not"]["reason"]
        .as_str()
        .unwrap_or(if binding["would_fire"] == json!(true) { "fires" } else { "?" })
        .into()
}

async fn epochs(http: &Http) -> u64 {
    value(http, "rules/monitoring/epochs").await.as_u64().unwrap_or(0)
}

/// Returns just after an epoch ran: the most time before the next one.
async fn after_epoch(http: &Http) -> u64 {
    let start = epochs(http).await;
    eventually("an epoch", Duration::from_secs(10), || async {
        let now = epochs(http).await;
        (now > start).then_some(now)
    })
    .await
}

#[tokio::test]
async fn cpu_above_a_threshold_for_three_epochs_sets_a_node() {
    let http = admin();
    set(&http, "infrastructure/localhost/monitoring/cpu/usage", json!(20.0)).await;
    let rule = json!({"scope": "global", "when": "value('./infrastructure/localhost/monitoring/cpu/usage') > 90.0",
        "for_epochs": 3, "actions": [{"set": "./config/alerts/cpu", "value": "hot"}]});
    assert_eq!(put_rule(&http, "cpu-hot", rule).await.status, 201);
    after_epoch(&http).await;
    set(&http, "infrastructure/localhost/monitoring/cpu/usage", json!(95.0)).await;
    let hot_since = epochs(&http).await;
    let e = explain(&http, "cpu-hot").await;
    assert_eq!(reason(&e["bindings"][0]), "for_epochs", "{e}");
    assert_eq!(e["bindings"][0]["values"]["./infrastructure/localhost/monitoring/cpu/usage"], json!(95.0));
    eventually("the alert", Duration::from_secs(10), || async {
        (value(&http, "config/alerts/cpu").await == json!("hot")).then_some(())
    })
    .await;
    assert!(epochs(&http).await >= hot_since + 3, "fired before three hot epochs");
    assert_eq!(monitoring(&http, "cpu-hot").await["firings"], json!(1));
    // Still hot: fired once, not again.
    after_epoch(&http).await;
    after_epoch(&http).await;
    assert_eq!(monitoring(&http, "cpu-hot").await["firings"], json!(1));
    assert_eq!(reason(&explain(&http, "cpu-hot").await["bindings"][0]), "not_armed");
}

#[tokio::test]
async fn a_flapping_value_fires_once_with_a_dead_zone_and_often_without() {
    let http = admin();
    set(&http, "config/flap/load", json!(0.5)).await;
    let plain = json!({"scope": "global", "when": "value('./config/flap/load') > 0.8"});
    let dead_zone = json!({"scope": "global", "when": "value('./config/flap/load') > 0.8",
        "clear_when": "value('./config/flap/load') < 0.6", "cooldown": "1h"});
    assert_eq!(put_rule(&http, "flap-plain", plain).await.status, 201);
    assert_eq!(put_rule(&http, "flap-dead-zone", dead_zone).await.status, 201);
    // A new level in the middle of each epoch: 0.85, 0.7, 0.85, 0.7, …
    for i in 0..8 {
        after_epoch(&http).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        set(&http, "config/flap/load", json!(if i % 2 == 0 { 0.85 } else { 0.7 })).await;
    }
    after_epoch(&http).await;
    let plain = monitoring(&http, "flap-plain").await["firings"].as_u64().unwrap_or(0);
    let damped = monitoring(&http, "flap-dead-zone").await["firings"].as_u64().unwrap_or(0);
    assert!(plain >= 3, "without hysteresis every rise fires: {plain}");
    assert_eq!(damped, 1, "with a dead zone and a cooldown: once");
}

#[tokio::test]
async fn priorities_settle_groups_and_shared_nodes_and_verify_blocks() {
    let http = admin();
    let go = "value('./config/conf/go') == true";
    let rules = [
        (
            "g-high",
            json!({"scope": "global", "group": "g", "priority": 10, "when": go,
            "actions": [{"set": "./config/conf/group-winner", "value": "$rule"}]}),
        ),
        (
            "g-low",
            json!({"scope": "global", "group": "g", "priority": 1, "when": format!("{go} && value('./config/conf/group-winner') == null"),
            "actions": [{"set": "./config/conf/group-loser", "value": "$rule"}]}),
        ),
        (
            "w-a",
            json!({"scope": "global", "priority": 1, "when": format!("{go} && value('./config/conf/shared') != 'w-b'"),
            "actions": [{"set": "./config/conf/shared", "value": "$rule"}]}),
        ),
        (
            "w-b",
            json!({"scope": "global", "priority": 2, "when": go,
            "actions": [{"set": "./config/conf/shared", "value": "$rule"}]}),
        ),
        (
            "guarded",
            json!({"scope": "global", "when": go, "verify": "value('./config/conf/allow') == true",
            "actions": [{"set": "./config/conf/guarded", "value": "done"}]}),
        ),
    ];
    for (name, rule) in rules {
        assert_eq!(put_rule(&http, name, rule).await.status, 201, "{name}");
    }
    set(&http, "config/conf/allow", json!(false)).await;
    after_epoch(&http).await;
    set(&http, "config/conf/go", json!(true)).await;
    // Right after an epoch: explain sees what the next one will do.
    let why = |e: Value| reason(&e["bindings"][0]);
    assert_eq!(why(explain(&http, "g-high").await), "fires");
    let low = explain(&http, "g-low").await;
    assert_eq!(why(low.clone()), "lower_priority");
    assert_eq!(low["bindings"][0]["why_not"]["winner"], json!("g-high"));
    let a = explain(&http, "w-a").await;
    assert_eq!(why(a.clone()), "write_conflict");
    assert_eq!(a["bindings"][0]["why_not"]["node"], json!("./config/conf/shared"));
    assert_eq!(why(explain(&http, "guarded").await), "verify_false");

    eventually("the winners' writes", Duration::from_secs(10), || async {
        (value(&http, "config/conf/shared").await == json!("w-b")).then_some(())
    })
    .await;
    after_epoch(&http).await;
    assert_eq!(value(&http, "config/conf/group-winner").await, json!("g-high"));
    assert_eq!(http.get("/tree/config/conf/group-loser").await.status, 404);
    assert_eq!(monitoring(&http, "g-low").await["blocked"]["lower_priority"], json!(1));
    assert_eq!(monitoring(&http, "w-a").await["blocked"]["write_conflict"], json!(1));
    assert_eq!(monitoring(&http, "w-a").await["firings"], json!(0));
    assert!(monitoring(&http, "guarded").await["blocked"]["verify_false"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(http.get("/tree/config/conf/guarded").await.status, 404);
    set(&http, "config/conf/allow", json!(true)).await;
    eventually("the guarded action once allowed", Duration::from_secs(10), || async {
        (value(&http, "config/conf/guarded").await == json!("done")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rule_acts_with_its_owners_rights_only() {
    let http = admin();
    let everyone = "Get=admin+alice&Add=admin+alice&Replace=admin+alice&Delete=admin+alice&Exec=admin+alice";
    set(&http, "config/owned/open", json!(0)).await;
    let r = http.put("/tree/config/owned/secret", json!({"value": "s3cret", "acl": "Get=admin&Replace=admin"})).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    // alice may write rules in her own corner of ./rules only.
    let r = http
        .put("/tree/rules/alice-corner", json!({"value": {"scope": "global", "when": "false"}, "acl": everyone}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let alice = SERVER.as_alice();
    let rule = json!({"scope": "global", "when": "true",
        "actions": [{"set": "./config/owned/secret", "value": "pwned"}]});
    let r = put_rule(&alice, "alice-corner", rule).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(value(&alice, "rules/alice-corner/owner").await, json!("alice"));
    let error = eventually("the refusal on the rule", Duration::from_secs(10), || async {
        let e = value(&alice, "rules/alice-corner/error").await;
        e.as_str().filter(|e| !e.is_empty()).map(str::to_owned)
    })
    .await;
    assert!(error.contains("permission_denied"), "{error}");
    assert_eq!(value(&http, "config/owned/secret").await, json!("s3cret"));
    // What the owner reads is what the owner may read: the secret is null to alice's rules.
    let peek = json!({"scope": "global", "when": "value('./config/owned/secret') == null"});
    assert_eq!(put_rule(&alice, "alice-corner", peek).await.status, 200);
    let e = explain(&alice, "alice-corner").await;
    assert_eq!(e["bindings"][0]["condition"], json!(true), "{e}");
    // And nobody but admin sees the other rules.
    assert_eq!(alice.get("/tree/rules/cpu-hot").await.status, 403);
    assert_eq!(SERVER.http().get("/tree/rules").await.status, 401);
}

#[tokio::test]
async fn bad_rules_are_refused_with_field_and_position_and_not_stored() {
    let http = admin();
    let cases = [
        (json!({"scope": "global", "when": "value('x') >"}), "when: 1:"),
        (json!({"scope": "global", "when": "true && frobnicate(1)"}), "when: 1:9: unknown function frobnicate()"),
        (
            json!({"scope": "global", "when": "avg('./x', '5m') > 'high'"}),
            "when: 1:18: cannot compare a number with a string",
        ),
        (json!({"scope": "global", "when": "avg('./x', '5 fortnights') > 1"}), "when: 1:1: avg(): "),
        (json!({"scope": "global", "when": "true", "cooldown": "soon"}), "cooldown: "),
        (json!({"scope": "global", "when": "true", "verify": "1 + 1"}), "verify: 1:1: a condition must be a boolean"),
        (json!({"when": "true"}), "for_each: "),
        (json!({"scope": "global", "when": "true", "actions": [{"exec": "a", "set": "b"}]}), "actions[0]"),
        (json!({"scope": "global", "when": "true", "frequency": 3}), "unknown field"),
    ];
    for (rule, expected) in cases {
        let r = put_rule(&http, "bad", rule.clone()).await;
        assert_eq!(r.status, 422, "{rule}: {}", r.body);
        assert_eq!(r.code(), "invalid_rule");
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{rule}: {message}");
        assert_eq!(http.get("/tree/rules/bad").await.status, 404, "nothing stored for {rule}");
    }
}

/// Kill -9 at an epoch boundary, again and again: each time the rule fires
/// once. Its action is not idempotent on its face (n := n + 1), so a second
/// run would show.
#[tokio::test]
async fn a_firing_survives_kill_9_exactly_once() {
    let mut server = Server::start(&config());
    let http = server.as_admin();
    set(&http, "config/count/n", json!(0)).await;
    set(&http, "config/count/go", json!(false)).await;
    let rule = json!({"scope": "global", "when": "value('./config/count/go') == true",
        "actions": [{"set": "./config/count/n", "expr": "value('./config/count/n') + 1"}]});
    assert_eq!(put_rule(&http, "counter", rule).await.status, 201);
    for (round, offset_ms) in [2u64, 8, 20, 40].into_iter().enumerate() {
        let http = server.as_admin();
        set(&http, "config/count/go", json!(true)).await;
        // Just after the next boundary: before, during or after the firing.
        let now = chrono::Utc::now().timestamp_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1000 - now % 1000 + offset_ms)).await;
        server.kill9();
        server.restart();
        let http = server.as_admin();
        let want = json!(round + 1);
        eventually("the count", Duration::from_secs(15), || async {
            (value(&http, "config/count/n").await == want).then_some(())
        })
        .await;
        // Three more epochs: a redo (if one was needed) is done, and nothing more.
        for _ in 0..3 {
            after_epoch(&http).await;
        }
        assert_eq!(value(&http, "config/count/n").await, want, "round {round} fired twice");
        set(&http, "config/count/go", json!(false)).await;
        after_epoch(&http).await;
        after_epoch(&http).await;
    }
}

#[tokio::test]
async fn a_cooldown_shows_in_explain_and_every_firing_is_a_context_event() {
    let http = admin();
    set(&http, "config/cool/go", json!(false)).await;
    let rule = json!({"scope": "global", "when": "value('./config/cool/go') == true", "cooldown": "1h",
        "actions": [{"set": "./config/cool/out", "expr": "value('./config/cool/go')"}]});
    assert_eq!(put_rule(&http, "cool", rule).await.status, 201);
    set(&http, "config/cool/go", json!(true)).await;
    eventually("the first firing", Duration::from_secs(10), || async {
        (value(&http, "config/cool/out").await == json!(true)).then_some(())
    })
    .await;
    // False re-arms it; true again is within the hour.
    set(&http, "config/cool/go", json!(false)).await;
    after_epoch(&http).await;
    after_epoch(&http).await;
    set(&http, "config/cool/go", json!(true)).await;
    after_epoch(&http).await;
    let e = explain(&http, "cool").await;
    assert_eq!(reason(&e["bindings"][0]), "cooldown", "{e}");
    let left = e["bindings"][0]["why_not"]["remaining_ms"].as_i64().unwrap_or(0);
    assert!(left > 3_500_000 && left <= 3_600_000, "{left}");
    assert_eq!(monitoring(&http, "cool").await["firings"], json!(1));
    assert!(monitoring(&http, "cool").await["blocked"]["cooldown"].as_u64().unwrap_or(0) >= 1);
    // The audit trail: a rule.fired ContextEvent per firing.
    let q = json!({"type": "rule.fired", "limit": 1000});
    let events = eventually("the rule.fired event", Duration::from_secs(10), || async {
        let r = http.send(http.request(reqwest::Method::POST, "/exec/contextstore/query").json(&q)).await;
        let events = r.body["result"]["events"].as_array().cloned().unwrap_or_default();
        let ours: Vec<Value> = events.into_iter().filter(|e| e["payload"]["rule"] == json!("cool")).collect();
        (!ours.is_empty()).then_some(ours)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["ok"], json!(true));
    assert!(events[0]["payload"]["action_id"].as_str().is_some_and(|id| id.starts_with("cool|")));
}

/// What an outside probe found, each closed: a rule writer can neither crash
/// nor stall the server, nor learn through explain, errors, conflicts, audits
/// or histories what its principal may not read.
#[tokio::test]
async fn a_rule_writer_cannot_crash_the_server_or_read_around_acls() {
    let http = admin();
    let alice = SERVER.as_alice();
    let granted = "Get=admin+alice&Add=admin+alice&Replace=admin&Delete=admin&Exec=admin+alice";
    let r = http.put("/tree/config/probe/secret", json!({"value": "hunter2", "acl": "Get=admin&Replace=admin"})).await;
    assert!(r.status < 300, "{}", r.body);
    set(&http, "config/probe/open", json!(1)).await;
    // alice may add rules, not replace others' (nor set ACLs under ./rules).
    let r = http
        .put(
            "/tree/rules/probe-admin",
            json!({"value": {"scope": "global",
        "when": "value('./config/probe/secret') == 'hunter2'",
        "actions": [{"set": "./config/probe/copy", "expr": "value('./config/probe/secret') + '-copy'"}]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http.put("/tree/rules/probe-admin", json!({"acl": granted})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Expressions that would overflow the parser's or the evaluator's stack, or multiply work.
    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    let chain = format!("{} > 0", vec!["1"; 200].join(" + "));
    let nested = "[1,2,3].exists(a, [1,2,3].exists(b, a == b))";
    for (when, expected) in
        [(deep.as_str(), "nested more than"), (chain.as_str(), "levels of operations"), (nested, "inside another")]
    {
        let r = put_rule(&http, "probe-bad", json!({"scope": "global", "when": when})).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains(expected), "{}", r.body);
    }
    let r =
        put_rule(&http, "probe-bad", json!({"scope": "global", "when": "true", "cooldown": "9223372036854775s"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(SERVER.http().get("/healthz").await.status, 200);

    // Explain as alice: the outcome depends on a node she may not read, so it is hidden whole.
    let e = explain(&alice, "probe-admin").await;
    let b = &e["bindings"][0];
    assert_eq!(b["why_not"]["reason"], json!("hidden"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert_eq!(b["condition"], Value::Null);
    assert_eq!(b["actions"], json!([]));
    // Errors name types, never values.
    let r =
        put_rule(&http, "probe-error", json!({"scope": "global", "when": "value('./config/probe/secret') > 3"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let error = eventually("the rule's error", Duration::from_secs(10), || async {
        value(&http, "rules/probe-error/error").await.as_str().filter(|e| !e.is_empty()).map(str::to_owned)
    })
    .await;
    assert!(error.contains("string") && !error.contains("hunter2"), "{error}");

    // A PUT refused for its ACL part leaves no rule behind.
    let r = alice
        .put("/tree/rules/probe-stealth", json!({"value": {"scope": "global", "when": "true"}, "acl": "Get=alice"}))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(http.get("/tree/rules/probe-stealth").await.status, 404);

    // Forging what the server records is refused; the rule audit is admin's alone.
    let r = http.put("/tree/contextstore", json!({"acl": "Get=*&Exec=admin+alice"})).await;
    assert!(r.status < 300, "{}", r.body);
    let forged = json!([{"sender": "tree", "type": "x", "payload": {"uri": "./config/probe/secret", "value": 1}}]);
    let r = alice.send(alice.request(reqwest::Method::POST, "/exec/contextstore/ingest").json(&forged)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let audit = json!([{"sender": "alice", "type": "rule.fired", "payload": {}}]);
    let r = alice.send(alice.request(reqwest::Method::POST, "/exec/contextstore/ingest").json(&audit)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = alice
        .send(alice.request(reqwest::Method::POST, "/exec/contextstore/query").json(&json!({"type": "rule.fired"})))
        .await;
    assert!(r.status == 403 || r.status == 400, "{}", r.body);
    // A leaf's history is as private as the leaf.
    let q = json!({"uri": "./config/probe/secret"});
    let r = alice.send(alice.request(reqwest::Method::POST, "/exec/contextstore/history").json(&q)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http.put("/tree/contextstore", json!({"acl": null})).await;
    assert!(r.status < 300, "{}", r.body);

    // The rules' own events (firings, suspensions) replayed to alice: only the rules she may read.
    let seen = alice.events("?uri=./rules/**&since=0", None).await.drain(Duration::from_millis(500)).await;
    assert!(!seen.is_empty(), "alice reads the rule she was granted");
    for e in &seen {
        let uri = e["uri"].as_str().unwrap_or_default();
        assert!(uri.starts_with("./rules/probe-admin") || uri.starts_with("./rules/alice-corner"), "leaked: {e}");
    }
}

/// true, true, false, true: the count starts over, so `for_epochs: 3` waits three more.
#[tokio::test]
async fn a_false_epoch_resets_the_count() {
    let http = admin();
    set(&http, "config/reset/hot", json!(false)).await;
    let rule = json!({"scope": "global", "when": "value('./config/reset/hot') == true", "for_epochs": 3,
        "actions": [{"set": "./config/reset/alert", "value": true}]});
    assert_eq!(put_rule(&http, "reset", rule).await.status, 201);
    after_epoch(&http).await;
    set(&http, "config/reset/hot", json!(true)).await;
    after_epoch(&http).await;
    after_epoch(&http).await;
    let e = explain(&http, "reset").await;
    assert_eq!(e["bindings"][0]["counters_before"]["consecutive"], json!(2), "{e}");
    set(&http, "config/reset/hot", json!(false)).await;
    after_epoch(&http).await;
    set(&http, "config/reset/hot", json!(true)).await;
    let e = explain(&http, "reset").await;
    assert_eq!(e["bindings"][0]["counters_before"]["consecutive"], json!(0), "{e}");
    assert_eq!(e["bindings"][0]["why_not"]["have"], json!(1), "{e}");
    after_epoch(&http).await;
    after_epoch(&http).await;
    assert_eq!(http.get("/tree/config/reset/alert").await.status, 404, "fired after two hot epochs");
    eventually("the alert after three", Duration::from_secs(10), || async {
        (value(&http, "config/reset/alert").await == json!(true)).then_some(())
    })
    .await;
}

/// A rule from the configuration file keeps its state across restarts (it is
/// rewritten only when the file changes it), so it does not fire again.
#[tokio::test]
async fn a_rule_from_the_file_survives_a_restart_without_firing_again() {
    let file_rule = r#"
[[rules.rule]]
name = "from-file"
scope = "global"
when = "value('./config/file/n') != null"
actions = [{ set = "./config/file/n", expr = "value('./config/file/n') + 1" }]
"#;
    let mut server = Server::start(&format!("{}{file_rule}", config()));
    let http = server.as_admin();
    set(&http, "config/file/n", json!(0)).await;
    eventually("the firing", Duration::from_secs(10), || async {
        (value(&http, "config/file/n").await == json!(1)).then_some(())
    })
    .await;
    assert_eq!(value(&http, "rules/from-file/owner").await, json!("admin"));
    server.kill9();
    server.restart();
    let http = server.as_admin();
    for _ in 0..3 {
        after_epoch(&http).await;
    }
    assert_eq!(value(&http, "config/file/n").await, json!(1), "re-armed by the restart");
}
