//! What survives `kill -9`: committed writes, atomic sessions (all or nothing),
//! ACLs, and the event journal with its revisions.

mod common;

use std::time::Duration;

use common::{Server, config_with};
use serde_json::json;

/// A server keeping its state with `durability` ("fsync" or "os").
fn start(durability: &str) -> Server {
    Server::start(&config_with(&format!("[config_store]\ndurability = \"{durability}\"\n")))
}

#[tokio::test]
async fn committed_writes_acls_and_revisions_survive_kill_9() {
    for durability in ["fsync", "os"] {
        writes_acls_and_revisions_survive_kill_9(start(durability)).await;
    }
}

async fn writes_acls_and_revisions_survive_kill_9(mut server: Server) {
    let admin = server.as_admin();
    for i in 0..50 {
        assert_eq!(admin.put(&format!("/tree/config/d/n{i}"), json!({"value": i})).await.status, 201);
    }
    admin.put("/tree/config/d/secret", json!({"value": 1, "acl": "Get=admin&Replace=admin&Delete=admin"})).await;
    let head = admin.get("/healthz").await.body["revision"].as_u64().unwrap();
    server.crash_and_restart();

    let admin = server.as_admin();
    for i in 0..50 {
        assert_eq!(admin.get(&format!("/tree/config/d/n{i}")).await.body["value"], i, "n{i} lost");
    }
    assert_eq!(server.as_alice().get("/tree/config/d/secret").await.code(), "permission_denied", "ACL lost");
    assert!(admin.get("/healthz").await.body["revision"].as_u64().unwrap() >= head, "revisions went backwards");
    // The journal replays across the restart, and new revisions continue after the old ones.
    let mut events = admin.events("?uri=./config/d/**&since=0", None).await;
    let first = events.next_json().await;
    assert_eq!((first["kind"].as_str(), first["uri"].as_str()), (Some("added"), Some("./config/d")));
    admin.put("/tree/config/d/after", json!({"value": 1})).await;
    let mut live = admin.events("?uri=./config/d/after", Some(head)).await;
    assert!(live.next_json().await["revision"].as_u64().unwrap() > head);
}

#[tokio::test]
async fn an_atomic_session_is_all_or_nothing_across_a_crash() {
    for durability in ["fsync", "os"] {
        atomic_session_is_all_or_nothing_across_a_crash(start(durability)).await;
    }
}

async fn atomic_session_is_all_or_nothing_across_a_crash(mut server: Server) {
    let admin = server.as_admin();
    admin.put("/tree/config/a/keep", json!({"value": "before"})).await;

    // Killed before commit: nothing of the session is kept.
    let s = admin.post("/sessions", json!({"root": "./config/a", "lock": "atomic"})).await;
    let id = s.body["id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        admin.put(&format!("/tree/config/a/pending{i}?session={id}"), json!({"value": i})).await;
    }
    admin.put(&format!("/tree/config/a/keep?session={id}"), json!({"value": "during"})).await;
    server.crash_and_restart();
    let admin = server.as_admin();
    let listing = admin.get("/tree/config/a").await.body;
    assert_eq!(listing["children"].as_object().unwrap().keys().collect::<Vec<_>>(), ["keep"]);
    assert_eq!(admin.get("/tree/config/a/keep").await.body["value"], "before");

    // Committed, then killed: everything is kept.
    let s = admin.post("/sessions", json!({"root": "./config/a", "lock": "atomic"})).await;
    let id = s.body["id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        admin.put(&format!("/tree/config/a/done{i}?session={id}"), json!({"value": i})).await;
    }
    let commit = admin.send(admin.request(reqwest::Method::POST, &format!("/sessions/{id}/commit"))).await;
    assert_eq!(commit.status, 204);
    server.crash_and_restart();
    let listing = server.as_admin().get("/tree/config/a").await.body;
    assert_eq!(listing["children"].as_object().unwrap().len(), 21);
}

