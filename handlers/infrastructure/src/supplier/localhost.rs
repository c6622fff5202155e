//! The local host through sysinfo. Rates (CPU usage, disk and network bytes
//! per second) are over the interval between two polls; the first poll
//! samples twice, sysinfo's minimum interval apart, so it has them too.

use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json, json};
use sysinfo::{Disks, MINIMUM_CPU_UPDATE_INTERVAL, Networks, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{Supplier, SupplyError};

#[derive(Default)]
pub struct Localhost {
    probes: Mutex<Option<Probes>>,
}

struct Probes {
    system: System,
    disks: Disks,
    networks: Networks,
    at: Instant,
}

#[async_trait]
impl Supplier for Localhost {
    async fn poll(&self) -> Result<Json, SupplyError> {
        let first = self.probes.lock().is_none();
        if first {
            let mut probes = Probes::new()?;
            probes.refresh();
            *self.probes.lock() = Some(probes);
            tokio::time::sleep(MINIMUM_CPU_UPDATE_INTERVAL).await;
        }
        let mut guard = self.probes.lock();
        let probes = guard.as_mut().ok_or_else(|| SupplyError::Local("no probes".into()))?;
        let secs = probes.refresh();
        Ok(probes.report(secs))
    }
}

fn local(e: impl std::fmt::Display) -> SupplyError {
    SupplyError::Local(e.to_string())
}

impl Probes {
    fn new() -> Result<Self, SupplyError> {
        Ok(Self {
            system: System::new().map_err(local)?,
            disks: Disks::new_with_refreshed_list().map_err(local)?,
            networks: Networks::new_with_refreshed_list().map_err(local)?,
            at: Instant::now(),
        })
    }

    /// Refreshes everything; returns the seconds since the previous refresh.
    fn refresh(&mut self) -> f64 {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.system.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
        self.disks.refresh(true);
        self.networks.refresh(true);
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = Instant::now();
        secs
    }

    fn report(&self, secs: f64) -> Json {
        let s = &self.system;
        let cores: Map<String, Json> = s
            .cpus()
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), json!({"usage": round(c.usage().into()), "frequency_mhz": c.frequency()})))
            .collect();
        let (total, available) = (s.total_memory(), s.available_memory());
        let load = System::load_average().map(|l| json!({"one": l.one, "five": l.five, "fifteen": l.fifteen}));
        json!({
            "cpu": {"usage": round(s.global_cpu_usage().into()), "count": cores.len(), "cores": cores},
            "memory": {
                "total": total, "used": s.used_memory(), "available": available, "free": s.free_memory(),
                "usage": round(percent(total - available.min(total), total)),
            },
            "swap": {"total": s.total_swap(), "used": s.used_swap(), "free": s.free_swap()},
            "disks": self.disks(secs),
            "networks": self.networks(secs),
            "system": {
                "load": load.unwrap_or(Json::Null),
                "uptime_s": System::uptime().unwrap_or(0),
                "processes": s.processes().len(),
            },
        })
    }

    fn disks(&self, secs: f64) -> Map<String, Json> {
        self.disks
            .iter()
            .map(|d| {
                let (total, free) = (d.total_space(), d.available_space());
                let io = d.usage();
                let mount = d.mount_point().to_string_lossy().into_owned();
                let entry = json!({
                    "mount_point": mount,
                    "device": d.name().to_string_lossy(),
                    "file_system": d.file_system().to_string_lossy(),
                    "total": total, "available": free, "used": total - free.min(total),
                    "usage": round(percent(total - free.min(total), total)),
                    "read_bytes_total": io.total_read_bytes, "written_bytes_total": io.total_written_bytes,
                    "read_bytes_per_s": round(io.read_bytes as f64 / secs),
                    "written_bytes_per_s": round(io.written_bytes as f64 / secs),
                });
                (disk_name(&mount), entry)
            })
            .collect()
    }

    fn networks(&self, secs: f64) -> Map<String, Json> {
        self.networks
            .iter()
            .map(|(name, n)| {
                let entry = json!({
                    "rx_bytes_total": n.total_received(), "tx_bytes_total": n.total_transmitted(),
                    "rx_packets_total": n.total_packets_received(), "tx_packets_total": n.total_packets_transmitted(),
                    "rx_errors_total": n.total_errors_on_received(), "tx_errors_total": n.total_errors_on_transmitted(),
                    "rx_bytes_per_s": round(n.received() as f64 / secs),
                    "tx_bytes_per_s": round(n.transmitted() as f64 / secs),
                });
                (name.to_string_lossy().into_owned(), entry)
            })
            .collect()
    }
}

/// A disk's node name: its mount point, `root` for `/`, with `/` as `_`.
fn disk_name(mount: &str) -> String {
    match mount.trim_matches('/') {
        "" => "root".into(),
        m => m.replace('/', "_"),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// Two decimals: finer changes are noise and would only make events.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_are_plain() {
        assert_eq!(disk_name("/"), "root");
        assert_eq!(disk_name("/var/lib"), "var_lib");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_local_host_reports_real_values() {
        let host = Localhost::default();
        let a = host.poll().await.unwrap();
        assert!(a["cpu"]["count"].as_u64().unwrap() >= 1);
        assert!(a["memory"]["total"].as_u64().unwrap() > 0);
        assert!(a["system"]["processes"].as_u64().unwrap() > 0);
        let usage = a["cpu"]["usage"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&usage), "{usage}");
        assert!(a["networks"].as_object().unwrap().contains_key("lo"), "{}", a["networks"]);
    }
}
