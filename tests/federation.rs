//! Federation end to end: three `dmtree serve` processes on loopback, A
//! mounting B mounting C (see `common::Trio`), shared by the tests; each test
//! works under its own names.

mod common;

use std::time::Duration;

use common::{ADMIN, ALICE, SITE_A, SITE_B, SITE_C, Trio, unique};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static TRIO: OnceCell<Trio> = OnceCell::const_new();

async fn trio() -> &'static Trio {
    TRIO.get_or_init(|| Trio::start(json!({}), false)).await
}

/// The mount points among `points` that are mounted on `server`. Tests run
/// concurrently and mount elsewhere on the same servers, so a refused mount is
/// checked by where it would have been, not by the whole list.
async fn mounted(server: &common::Http, points: &[&str]) -> Vec<String> {
    let reply = server.get("/tree/mounts?depth=2").await;
    let children = reply.body["children"].as_object().cloned().unwrap_or_default();
    children
        .values()
        .filter_map(|m| m["children"]["uri"]["value"].as_str().map(str::to_owned))
        .filter(|uri| points.contains(&uri.as_str()))
        .collect()
}

#[tokio::test]
async fn reads_and_writes_go_through_two_mounts() {
    let t = trio().await;
    let (a, c) = (t.a.as_admin(), t.c.as_admin());
    let n = unique("rw");
    let r = a.put(&format!("/tree/sites/b/c/{n}/x"), json!({"value": 1})).await;
    assert_eq!((r.status, &r.body["uri"]), (201, &json!(format!("./sites/b/c/{n}/x"))), "{:?}", r.body);
    let at_c = c.get(&format!("/tree/config/infra/{n}/x")).await;
    assert_eq!(at_c.body["value"], json!(1), "the write landed on C");

    // The ETag is C's version, and a stale one is refused through both hops.
    let r = a.get(&format!("/tree/sites/b/c/{n}/x")).await;
    assert_eq!(r.headers["etag"], at_c.headers["etag"]);
    let stale = a.request(reqwest::Method::PUT, &format!("/tree/sites/b/c/{n}/x")).header("If-Match", "\"999\"");
    let r = a.send(stale.json(&json!({"value": 2}))).await;
    assert_eq!((r.status, r.code()), (412, "precondition_failed"));

    // A PATCH of several leaves, a depth read, errors with local URIs, a delete.
    let r = a.patch(&format!("/tree/sites/b/c/{n}"), json!({"y": 2, "z/w": "deep"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = a.get(&format!("/tree/sites/b/c/{n}?depth=unbounded")).await;
    assert_eq!(r.body["children"]["z"]["children"]["w"]["value"], json!("deep"));
    assert_eq!(r.body["children"]["y"]["uri"], json!(format!("./sites/b/c/{n}/y")));
    let r = a.get(&format!("/tree/sites/b/c/{n}/missing")).await;
    assert_eq!(
        (r.status, r.code(), &r.body["error"]["uri"]),
        (404, "node_not_found", &json!(format!("./sites/b/c/{n}/missing")))
    );
    let r = a.put(&format!("/tree/sites/b/c/{n}/x/under"), json!({"value": 1})).await;
    assert_eq!(r.status / 100, 4, "a leaf has no children, also remotely: {:?}", r.body);
    let r = a.post(&format!("/tree/sites/b/c/{n}/y?action=rename"), json!({"name": "y2"})).await;
    assert_eq!(r.status, 201, "rename through two hops: {:?}", r.body);
    assert_eq!(c.get(&format!("/tree/config/infra/{n}/y2")).await.body["value"], json!(2));
    assert_eq!(a.delete(&format!("/tree/sites/b/c/{n}")).await.status, 204);
    assert_eq!(c.get(&format!("/tree/config/infra/{n}")).await.status, 404);

    // Anonymous writes are refused here, before any forwarding.
    let r = t.a.http().put(&format!("/tree/sites/b/c/{n}"), json!({"value": 1})).await;
    assert_eq!((r.status, r.code()), (401, "authentication_required"));
}

#[tokio::test]
async fn an_event_at_c_reaches_a_subscriber_on_a_with_the_uri_rewritten() {
    let t = trio().await;
    let n = unique("ev");
    // A's own ACL on its mount point applies on top of C's (which lets everyone read).
    let r =
        t.a.as_admin()
            .put(&format!("/tree/sites/b/c/{n}"), json!({"acl": "Get=admin&Add=admin&Replace=admin&Delete=admin"}))
            .await;
    assert_eq!(r.status / 100, 2, "{:?}", r.body);
    // Its children only: the PUT above created the node itself, and that event may still be on its way.
    let pattern = format!("?uri=./sites/b/c/{n}/*");
    let mut admin = t.a.as_admin().events(&pattern, None).await;
    let mut alice = t.a.as_alice().events(&pattern, None).await;
    let r = t.c.as_admin().put(&format!("/tree/config/infra/{n}/temp"), json!({"value": 21.5})).await;
    assert_eq!(r.status, 201);
    let e = admin.next_json().await;
    assert_eq!(
        (&e["kind"], &e["uri"], &e["value"]),
        (&json!("added"), &json!(format!("./sites/b/c/{n}/temp")), &json!(21.5))
    );
    assert_eq!(e["via"], json!(["c", "b"]), "the trees it came through");
    assert!(alice.next_within(Duration::from_millis(500)).await.is_none(), "alice may not read it on A");

    // A write through A is reported once, by the bridge, in C's order.
    let r = t.a.as_admin().put(&format!("/tree/sites/b/c/{n}/temp"), json!({"value": 22})).await;
    assert_eq!(r.status, 200);
    let events = admin.drain(Duration::from_millis(700)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((&events[0]["kind"], &events[0]["value"]), (&json!("replaced"), &json!(22)));
    let bridged = t.a.http().get("/tree/mounts/b/monitoring/events_bridged").await;
    assert!(bridged.body["value"].as_u64().unwrap_or(0) >= 2, "{:?}", bridged.body);
}

/// Long multi-byte values cross two bridges (C to B to A) byte for byte: the
/// SSE reader once decoded each network chunk alone, turning characters split
/// between chunks into U+FFFD, and stored them so in the journal.
#[tokio::test]
async fn multibyte_values_cross_the_bridges_byte_for_byte() {
    let t = trio().await;
    let n = unique("utf8");
    let pattern = format!("?uri=./sites/b/c/{n}/*");
    let mut watcher = t.a.as_admin().events(&pattern, None).await;
    let sent: Vec<String> = (0..40).map(|i| format!("{i}:{}", "é€😀".repeat(400 + i * 37))).collect();
    for (i, value) in sent.iter().enumerate() {
        let r = t.c.as_admin().put(&format!("/tree/config/infra/{n}/v{i}"), json!({"value": value})).await;
        assert_eq!(r.status, 201);
    }
    let mut received = std::collections::HashMap::new();
    while received.len() < sent.len() {
        let e = watcher.next_json().await;
        let name = e["uri"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
        received.insert(name, e["value"].as_str().unwrap_or_default().to_owned());
    }
    for (i, value) in sent.iter().enumerate() {
        assert_eq!(received[&format!("v{i}")].as_bytes(), value.as_bytes(), "v{i} arrived altered");
    }
    // And the mounting side journaled them intact: a replay returns the same bytes.
    let replayed =
        t.a.as_admin().events(&format!("{pattern}&since=0"), None).await.drain(Duration::from_millis(500)).await;
    let intact = replayed.iter().filter(|e| sent.iter().any(|v| e["value"] == json!(v))).count();
    assert_eq!(intact, sent.len());
}

/// `dmtree` (the CLI) against server `base` as admin; its stdout, or the failure.
fn dmtree(base: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(args)
        .env("DMTREE_SERVER", base)
        .env("DMTREE_TOKEN", ADMIN)
        .output()
        .expect("run dmtree");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
}

#[tokio::test]
async fn the_cli_mounts_and_unmounts_a_remote_tree() {
    let t = trio().await;
    let (a, c) = (t.a.as_admin(), t.c.as_admin());
    let n = unique("cli");
    assert_eq!(c.put(&format!("/tree/config/{n}/v"), json!({"value": 7})).await.status, 201);
    let grant = json!({"id": n, "principal": "site-a", "subtrees": [format!("./config/{n}")], "rights": "read-write"});
    assert_eq!(c.post("/tree/federation/grants", grant).await.status, 201);
    let (at, remote) = (format!("./cli/{n}"), format!("./config/{n}"));
    let args = ["mount", &at, &t.c.base, &remote, "--id", &n, "--remote-token", SITE_A, "--timeout-ms", "2000"];
    let out = dmtree(&t.a.base, &args).expect("dmtree mount");
    assert_eq!(out.trim(), format!("mounted {} {remote} at {at} as {n}", t.c.base));
    assert_eq!(a.get(&format!("/tree/cli/{n}/v")).await.body["value"], json!(7));
    assert_eq!(dmtree(&t.a.base, &["get", &format!("{at}/v")]).expect("get through the mount").trim(), "7");
    assert_eq!(a.get(&format!("/tree/mounts/{n}/remote/timeout_ms")).await.body["value"], json!(2000));

    // Refusals come back as the server's error, and leave nothing mounted.
    let err = dmtree(&t.a.base, &["mount", &at, &t.c.base, &remote, "--remote-token", SITE_A]).unwrap_err();
    assert!(err.contains("(409)") || err.contains("(400)"), "a mount over a mount: {err}");
    let err = dmtree(&t.a.base, &["unmount", "./cli"]).unwrap_err();
    assert!(err.contains("./cli is not a mount point"), "{err}");
    let err = dmtree(&t.a.base, &["unmount", "./config"]).unwrap_err();
    assert!(err.contains("command_not_allowed (405)") && err.contains("built-in"), "{err}");

    assert_eq!(dmtree(&t.a.base, &["unmount", &at]).expect("unmount by mount point").trim(), format!("unmounted {n}"));
    assert_eq!(a.get(&format!("/tree/cli/{n}/v")).await.status, 404, "unmounted");
    assert_eq!(a.get(&format!("/tree/mounts/{n}")).await.status, 404);
    assert_eq!(c.delete(&format!("/tree/federation/grants/{n}")).await.status, 204);
}

#[tokio::test]
async fn a_mount_outside_a_grant_is_refused_and_grants_are_enforced_per_request() {
    let t = trio().await;
    let a = t.a.as_admin();
    let request =
        json!({"at": "./other/b", "url": t.b.base, "remote_uri": "./config", "credentials": {"token": SITE_A}});
    let r = a.post("/tree/mounts", request).await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("no grant"), "{:?}", r.body);
    assert!(mounted(&a, &["./other/b"]).await.is_empty(), "nothing half-mounted");

    // A read-only grant lets a mount read, not write; revoking it shuts the mount out.
    let n = unique("ro");
    let c = t.c.as_admin();
    assert_eq!(c.put(&format!("/tree/config/{n}/v"), json!({"value": 1})).await.status, 201);
    let grant = json!({"id": n, "principal": "site-a", "subtrees": [format!("./config/{n}")], "rights": "read-only"});
    assert_eq!(c.post("/tree/federation/grants", grant).await.status, 201);
    let request = json!({"id": n, "at": format!("./ro/{n}"), "url": t.c.base, "remote_uri": format!("./config/{n}"), "credentials": {"token": SITE_A}});
    let r = a.post("/tree/mounts", request).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(a.get(&format!("/tree/ro/{n}/v")).await.body["value"], json!(1));
    let r = a.put(&format!("/tree/ro/{n}/v"), json!({"value": 2})).await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("no read-write grant"), "{:?}", r.body);
    assert_eq!(c.delete(&format!("/tree/federation/grants/{n}")).await.status, 204);
    let r = a.get(&format!("/tree/ro/{n}/v")).await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"));
    assert_eq!(a.delete(&format!("/tree/mounts/{n}")).await.status, 204);
    assert_eq!(a.get(&format!("/tree/ro/{n}/v")).await.status, 404, "unmounted");

    // Grants are the owner's: nobody else reads or writes them.
    assert_eq!(t.c.as_alice().get("/tree/federation/grants").await.status, 403);
    assert_eq!(t.c.http().token(SITE_B).get("/tree/federation/grants").await.status, 403);
}

#[tokio::test]
async fn a_loop_is_refused_at_mount_time_and_per_request() {
    let t = trio().await;
    // C mounting A's ./sites would close the circle A → B → C → A.
    let grant = json!({"id": "c", "principal": "site-c", "subtrees": ["./sites"], "rights": "read-only"});
    assert_eq!(t.a.as_admin().post("/tree/federation/grants", grant).await.status, 201);
    let c = t.c.as_admin();
    let request = json!({"at": "./loop/a", "url": t.a.base, "remote_uri": "./sites", "credentials": {"token": SITE_C}});
    let r = c.post("/tree/mounts", request).await;
    assert_eq!((r.status, r.code()), (409, "loop_detected"), "{:?}", r.body);
    assert!(mounted(&c, &["./loop/a"]).await.is_empty(), "nothing half-mounted");

    // Whatever the mounts, a request that comes back is refused, and so is one past max_hops.
    let looped = t.b.http().token(SITE_A).request(reqwest::Method::GET, "/tree/sites/c").header("Dmtree-Via", "a,b");
    let r = t.b.http().send(looped).await;
    assert_eq!((r.status, r.code()), (409, "loop_detected"));
    let long: Vec<String> = (0..9).map(|i| format!("x{i}")).collect();
    let far =
        t.b.http().token(SITE_A).request(reqwest::Method::GET, "/tree/sites/c").header("Dmtree-Via", long.join(","));
    assert_eq!(t.b.http().send(far).await.code(), "loop_detected");
    // A federated request is held to its grants even without a mount.
    let stray = t.b.http().token(SITE_A).request(reqwest::Method::GET, "/tree/config").header("Dmtree-Via", "a");
    assert_eq!(t.b.http().send(stray).await.status, 403);
    let no_grant = t.b.http().token(ALICE).request(reqwest::Method::GET, "/tree/sites").header("Dmtree-Via", "a");
    assert_eq!(t.b.http().send(no_grant).await.status, 403);
}

#[tokio::test]
async fn bad_mount_requests_get_4xx_and_leave_nothing_behind() {
    let t = trio().await;
    let a = t.a.as_admin();
    let token = json!({"token": SITE_A});
    let cases = [
        (json!({"at": "./m1", "url": "127.0.0.1:1", "remote_uri": "./sites"}), 400, "invalid_data", "invalid url"),
        (
            json!({"at": "./m1", "url": "http://127.0.0.1:1/tree", "remote_uri": "./sites"}),
            400,
            "invalid_data",
            "without a path",
        ),
        (
            json!({"at": "./m1", "url": common::unreachable_url(), "remote_uri": "./sites", "credentials": token}),
            400,
            "invalid_data",
            "cannot reach",
        ),
        (
            json!({"at": "./m1", "url": t.b.base, "remote_uri": "./sites", "credentials": {"token": "wrong"}}),
            400,
            "invalid_data",
            "credentials",
        ),
        (
            json!({"at": "./sites/b", "url": t.b.base, "remote_uri": "./sites", "credentials": token}),
            409,
            "node_already_exists",
            "already a mount point",
        ),
        (
            json!({"at": "./config/inside", "url": t.b.base, "remote_uri": "./sites", "credentials": token}),
            409,
            "node_already_exists",
            "overlaps",
        ),
        (
            json!({"at": "./m1", "url": t.b.base, "remote_uri": "./sites", "tokn": "x"}),
            400,
            "invalid_data",
            "unknown field",
        ),
        (
            json!({"id": "a/b", "at": "./m1", "url": t.b.base, "remote_uri": "./sites", "credentials": token}),
            400,
            "invalid_data",
            "id",
        ),
        (
            json!({"at": "./m1", "url": t.b.base, "remote_uri": "./nowhere", "credentials": token}),
            403,
            "permission_denied",
            "no grant",
        ),
        (json!("not an object"), 400, "invalid_data", "expected"),
    ];
    for (request, status, code, says) in cases {
        let r = a.post("/tree/mounts", request.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{request}: {:?}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap_or("").contains(says), "{request}: {:?}", r.body);
    }
    assert!(mounted(&a, &["./m1", "./config/inside"]).await.is_empty(), "nothing half-mounted");
    assert_eq!(mounted(&a, &["./sites/b"]).await.len(), 1, "the existing mount is untouched");
    let r = a.delete("/tree/mounts/not-a-mount").await;
    assert_eq!((r.status, r.code()), (404, "node_not_found"));
    let r = a.delete("/tree/mounts/config").await;
    assert_eq!((r.status, r.code()), (405, "command_not_allowed"));
    let r = a.delete("/tree/sites/b").await;
    assert_eq!(r.status, 405, "a mount point is unmounted, not deleted: {:?}", r.body);
    let r = t.a.as_alice().post("/tree/mounts", json!({"at": "./m1", "url": t.b.base, "remote_uri": "./sites"})).await;
    assert_eq!(r.status, 403, "mounting takes Add on ./mounts");
}

#[tokio::test]
async fn mounts_show_their_remote_and_its_state() {
    let t = trio().await;
    let r = t.a.http().get("/tree/mounts/b?depth=unbounded").await;
    let m = &r.body["children"];
    assert_eq!((&m["handler"]["value"], &m["origin"]["value"]), (&json!("remote"), &json!("api")));
    assert_eq!(m["remote"]["children"]["remote_uri"]["value"], json!("./sites"));
    assert_eq!(m["remote"]["children"]["credentials"]["value"], json!("bearer token"));
    assert!(!r.body.to_string().contains(SITE_A), "the token is never shown");
    let mon = &m["monitoring"]["children"];
    for field in ["reachable", "rtt_ms", "circuit", "events_bridged", "last_error", "bridge"] {
        assert!(mon[field]["value"] != Value::Null, "monitoring/{field}: {mon}");
    }
    assert_eq!(mon["circuit"]["value"], json!("closed"));
    let r = t.b.http().get("/tree/mounts/c/origin").await;
    assert_eq!(r.body["value"], json!("config"));
    let r = t.b.as_admin().delete("/tree/mounts/c").await;
    assert_eq!((r.status, r.code()), (405, "command_not_allowed"), "config mounts are the config file's");
}