/// Writes keep arriving on 32 connections while the server is killed at a
/// random moment, ten times, five in each durability mode: every write that
/// was acknowledged is there after the restart, and every node that is there
/// has its event in the journal (a change and its event are durable together).
#[tokio::test]
async fn acknowledged_writes_survive_a_kill_mid_burst() {
    for durability in ["fsync", "os"] {
        let mut server = start(durability);
        for round in 0..5u64 {
            let acked = burst_until_killed(&mut server, round).await;
            assert!(acked.len() > 32, "{durability} round {round}: the writers made progress ({})", acked.len());
            server.restart();
            let admin = server.as_admin();
            let listing = admin.get(&format!("/tree/config/m{round}")).await.body;
            let stored = listing["children"].as_object().cloned().unwrap_or_default();
            let lost: Vec<_> = acked.iter().filter(|i| !stored.contains_key(&format!("n{i}"))).collect();
            assert!(lost.is_empty(), "{durability} round {round}: acknowledged writes lost: {lost:?}");
            let mut replay = admin.events(&format!("?uri=./config/m{round}/*&since=0"), None).await;
            let journaled: std::collections::HashSet<String> = replay
                .drain(Duration::from_millis(300))
                .await
                .iter()
                .filter(|e| e["kind"] == "added")
                .map(|e| e["uri"].as_str().unwrap_or_default().to_owned())
                .collect();
            for name in stored.keys() {
                assert!(journaled.contains(&format!("./config/m{round}/{name}")), "{name} is stored but has no event");
            }
        }
    }
}

/// 32 writers PUT distinct leaves under `./config/m<round>` until a kill -9
/// at a moment that varies by round; returns the acknowledged ones.
async fn burst_until_killed(server: &mut Server, round: u64) -> Vec<u64> {
    let writers: Vec<_> = (0..32u64)
        .map(|w| {
            let admin = server.as_admin();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in (w..1_000_000).step_by(32) {
                    let r = admin
                        .request(reqwest::Method::PUT, &format!("/tree/config/m{round}/n{i}"))
                        .json(&json!({"value": i}))
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().as_u16() == 201 => acked.push(i),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400 + 70 * round)).await;
    server.kill9();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked
}

/// Writes that fail validation share the group commit with valid ones: the
/// valid ones commit, each invalid one gets its own 4xx and leaves nothing.
#[tokio::test]
async fn an_invalid_write_does_not_fail_its_batch() {
    let config = "[[config_store.schema]]\npattern = \"./config/v/*\"\nformats = [\"int\"]\nmax = 100\n";
    let server = Server::start(&config_with(config));
    let writes: Vec<_> = (0..64u64)
        .map(|i| {
            let admin = server.as_admin();
            // Every fourth write is out of range.
            let value = if i % 4 == 0 { 1_000 + i } else { i };
            tokio::spawn(async move { (i, admin.put(&format!("/tree/config/v/n{i}"), json!({"value": value})).await) })
        })
        .collect();
    for w in writes {
        let (i, r) = w.await.unwrap();
        if i % 4 == 0 {
            assert!((400..500).contains(&r.status), "n{i}: {} {}", r.status, r.body);
            assert_eq!(r.body["error"]["code"], "metadata_mismatch", "{}", r.body);
        } else {
            assert_eq!(r.status, 201, "n{i}: {}", r.body);
        }
    }
    let listing = server.as_admin().get("/tree/config/v").await.body;
    let stored = listing["children"].as_object().unwrap();
    assert_eq!(stored.len(), 48);
    assert!((0..64u64).filter(|i| i % 4 == 0).all(|i| !stored.contains_key(&format!("n{i}"))));
}

#[tokio::test]
async fn first_start_without_tokens_writes_a_private_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start_bare();
    let path = server.data_dir().join("admin.token");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let r = server.http().token(&token).put("/tree/config/x", json!({"value": 1})).await;
    assert_eq!(r.status, 201);
    assert_eq!(server.http().put("/tree/config/y", json!({"value": 1})).await.status, 401);
}

/// Clients that hang up mid-write must not wedge the store: a write, once
/// started, runs to commit or rollback whatever its client does.
#[tokio::test]
async fn abandoned_requests_leave_the_store_usable() {
    let server = Server::start(&config_with(""));
    let admin = server.as_admin();
    // Each PATCH commits 500 leaves, so hang-ups land inside commits.
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let leaves: serde_json::Map<_, _> = (0..500).map(|j| (format!("p{i}/n{j}"), json!(j))).collect();
        let req = admin
            .request(reqwest::Method::PATCH, "/tree/config/abandoned")
            .json(&leaves)
            .timeout(Duration::from_micros(500 + (i % 20) * 1_000));
        tasks.push(tokio::spawn(req.send()));
    }
    for t in tasks {
        let _ = t.await;
    }
    for i in 0..20 {
        let r = admin.put(&format!("/tree/config/after/n{i}"), json!({"value": i})).await;
        assert_eq!(r.status, 201, "the store is wedged: {}", r.body);
    }
    let listing = admin.get("/tree/config/abandoned?depth=2").await.body;
    for (name, batch) in listing["children"].as_object().into_iter().flatten() {
        let n = batch["children"].as_object().map_or(0, |c| c.len());
        assert_eq!(n, 500, "PATCH {name} was half applied");
    }
}
