//! Runs the real `dmtree` binary for end-to-end tests, and talks to it over HTTP.
//! One module per concern; everything is re-exported here, so tests say `common::Server`.
#![allow(dead_code, unused_imports)] // Each test binary uses a different part of the harness.

mod brokers;
mod federation;
mod http;
pub mod load;
mod postgres;
mod prosody;
mod server;

pub use brokers::*;
pub use federation::*;
pub use http::*;
pub use postgres::*;
pub use prosody::*;
pub use server::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A benchmark knob: the variable's value, or `default` when unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
