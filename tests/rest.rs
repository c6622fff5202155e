//! The REST API end to end, against one `dmtree serve` process shared by the tests.

mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{Server, config_with};
use reqwest::Method;
use serde_json::{Value, json};

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    Server::start(&config_with(
        r#"
max_body_bytes = 65536

[tree]
lock_timeout = 300

[[config_store.schema]]
pattern = "./config/limits/*"
formats = ["int"]
min = 0
max = 100

[[mounts]]
id = "scratch"
at = "./scratch"
handler = "memory"
"#,
    ))
});

#[tokio::test]
async fn openapi_is_served_and_matches_the_committed_file() {
    let resp = reqwest::get(SERVER.url("/openapi.yaml")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let served = resp.text().await.unwrap();
    let committed = include_str!("../openapi.yaml");
    assert!(served == committed, "openapi.yaml is stale: run `cargo run --bin dmtree -- openapi > openapi.yaml`");
}

#[tokio::test]
async fn anonymous_reads_and_writes_need_a_token() {
    let anon = SERVER.http();
    let r = anon.put("/tree/config/t_auth/x", json!({"value": 1})).await;
    assert_eq!((r.status, r.code()), (401, "authentication_required"));
    assert!(r.headers.get("www-authenticate").is_some());
    let r = anon.clone().token("not-a-token").get("/tree/config").await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = SERVER.as_admin().put("/tree/config/t_auth/x", json!({"value": 1})).await;
    assert_eq!(r.status, 201);
    let r = anon.get("/tree/config/t_auth/x").await;
    assert_eq!((r.status, &r.body["value"]), (200, &json!(1)));
    let r = SERVER.as_alice().put("/tree/config/t_auth/x", json!({"value": 2})).await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"));
}

#[tokio::test]
async fn whoami_names_the_principal_a_token_resolves_to() {
    let who = |r: common::Reply| (r.status, r.body);
    assert_eq!(who(SERVER.http().get("/whoami").await), (200, json!({"principal": null, "admin": false})));
    assert_eq!(who(SERVER.as_alice().get("/whoami").await), (200, json!({"principal": "alice", "admin": false})));
    assert_eq!(who(SERVER.as_admin().get("/whoami").await), (200, json!({"principal": "admin", "admin": true})));
    let r = SERVER.http().token("not-a-token").get("/whoami").await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

#[tokio::test]
async fn leaf_and_interior_shapes_with_inferred_and_explicit_formats() {
    let admin = SERVER.as_admin();
    let cases = [
        (json!({"value": 42}), "int", json!(42)),
        (json!({"value": 1.5}), "float", json!(1.5)),
        (json!({"value": true}), "bool", json!(true)),
        (json!({"value": "hi"}), "string", json!("hi")),
        (json!({"value": {"a": [1]}}), "json", json!({"a": [1]})),
        (json!({"value": null}), "null", Value::Null),
        (json!({"value": "2026-11-22", "format": "date"}), "date", json!("2026-11-22")),
        (json!({"value": "12:30:00", "format": "time"}), "time", json!("12:30:00")),
        (
            json!({"value": "2026-11-22T10:00:00+01:00", "format": "datetime"}),
            "datetime",
            json!("2026-11-22T09:00:00Z"),
        ),
        (json!({"value": "aGVsbG8=", "format": "binary"}), "binary", json!("aGVsbG8=")),
        (json!({"value": "aGVsbG8=", "format": "base64"}), "base64", json!("aGVsbG8=")),
    ];
    for (i, (body, format, value)) in cases.iter().enumerate() {
        let path = format!("/tree/config/t_shapes/v{i}");
        assert_eq!(admin.put(&path, body.clone()).await.status, 201, "{body}");
        let r = admin.get(&path).await;
        assert_eq!(r.body["uri"], format!("./config/t_shapes/v{i}"));
        assert_eq!(r.body["kind"], "leaf");
        assert_eq!(r.body["format"], *format, "{body}");
        assert_eq!(r.body["value"], *value, "{body}");
    }
    let r = admin.get("/tree/config/t_shapes").await;
    assert_eq!((r.body["uri"].as_str(), r.body["kind"].as_str()), (Some("./config/t_shapes"), Some("interior")));
    assert_eq!(r.body["children"].as_object().unwrap().len(), cases.len());
    assert_eq!(r.body["children"]["v0"]["value"], 42);
    // A name with a slash is one segment: %2F over HTTP, \/ in the URI.
    assert_eq!(admin.put("/tree/config/t_shapes/a%2Fb", json!({"value": 1})).await.status, 201);
    assert_eq!(admin.get("/tree/config/t_shapes/a%2Fb").await.body["uri"], r"./config/t_shapes/a\/b");
}

/// Every malformed request gets its 4xx and JSON error, and leaves nothing behind.
#[tokio::test]
async fn bad_input_is_a_json_4xx_and_creates_nothing() {
    let admin = SERVER.as_admin();
    let long = "a/".repeat(70) + "x";
    let big = json!({"value": "x".repeat(70_000)});
    /// Method, path, body, expected status and code.
    type Case = (Method, String, Option<Vec<u8>>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (Method::PUT, "/tree/config/t_bad//x".into(), Some(br#"{"value":1}"#.to_vec()), 400, "invalid_uri"),
        (Method::PUT, "/tree/config/t_bad/%ZZ".into(), Some(br#"{"value":1}"#.to_vec()), 400, "invalid_uri"),
        (Method::GET, format!("/tree/config/{long}"), None, 414, "uri_too_long"),
        (
            Method::PUT,
            format!("/tree/config/t_bad/{}", "n".repeat(300)),
            Some(br#"{"value":1}"#.to_vec()),
            414,
            "uri_too_long",
        ),
        (Method::PUT, "/tree/config/t_bad/x".into(), Some(b"{\"value\": ".to_vec()), 400, "invalid_json"),
        (Method::PUT, "/tree/config/t_bad/x".into(), Some(b"[1,2]".to_vec()), 400, "invalid_json"),
        (Method::PUT, "/tree/config/t_bad/x".into(), Some(br#"{"valeu": 1}"#.to_vec()), 400, "invalid_json"),
        (
            Method::PUT,
            "/tree/config/t_bad/x".into(),
            Some(br#"{"value": "x", "format": "int"}"#.to_vec()),
            400,
            "invalid_data",
        ),
        (
            Method::PUT,
            "/tree/config/t_bad/x".into(),
            Some(br#"{"value": 1, "format": "integer"}"#.to_vec()),
            400,
            "invalid_data",
        ),
        (
            Method::PUT,
            "/tree/config/t_bad/x".into(),
            Some(br#"{"value": "not-a-date", "format": "date"}"#.to_vec()),
            400,
            "invalid_data",
        ),
        (
            Method::PUT,
            "/tree/config/t_bad/x".into(),
            Some(br#"{"value": 1, "children": {}}"#.to_vec()),
            400,
            "invalid_data",
        ),
        (
            Method::PUT,
            "/tree/config/t_bad/x".into(),
            Some(br#"{"value": 1, "acl": "Read=*"}"#.to_vec()),
            400,
            "invalid_data",
        ),
        (Method::PUT, "/tree/config/t_bad/x".into(), Some(serde_json::to_vec(&big).unwrap()), 413, "body_too_large"),
        (
            Method::PUT,
            "/tree/config/limits/t_bad".into(),
            Some(br#"{"value": 101}"#.to_vec()),
            422,
            "metadata_mismatch",
        ),
        (
            Method::PUT,
            "/tree/config/limits/t_bad".into(),
            Some(br#"{"value": "ten"}"#.to_vec()),
            422,
            "metadata_mismatch",
        ),
        (Method::PUT, "/tree/system/version".into(), Some(br#"{"value": 1}"#.to_vec()), 405, "command_not_allowed"),
        (Method::POST, "/exec/config".into(), None, 405, "command_not_allowed"),
        (Method::GET, "/tree/config/t_bad/missing".into(), None, 404, "node_not_found"),
        (Method::GET, "/tree/config?depth=-1".into(), None, 400, "invalid_parameter"),
        (Method::GET, "/tree/config?dpeth=1".into(), None, 400, "invalid_parameter"),
        (
            Method::PUT,
            "/tree/config/t_bad/x?session=nope".into(),
            Some(br#"{"value":1}"#.to_vec()),
            404,
            "session_not_found",
        ),
        (Method::POST, "/sessions/nope/commit".into(), None, 404, "session_not_found"),
        (
            Method::POST,
            "/sessions".into(),
            Some(br#"{"root": "./config", "lock": "sometimes"}"#.to_vec()),
            400,
            "invalid_parameter",
        ),
        (
            Method::POST,
            "/sessions".into(),
            Some(br#"{"root": "config", "lock": "shared"}"#.to_vec()),
            400,
            "invalid_uri",
        ),
        (Method::GET, "/events?uri=./a/**/b".into(), None, 400, "invalid_uri"),
        (Method::GET, "/events?since=yesterday".into(), None, 400, "invalid_parameter"),
        (Method::GET, "/nowhere".into(), None, 404, "route_not_found"),
        (Method::DELETE, "/healthz".into(), None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let mut req = admin.request(method.clone(), &path);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = admin.send(req).await;
        assert_eq!((r.status, r.code()), (status, code), "{method} {}", &path[..path.len().min(80)]);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {}", r.body);
    }
    for path in ["/tree/config/t_bad/../x", "/tree/config/%2E%2E/x", "/tree/./config"] {
        let (status, body) = common::raw_request(&SERVER.base, "GET", path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_uri")), "{path}");
    }
    let r = admin.get("/tree/config/t_bad").await;
    assert_eq!(r.status, 404, "a failed write must not leave ancestors behind: {}", r.body);
    assert_eq!(admin.get("/tree/config/limits/t_bad").await.status, 404);
    let r = SERVER.http().token("bogus").put("/tree/config/t_bad/x", json!({"value": 1})).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

#[tokio::test]
async fn etags_and_conditional_requests() {
    let admin = SERVER.as_admin();
    let r = admin.put("/tree/config/t_etag/x", json!({"value": 1})).await;
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    let r = admin.get("/tree/config/t_etag/x").await;
    assert_eq!(r.headers["etag"].to_str().unwrap(), etag);
    assert!(r.headers.contains_key("last-modified"));
    let r = admin.send(admin.request(Method::GET, "/tree/config/t_etag/x").header("if-none-match", &etag)).await;
    assert_eq!(r.status, 304);
    let parent_before = admin.get("/tree/config/t_etag").await.headers["etag"].clone();

    let stale =
        admin.request(Method::PUT, "/tree/config/t_etag/x").header("if-match", "\"1\"").json(&json!({"value": 2}));
    let r = admin.send(stale).await;
    assert_eq!((r.status, r.code()), (412, "precondition_failed"));
    assert_eq!(admin.get("/tree/config/t_etag/x").await.body["value"], 1);
    let fresh =
        admin.request(Method::PUT, "/tree/config/t_etag/x").header("if-match", &etag).json(&json!({"value": 2}));
    let r = admin.send(fresh).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
    assert_ne!(
        admin.get("/tree/config/t_etag").await.headers["etag"],
        parent_before,
        "a child's change changes its parent's ETag"
    );

    let create_only =
        admin.request(Method::PUT, "/tree/config/t_etag/x").header("if-none-match", "*").json(&json!({"value": 3}));
    assert_eq!(admin.send(create_only).await.status, 412);
    let stale_delete = admin.request(Method::DELETE, "/tree/config/t_etag/x").header("if-match", &etag);
    assert_eq!(admin.send(stale_delete).await.status, 412);
    // HEAD is GET without the body.
    let head = admin.request(Method::HEAD, "/tree/config/t_etag/x").send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key("etag"));
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn depth_props_and_fields() {
    let admin = SERVER.as_admin();
    let tree = json!({"children": {"a": {"children": {"x": {"value": 1}, "y": {"value": 2}}}, "b": {"value": "b"}}});
    assert_eq!(admin.put("/tree/config/t_depth", tree).await.status, 201);
    let r = admin.get("/tree/config/t_depth").await;
    assert!(r.body["children"]["a"].get("children").is_none(), "depth 1 by default");
    let r = admin.get("/tree/config/t_depth?depth=0").await;
    assert!(r.body.get("children").is_none());
    let r = admin.get("/tree/config/t_depth?depth=unbounded&props=true").await;
    assert_eq!(r.body["children"]["a"]["children"]["y"]["value"], 2);
    let props = &r.body["children"]["b"]["props"];
    assert_eq!((props["format"].as_str(), props["size"].as_u64()), (Some("string"), Some(1)));
    assert!(props["version"].as_u64().unwrap() > 0 && props["timestamp"].is_string());
    assert_eq!(props["effective_acl"], "Add=admin&Delete=admin&Exec=admin&Get=*&Replace=admin");
    let r = admin.get("/tree/config/t_depth?depth=2&fields=a/x").await;
    let children = r.body["children"].as_object().unwrap();
    assert_eq!(children.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(r.body["children"]["a"]["children"].as_object().unwrap().keys().collect::<Vec<_>>(), ["x"]);
    let props = json!({"title": "A node", "type": "text/plain"});
    assert_eq!(admin.put("/tree/config/t_depth/b", props).await.status, 200);
    let r = admin.get("/tree/config/t_depth/b?props").await;
    assert_eq!(
        (r.body["props"]["title"].as_str(), r.body["props"]["type"].as_str()),
        (Some("A node"), Some("text/plain"))
    );
    assert_eq!(r.body["value"], "b", "setting properties keeps the value");
}

#[tokio::test]
async fn post_patch_rename_copy_and_delete() {
    let admin = SERVER.as_admin();
    assert_eq!(admin.put("/tree/config/t_ops", json!({})).await.status, 201);
    let r = admin.post("/tree/config/t_ops", json!({"name": "n1", "value": 1})).await;
    assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (201, "/tree/config/t_ops/n1"));
    let r = admin.post("/tree/config/t_ops", json!({"value": 2})).await;
    assert_eq!(r.status, 201);
    let generated = r.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(admin.get(&generated).await.body["value"], 2);
    assert_eq!(admin.post("/tree/config/t_ops", json!({"name": "n1", "value": 1})).await.code(), "node_already_exists");
    assert_eq!(
        admin.post("/tree/config/t_ops/missing", json!({"name": "x", "value": 1})).await.code(),
        "node_not_found"
    );

    let r = admin.patch("/tree/config/t_ops", json!({"n1": 10, "deep/er": {"value": "x", "format": "string"}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(admin.get("/tree/config/t_ops/n1").await.body["value"], 10);
    assert_eq!(admin.get("/tree/config/t_ops/deep/er").await.body["value"], "x");
    let r = admin.patch("/tree/config/t_ops", json!({"n1": 11, "n1/under-a-leaf": 1})).await;
    assert_eq!(r.status, 405);
    assert_eq!(admin.get("/tree/config/t_ops/n1").await.body["value"], 10, "PATCH is all or nothing");

    let r = admin
        .send(admin.request(Method::POST, "/tree/config/t_ops/deep?action=rename").json(&json!({"name": "deeper"})))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(admin.get("/tree/config/t_ops/deeper/er").await.body["value"], "x");
    let r = admin
        .send(
            admin
                .request(Method::POST, "/tree/config/t_ops/deeper?action=copy")
                .json(&json!({"to": "./config/t_ops/copy"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(admin.get("/tree/config/t_ops/copy/er").await.body["value"], "x");
    assert_eq!(admin.delete("/tree/config/t_ops/deeper").await.status, 204);
    assert_eq!(admin.get("/tree/config/t_ops/deeper").await.status, 404);
    assert_eq!(admin.delete("/tree/config/t_ops/deeper").await.code(), "node_not_found");
    assert_eq!(admin.delete("/tree/config").await.code(), "command_not_allowed", "a mount point is not deleted");
}

#[tokio::test]
async fn overlapping_exclusive_sessions_wait_then_conflict() {
    let admin = SERVER.as_admin();
    admin.put("/tree/config/t_lock/sub/x", json!({"value": 1})).await;
    let a = admin.post("/sessions", json!({"root": "./config/t_lock", "lock": "exclusive"})).await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let b = admin
        .post("/sessions", json!({"root": "./config/t_lock/sub", "lock": "exclusive", "lock_timeout_ms": 400}))
        .await;
    assert_eq!((b.status, b.code()), (409, "concurrent_access"));
    assert!(started.elapsed() >= Duration::from_millis(400), "the second session waited for the lock");
    let r = admin.put("/tree/config/t_lock/sub/x", json!({"value": 2})).await;
    assert_eq!((r.status, r.code()), (409, "concurrent_access"), "writes outside the session wait too");
    let r = admin.put(&format!("/tree/config/t_lock/sub/x?session={id}"), json!({"value": 3})).await;
    assert_eq!(r.status, 200, "the session itself writes");
    let r = admin.put(&format!("/tree/config/other?session={id}"), json!({"value": 3})).await;
    assert_eq!((r.status, r.code()), (400, "outside_session"));
    let r = SERVER.as_alice().put(&format!("/tree/config/t_lock/sub/x?session={id}"), json!({"value": 4})).await;
    assert_eq!(r.code(), "permission_denied", "alice may not write there, in any session");
    let r = SERVER.as_alice().get(&format!("/tree/config/t_lock/sub/x?session={id}")).await;
    assert_eq!(r.code(), "session_not_found", "sessions belong to their principal");
    assert!(admin.get("/tree/sessions").await.body["children"].get(&id).is_some());
    assert_eq!(admin.delete(&format!("/sessions/{id}")).await.status, 204);
    let b = admin.post("/sessions", json!({"root": "./config/t_lock/sub", "lock": "exclusive"})).await;
    assert_eq!(b.status, 201);
    admin.delete(&format!("/sessions/{}", b.body["id"].as_str().unwrap())).await;
    let shared = SERVER.http().post("/sessions", json!({"root": "./config", "lock": "exclusive"})).await;
    assert_eq!(shared.code(), "authentication_required", "anonymous callers may not lock");
}

#[tokio::test]
async fn atomic_session_commits_across_two_handlers() {
    let admin = SERVER.as_admin();
    let s = admin.post("/sessions", json!({"root": ".", "lock": "atomic", "lock_timeout_ms": 5000})).await;
    assert_eq!(s.status, 201, "{}", s.body);
    let id = s.body["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.put(&format!("/tree/config/t_atomic/a?session={id}"), json!({"value": 1})).await.status, 201);
    assert_eq!(admin.put(&format!("/tree/scratch/t_atomic/b?session={id}"), json!({"value": 2})).await.status, 201);
    assert_eq!(admin.get("/tree/config/t_atomic/a").await.status, 404, "invisible before commit");
    assert_eq!(admin.get(&format!("/tree/scratch/t_atomic/b?session={id}")).await.body["value"], 2, "visible inside");
    assert_eq!(admin.send(admin.request(Method::POST, &format!("/sessions/{id}/commit"))).await.status, 204);
    assert_eq!(admin.get("/tree/config/t_atomic/a").await.body["value"], 1);
    assert_eq!(admin.get("/tree/scratch/t_atomic/b").await.body["value"], 2);
    // After a rollback nothing of the new transaction remains.
    admin.put(&format!("/tree/config/t_atomic/c?session={id}"), json!({"value": 3})).await;
    assert_eq!(admin.send(admin.request(Method::POST, &format!("/sessions/{id}/rollback"))).await.status, 204);
    assert_eq!(admin.delete(&format!("/sessions/{id}")).await.status, 204);
    assert_eq!(admin.get("/tree/config/t_atomic/c").await.status, 404);
}

#[tokio::test]
async fn a_failed_atomic_session_leaves_no_writes_and_no_events() {
    let admin = SERVER.as_admin();
    admin.put("/tree/config/t_fail/seed", json!({"value": 0})).await;
    let mut events = admin.events("?uri=./config/t_fail/**", None).await;
    let s = admin.post("/sessions", json!({"root": "./config", "lock": "atomic", "lock_timeout_ms": 5000})).await;
    let id = s.body["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.put(&format!("/tree/config/t_fail/a?session={id}"), json!({"value": 1})).await.status, 201);
    assert_eq!(admin.put(&format!("/tree/config/t_fail/seed?session={id}"), json!({"value": 9})).await.status, 200);
    let r = admin.put(&format!("/tree/config/limits/t_fail?session={id}"), json!({"value": 1000})).await;
    assert_eq!(r.code(), "metadata_mismatch");
    let r = admin.put(&format!("/tree/config/t_fail/b?session={id}"), json!({"value": 1})).await;
    assert_eq!(r.code(), "transaction_error", "the session was rolled back");
    assert_eq!(
        admin.send(admin.request(Method::POST, &format!("/sessions/{id}/commit"))).await.code(),
        "transaction_error"
    );
    assert_eq!(admin.delete(&format!("/sessions/{id}")).await.code(), "transaction_error");
    assert_eq!(admin.get("/tree/config/t_fail/a").await.status, 404);
    assert_eq!(admin.get("/tree/config/t_fail/seed").await.body["value"], 0);
    admin.put("/tree/config/t_fail/sentinel", json!({"value": 1})).await;
    let mut seen = Vec::new();
    loop {
        let e = events.next_json().await;
        if e["uri"] == "./config/t_fail/sentinel" {
            break;
        }
        seen.push(e);
    }
    assert!(seen.is_empty(), "no event from the failed session: {seen:?}");
}

#[tokio::test]
async fn events_carry_revisions_and_resume_without_gaps() {
    let admin = SERVER.as_admin();
    let mut live = admin.events("?uri=./config/t_ev/**", None).await;
    admin.put("/tree/config/t_ev/x", json!({"value": 0})).await;
    let first = live.next_json().await;
    assert_eq!((first["kind"].as_str(), first["uri"].as_str()), (Some("added"), Some("./config/t_ev")));
    let second = live.next_json().await;
    assert_eq!(
        (second["kind"].as_str(), second["uri"].as_str(), &second["value"]),
        (Some("added"), Some("./config/t_ev/x"), &json!(0))
    );
    assert_eq!((second["principal"].as_str(), second["format"].as_str()), (Some("admin"), Some("int")));
    let last_seen = second["revision"].as_u64().unwrap();
    assert!(last_seen > first["revision"].as_u64().unwrap());
    drop(live);

    for i in 1..=5 {
        admin.put("/tree/config/t_ev/x", json!({"value": i})).await;
    }
    let mut resumed = admin.events("?uri=./config/t_ev/**", Some(last_seen)).await;
    let mut revision = last_seen;
    for i in 1..=5 {
        let e = resumed.next_json().await;
        assert_eq!((e["kind"].as_str(), &e["value"]), (Some("replaced"), &json!(i)), "missed or reordered: {e}");
        assert!(e["revision"].as_u64().unwrap() > revision);
        revision = e["revision"].as_u64().unwrap();
    }
    // `since` replays the same way.
    let mut again = admin.events(&format!("?uri=./config/t_ev/x&since={last_seen}"), None).await;
    assert_eq!(again.next_json().await["value"], 1);
}

#[tokio::test]
async fn events_reach_only_principals_with_get() {
    let admin = SERVER.as_admin();
    let locked = json!({"acl": "Add=admin&Delete=admin&Get=admin&Replace=admin"});
    assert_eq!(admin.put("/tree/config/t_sec/secret", locked).await.status, 201);
    admin.put("/tree/config/t_sec/public", json!({})).await;
    let mut alice = SERVER.as_alice().events("?uri=./config/t_sec/**", None).await;
    let mut anon = SERVER.http().events("?uri=./config/t_sec/**", None).await;
    let mut root = admin.events("?uri=./config/t_sec/**", None).await;
    admin.put("/tree/config/t_sec/secret/key", json!({"value": "s3cret"})).await;
    admin.put("/tree/config/t_sec/public/key", json!({"value": "hello"})).await;
    for stream in [&mut alice, &mut anon] {
        let e = stream.next_json().await;
        assert_eq!(e["uri"], "./config/t_sec/public/key", "the secret event must not arrive first: {e}");
        assert!(stream.drain(Duration::from_millis(300)).await.is_empty());
    }
    assert_eq!(root.next_json().await["uri"], "./config/t_sec/secret/key");
    assert_eq!(SERVER.as_alice().get("/tree/config/t_sec/secret/key").await.code(), "permission_denied");
    let listing = SERVER.as_alice().get("/tree/config/t_sec").await;
    assert_eq!(listing.body["children"]["secret"]["readable"], false);
}

#[tokio::test]
async fn self_describing_subtrees_health_and_metrics() {
    let anon = SERVER.http();
    let r = anon.get("/healthz").await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let system = anon.get("/tree/system?depth=2").await.body;
    assert_eq!(system["children"]["version"]["value"], env!("CARGO_PKG_VERSION"));
    assert!(system["children"]["requests"]["children"]["total"]["value"].as_u64().unwrap() > 0);
    assert!(system["children"]["revision"]["value"].as_u64().is_some());
    let mounts = anon.get("/tree/mounts?depth=2").await.body;
    assert_eq!(mounts["children"]["config"]["children"]["handler"]["value"], "config-store");
    assert_eq!(mounts["children"]["scratch"]["children"]["uri"]["value"], "./scratch");
    assert_eq!(mounts["children"]["scratch"]["children"]["origin"]["value"], "built-in");
    assert!(system["children"]["instance"]["value"].as_str().is_some_and(|i| !i.is_empty()));
    let root = anon.get("/tree").await.body;
    let names: Vec<_> = root["children"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        names,
        [
            "config",
            "contextstore",
            "federation",
            "infrastructure",
            "managers",
            "mounts",
            "rules",
            "scratch",
            "sessions",
            "subscriptions",
            "system"
        ]
    );
    let metrics = reqwest::get(SERVER.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dmtree_http_requests_total{method=\"GET\",class=\"2xx\"}"), "{metrics}");
    assert!(metrics.contains("dmtree_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("dmtree_event_revision "));
}
