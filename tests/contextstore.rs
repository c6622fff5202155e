//! The ContextStore end to end, through the real server, on SQLite and on
//! PostgreSQL: billing aggregates from tree updates, kill -9 during ingest,
//! propagation to a store that is down, recorder and player, bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{ADMIN, Http, Prosody, Server, XMPP_DOMAIN, config_with, free_address, postgres_database};
use serde_json::{Value, json};

const USAGE: &str = r#"
[contextstore.subscriptions.usage]
pattern = "./config/usage/*/*/cpu_seconds"
type = "usage"
fields = ["user", "vm"]

[contextstore.handlers.usage]
kind = "aggregate"
input = "usage"
keys = ["user"]
value = "value"
window_s = 3600
"#;

/// The server's configuration with the ContextStore on SQLite (`None`) or on a new PostgreSQL database.
async fn with_database(pg: bool, extra: &str) -> String {
    let database = if pg { format!("database = \"{}\"\n", postgres_database().await) } else { String::new() };
    config_with(&format!("[contextstore]\ningest_timeout_ms = 5000\n{database}\n{extra}"))
}

async fn exec(http: &Http, node: &str, data: Value) -> common::Reply {
    http.send(http.request(reqwest::Method::POST, &format!("/exec/contextstore/{node}")).json(&data)).await
}

