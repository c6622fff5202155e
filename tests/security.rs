//! The ACL invariant end to end, against the real binary: no principal learns
//! anything about a node it may not read, through events (live or replayed),
//! write answers, preconditions or sessions. Each case is a hole an outside
//! probe found; each fails on the code before the fix.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::{Server, config_with};
use serde_json::{Value, json};

static SERVER: LazyLock<Server> = LazyLock::new(|| Server::start(&config_with("")));

const SECRET_ACL: &str = "Get=admin&Replace=admin&Delete=admin";

fn values(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e.to_string()).collect()
}

#[tokio::test]
async fn a_renamed_or_deleted_secret_never_reaches_others_live_or_replayed() {
    let admin = SERVER.as_admin();
    let start: u64 = admin.get("/tree/system/revision").await.body["value"].as_u64().unwrap();
    let mut anon_live = SERVER.http().events("?uri=./config/pub2/**", None).await;
    admin.put("/tree/config/pub2/s", json!({"value": "SECRET1", "acl": SECRET_ACL})).await;
    admin.put("/tree/config/pub2/s", json!({"value": "SECRET2"})).await;
    let r = admin.post("/tree/config/pub2/s?action=rename", json!({"name": "s2"})).await;
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(admin.delete("/tree/config/pub2/s2").await.status, 204);
    admin.put("/tree/config/pub2/open", json!({"value": "public"})).await;

    let live = anon_live.drain(Duration::from_millis(500)).await;
    let by_since = SERVER
        .http()
        .events(&format!("?uri=./config/pub2/**&since={start}"), None)
        .await
        .drain(Duration::from_millis(300))
        .await;
    let by_id =
        SERVER.as_alice().events("?uri=./config/pub2/**", Some(start)).await.drain(Duration::from_millis(300)).await;
    for (how, seen) in [("live", &live), ("since", &by_since), ("Last-Event-ID", &by_id)] {
        let text = values(seen).join("\n");
        assert!(!text.contains("SECRET") && !text.contains("pub2/s"), "{how} leaked:\n{text}");
        assert!(text.contains("public"), "{how} still delivers what may be read:\n{text}");
    }
    let all = admin
        .events(&format!("?uri=./config/pub2/**&since={start}"), None)
        .await
        .drain(Duration::from_millis(300))
        .await;
    assert!(values(&all).join("\n").contains("SECRET2"), "admin may read its own secret's history");
}

/// One write sets a secret value and a strict ACL together; the ACL is then
/// opened. That write's events carry the ACL it left (computed before the
/// commit, stamped as the writer journals them), so neither replay nor a
/// late subscriber ever sees the value written while the node was strict.
#[tokio::test]
async fn a_value_written_under_a_strict_acl_stays_secret_after_the_acl_opens() {
    let admin = SERVER.as_admin();
    let start: u64 = admin.get("/tree/system/revision").await.body["value"].as_u64().unwrap();
    admin.put("/tree/config/pub3/s", json!({"value": "SECRET3", "acl": SECRET_ACL})).await;
    let open = admin.put("/tree/config/pub3/s", json!({"acl": "Get=*&Replace=admin&Delete=admin"})).await;
    assert!(open.status < 300, "{}", open.body);
    admin.put("/tree/config/pub3/s", json!({"value": "public3"})).await;
    let replayed = SERVER
        .http()
        .events(&format!("?uri=./config/pub3/**&since={start}"), None)
        .await
        .drain(Duration::from_millis(300))
        .await;
    let text = values(&replayed).join("\n");
    assert!(!text.contains("SECRET3"), "replay leaked the value written while strict:\n{text}");
    assert!(text.contains("public3"), "what was written after the ACL opened is delivered:\n{text}");
}

#[tokio::test]
async fn a_copied_secret_stays_secret() {
    let admin = SERVER.as_admin();
    admin.put("/tree/config/vault/key", json!({"value": "K", "acl": SECRET_ACL})).await;
    admin.put("/tree/config/public", json!({})).await;
    let r = admin.post("/tree/config/vault/key?action=copy", json!({"to": "./config/public/key"})).await;
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(SERVER.http().get("/tree/config/public/key").await.code(), "authentication_required");
    assert_eq!(SERVER.as_alice().get("/tree/config/public/key").await.status, 403);
    assert_eq!(admin.get("/tree/config/public/key").await.body["value"], "K");
}

