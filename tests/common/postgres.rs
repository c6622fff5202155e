//! The machine's PostgreSQL: fresh databases, and stopping or starting the cluster.

use std::process::Command;

/// A new, empty PostgreSQL database on the machine's server (`scripts/test` starts it).
pub async fn postgres_database() -> String {
    use sqlx::Connection as _;
    let admin =
        std::env::var("DMTREE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("dmtree_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL (./scripts/test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    format!("{}/{name}", admin.rsplit_once('/').expect("url").0)
}

/// Stops or starts the machine's PostgreSQL cluster.
pub fn postgres(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster in /etc/postgresql");
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .output()
        .expect("pg_ctlcluster");
    assert!(out.status.success(), "pg_ctlcluster {action}: {}", String::from_utf8_lossy(&out.stderr));
}
