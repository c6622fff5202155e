//! Runs the real `dmtree` binary for end-to-end tests, and talks to it over HTTP.
//! One module per concern; everything is re-exported here, so tests say `common::Server`.
#![allow(dead_code, unused_imports)] // Each test binary uses a different part of the harness.

mod brokers;
mod cloud;
mod federation;
mod http;
pub mod load;
mod postgres;
mod prosody;
mod server;

pub use brokers::*;
pub use cloud::*;
pub use federation::*;
pub use http::*;
pub use postgres::*;
pub use prosody::*;
pub use server::*;

/// A port free now, below the kernel's ephemeral range (32768 and up): a
/// server restarted on it must not find it taken by another server's port-0
/// listener or by an outgoing connection in the meantime.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919) ^ std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let port = 20_000 + (seed.wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A benchmark knob: the variable's value, or `default` when unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
