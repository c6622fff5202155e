//! The ContextStore: its database, configuration, counters, and the tasks it
//! runs (the ingest writer, one feed per tree subscription, one forwarder per
//! propagation target, and retention).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dmtree_core::Tree;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value as Json, json};
use sqlx::Row;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, SECTIONS};
use crate::db::{Db, DbError};
use crate::event::ContextEvent;
use crate::ingest::{Job, Report};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs waiting for the writer; beyond it, submitters wait.
    pub queue: usize,
    /// How long a REST submitter waits for its batch to commit.
    pub ingest_timeout: Duration,
    /// How often retention runs.
    pub gc_interval: Duration,
    /// The principal the store's tree subscriptions read as.
    pub principal: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            queue: 1024,
            ingest_timeout: Duration::from_secs(30),
            gc_interval: Duration::from_secs(10),
            principal: "contextstore".into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub ingested: AtomicU64,
    pub duplicates: AtomicU64,
    pub derived: AtomicU64,
    pub late: AtomicU64,
    pub skipped: AtomicU64,
    pub forwarded: AtomicU64,
    db_state: Mutex<String>,
    gc_deleted: Mutex<BTreeMap<String, u64>>,
    forwarders: Mutex<BTreeMap<String, String>>,
}

impl Stats {
    pub fn add(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn set_db_state(&self, state: &str) {
        *self.db_state.lock() = state.to_owned();
    }

    pub fn gc(&self, kind: &str, n: u64) {
        *self.gc_deleted.lock().entry(kind.to_owned()).or_default() += n;
    }

    pub fn forwarder(&self, target: &str, state: &str) {
        self.forwarders.lock().insert(target.to_owned(), state.to_owned());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the store did not commit the batch within {0:?}; retry it")]
    Timeout(Duration),
    #[error("the context store has stopped")]
    Stopped,
}

pub struct ContextStore {
    db: Db,
    config: RwLock<Config>,
    stats: Stats,
    settings: Settings,
    queue: mpsc::Sender<Job>,
    tree: Weak<Tree>,
    feeds: Mutex<HashMap<String, JoinHandle<()>>>,
    forwarders: Mutex<HashMap<String, JoinHandle<()>>>,
    outbox: Arc<Notify>,
    /// How propagation reaches XMPP, once the server provides it.
    relay: std::sync::OnceLock<Arc<dyn crate::propagate::Relay>>,
}

impl ContextStore {
    /// Opens the database, restores the configuration (adding `initial`
    /// entries not set yet) and starts the store's tasks.
    pub async fn start(
        url: &str,
        tree: &Arc<Tree>,
        settings: Settings,
        initial: Config,
    ) -> Result<Arc<Self>, StoreError> {
        let db = Db::connect(url).await?;
        let mut config = Config::default();
        for row in sqlx::query("SELECT section, name, body FROM cs_config").fetch_all(db.pool()).await? {
            let (section, name, body): (String, String, String) =
                (row.get("section"), row.get("name"), row.get("body"));
            let body: Json = serde_json::from_str(&body).unwrap_or_default();
            if let Err(e) = config.set(&section, &name, &body) {
                tracing::error!(section, name, error = %e, "stored context store configuration is invalid; skipped");
            }
        }
        let (queue, rx) = mpsc::channel(settings.queue.max(1));
        let store = Arc::new(Self {
            db,
            config: RwLock::new(config),
            stats: Stats::default(),
            settings,
            queue,
            tree: Arc::downgrade(tree),
            feeds: Mutex::default(),
            forwarders: Mutex::default(),
            outbox: Arc::default(),
            relay: std::sync::OnceLock::new(),
        });
        store.stats.set_db_state("ok");
        let initial = initial.to_json();
        for section in SECTIONS {
            for (name, body) in initial[section].as_object().into_iter().flatten() {
                if !store.config_json()[section].as_object().is_some_and(|m| m.contains_key(name)) {
                    store.set_config(section, name, body).await?;
                }
            }
        }
        tokio::spawn(crate::ingest::writer(store.clone(), rx));
        tokio::spawn(crate::retention::run(Arc::downgrade(&store)));
        let config = store.config();
        for (name, sub) in &config.subscriptions {
            store.start_feed(name, sub.clone());
        }
        for (name, target) in &config.propagation {
            store.start_forwarder(name, target.clone());
        }
        Ok(store)
    }

    /// Lets propagation targets with a `jid` send through this relay.
    pub fn use_relay(&self, relay: Arc<dyn crate::propagate::Relay>) {
        let _ = self.relay.set(relay);
        self.wake_forwarders();
    }

    pub(crate) fn relay(&self) -> Option<&Arc<dyn crate::propagate::Relay>> {
        self.relay.get()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A snapshot of the configuration.
    pub fn config(&self) -> Config {
        self.config.read().clone()
    }

    pub fn config_json(&self) -> Json {
        self.config.read().to_json()
    }

    pub(crate) fn tree(&self) -> Option<Arc<Tree>> {
        self.tree.upgrade()
    }

    /// Stores a batch; answers once it is committed (or after the ingest timeout).
    pub async fn ingest(&self, events: Vec<ContextEvent>) -> Result<Report, StoreError> {
        let rx = self.enqueue(events, None).await?;
        match tokio::time::timeout(self.settings.ingest_timeout, rx).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::Timeout(self.settings.ingest_timeout)),
        }
    }

    pub(crate) async fn enqueue(
        &self,
        events: Vec<ContextEvent>,
        position: Option<(String, u64)>,
    ) -> Result<oneshot::Receiver<Report>, StoreError> {
        let (ack, rx) = oneshot::channel();
        self.queue.send(Job { events, position, ack }).await.map_err(|_| StoreError::Stopped)?;
        Ok(rx)
    }

    /// Checks, persists and applies one configuration entry.
    pub async fn set_config(self: &Arc<Self>, section: &str, name: &str, body: &Json) -> Result<(), StoreError> {
        let mut next = self.config();
        let previous = next.to_json()[section][name].clone();
        next.set(section, name, body).map_err(StoreError::Invalid)?;
        if section == "handlers" && !previous.is_null() && previous != next.to_json()[section][name] {
            // A handler's state is only meaningful for the definition that built it.
            self.forget_handler(name).await?;
        }
        let stored = next.to_json()[section][name].to_string();
        sqlx::query("INSERT INTO cs_config (section, name, body) VALUES ($1, $2, $3) ON CONFLICT (section, name) DO UPDATE SET body = excluded.body")
            .bind(section)
            .bind(name)
            .bind(stored)
            .execute(self.db.pool())
            .await?;
        *self.config.write() = next.clone();
        match section {
            "subscriptions" => self.start_feed(name, next.subscriptions[name].clone()),
            "propagation" => self.start_forwarder(name, next.propagation[name].clone()),
            _ => {}
        }
        Ok(())
    }

    /// Removes a configuration entry and whatever it kept.
    pub async fn remove_config(&self, section: &str, name: &str) -> Result<bool, StoreError> {
        let mut next = self.config();
        if !next.remove(section, name) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM cs_config WHERE section = $1 AND name = $2")
            .bind(section)
            .bind(name)
            .execute(self.db.pool())
            .await?;
        match section {
            "handlers" => self.forget_handler(name).await?,
            "subscriptions" => {
                if let Some(task) = self.feeds.lock().remove(name) {
                    task.abort();
                }
                sqlx::query("DELETE FROM cs_positions WHERE name = $1").bind(name).execute(self.db.pool()).await?;
            }
            "propagation" => {
                if let Some(task) = self.forwarders.lock().remove(name) {
                    task.abort();
                }
                sqlx::query("DELETE FROM cs_outbox WHERE target = $1").bind(name).execute(self.db.pool()).await?;
            }
            _ => {}
        }
        *self.config.write() = next;
        Ok(true)
    }

    async fn forget_handler(&self, name: &str) -> Result<(), StoreError> {
        for table in ["cs_aggregates", "cs_sla", "cs_handler_state"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE handler = $1")).bind(name).execute(self.db.pool()).await?;
        }
        Ok(())
    }

    fn start_feed(self: &Arc<Self>, name: &str, sub: crate::config::Subscription) {
        // A new subscription starts here, now: not wherever the log is once its task runs.
        let now = self.tree().map_or(0, |t| t.events().head());
        let task = tokio::spawn(crate::feed::run(self.clone(), name.to_owned(), sub, now));
        if let Some(old) = self.feeds.lock().insert(name.to_owned(), task) {
            old.abort();
        }
    }

    fn start_forwarder(self: &Arc<Self>, name: &str, target: crate::config::Propagation) {
        let task = tokio::spawn(crate::propagate::run(self.clone(), name.to_owned(), target, self.outbox.clone()));
        if let Some(old) = self.forwarders.lock().insert(name.to_owned(), task) {
            old.abort();
        }
    }

    pub(crate) fn wake_forwarders(&self) {
        self.outbox.notify_waiters();
    }

    /// Monitoring: counters and states, as JSON.
    pub fn monitoring(&self) -> Json {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "database": { "backend": format!("{:?}", self.db.backend()).to_lowercase(), "state": *s.db_state.lock() },
            "ingest": {
                "stored": get(&s.ingested),
                "duplicates": get(&s.duplicates),
                "derived": get(&s.derived),
                "late": get(&s.late),
                "skipped": get(&s.skipped),
                "queue": self.settings.queue - self.queue.capacity(),
            },
            "retention": { "deleted": *s.gc_deleted.lock() },
            "propagation": { "forwarded": get(&s.forwarded), "targets": *s.forwarders.lock() },
        })
    }

    /// The last tree revision ingested for a subscription.
    pub(crate) async fn position(&self, name: &str) -> Result<Option<u64>, sqlx::Error> {
        let row = sqlx::query("SELECT revision FROM cs_positions WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.get::<i64, _>("revision") as u64))
    }
}