async fn all_events(http: &Http, kind: &str) -> Vec<Value> {
    let mut query = json!({"type": kind, "limit": 10000});
    let mut out = Vec::new();
    loop {
        let r = exec(http, "query", query.clone()).await;
        if r.status == 400 {
            return out; // no event of that type yet
        }
        assert_eq!(r.status, 200, "{}", r.body);
        out.extend(r.body["result"]["events"].as_array().cloned().unwrap_or_default());
        match r.body["result"]["cursor"].as_str() {
            Some(c) => query["cursor"] = json!(c),
            None => return out,
        }
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Synthetic usage updates in the tree; one GET per user and window returns the
/// totals a billing system needs, equal to a computation over the same events.
#[tokio::test]
async fn usage_per_user_per_window_is_one_get() {
    for pg in [false, true] {
        let server = Server::start(&with_database(pg, USAGE).await);
        let admin = server.as_admin();
        let mut writes = 0;
        for round in 0..6 {
            for (user, vm) in [("alice", "vm1"), ("alice", "vm2"), ("bob", "vm7")] {
                let v = (round * 7 + user.len() * 3 + vm.len()) as i64 % 13 + 1;
                let r = admin.put(&format!("/tree/config/usage/{user}/{vm}/cpu_seconds"), json!({"value": v})).await;
                assert!(r.status == 200 || r.status == 201);
                writes += 1;
            }
        }
        wait_for("all usage events", async || all_events(&admin, "usage").await.len() == writes).await;
        let events = all_events(&admin, "usage").await;
        let mut expected: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
        for e in &events {
            let ts = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap().with_timezone(&Utc);
            let hour = DateTime::<Utc>::from_timestamp(ts.timestamp() - ts.timestamp().rem_euclid(3600), 0).unwrap();
            let window = hour.to_rfc3339_opts(SecondsFormat::Secs, true);
            let slot = expected.entry((e["payload"]["user"].as_str().unwrap().to_owned(), window)).or_default();
            slot.0 += e["payload"]["value"].as_f64().unwrap();
            slot.1 += 1;
        }
        assert!(expected.keys().any(|(u, _)| u == "bob"));
        for ((user, window), (sum, count)) in expected {
            let r = admin.get(&format!("/tree/contextstore/aggregates/usage/{user}/{window}")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let totals = &r.body["children"];
            assert_eq!(
                (totals["sum"]["value"].as_f64(), totals["count"]["value"].as_u64()),
                (Some(sum), Some(count)),
                "{user} {window} pg={pg}"
            );
            assert_eq!(totals["avg"]["value"].as_f64(), Some(sum / count as f64));
        }
        assert_eq!(
            admin.get("/tree/contextstore/monitoring/database/backend").await.body["value"],
            if pg { "postgres" } else { "sqlite" }
        );
    }
}

/// Kill -9 while batches arrive, restart, and send everything again: every
/// acknowledged event is there and no event is counted twice.
#[tokio::test]
async fn kill_9_during_ingest_loses_nothing_acknowledged_and_counts_nothing_twice() {
    let metered = r#"
[contextstore.handlers.metered]
kind = "aggregate"
input = "metered"
keys = ["user"]
value = "amount"
window_s = 86400
"#;
    for pg in [false, true] {
        let mut server = Server::start(&with_database(pg, metered).await);
        let batches: Vec<Vec<Value>> = (0..400)
            .map(|b| {
                (0..25)
                    .map(|i| {
                        let n = b * 25 + i;
                        json!({"id": uuid::Uuid::new_v4(), "timestamp": "2026-11-22T12:00:00Z", "sender": "meter",
                               "type": "metered", "payload": {"user": "alice", "amount": (n % 5) + 1}})
                    })
                    .collect()
            })
            .collect();
        let admin = server.as_admin();
        let sender = {
            let batches = batches.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for (i, b) in batches.iter().enumerate() {
                    match admin
                        .request(reqwest::Method::POST, "/exec/contextstore/ingest")
                        .json(&json!({"events": b}))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => acked.push(i),
                        _ => break,
                    }
                }
                acked
            })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        server.kill9();
        let acked = sender.await.unwrap();
        assert!(!acked.is_empty() && acked.len() < batches.len(), "killed mid-stream ({} acked)", acked.len());
        server.restart();
        let admin = server.as_admin();
        let stored: BTreeSet<String> =
            all_events(&admin, "metered").await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        for i in &acked {
            for e in &batches[*i] {
                assert!(stored.contains(e["id"].as_str().unwrap()), "an acknowledged event was lost (pg={pg})");
            }
        }
        // The client retries everything; duplicates are recognised by id.
        for b in &batches {
            assert_eq!(exec(&admin, "ingest", json!({"events": b})).await.status, 200);
        }
        let total: f64 = batches.iter().flatten().map(|e| e["payload"]["amount"].as_f64().unwrap()).sum();
        let r = admin.get("/tree/contextstore/aggregates/metered/alice/2026-11-22T00:00:00Z/sum").await;
        assert_eq!(r.body["value"].as_f64(), Some(total), "no double counting (pg={pg})");
        assert_eq!(all_events(&admin, "metered").await.len(), 10_000);
    }
}

/// Store A forwards `usage` (not `other`) to store B, which is down at first.
#[tokio::test]
async fn propagation_reaches_a_store_that_was_down_once_and_only_once() {
    let b_addr = free_address();
    let mut b = Server::start_at(&config_with(""), &b_addr);
    b.kill9();
    let a = Server::start(&config_with(&format!(
        "[contextstore.propagation.to-b]\nurl = \"http://{b_addr}\"\ntoken = \"{ADMIN}\"\ntypes = [\"usage\"]\n"
    )));
    let admin_a = a.as_admin();
    let usage: Vec<Value> = (0..120).map(|i| json!({"sender": "a", "type": "usage", "payload": {"n": i}})).collect();
    let other = json!([{"sender": "a", "type": "other", "payload": {}}]);
    assert_eq!(exec(&admin_a, "ingest", json!(usage)).await.status, 200);
    assert_eq!(exec(&admin_a, "ingest", other).await.status, 200);
    wait_for("the forwarder to report the receiver down", async || {
        admin_a.get("/tree/contextstore/monitoring/propagation/targets/to-b").await.body["value"]
            .as_str()
            .is_some_and(|s| s.starts_with("retrying"))
    })
    .await;
    b.restart();
    assert_eq!(b.base, format!("http://{b_addr}"), "B is back on its address");
    let admin_b = b.as_admin();
    wait_for("all usage events at B", async || all_events(&admin_b, "usage").await.len() == 120).await;
    assert!(all_events(&admin_b, "other").await.is_empty(), "only the chosen types travel");
    let a_ids: BTreeSet<_> = all_events(&admin_a, "usage")
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    let b_ids: BTreeSet<_> = all_events(&admin_b, "usage").await.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(a_ids, b_ids, "same events, same ids");
}

/// The same over XMPP (a private Prosody): A logs in as alice, B as bob; B is
/// down while A forwards, so the server keeps the messages offline for it.
#[tokio::test]
async fn propagation_over_xmpp_reaches_a_store_that_was_down() {
    let prosody = Prosody::start();
    let xmpp = |user: &str| {
        format!(
            "[push.xmpp]\njid = \"{user}@{XMPP_DOMAIN}\"\npassword = \"{user}pw\"\nserver = \"{}\"\nstarttls = false\n",
            prosody.server()
        )
    };
    let b_addr = free_address();
    let b_config = config_with(&format!("{}\n[contextstore]\nxmpp_senders = [\"alice@{XMPP_DOMAIN}\"]\n", xmpp("bob")));
    let mut b = Server::start_at(&b_config, &b_addr);
    // B dies while logged in: the XMPP server keeps its session (stream
    // management hibernation), the case where messages could be stranded.
    wait_for("B's XMPP session", async || prosody.log().contains(&format!("Authenticated as bob@{XMPP_DOMAIN}"))).await;
    b.kill9();
    let a = Server::start(&config_with(&format!(
        "{}\n[contextstore.propagation.to-b]\njid = \"bob@{XMPP_DOMAIN}\"\ntypes = [\"usage\"]\n",
        xmpp("alice")
    )));
    let admin_a = a.as_admin();
    let usage: Vec<Value> = (0..120).map(|i| json!({"sender": "a", "type": "usage", "payload": {"n": i}})).collect();
    assert_eq!(exec(&admin_a, "ingest", json!(usage)).await.status, 200);
    assert_eq!(exec(&admin_a, "ingest", json!([{"sender": "a", "type": "other", "payload": {}}])).await.status, 200);
    wait_for("A's outbox drained into the XMPP server", async || {
        admin_a.get("/tree/contextstore/monitoring/propagation/forwarded").await.body["value"] == json!(120)
    })
    .await;
    b.restart();
    let admin_b = b.as_admin();
    wait_for("all usage events at B", async || all_events(&admin_b, "usage").await.len() == 120).await;
    assert!(all_events(&admin_b, "other").await.is_empty(), "only the chosen types travel");
    let ids = |events: Vec<Value>| events.iter().map(|e| e["id"].to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids(all_events(&admin_a, "usage").await), ids(all_events(&admin_b, "usage").await));
}

#[tokio::test]
async fn recorder_and_player_round_trip() {
    let a = Server::start(&config_with(""));
    let b = Server::start(&config_with(""));
    let events: Vec<Value> = (0..300).map(|i| json!({"sender": "rec", "type": "usage", "payload": {"n": i}})).collect();
    assert_eq!(exec(&a.as_admin(), "ingest", json!(events)).await.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage.jsonl");
    let dmtree = |server: &Server, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmtree"))
            .args(args)
            .env("DMTREE_SERVER", &server.base)
            .env("DMTREE_TOKEN", ADMIN)
            .output()
            .unwrap();
        assert!(out.status.success(), "dmtree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    dmtree(&a, &["context", "record", "--type", "usage", "-o", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 300);
    dmtree(&b, &["context", "play", file.to_str().unwrap()]);
    let at_a: BTreeSet<String> = all_events(&a.as_admin(), "usage").await.iter().map(|e| e.to_string()).collect();
    let at_b: BTreeSet<String> = all_events(&b.as_admin(), "usage").await.iter().map(|e| e.to_string()).collect();
    assert_eq!(at_a, at_b, "the same events, ids and timestamps included");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_and_stores_nothing() {
    let server = Server::start(&config_with(""));
    let admin = server.as_admin();
    assert_eq!(exec(&admin, "ingest", json!([{"sender": "s", "type": "ok", "payload": {}}])).await.status, 200);
    let bad = [
        json!([{"sender": "s", "type": "has space"}]),
        json!([{"sender": "s", "type": "fine"}, {"type": "missing-sender"}]),
        json!([{"sender": "s", "type": "fine", "timestamp": "yesterday"}]),
        json!({"not": "events"}),
    ];
    for body in bad {
        let r = exec(&admin, "ingest", body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_data"), "{body}");
    }
    assert!(all_events(&admin, "fine").await.is_empty(), "a refused batch stores nothing");
    let r = exec(&admin, "query", json!({"type": "never-seen"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_data"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("never-seen"));
    let r = exec(&admin, "query", json!({"type": "ok", "from": "2026-11-22T12:00:00Z", "to": "2026-11-22T11:00:00Z"}))
        .await;
    assert!(r.status == 400 && r.body["error"]["message"].as_str().unwrap().contains("reversed"));
    let zero = json!({"value": {"kind": "aggregate", "input": "ok", "keys": [], "value": "v", "window_s": 0}});
    let r = admin.put("/tree/contextstore/config/handlers/zero", zero).await;
    assert_eq!((r.status, r.code()), (400, "invalid_data"));
    assert_eq!(admin.get("/tree/contextstore/config/handlers/zero").await.status, 404, "nothing was configured");
    let r = server
        .as_alice()
        .send(server.as_alice().request(reqwest::Method::POST, "/exec/contextstore/ingest").json(&json!([])))
        .await;
    assert_eq!(r.code(), "permission_denied", "ingest needs Exec");
}

const SECRET_USAGE: &str = r#"
[contextstore.subscriptions.payroll]
pattern = "./config/vault/*/salary"
type = "payroll"
fields = ["person"]

[contextstore.handlers.payroll]
kind = "aggregate"
input = "payroll"
keys = ["person"]
value = "value"
window_s = 3600

[contextstore.subscriptions.team]
pattern = "./config/team/*/load"
type = "load"
fields = ["person"]

[contextstore.handlers.load]
kind = "aggregate"
input = "load"
keys = ["person"]
value = "value"
window_s = 3600

[contextstore.subscriptions.shared]
pattern = "./config/vault/*/hours"
type = "hours"
fields = ["person"]
acl = "Get=admin+alice"

[contextstore.handlers.hours]
kind = "aggregate"
input = "hours"
keys = ["person"]
value = "value"
window_s = 3600
"#;

/// Derived data keeps its source's read rights: the store may read a secret
/// subtree, but its aggregates (whose min and max are the secret values) are
/// readable only by who may read the source, or by who the subscription's
/// `acl` names.
#[tokio::test]
async fn aggregates_of_a_secret_subtree_stay_secret() {
    let server = Server::start(&with_database(false, SECRET_USAGE).await);
    let (admin, alice, anon) = (server.as_admin(), server.as_alice(), server.http());
    let secret = "Get=admin+contextstore&Add=admin&Replace=admin&Delete=admin";
    assert_eq!(admin.put("/tree/config/vault", json!({"acl": secret})).await.status / 100, 2);
    admin.put("/tree/config/vault/carol/salary", json!({"value": 123456})).await;
    admin.put("/tree/config/vault/carol/hours", json!({"value": 38})).await;
    wait_for("the aggregates", async || {
        admin.get("/tree/contextstore/aggregates/payroll/carol").await.status == 200
            && admin.get("/tree/contextstore/aggregates/hours/carol").await.status == 200
    })
    .await;
    let listed = |who: Http| async move {
        let body = who.get("/tree/contextstore/aggregates").await.body;
        body["children"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
    };
    // A `*` reaching a stricter subtree makes the whole derived set that strict.
    admin.put("/tree/config/team/boss", json!({"acl": secret})).await;
    admin.put("/tree/config/team/boss/load", json!({"value": 0.97})).await;
    admin.put("/tree/config/team/dev/load", json!({"value": 0.5})).await;
    wait_for("the load aggregates", async || admin.get("/tree/contextstore/aggregates/load/boss").await.status == 200)
        .await;
    assert_eq!(listed(admin.clone()).await, ["hours", "load", "payroll"]);
    assert_eq!(listed(alice.clone()).await, ["hours"], "alice is named by the hours subscription's acl");
    assert!(listed(anon.clone()).await.is_empty());
    assert_eq!(anon.get("/tree/contextstore/aggregates/load/boss").await.status, 404);
    for who in [&alice, &anon] {
        let r = who.get("/tree/contextstore/aggregates/payroll/carol?depth=3").await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(!r.body.to_string().contains("123456"));
    }
    let hours = alice.get("/tree/contextstore/aggregates/hours/carol?depth=3").await;
    assert!(hours.body.to_string().contains("38"), "{}", hours.body);
    // Loosening the source loosens what is derived from it: the rule is judged now.
    let open = "Get=*&Add=admin&Replace=admin&Delete=admin";
    assert_eq!(admin.put("/tree/config/vault", json!({"acl": open})).await.status / 100, 2);
    assert_eq!(anon.get("/tree/contextstore/aggregates/payroll/carol").await.status, 200);
}
