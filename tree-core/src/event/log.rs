//! The log itself: numbering (`PendingEvents`, sealed by the store as it
//! journals them), the journal task for events of no transaction, the
//! publisher that delivers released events in order, and cursors.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Delivery, Event, EventDraft, EventLogConfig, SharedAcls};
use crate::store::TreeStore;

/// Sealed events on their way to subscribers.
struct Release {
    events: Vec<Arc<Event>>,
    /// Resolves once the change the events describe is visible to readers.
    visible: Option<oneshot::Receiver<()>>,
    /// Told the last revision once the events are delivered.
    published: Option<oneshot::Sender<u64>>,
}

/// Numbers events and queues them for delivery in that order.
struct Sequencer {
    next: Mutex<u64>,
    acls: SharedAcls,
    release: mpsc::UnboundedSender<Release>,
}

/// Events of one commit on their way into the journal. The store seals them
/// (numbers them) when it writes them, then releases them once that write is
/// durable, or unseals them (gives their revisions back) if it failed. Seals
/// and releases must come in the same order, and an unseal before the next
/// seal: one writer does all three.
pub struct PendingEvents {
    seq: Arc<Sequencer>,
    drafts: Vec<EventDraft>,
    sealed: Vec<Arc<Event>>,
    visible: Option<oneshot::Receiver<()>>,
    published: Option<oneshot::Sender<u64>>,
}

impl PendingEvents {
    /// Assigns the next revisions and stamps the read rules in force now.
    pub fn seal(&mut self) -> &[Arc<Event>] {
        let now = Utc::now();
        let mut next = self.seq.next.lock();
        let acls = self.seq.acls.read();
        self.sealed = self
            .drafts
            .drain(..)
            .map(|mut d| {
                d.stamp(&acls);
                let e = Arc::new(d.seal(*next, now));
                *next += 1;
                e
            })
            .collect();
        &self.sealed
    }

    /// The write is durable: deliver the events.
    pub fn release(self) {
        let release = Release { events: self.sealed, visible: self.visible, published: self.published };
        let _ = self.seq.release.send(release);
    }

    /// The write failed: the revisions go to the next events instead.
    pub fn unseal(self) {
        if let Some(first) = self.sealed.first() {
            *self.seq.next.lock() = first.revision;
        }
    }
}

/// State shared with the publisher task (which must not keep the log itself alive).
struct Shared {
    ring: RwLock<VecDeque<Arc<Event>>>,
    /// The highest revision made durable and visible.
    head: AtomicU64,
    live: broadcast::Sender<Arc<Event>>,
    store: Arc<dyn TreeStore>,
    journal_failures: AtomicU64,
    config: EventLogConfig,
}

pub struct EventLog {
    seq: Arc<Sequencer>,
    /// Events that belong to no transaction, for the journal task.
    journal: mpsc::UnboundedSender<PendingEvents>,
    shared: Arc<Shared>,
}