#[tokio::test]
async fn writes_reveal_neither_existence_nor_versions() {
    let admin = SERVER.as_admin();
    admin.put("/tree/config/hidden/s", json!({"value": 1, "acl": SECRET_ACL})).await;
    let version = admin.get("/tree/config/hidden/s").await.headers["etag"].to_str().unwrap().to_owned();
    for who in [SERVER.http(), SERVER.as_alice()] {
        let empty = who.put("/tree/config/hidden/s", json!({})).await;
        assert!(matches!(empty.status, 401 | 403), "PUT {{}}: {} {}", empty.status, empty.body);
        assert!(empty.body.get("version").is_none());
        let mut statuses = Vec::new();
        for etag in [version.as_str(), "\"999999\""] {
            let put = who
                .request(reqwest::Method::PUT, "/tree/config/hidden/s")
                .header("If-Match", etag)
                .json(&json!({"value": 2}));
            statuses.push(who.send(put).await.status);
            let del = who.request(reqwest::Method::DELETE, "/tree/config/hidden/s").header("If-Match", etag);
            statuses.push(who.send(del).await.status);
        }
        assert!(
            statuses.iter().all(|s| *s == statuses[0] && *s != 412),
            "preconditions after permissions: {statuses:?}"
        );
        let there = who.delete("/tree/config/hidden/s").await;
        let missing = who.delete("/tree/config/hidden/nothing").await;
        assert_eq!((there.status, there.code()), (missing.status, missing.code()), "existing and missing answer alike");
    }
    assert_eq!(admin.get("/tree/config/hidden/s").await.body["value"], 1);
}

