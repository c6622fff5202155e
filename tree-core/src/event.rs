//! The event log: every committed change gets the next revision.
//!
//! The store numbers events ([`PendingEvents::seal`]) at the moment it writes
//! them to its journal, together with the change they describe, so revisions
//! follow the journal's order and a change never commits without its events.
//! Once that write is durable the store releases them, in revision order, to
//! one publisher task, which waits until the change is visible, appends the
//! events to the in-memory ring and only then broadcasts them. So anything a
//! live subscriber has seen can be replayed, and replay plus live never
//! leaves a gap.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::acl::{Acl, AclTable, ReadRule};
use crate::uri::Uri;
use crate::value::{Format, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Added,
    Deleted,
    Replaced,
    Renamed,
    Copied,
    Exec,
    SessionOpened,
    SessionClosed,
    Monitoring,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "added",
            EventKind::Deleted => "deleted",
            EventKind::Replaced => "replaced",
            EventKind::Renamed => "renamed",
            EventKind::Copied => "copied",
            EventKind::Exec => "exec",
            EventKind::SessionOpened => "session_opened",
            EventKind::SessionClosed => "session_closed",
            EventKind::Monitoring => "monitoring",
        }
    }

    pub const ALL: [EventKind; 9] = [
        EventKind::Added,
        EventKind::Deleted,
        EventKind::Replaced,
        EventKind::Renamed,
        EventKind::Copied,
        EventKind::Exec,
        EventKind::SessionOpened,
        EventKind::SessionClosed,
        EventKind::Monitoring,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub timestamp: DateTime<Utc>,
    pub kind: EventKind,
    pub uri: Uri,
    /// The new URI, for `renamed` and `copied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Uri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// For an event bridged from a remote tree: the instances it came
    /// through, the one where it happened first. Empty for local events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Who may ever read this event: fixed at commit, never sent on the wire.
    #[serde(skip)]
    pub read: ReadRule,
}

/// An event as the journal keeps it: the wire form plus its read rule.
#[derive(Debug, Serialize, Deserialize)]
pub struct JournalEntry {
    #[serde(flatten)]
    pub event: Event,
    #[serde(default, skip_serializing_if = "ReadRule::is_empty")]
    pub read: ReadRule,
}

impl JournalEntry {
    pub fn from_event(e: &Event) -> Self {
        Self { read: e.read.clone(), event: e.clone() }
    }

    pub fn into_event(self) -> Event {
        Event { read: self.read, ..self.event }
    }
}

/// The ACL table the log stamps read rules from (shared with the tree).
pub type SharedAcls = Arc<RwLock<AclTable>>;

/// An event before it has a revision.
#[derive(Debug, Clone)]
pub struct EventDraft {
    kind: EventKind,
    uri: Uri,
    to: Option<Uri>,
    principal: Option<String>,
    value: Option<Value>,
    session: Option<String>,
    via: Vec<String>,
    read: ReadRule,
}

impl EventDraft {
    pub fn new(kind: EventKind, uri: Uri) -> Self {
        Self {
            kind,
            uri,
            to: None,
            principal: None,
            value: None,
            session: None,
            via: Vec::new(),
            read: ReadRule::default(),
        }
    }

    /// Also requires `acl` to grant Get (the ACL that governed the node before the change).
    pub fn readable_under(mut self, acl: Arc<Acl>) -> Self {
        self.read.and(acl);
        self
    }

    /// Replaces the read rule (session events: their owner only).
    pub fn read_rule(mut self, rule: ReadRule) -> Self {
        self.read = rule;
        self
    }

    pub fn via(mut self, via: Vec<String>) -> Self {
        self.via = via;
        self
    }

    /// The same draft with its URIs taken as relative to `mount`.
    pub(crate) fn under(mut self, mount: &Uri) -> Self {
        self.uri = mount.concat(&self.uri);
        self.to = self.to.map(|to| mount.concat(&to));
        self
    }

    pub fn to(mut self, to: Uri) -> Self {
        self.to = Some(to);
        self
    }

    pub fn principal(mut self, p: Option<&str>) -> Self {
        self.principal = p.map(str::to_owned);
        self
    }

    pub fn value(mut self, v: Option<Value>) -> Self {
        self.value = v;
        self
    }

    pub fn session(mut self, s: Option<String>) -> Self {
        self.session = s;
        self
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The new URI, for `renamed` and `copied`.
    pub fn target(&self) -> Option<&Uri> {
        self.to.as_ref()
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    fn seal(self, revision: u64, timestamp: DateTime<Utc>) -> Event {
        Event {
            revision,
            timestamp,
            kind: self.kind,
            uri: self.uri,
            to: self.to,
            principal: self.principal,
            format: self.value.as_ref().map(Value::format),
            value: self.value.as_ref().map(Value::to_json),
            session: self.session,
            via: self.via,
            read: self.read,
        }
    }

    /// Adds the ACLs that govern the event's URIs now (after its commit).
    fn stamp(&mut self, acls: &AclTable) {
        self.read.and(acls.effective(&self.uri));
        if let Some(to) = &self.to {
            self.read.and(acls.effective(to));
        }
    }
}

/// What a subscriber's cursor yields: an event, or notice that some were lost.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event(Arc<Event>),
    /// Revisions `from..=to` are no longer retained; resume after `to`.
    Gap {
        from: u64,
        to: u64,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLogConfig {
    /// Recent events kept in memory for fast replay.
    pub ring: usize,
    /// Events kept in the durable journal; older ones are pruned.
    pub retain: u64,
    /// Live broadcast buffer per subscriber before it must catch up from the ring.
    pub live_buffer: usize,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        Self { ring: 65_536, retain: 1_000_000, live_buffer: 4_096 }
    }
}

mod log;

pub use log::{EventCursor, EventLog, PendingEvents};