impl EventLog {
    /// Opens the log on a store, resuming after its last revision. Needs a tokio runtime.
    pub async fn open(store: Arc<dyn TreeStore>, config: EventLogConfig, acls: SharedAcls) -> crate::Result<Arc<Self>> {
        let head = store.head_revision().await?;
        let recent = store.read_events(head.saturating_sub(config.ring as u64), config.ring).await?;
        let (live, _) = broadcast::channel(config.live_buffer.max(16));
        let shared = Arc::new(Shared {
            ring: RwLock::new(recent.into_iter().map(Arc::new).collect()),
            head: AtomicU64::new(head),
            live,
            store: store.clone(),
            journal_failures: AtomicU64::new(0),
            config,
        });
        let (release, released) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(shared.clone(), released));
        let (journal, to_journal) = mpsc::unbounded_channel();
        tokio::spawn(journal_loop(shared.clone(), to_journal));
        let seq = Arc::new(Sequencer { next: Mutex::new(head + 1), acls, release });
        Ok(Arc::new(Self { seq, journal, shared }))
    }

    /// A commit's events, for its store to seal and release; delivery waits
    /// for `visible`. The receiver learns the last revision once delivered.
    pub fn pending(
        &self,
        drafts: Vec<EventDraft>,
        visible: Option<oneshot::Receiver<()>>,
    ) -> (PendingEvents, oneshot::Receiver<u64>) {
        let (published, delivered) = oneshot::channel();
        let pending =
            PendingEvents { seq: self.seq.clone(), drafts, sealed: Vec::new(), visible, published: Some(published) };
        (pending, delivered)
    }

    /// Journals and delivers events that belong to no transaction.
    pub fn publish(&self, drafts: Vec<EventDraft>) {
        let (pending, _) = self.pending(drafts, None);
        let _ = self.journal.send(pending);
    }

    /// Like [`publish`](Self::publish), and waits until the events are
    /// durable and delivered (and everything published before them); returns
    /// the head revision then.
    pub async fn append(&self, drafts: Vec<EventDraft>) -> u64 {
        let (pending, delivered) = self.pending(drafts, None);
        let _ = self.journal.send(pending);
        delivered.await.unwrap_or_else(|_| self.head())
    }

    /// The highest durable revision.
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    pub fn journal_failures(&self) -> u64 {
        self.shared.journal_failures.load(Ordering::Relaxed)
    }

    /// A cursor yielding every event after `since`, replayed then live.
    pub fn cursor(&self, since: u64) -> EventCursor {
        EventCursor {
            next: since.saturating_add(1),
            rx: self.shared.live.subscribe(),
            shared: self.shared.clone(),
            backlog: VecDeque::new(),
        }
    }
}

/// Journals the events of no transaction (mounts, sessions, handlers' own
/// changes), a batch at a time.
async fn journal_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PendingEvents>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let count: usize = batch.iter().map(|p| p.drafts.len()).sum();
        if let Err(e) = shared.store.journal(std::mem::take(&mut batch)).await {
            shared.journal_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, count, "event journal append failed; the events are lost");
        }
    }
}

/// Delivers released events in revision order, each batch once its change is visible.
async fn publish_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Release>) {
    let mut batch = Vec::new();
    let mut since_prune = 0u64;
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for release in batch.drain(..) {
            if let Some(visible) = release.visible {
                let _ = visible.await;
            }
            if let Some(last) = release.events.last() {
                let mut ring = shared.ring.write();
                ring.extend(release.events.iter().cloned());
                while ring.len() > shared.config.ring {
                    ring.pop_front();
                }
                shared.head.store(last.revision, Ordering::Release);
            }
            for e in &release.events {
                let _ = shared.live.send(e.clone());
            }
            if let Some(published) = release.published {
                let _ = published.send(shared.head.load(Ordering::Acquire));
            }
            since_prune += release.events.len() as u64;
        }
        if since_prune >= 10_000 {
            since_prune = 0;
            let keep_after = shared.head.load(Ordering::Acquire).saturating_sub(shared.config.retain);
            if keep_after > 0
                && let Err(e) = shared.store.prune_events(keep_after).await
            {
                tracing::warn!(error = %e, "event journal pruning failed");
            }
        }
    }
}

/// Reads the log in revision order without gaps: from the ring or the journal
/// while behind, then from the live broadcast.
pub struct EventCursor {
    next: u64,
    rx: broadcast::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
    backlog: VecDeque<Arc<Event>>,
}

const PAGE: usize = 1024;