#[tokio::test]
async fn sessions_are_for_named_writers_and_visible_only_to_their_owner() {
    let (admin, alice, anon) = (SERVER.as_admin(), SERVER.as_alice(), SERVER.http());
    let refused = anon.post("/sessions", json!({"root": ".", "lock": "shared"})).await;
    assert_eq!((refused.status, refused.code()), (401, "authentication_required"));
    for lock in ["exclusive", "atomic"] {
        let r = alice.post("/sessions", json!({"root": "./config", "lock": lock})).await;
        assert_eq!((r.status, r.code()), (403, "permission_denied"), "alice may only read ./config");
    }
    let shared = alice.post("/sessions", json!({"root": ".", "lock": "shared"})).await;
    assert_eq!(shared.status, 201, "{}", shared.body);
    let id = shared.body["id"].as_str().unwrap().to_owned();
    // A shared session over the whole tree blocks no writer.
    let started = std::time::Instant::now();
    assert!(admin.put("/tree/config/during_shared", json!({"value": 1})).await.status < 300);
    assert!(started.elapsed() < Duration::from_secs(2));

    let listed = |who: common::Http| async move {
        who.get("/tree/sessions?depth=1").await.body["children"]
            .as_object()
            .map(|c| c.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(!listed(anon.clone()).await.contains(&id), "anonymous readers see no sessions");
    assert!(listed(alice.clone()).await.contains(&id));
    assert!(listed(admin.clone()).await.contains(&id), "admin sees every session");
    assert_eq!(anon.get(&format!("/tree/sessions/{id}/principal")).await.status, 404);
    assert!(matches!(anon.delete(&format!("/sessions/{id}")).await.status, 401 | 404));
    assert_eq!(SERVER.http().token("nobody").delete(&format!("/sessions/{id}")).await.status, 401);
    assert_eq!(admin.delete(&format!("/sessions/{id}")).await.status, 204, "admin may end it");
}

/// A leaked token is revoked by admin with one command: refused at once, and
/// after a restart too, although it is still in the configuration file.
#[tokio::test]
async fn a_revoked_token_is_refused_at_once_and_after_a_restart() {
    let mut server = Server::start(&config_with(""));
    let (admin, alice) = (server.as_admin(), server.as_alice());
    assert_eq!(alice.put("/tree/config/mine", json!({"value": 1})).await.status, 403, "a valid token, no rights");
    let listed = admin.get("/tree/system/tokens?depth=2").await;
    assert_eq!(listed.body["children"].as_object().map(|c| c.len()), Some(2), "{}", listed.body);
    assert_eq!(server.as_alice().get("/tree/system/tokens").await.status, 403, "only admin sees tokens");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(["--server", &server.base, "--token", common::ADMIN, "token", "revoke", common::ALICE])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(alice.get("/tree/config").await.status, 401);
    server.crash_and_restart();
    assert_eq!(server.as_alice().get("/tree/config").await.status, 401, "still revoked");
    assert_eq!(server.as_admin().get("/tree/config").await.status, 200);
}

/// Integers a 64-bit int cannot hold are refused, not rounded into floats.
#[tokio::test]
async fn integers_beyond_64_bits_are_refused_not_rounded() {
    let admin = SERVER.as_admin();
    for literal in ["9223372036854775808", "-9223372036854775809", "123456789012345678901234567890"] {
        let body = format!("{{\"value\": {literal}}}");
        let put = admin
            .request(reqwest::Method::PUT, "/tree/config/big")
            .header("content-type", "application/json")
            .body(body);
        let r = admin.send(put).await;
        assert_eq!((r.status, r.code()), (400, "invalid_json"), "{literal}: {}", r.body);
    }
    assert_eq!(admin.get("/tree/config/big").await.status, 404, "nothing was stored");
    let max = admin.put("/tree/config/big", json!({"value": i64::MAX})).await;
    assert_eq!(max.status, 201);
    assert_eq!(admin.get("/tree/config/big").await.body["value"], json!(i64::MAX));
}

/// Slow clients cannot hold the listener: a connection that sends no request
/// headers is closed after `header_timeout_ms`, connections past the cap are
/// closed at once, and a real client is served as soon as the slow ones are gone.
#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limits = "[http]\nmax_connections = 16\nheader_timeout_ms = 400\nbody_timeout_ms = 400\n";
    let server = Server::start(&config_with(limits));
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A client that sends headers, then never its body.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"PUT /tree/config/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let served = server.http().get("/tree/config").await;
    assert_eq!(served.status, 200, "served once the slow clients are gone");
    let mut closed = 0;
    for mut c in idle {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 40, "every idle connection was closed by the server");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stalled.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 4"), "a stalled body is refused: {text}");
    assert_eq!(server.as_admin().get("/tree/config/slow").await.status, 404, "nothing was written");
}

/// Found by the second probe: `Add=*` on ./subscriptions let anyone lock it
/// (and, with it, every write whose scope is the root); a caller without
/// rights waited on another's lock and so learnt where it was.
#[tokio::test]
async fn locks_need_replace_and_the_unentitled_never_wait_on_them() {
    let (admin, alice, anon) = (SERVER.as_admin(), SERVER.as_alice(), SERVER.http());
    let r = alice.post("/sessions", json!({"root": "./subscriptions", "lock": "exclusive"})).await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"), "{}", r.body);
    admin.put("/tree/config/locked", json!({})).await;
    let held = admin.post("/sessions", json!({"root": "./config/locked", "lock": "exclusive"})).await;
    assert_eq!(held.status, 201, "{}", held.body);
    for who in [&anon, &alice] {
        let started = std::time::Instant::now();
        let r = who.put("/tree/config/locked/x", json!({"value": 1})).await;
        assert!(matches!(r.code(), "authentication_required" | "permission_denied"), "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not after the lock timeout");
    }
    let id = held.body["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.delete(&format!("/sessions/{id}")).await.status, 204);
}

/// Subscriptions are announced to their owner (and admin) only.
#[tokio::test]
async fn subscription_events_reach_only_their_owner() {
    let (admin, alice) = (SERVER.as_admin(), SERVER.as_alice());
    let start: u64 = admin.get("/tree/system/revision").await.body["value"].as_u64().unwrap();
    let made = admin
        .post("/tree/subscriptions", json!({"id": "adminsfeed", "pattern": "./config/**", "transport": "sse"}))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(admin.delete("/tree/subscriptions/adminsfeed").await.status, 204);
    let query = format!("?uri=./subscriptions/**&since={start}");
    let seen = alice.events(&query, None).await.drain(Duration::from_millis(300)).await;
    assert!(!values(&seen).join("").contains("adminsfeed"), "{seen:?}");
    let own = admin.events(&query, None).await.drain(Duration::from_millis(300)).await;
    assert_eq!(own.iter().filter(|e| e["uri"] == "./subscriptions/adminsfeed").count(), 2, "{own:?}");
}

/// Handler configurations hold credentials: readable by admin only, and so
/// are the events that carry them.
#[tokio::test]
async fn credentials_in_handler_configuration_stay_with_admin() {
    let (admin, anon) = (SERVER.as_admin(), SERVER.http());
    let start: u64 = admin.get("/tree/system/revision").await.body["value"].as_u64().unwrap();
    let target = json!({"value": {"url": "http://127.0.0.1:9/", "token": "dmt_SECRETTOKEN", "types": ["x"]}});
    let r = admin.put("/tree/contextstore/config/propagation/p1", target).await;
    assert!(r.status < 300, "{}", r.body);
    let read = anon.get("/tree/contextstore/config?depth=3").await;
    assert!(!read.body.to_string().contains("SECRETTOKEN"), "{}", read.body);
    let events = anon.events(&format!("?uri=./**&since={start}"), None).await.drain(Duration::from_millis(300)).await;
    assert!(!values(&events).join("").contains("SECRETTOKEN"));
    assert_eq!(admin.delete("/tree/contextstore/config/propagation/p1").await.status, 204);
}

/// Event streams hold a connection each: one principal (all anonymous callers
/// together) holds at most `max_streams_per_principal`; others are unaffected.
#[tokio::test]
async fn event_streams_are_capped_per_principal() {
    let server = Server::start(&config_with("[http]\nmax_streams_per_principal = 3\n"));
    let anon = server.http();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(anon.events("?uri=./config/**", None).await);
    }
    let refused = anon.get("/events?uri=./config/**").await;
    assert_eq!((refused.status, refused.code()), (429, "too_many_streams"), "{}", refused.body);
    let _admins = server.as_admin().events("?uri=./config/**", None).await;
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _again = anon.events("?uri=./config/**", None).await;
}

/// A write's cost to the one writer is bounded: a transaction may write at
/// most `max_write_nodes` nodes, counting every node a copy or rename moves
/// and everything an atomic session staged (found by a probe: copies that
/// doubled a subtree each time stalled every other writer for seconds).
#[tokio::test]
async fn writes_larger_than_the_limit_are_refused_before_they_cost_the_writer() {
    let server = Server::start(&config_with("[tree]\nmax_write_nodes = 100\n"));
    let admin = server.as_admin();
    let leaves = |n: u64| Value::Object((0..n).map(|i| (format!("n{i}"), json!(i))).collect());
    let r = admin.patch("/tree/config/big", leaves(101)).await;
    assert_eq!((r.status, r.code()), (413, "limit_exceeded"), "{}", r.body);
    assert_eq!(admin.get("/tree/config/big").await.status, 404, "nothing of it was kept");
    assert_eq!(admin.patch("/tree/config/big/a", leaves(60)).await.status, 200);
    let r = admin.post("/tree/config/big/a?action=copy", json!({"to": "./config/big/b"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin.post("/tree/config/big?action=copy", json!({"to": "./config/big2"})).await;
    assert_eq!((r.status, r.code()), (413, "limit_exceeded"), "122 nodes: {}", r.body);
    let r = admin.post("/tree/config/big?action=rename", json!({"name": "moved"})).await;
    assert_eq!((r.status, r.code()), (413, "limit_exceeded"), "{}", r.body);

    admin.put("/tree/config/staged/keep", json!({"value": 1})).await;
    let s = admin.post("/sessions", json!({"root": "./config/staged", "lock": "atomic"})).await;
    let id = s.body["id"].as_str().expect("a session").to_owned();
    assert_eq!(admin.patch(&format!("/tree/config/staged/x?session={id}"), leaves(60)).await.status, 200);
    let r = admin.patch(&format!("/tree/config/staged/y?session={id}"), leaves(60)).await;
    assert_eq!((r.status, r.code()), (413, "limit_exceeded"), "a session's writes add up: {}", r.body);
    let listing = admin.get("/tree/config/staged").await.body;
    assert_eq!(listing["children"].as_object().unwrap().keys().collect::<Vec<_>>(), ["keep"], "rolled back");
}
