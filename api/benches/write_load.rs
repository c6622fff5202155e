//! Write benchmark: `dmtree serve` PUT, with `durability = "fsync"` and
//! `"os"`, against etcd's HTTP gateway `put` (fsync on every WAL batch), side
//! by side in one run, at 1, 32 and 256 connections; then dmtree's PUT latency
//! paced at half of its peak, a 90 % GET / 10 % PUT mix against pure GETs,
//! a GET of one node against etcd's `range` of one key, and PUT latency
//! beside clients reading a large subtree.
//!
//! `cargo bench -p dmtree-api --bench write_load` (see BENCHMARKS.md). Needs
//! wrk; etcd is measured when installed (`apt-get install etcd-server`).
//! Knobs: `BENCH_SECS` (per run, default 5), `BENCH_KEYS` (keys written in
//! rotation, default 1024; every system writes the same number).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use common::load::{Report, Wrk, leaf_puts, open_loop, wrk, wrk_available};

const LEAF: &str = "/tree/config/w/leaf";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let secs = Duration::from_secs(common::env_or("BENCH_SECS", 5));
    let keys = common::env_or("BENCH_KEYS", 1024);
    if !wrk_available() {
        eprintln!("write_load needs wrk (apt-get install wrk)");
        std::process::exit(2);
    }
    let durable = common::Server::start(&common::config_with("[config_store]\ndurability = \"fsync\"\n"));
    let relaxed = common::Server::start(&common::config_with("[config_store]\ndurability = \"os\"\n"));
    let etcd = Etcd::start().await;
    if etcd.is_none() {
        println!("(etcd is not installed: apt-get install etcd-server; its rows are skipped)");
    }
    println!("# write_load: {} s per run, {keys} keys in rotation, loopback", secs.as_secs());

    let dm_put = dmtree_put_script(keys);
    let etcd_put = etcd_put_script(keys);
    let mut peak_32 = 0.0;
    for conns in [1, 32, 256] {
        // Warm-up: every key exists before the measured runs.
        for server in [&durable, &relaxed] {
            wrk(&format!("{}{LEAF}", server.base), conns, Duration::from_secs(1), Some(&dm_put), common::ADMIN);
        }
        if let Some(e) = &etcd {
            wrk(&format!("{}/v3/kv/put", e.base), conns, Duration::from_secs(1), Some(&etcd_put), "");
        }
        // Alternating rounds, so that drift hits every system alike; the
        // round with the median fsync/etcd ratio is shown.
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let before = batches(&durable).await;
            let fsync = wrk(&format!("{}{LEAF}", durable.base), conns, secs, Some(&dm_put), common::ADMIN);
            let after = batches(&durable).await;
            let os = wrk(&format!("{}{LEAF}", relaxed.base), conns, secs, Some(&dm_put), common::ADMIN);
            let etcd_run =
                etcd.as_ref().map(|e| wrk(&format!("{}/v3/kv/put", e.base), conns, secs, Some(&etcd_put), ""));
            let ratio = etcd_run.as_ref().map_or(1.0, |e| fsync.rps / e.rps);
            rounds.push((ratio, fsync, os, etcd_run, (after.0 - before.0, after.1 - before.1)));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.0)).collect();
        let (ratio, fsync, os, etcd_run, (commits, units)) = rounds.swap_remove(1);
        println!("\n## PUT, closed loop (wrk -t1 -c{conns}; 3 alternating rounds, the median round shown)");
        println!("{}", Wrk::header());
        if let Some(e) = &etcd_run {
            println!("{}", e.row("etcd 3.4 gateway put (baseline; fsyncs its WAL)"));
        }
        println!("{}", fsync.row("dmtree, durability = fsync"));
        println!("{}", os.row("dmtree, durability = os"));
        println!(
            "fsync mode: {units} units in {commits} commits ({:.1} per fsync)",
            units as f64 / commits.max(1) as f64
        );
        if let Some(e) = &etcd_run {
            println!(
                "ratio dmtree fsync / etcd: {ratio:.2} (all rounds: {}); dmtree os / etcd: {:.2}",
                ratios.join(", "),
                os.rps / e.rps
            );
        }
        if conns == 32 {
            peak_32 = fsync.rps;
        }
    }

    let half = peak_32 / 2.0;
    let addr = durable.base.trim_start_matches("http://").to_owned();
    let paced = open_loop(&addr, 32, half, secs, leaf_puts("/tree/config/w", keys)).await;
    println!("\n## PUT paced at half of dmtree's fsync peak ({half:.0} req/s, 32 connections)");
    println!("{}", Report::header());
    println!("{}", paced.row("dmtree, durability = fsync"));

    let url = format!("{}{LEAF}", durable.base);
    let leaf = durable.as_admin().put(LEAF, serde_json::json!({"value": 42})).await;
    assert!(leaf.status < 300, "cannot create {LEAF}: {}", leaf.body);
    let get = wrk(&url, 32, secs, None, common::ADMIN);
    let mixed = wrk(&url, 32, secs, Some(&mix_script(keys)), common::ADMIN);
    println!("\n## 90 % GET / 10 % PUT against pure GET (wrk -t1 -c32, durability = fsync)");
    println!("{}", Wrk::header());
    println!("{}", get.row("GET only (baseline)"));
    println!("{}", mixed.row("90 % GET, 10 % PUT"));
    println!("ratio mix / GET: {:.2}", mixed.rps / get.rps);

    if let Some(e) = &etcd {
        let range = r#"request = function()
  return wrk.format("POST", "/v3/kv/range", {["Content-Type"] = "application/json"}, '{"key":"L3cvazE="}')
end
"#;
        let etcd_get = wrk(&format!("{}/v3/kv/range", e.base), 32, secs, Some(range), "");
        println!("\n## Read of one key: dmtree GET against etcd's gateway range (wrk -t1 -c32)");
        println!("{}", Wrk::header());
        println!("{}", etcd_get.row("etcd 3.4 gateway range of /w/k1 (baseline)"));
        println!("{}", get.row("dmtree GET of a leaf"));
        println!("ratio dmtree / etcd: {:.2}", get.rps / etcd_get.rps);
    }

    writes_beside_large_reads(&durable, secs).await;
}

