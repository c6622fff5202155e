//! The `dmtree` client subcommands against a real server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use common::{ADMIN, Server, config_with};

static SERVER: LazyLock<Server> = LazyLock::new(|| Server::start(&config_with("")));

fn dmtree(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(args)
        .env("DMTREE_SERVER", &SERVER.base)
        .env("DMTREE_TOKEN", ADMIN)
        .output()
        .expect("run dmtree")
}

fn ok(args: &[&str]) -> String {
    let out = dmtree(args);
    assert!(out.status.success(), "dmtree {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn set_get_ls_rm() {
    assert_eq!(
        ok(&["set", "./config/cli/x", "42"]).trim(),
        format!("created ./config/cli/x (version {})", version("./config/cli/x"))
    );
    assert_eq!(ok(&["get", "./config/cli/x"]).trim(), "42");
    ok(&["set", "config/cli/when", "2026-11-22", "--format", "date"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&["get", "./config/cli/when", "--json"])).unwrap();
    assert_eq!((json["format"].as_str(), json["value"].as_str()), (Some("date"), Some("2026-11-22")));
    ok(&["set", "./config/cli/sub/y", "hello"]);
    assert_eq!(ok(&["ls", "./config/cli"]), "sub/\nwhen\t2026-11-22\nx\t42\n");
    assert_eq!(ok(&["get", "./config/cli", "--depth", "2"]), "sub/\n  y = hello\nwhen = 2026-11-22\nx = 42\n");
    ok(&["rm", "./config/cli/sub"]);
    let out = dmtree(&["get", "./config/cli/sub"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_not_found (404)"));
}

fn version(uri: &str) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&ok(&["get", uri, "--json", "--props"])).unwrap();
    json["props"]["version"].as_u64().unwrap()
}

#[test]
fn errors_are_reported_with_their_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(["set", "./config/cli_anon", "1"])
        .env("DMTREE_SERVER", &SERVER.base)
        .env_remove("DMTREE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication_required (401)"));
    let out = dmtree(&["set", "./config/cli_bad", "x", "--format", "int"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid int"));
    let out = dmtree(&["exec", "./config"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("command_not_allowed (405)"));
    let out = dmtree(&["get", "./a//b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad URI"));
}

#[test]
fn watch_prints_events_as_they_happen() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(["watch", "./config/cli_watch/**"])
        .env("DMTREE_SERVER", &SERVER.base)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Write once the server counts the subscriber.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ok(&["get", "./system/events/sse_subscribers"]).trim() == "0" {
        assert!(std::time::Instant::now() < deadline, "watch never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&["set", "./config/cli_watch/x", "7"]);
    let mut lines = Vec::new();
    while lines.len() < 2 {
        lines.push(rx.recv_timeout(Duration::from_secs(10)).expect("watch printed nothing"));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines[0].ends_with("added ./config/cli_watch"), "{lines:?}");
    assert!(lines[1].ends_with("added ./config/cli_watch/x = 7"), "{lines:?}");
}

#[test]
fn subscribe_watch_and_unsubscribe() {
    let out = ok(&["subscribe", "./config/cli_sub/**", "--id", "clisub", "--kinds", "added,replaced"]);
    assert!(out.starts_with("subscription clisub\n"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["get", "./subscriptions/clisub/config", "--json"])).unwrap();
    assert_eq!(json["children"]["kinds"]["value"], serde_json::json!(["added", "replaced"]));
    ok(&["set", "./config/cli_sub/x", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmtree"))
        .args(["watch", "--subscription", "clisub"])
        .env("DMTREE_SERVER", &SERVER.base)
        .env("DMTREE_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.ends_with("added ./config/cli_sub"), "{first}");
    assert!(second.ends_with("added ./config/cli_sub/x = 1"), "{second}");
    assert_eq!(ok(&["unsubscribe", "clisub"]).trim(), "deleted ./subscriptions/clisub");
    assert!(!dmtree(&["get", "./subscriptions/clisub"]).status.success());
}
