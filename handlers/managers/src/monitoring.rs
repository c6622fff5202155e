//! Counters under `./managers/monitoring`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Value as Json, json};

/// Why a message was dropped (and dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not JSON.
    Malformed,
    /// JSON, but not a message of the protocol.
    Schema,
    /// No validated `user_id`, or not the resource's owner, or not a manager.
    Unauthorised,
    /// A lower term or an older instance.
    Stale,
    Duplicate,
    UnknownResource,
}

#[derive(Debug, Default)]
pub struct Counters {
    dropped: [AtomicU64; 6],
    pub heartbeats: AtomicU64,
    pub assigned: AtomicU64,
    pub reassigned: AtomicU64,
    /// Registry writes refused because the writer's term was over.
    pub fenced_writes: AtomicU64,
    pub registry_errors: AtomicU64,
    pub commands: AtomicU64,
    pub forwarded: AtomicU64,
    pub down: AtomicU64,
    pub respawns: AtomicU64,
    pub rejoins: AtomicU64,
}

impl Counters {
    pub fn drop(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn to_json(&self) -> Json {
        let d = |w: Dropped| self.dropped[w as usize].load(Relaxed);
        let n = |c: &AtomicU64| c.load(Relaxed);
        json!({
            "dropped": {
                "malformed": d(Dropped::Malformed),
                "schema": d(Dropped::Schema),
                "unauthorised": d(Dropped::Unauthorised),
                "stale": d(Dropped::Stale),
                "duplicate": d(Dropped::Duplicate),
                "unknown": d(Dropped::UnknownResource),
            },
            "heartbeats": n(&self.heartbeats),
            "assigned": n(&self.assigned),
            "reassigned": n(&self.reassigned),
            "fenced_writes": n(&self.fenced_writes),
            "registry_errors": n(&self.registry_errors),
            "commands": n(&self.commands),
            "forwarded": n(&self.forwarded),
            "down": n(&self.down),
            "respawns": n(&self.respawns),
            "rejoins": n(&self.rejoins),
        })
    }
}
