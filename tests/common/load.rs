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