impl EventCursor {
    /// The next delivery; `None` once the log is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            while let Some(e) = self.backlog.pop_front() {
                if e.revision >= self.next {
                    self.next = e.revision + 1;
                    return Some(Delivery::Event(e));
                }
            }
            if self.next <= self.shared.head.load(Ordering::Acquire) {
                if let Some(gap) = self.fill_backlog().await {
                    return Some(gap);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(e) if e.revision == self.next => {
                    self.next += 1;
                    return Some(Delivery::Event(e));
                }
                // Older ones were replayed already; newer ones mean we must read back.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next revision this cursor will deliver.
    pub fn position(&self) -> u64 {
        self.next
    }

    async fn fill_backlog(&mut self) -> Option<Delivery> {
        {
            let ring = self.shared.ring.read();
            if let Some(first) = ring.front()
                && first.revision <= self.next
            {
                let skip = (self.next - first.revision) as usize;
                self.backlog.extend(ring.iter().skip(skip).take(PAGE).cloned());
                return None;
            }
        }
        match self.shared.store.read_events(self.next - 1, PAGE).await {
            Ok(events) if events.first().is_some_and(|e| e.revision == self.next) => {
                self.backlog.extend(events.into_iter().map(Arc::new));
                None
            }
            Ok(events) => {
                // The journal no longer has `next`: report the hole and skip it.
                let oldest_ring = self.shared.ring.read().front().map(|e| e.revision);
                let resume = events.first().map(|e| e.revision).or(oldest_ring).unwrap_or(self.next + 1);
                let gap = Delivery::Gap { from: self.next, to: resume - 1 };
                self.next = resume;
                Some(gap)
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal read failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Acl, AclTable};
    use crate::event::EventKind;
    use crate::store::MemoryTreeStore;
    use crate::uri::Uri;
    use crate::value::Value;

    fn acls() -> SharedAcls {
        Arc::new(RwLock::new(AclTable::new(Acl::default_root())))
    }

    fn draft(n: u64) -> EventDraft {
        EventDraft::new(EventKind::Replaced, Uri::from_key(format!("n{n}"))).value(Some(Value::Int(n as i64)))
    }

    #[tokio::test]
    async fn revisions_increase_and_replay_then_live() {
        let log =
            EventLog::open(Arc::new(MemoryTreeStore::default()), EventLogConfig::default(), acls()).await.unwrap();
        assert_eq!(log.append(vec![draft(1), draft(2)]).await, 2);
        let mut cursor = log.cursor(0);
        log.publish(vec![draft(3)]);
        for want in 1..=3 {
            match cursor.next().await {
                Some(Delivery::Event(e)) => assert_eq!(e.revision, want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reads_back_from_the_journal_and_reports_gaps() {
        let store = Arc::new(MemoryTreeStore::default());
        let config = EventLogConfig { ring: 4, retain: 1_000, live_buffer: 16 };
        let log = EventLog::open(store.clone(), config, acls()).await.unwrap();
        log.append((1..=10).map(draft).collect()).await;
        let mut cursor = log.cursor(2);
        match cursor.next().await {
            Some(Delivery::Event(e)) => assert_eq!(e.revision, 3),
            other => panic!("unexpected {other:?}"),
        }
        store.prune_events(6).await.unwrap();
        let mut late = log.cursor(1);
        assert_eq!(late.next().await, Some(Delivery::Gap { from: 2, to: 6 }));
        match late.next().await {
            Some(Delivery::Event(e)) => assert_eq!(e.revision, 7),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn resumes_revisions_after_reopen() {
        let store = Arc::new(MemoryTreeStore::default());
        let log = EventLog::open(store.clone(), EventLogConfig::default(), acls()).await.unwrap();
        log.append(vec![draft(1), draft(2)]).await;
        drop(log);
        let log = EventLog::open(store, EventLogConfig::default(), acls()).await.unwrap();
        assert_eq!(log.head(), 2);
        assert_eq!(log.append(vec![draft(3)]).await, 3);
    }

    #[tokio::test]
    async fn lagging_cursor_catches_up_from_the_ring() {
        let config = EventLogConfig { ring: 10_000, retain: 100_000, live_buffer: 16 };
        let log = EventLog::open(Arc::new(MemoryTreeStore::default()), config, acls()).await.unwrap();
        let mut cursor = log.cursor(0);
        log.append((1..=500).map(draft).collect()).await;
        for want in 1..=500 {
            match cursor.next().await {
                Some(Delivery::Event(e)) => assert_eq!(e.revision, want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
