//! The machine's RabbitMQ, and names no other run uses.

use std::process::Command;

/// The machine's RabbitMQ (`scripts/test` makes sure it runs).
pub fn amqp_url() -> String {
    std::env::var("DMTREE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs `rabbitmqctl` with these arguments; panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name no other test run uses (exchanges and queues outlive test processes).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}
