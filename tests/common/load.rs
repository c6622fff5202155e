//! For the load benchmarks: a raw HTTP/1.1 connection per client, and the
//! server's resident memory.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use tokio::net::TcpStream;

pub type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: &str) -> Conn {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    send
}

/// Sends one request; `true` on a 2xx whose body arrived whole.
pub async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> bool {
    match conn.send_request(req).await {
        Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// A process's resident set, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn wrk_available() -> bool {
    std::process::Command::new("wrk").arg("--version").output().is_ok()
}

/// One wrk run's summary.
pub struct Wrk {
    pub rps: f64,
    pub p50: String,
    pub p99: String,
    pub errors: u64,
}

impl Wrk {
    pub fn header() -> String {
        "| server | req/s | p50 | p99 | non-2xx |\n|---|---:|---:|---:|---:|".into()
    }

    pub fn row(&self, name: &str) -> String {
        format!("| {name} | {:.0} | {} | {} | {} |", self.rps, self.p50, self.p99, self.errors)
    }
}

/// Runs `wrk -t1 -c<conns> --latency` on `url` with a bearer token; `script`
/// is Lua defining `request` (plain GETs of `url` without one). Panics if any
/// request failed: the figures would be meaningless.
pub fn wrk(url: &str, conns: usize, duration: std::time::Duration, script: Option<&str>, token: &str) -> Wrk {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{}s", duration.as_secs().max(1)), "--latency"]);
    if !token.is_empty() {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let file = tempfile::Builder::new().suffix(".lua").tempfile().expect("lua script");
    if let Some(script) = script {
        std::fs::write(file.path(), script).expect("lua script");
        cmd.arg("-s").arg(file.path());
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned())).unwrap_or_default()
    };
    let errors = field("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    assert_eq!(errors, 0, "wrk saw failed requests; the figures would be meaningless:\n{text}");
    Wrk { rps: field("Requests/sec:").parse().unwrap_or(0.0), p50: field("50%"), p99: field("99%"), errors }
}

/// Latency figures of a paced run.
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: std::time::Duration,
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }

    pub fn header() -> String {
        "| server | req/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---:|---:|---:|---:|---:|".into()
    }

    pub fn row(&self, name: &str) -> String {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            self.rps(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.errors
        )
    }
}

/// Builds the `n`th request a paced client sends to `addr`.
pub type MakeRequest = std::sync::Arc<dyn Fn(&str, u64) -> Request<Full<Bytes>> + Send + Sync>;

/// PUTs of `{"value": n}` to `<parent>/k<n % keys>`, as the admin.
pub fn leaf_puts(parent: &'static str, keys: u64) -> MakeRequest {
    std::sync::Arc::new(move |addr, n| {
        Request::builder()
            .method("PUT")
            .header(hyper::header::HOST, addr)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", super::ADMIN))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .uri(format!("{parent}/k{}", n % keys))
            .body(Full::new(Bytes::from(format!("{{\"value\": {n}}}"))))
            .expect("request")
    })
}

/// Requests at a fixed total rate, spread over the connections. Latency is
/// measured from each request's send time; a connection whose previous answer
/// is late sends at once (the timer is 1 ms coarse, so sends come in bursts,
/// which only makes the figures worse). Panics if any request failed.
pub async fn open_loop(
    addr: &str,
    conns: usize,
    rate: f64,
    duration: std::time::Duration,
    make: MakeRequest,
) -> Report {
    let per_conn = std::time::Duration::from_secs_f64(conns as f64 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for id in 0..conns {
        let (addr, make) = (addr.to_owned(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&addr).await;
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let (mut n, mut errors) = (0u64, 0u64);
            let offset = per_conn.mul_f64(id as f64 / conns as f64);
            loop {
                let due = start + offset + per_conn.mul_f64(n as f64);
                if due.duration_since(start) >= duration {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let t = std::time::Instant::now();
                if send(&mut conn, make(&addr, n * conns as u64 + id as u64)).await {
                    hist.record(t.elapsed().as_micros() as u64).expect("record");
                } else {
                    errors += 1;
                    conn = connect(&addr).await;
                }
                n += 1;
            }
            (n, errors, hist)
        }));
    }
    let mut latency = hdrhistogram::Histogram::new(3).expect("histogram");
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        let (n, e, h) = t.await.expect("load task");
        requests += n - e;
        errors += e;
        latency.add(&h).expect("merge");
    }
    assert_eq!(errors, 0, "paced requests failed; the figures would be meaningless");
    Report { requests, errors, elapsed: start.elapsed().max(duration), latency }
}

/// CPU time a process used so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |n: usize| rest.split_whitespace().nth(n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// CPU time all cores spent so far, in clock ticks: (in all, idle or waiting for I/O).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    (fields.iter().sum(), fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}

/// Each process's share of the machine's CPU between two readings, in percent
/// of all cores (so a 2-core machine's processes sum to at most 100).
pub struct CpuSplit {
    start: Vec<(String, u32, u64)>,
    machine: (u64, u64),
}

impl CpuSplit {
    pub fn start(processes: &[(&str, u32)]) -> Self {
        let start = processes.iter().map(|(n, pid)| ((*n).to_owned(), *pid, cpu_ticks(*pid))).collect();
        CpuSplit { start, machine: machine_ticks() }
    }

    pub fn finish(self) -> String {
        let (all, idle) = machine_ticks();
        let total = all.saturating_sub(self.machine.0).max(1) as f64;
        let idle = idle.saturating_sub(self.machine.1) as f64 / total * 100.0;
        let mut used = 0.0;
        let mut parts: Vec<String> = self
            .start
            .iter()
            .map(|(name, pid, before)| {
                let share = cpu_ticks(*pid).saturating_sub(*before) as f64 / total * 100.0;
                used += share;
                format!("{name} {share:.0} %")
            })
            .collect();
        parts.push(format!("everything else {:.0} %", (100.0 - used - idle).max(0.0)));
        parts.push(format!("idle {idle:.0} %"));
        parts.join(", ")
    }
}