/// PUT latency at 100 req/s alone, then while 8 anonymous clients read a
/// public 135k-node subtree at unbounded depth (each read ends in a 413 after
/// 100k nodes): large reads must not hold up writes.
async fn writes_beside_large_reads(server: &common::Server, secs: Duration) {
    let admin = server.as_admin();
    for part in 0..3 {
        let leaves: serde_json::Map<String, serde_json::Value> =
            (0..45_000).map(|i| (format!("n{i}"), serde_json::json!(i))).collect();
        let r = admin.patch(&format!("/tree/config/big/p{part}"), serde_json::Value::Object(leaves)).await;
        assert!(r.status < 300, "bulk load failed: {}", r.body);
    }
    let addr = server.base.trim_start_matches("http://").to_owned();
    let alone = open_loop(&addr, 4, 100.0, secs, leaf_puts("/tree/config/w", 1024)).await;
    let readers = Command::new("wrk")
        .args(["-t1", "-c8", &format!("-d{}s", secs.as_secs() + 2)])
        .arg(format!("{}/tree/config/big?depth=unbounded", server.base))
        .stdout(Stdio::null())
        .spawn()
        .expect("run wrk");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let beside = open_loop(&addr, 4, 100.0, secs, leaf_puts("/tree/config/w", 1024)).await;
    let _ = tokio::task::spawn_blocking(move || readers.wait_with_output()).await;
    println!("\n## PUT at 100 req/s beside 8 anonymous readers of a 135k-node subtree (depth unbounded, 413 at 100k)");
    println!("{}", Report::header());
    println!("{}", alone.row("PUT alone (baseline)"));
    println!("{}", beside.row("PUT beside the readers"));
}

/// (commits, writes committed) of a server's state database so far.
async fn batches(server: &common::Server) -> (u64, u64) {
    let admin = server.as_admin();
    let reply = admin.request(reqwest::Method::GET, "/metrics").send().await.expect("metrics");
    let text = reply.text().await.expect("metrics body");
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or_default()
            as u64
    };
    (value("dmtree_state_commit_batches "), value("dmtree_state_committed_writes "))
}

/// wrk Lua: PUT `{"value": n}` to `./config/w/k<n % keys>`, as the `-H` token's owner.
fn dmtree_put_script(keys: u64) -> String {
    format!(
        r#"counter = 0
request = function()
  counter = counter + 1
  local headers = {{}}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/json"
  return wrk.format("PUT", "/tree/config/w/k" .. (counter % {keys}), headers, '{{"value": ' .. counter .. '}}')
end
"#
    )
}

/// wrk Lua: every tenth request a PUT as above, the others a GET of the leaf.
fn mix_script(keys: u64) -> String {
    format!(
        r#"counter = 0
request = function()
  counter = counter + 1
  if counter % 10 ~= 0 then
    return wrk.format("GET", "{LEAF}")
  end
  local headers = {{}}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/json"
  return wrk.format("PUT", "/tree/config/w/k" .. (counter % {keys}), headers, '{{"value": ' .. counter .. '}}')
end
"#
    )
}

/// wrk Lua: etcd's gateway `put` of `/w/k<n % keys>` = `{"value": n}` (base64,
/// as the gateway's JSON wants bytes), precomputed for every key.
fn etcd_put_script(keys: u64) -> String {
    let bodies: Vec<String> = (0..keys)
        .map(|i| {
            let key = BASE64.encode(format!("/w/k{i}"));
            let value = BASE64.encode(format!("{{\"value\": {i}}}"));
            format!("'{{\"key\":\"{key}\",\"value\":\"{value}\"}}'")
        })
        .collect();
    format!(
        r#"bodies = {{{}}}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v3/kv/put", {{["Content-Type"] = "application/json"}}, bodies[(counter % {keys}) + 1])
end
"#,
        bodies.join(",")
    )
}

/// A single-member etcd on loopback, in a temporary data directory.
struct Etcd {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Option<Etcd> {
        Command::new("etcd").arg("--version").output().ok()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (common::free_address(), common::free_address());
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("bench=http://{peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd { child, base: format!("http://{client}"), _dir: dir };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let health = reqwest::get(format!("{}/health", etcd.base)).await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Some(etcd);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not become healthy within 20 s");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
