//! The registry: members, births, the coordinator and its term, resource
//! assignments. PostgreSQL for a cloud, SQLite for a one-member cloud; the
//! same SQL runs on both through sqlx's `Any` driver, with the few dialect
//! differences in [`Dialect`]. Time is the database's clock, in
//! milliseconds, so no manager's clock matters.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry: {0}")]
    Db(#[from] sqlx::Error),
    #[error("registry migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The writer is not the coordinator of the current term.
    #[error("fenced: term {held} is over (the registry is at term {current})")]
    Fenced { held: u64, current: u64 },
    #[error("resource {resource} belongs to another AMQP user")]
    NotOwner { resource: String },
    #[error("no live manager has room")]
    NoRoom,
    /// The requester is an older instance: a newer one holds the resource.
    #[error("instance {current} of {resource} supersedes the requester")]
    Superseded { resource: String, current: u64 },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn now(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint",
            Self::Sqlite => "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    fn next(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT nextval('dmtree_cloud_seq')",
            Self::Sqlite => "UPDATE dmtree_cloud_seq SET n = n + 1 RETURNING n",
        }
    }

    /// Row locks; SQLite serialises writers anyway.
    fn lock(self, mode: &'static str) -> &'static str {
        match self {
            Self::Postgres => mode,
            Self::Sqlite => "",
        }
    }
}

/// One join of a member: a new birth, and the member id's next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    pub birth: u64,
    pub instance: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberRow {
    pub id: String,
    pub birth: u64,
    pub instance: u64,
    pub endpoint: String,
    pub lease_until: i64,
    pub capacity: u64,
    pub live: bool,
    pub held: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoordinatorRow {
    pub id: Option<String>,
    pub birth: Option<u64>,
    pub instance: Option<u64>,
    pub term: u64,
    pub since: i64,
}

/// What the coordinator writes under: its own incarnation and its term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorFence {
    pub id: String,
    pub instance: u64,
    pub term: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceRow {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub manager: Option<String>,
    pub manager_instance: Option<u64>,
    pub status: String,
    pub endpoint: String,
    pub instance: u64,
    pub nonce: String,
    pub reply_to: String,
    pub term: u64,
    pub policy: String,
    pub pinned: bool,
    pub updated: i64,
}

/// The registry's view after an election round.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub coordinator: CoordinatorRow,
    /// Live members by birth, the coordinator first.
    pub successors: Vec<String>,
    pub now: i64,
}

/// A Manage Me, as the coordinator records it.
#[derive(Debug, Clone)]
pub struct Request {
    pub resource: String,
    pub kind: String,
    pub owner: String,
    pub nonce: String,
    pub endpoint: String,
    pub reply_to: String,
    pub policy: String,
    /// The instance the requester held before, if any.
    pub previous: Option<u64>,
}

pub struct Registry {
    pool: AnyPool,
    dialect: Dialect,
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

const RESOURCE_COLUMNS: &str = "id, kind, owner, manager, manager_instance, status, endpoint, instance, nonce, reply_to, term, policy, pinned, updated";

fn resource_row(row: &AnyRow) -> Result<ResourceRow> {
    Ok(ResourceRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        owner: row.try_get("owner")?,
        manager: row.try_get("manager")?,
        manager_instance: row.try_get::<Option<i64>, _>("manager_instance")?.map(u),
        status: row.try_get("status")?,
        endpoint: row.try_get("endpoint")?,
        instance: u(row.try_get("instance")?),
        nonce: row.try_get("nonce")?,
        reply_to: row.try_get("reply_to")?,
        term: u(row.try_get("term")?),
        policy: row.try_get("policy")?,
        pinned: row.try_get::<i64, _>("pinned")? != 0,
        updated: row.try_get("updated")?,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Registry {
    /// Opens `postgres://…` or `sqlite://…` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres };
        let options = match dialect {
            // One writer: SQLite would otherwise answer "database is locked".
            Dialect::Sqlite => AnyPoolOptions::new().max_connections(1),
            Dialect::Postgres => AnyPoolOptions::new().max_connections(8),
        };
        let pool = options.acquire_timeout(std::time::Duration::from_secs(5)).connect(url).await?;
        match dialect {
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
        }
        Ok(Self { pool, dialect })
    }

    async fn now(&self, tx: &mut Tx<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(self.dialect.now()).fetch_one(&mut **tx).await?)
    }

    async fn next(&self, tx: &mut Tx<'_>) -> Result<u64> {
        Ok(u(sqlx::query_scalar(self.dialect.next()).fetch_one(&mut **tx).await?))
    }

    /// Joins (or rejoins) as `id`: a birth never used before and the next instance.
    pub async fn join(&self, id: &str, endpoint: &str, lease_ms: u64, capacity: u64) -> Result<Incarnation> {
        let mut tx = self.pool.begin().await?;
        let birth = self.next(&mut tx).await?;
        let now = self.now(&mut tx).await?;
        let instance: Option<i64> = sqlx::query_scalar("SELECT instance FROM dmtree_members WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let instance = u(instance.unwrap_or(0)) + 1;
        sqlx::query(
            "INSERT INTO dmtree_members (id, birth, instance, endpoint, lease_until, capacity) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET birth = $2, instance = $3, endpoint = $4, lease_until = $5, capacity = $6",
        )
        .bind(id)
        .bind(birth as i64)
        .bind(instance as i64)
        .bind(endpoint)
        .bind(now + lease_ms as i64)
        .bind(capacity as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Incarnation { birth, instance })
    }

    /// Renews the lease; false when it had expired (or another instance took
    /// the id), and the caller must rejoin with a new birth.
    pub async fn renew(&self, id: &str, me: Incarnation, lease_ms: u64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE dmtree_members SET lease_until = $1 WHERE id = $2 AND instance = $3 AND birth = $4 AND lease_until > $5",
        )
        .bind(now + lease_ms as i64)
        .bind(id)
        .bind(me.instance as i64)
        .bind(me.birth as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// One election round: the live member with the lowest birth is the
    /// coordinator; a change bumps the term in the same transaction.
    pub async fn elect(&self, successors: usize) -> Result<View> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let current = self.coordinator_locked(&mut tx, self.dialect.lock(" FOR UPDATE")).await?;
        let live = sqlx::query(
            "SELECT id, birth, instance FROM dmtree_members WHERE lease_until > $1 ORDER BY birth LIMIT $2",
        )
        .bind(now)
        .bind(successors as i64 + 1)
        .fetch_all(&mut *tx)
        .await?;
        let first = match live.first() {
            Some(row) => Some((row.try_get::<String, _>("id")?, u(row.try_get("birth")?), u(row.try_get("instance")?))),
            None => None,
        };
        let mut coordinator = current.clone();
        if let Some((id, birth, instance)) = first
            && (current.id.as_deref() != Some(id.as_str())
                || current.instance != Some(instance)
                || current.birth != Some(birth))
        {
            coordinator = CoordinatorRow {
                id: Some(id),
                birth: Some(birth),
                instance: Some(instance),
                term: current.term + 1,
                since: now,
            };
            sqlx::query("UPDATE dmtree_coordinator SET id = $1, birth = $2, instance = $3, term = $4, since = $5 WHERE singleton = 1")
                .bind(coordinator.id.clone())
                .bind(birth as i64)
                .bind(instance as i64)
                .bind(coordinator.term as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let successors = live.iter().filter_map(|r| r.try_get::<String, _>("id").ok()).collect();
        Ok(View { coordinator, successors, now })
    }

    async fn coordinator_locked(&self, tx: &mut Tx<'_>, lock: &str) -> Result<CoordinatorRow> {
        let sql = format!("SELECT id, birth, instance, term, since FROM dmtree_coordinator WHERE singleton = 1{lock}");
        let row = sqlx::query(&sql).fetch_one(&mut **tx).await?;
        Ok(CoordinatorRow {
            id: row.try_get("id")?,
            birth: row.try_get::<Option<i64>, _>("birth")?.map(u),
            instance: row.try_get::<Option<i64>, _>("instance")?.map(u),
            term: u(row.try_get("term")?),
            since: row.try_get("since")?,
        })
    }

    /// Holds the coordinator row (shared) until the transaction ends, so no
    /// election can commit between this check and the caller's writes.
    async fn fence(&self, tx: &mut Tx<'_>, fence: &CoordinatorFence) -> Result<()> {
        let now = self.coordinator_locked(tx, self.dialect.lock(" FOR SHARE")).await?;
        if now.term != fence.term
            || now.id.as_deref() != Some(fence.id.as_str())
            || now.instance != Some(fence.instance)
        {
            return Err(RegistryError::Fenced { held: fence.term, current: now.term });
        }
        Ok(())
    }

    pub async fn members(&self) -> Result<Vec<MemberRow>> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT m.id, m.birth, m.instance, m.endpoint, m.lease_until, m.capacity, \
             (SELECT count(*) FROM dmtree_resources r WHERE r.manager = m.id AND r.manager_instance = m.instance) AS held \
             FROM dmtree_members m ORDER BY m.birth",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let lease_until: i64 = row.try_get("lease_until")?;
                Ok(MemberRow {
                    id: row.try_get("id")?,
                    birth: u(row.try_get("birth")?),
                    instance: u(row.try_get("instance")?),
                    endpoint: row.try_get("endpoint")?,
                    lease_until,
                    capacity: u(row.try_get("capacity")?),
                    live: lease_until > now,
                    held: u(row.try_get("held")?),
                })
            })
            .collect()
    }

    pub async fn coordinator(&self) -> Result<CoordinatorRow> {
        let mut tx = self.pool.begin().await?;
        let row = self.coordinator_locked(&mut tx, "").await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn resource(&self, id: &str) -> Result<Option<ResourceRow>> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(resource_row).transpose()
    }

    pub async fn resources(&self) -> Result<Vec<ResourceRow>> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM dmtree_resources ORDER BY id");
        sqlx::query(&sql).fetch_all(&self.pool).await?.iter().map(resource_row).collect()
    }

    /// The resources the registry says this incarnation holds.
    pub async fn held_by(&self, manager: &str, instance: u64) -> Result<Vec<ResourceRow>> {
        let sql =
            format!("SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE manager = $1 AND manager_instance = $2");
        let rows = sqlx::query(&sql).bind(manager).bind(instance as i64).fetch_all(&self.pool).await?;
        rows.iter().map(resource_row).collect()
    }

    /// The least-loaded live member with room, by birth on ties.
    async fn least_loaded(&self, tx: &mut Tx<'_>, now: i64) -> Result<(String, u64)> {
        let row = sqlx::query(
            "SELECT id, instance FROM (SELECT m.id, m.instance, m.birth, m.capacity, \
             (SELECT count(*) FROM dmtree_resources r WHERE r.manager = m.id AND r.manager_instance = m.instance) AS held \
             FROM dmtree_members m WHERE m.lease_until > $1) AS live WHERE held < capacity ORDER BY held, birth LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        let row = row.ok_or(RegistryError::NoRoom)?;
        Ok((row.try_get("id")?, u(row.try_get("instance")?)))
    }

    async fn member_live(&self, tx: &mut Tx<'_>, id: &str, instance: u64, now: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dmtree_members WHERE id = $1 AND instance = $2 AND lease_until > $3",
        )
        .bind(id)
        .bind(instance as i64)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        Ok(n > 0)
    }

    /// Records a Manage Me: the same agent process keeps its instance and,
    /// while its manager lives, its manager; anything else is placed anew.
    /// Returns the row as it now stands.
    pub async fn place(&self, fence: &CoordinatorFence, req: &Request) -> Result<ResourceRow> {
        let mut tx = self.pool.begin().await?;
        self.fence(&mut tx, fence).await?;
        let now = self.now(&mut tx).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE id = $1{}",
            self.dialect.lock(" FOR UPDATE")
        );
        let existing = sqlx::query(&sql).bind(&req.resource).fetch_optional(&mut *tx).await?;
        let existing = existing.as_ref().map(resource_row).transpose()?;
        if let Some(row) = &existing {
            if row.owner != req.owner {
                return Err(RegistryError::NotOwner { resource: req.resource.clone() });
            }
            let same_process = row.nonce == req.nonce;
            if !same_process && req.previous.is_some_and(|i| i < row.instance) {
                return Err(RegistryError::Superseded { resource: row.id.clone(), current: row.instance });
            }
            let held = match (&row.manager, row.manager_instance) {
                (Some(m), Some(i)) => self.member_live(&mut tx, m, i, now).await?,
                _ => false,
            };
            if same_process && held && row.status != "unreachable" {
                // The same process asking again: it keeps its manager; the
                // current term and its current queue are recorded.
                let mut row = row.clone();
                if row.term != fence.term || row.reply_to != req.reply_to {
                    (row.term, row.reply_to, row.updated) = (fence.term, req.reply_to.clone(), now);
                    self.upsert(&mut tx, &row).await?;
                }
                tx.commit().await?;
                return Ok(row);
            }
        }
        let instance = match &existing {
            Some(row) if row.nonce == req.nonce => row.instance,
            _ => self.next(&mut tx).await?,
        };
        let (manager, manager_instance) = self.least_loaded(&mut tx, now).await?;
        let row = ResourceRow {
            id: req.resource.clone(),
            kind: req.kind.clone(),
            owner: req.owner.clone(),
            manager: Some(manager),
            manager_instance: Some(manager_instance),
            status: "assigned".into(),
            endpoint: req.endpoint.clone(),
            instance,
            nonce: req.nonce.clone(),
            reply_to: req.reply_to.clone(),
            term: fence.term,
            policy: req.policy.clone(),
            pinned: false,
            updated: now,
        };
        self.upsert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn upsert(&self, tx: &mut Tx<'_>, row: &ResourceRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO dmtree_resources ({RESOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET kind = $2, owner = $3, manager = $4, manager_instance = $5, status = $6, \
             endpoint = $7, instance = $8, nonce = $9, reply_to = $10, term = $11, policy = $12, pinned = $13, updated = $14"
        ))
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.owner)
        .bind(row.manager.clone())
        .bind(row.manager_instance.map(|i| i as i64))
        .bind(&row.status)
        .bind(&row.endpoint)
        .bind(row.instance as i64)
        .bind(&row.nonce)
        .bind(&row.reply_to)
        .bind(row.term as i64)
        .bind(&row.policy)
        .bind(row.pinned as i64)
        .bind(row.updated)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Rows written at or after `since` (registry ms), whoever holds them.
    pub async fn changed_since(&self, since: i64) -> Result<Vec<ResourceRow>> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE updated >= $1");
        sqlx::query(&sql).bind(since).fetch_all(&self.pool).await?.iter().map(resource_row).collect()
    }

    /// Resources whose manager is gone, and unreachable ones due a retry.
    pub async fn orphans(&self, retry_ms: u64, limit: usize) -> Result<Vec<ResourceRow>> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM dmtree_resources r WHERE \
             (status <> 'down' OR pinned = 0) AND (NOT EXISTS (SELECT 1 FROM dmtree_members m WHERE m.id = r.manager \
             AND m.instance = r.manager_instance AND m.lease_until > $1) OR (status = 'unreachable' AND updated < $2)) \
             ORDER BY updated LIMIT $3"
        );
        let rows =
            sqlx::query(&sql).bind(now).bind(now - retry_ms as i64).bind(limit as i64).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(resource_row).collect()
    }

    /// Moves an orphan to a live manager (or marks a pinned one down), if it
    /// is still the instance the caller saw.
    pub async fn reassign(&self, fence: &CoordinatorFence, orphan: &ResourceRow) -> Result<Option<ResourceRow>> {
        let mut tx = self.pool.begin().await?;
        self.fence(&mut tx, fence).await?;
        let now = self.now(&mut tx).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE id = $1{}",
            self.dialect.lock(" FOR UPDATE")
        );
        let Some(row) = sqlx::query(&sql).bind(&orphan.id).fetch_optional(&mut *tx).await? else { return Ok(None) };
        let mut row = resource_row(&row)?;
        if row.instance != orphan.instance || row.manager != orphan.manager || row.updated != orphan.updated {
            return Ok(None);
        }
        if row.pinned {
            // A manager's own host cannot move: it is down with its manager.
            row.status = "down".into();
        } else {
            let (manager, instance) = self.least_loaded(&mut tx, now).await?;
            row.manager = Some(manager);
            row.manager_instance = Some(instance);
            row.status = match row.status.as_str() {
                "unreachable" => "unreachable".into(),
                _ => "assigned".into(),
            };
            row.term = fence.term;
        }
        row.updated = now;
        self.upsert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Many holder writes of status in one transaction (one commit); for
    /// each, whether it applied.
    pub async fn set_statuses(&self, holder: (&str, u64), changes: &[(String, u64, &str)]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let mut applied = Vec::with_capacity(changes.len());
        for (resource, instance, status) in changes {
            let done = sqlx::query(
                "UPDATE dmtree_resources SET status = $1, updated = $2 WHERE id = $3 AND instance = $4 AND manager = $5 AND manager_instance = $6",
            )
            .bind(*status)
            .bind(now)
            .bind(resource)
            .bind(*instance as i64)
            .bind(holder.0)
            .bind(holder.1 as i64)
            .execute(&mut *tx)
            .await?;
            applied.push(done.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Registers a resource that lives inside a manager (its own host).
    pub async fn pin(&self, holder: (&str, u64), id: &str, kind: &str, endpoint: &str) -> Result<ResourceRow> {
        let mut tx = self.pool.begin().await?;
        let now = self.now(&mut tx).await?;
        let instance = self.next(&mut tx).await?;
        let row = ResourceRow {
            id: id.into(),
            kind: kind.into(),
            owner: String::new(),
            manager: Some(holder.0.into()),
            manager_instance: Some(holder.1),
            status: "up".into(),
            endpoint: endpoint.into(),
            instance,
            nonce: String::new(),
            reply_to: String::new(),
            term: 0,
            policy: "require-user-input".into(),
            pinned: true,
            updated: now,
        };
        self.upsert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(resource: &str, nonce: &str) -> Request {
        Request {
            resource: resource.into(),
            kind: "service".into(),
            owner: "agent".into(),
            nonce: nonce.into(),
            endpoint: String::new(),
            reply_to: "q".into(),
            policy: "require-user-input".into(),
            previous: None,
        }
    }

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let registry = Registry::open(&url).await.unwrap();
        (dir, registry)
    }

    #[tokio::test]
    async fn births_grow_and_the_lowest_live_birth_coordinates() {
        let (_dir, r) = registry().await;
        let a = r.join("a", "", 60_000, 10).await.unwrap();
        let b = r.join("b", "", 60_000, 10).await.unwrap();
        assert!(b.birth > a.birth);
        let view = r.elect(3).await.unwrap();
        assert_eq!(view.coordinator.id.as_deref(), Some("a"));
        assert_eq!(view.coordinator.term, 1);
        assert_eq!(view.successors, ["a", "b"]);
        assert_eq!(r.elect(3).await.unwrap().coordinator.term, 1, "no change, no new term");
        // `a` rejoins: a new birth, so `b` is now the oldest.
        let a2 = r.join("a", "", 60_000, 10).await.unwrap();
        assert!(a2.birth > b.birth && a2.instance == a.instance + 1);
        assert!(!r.renew("a", a, 60_000).await.unwrap(), "the old incarnation's lease is gone");
        let view = r.elect(3).await.unwrap();
        assert_eq!((view.coordinator.id.as_deref(), view.coordinator.term), (Some("b"), 2));
    }

    #[tokio::test]
    async fn a_deposed_coordinator_is_fenced() {
        let (_dir, r) = registry().await;
        let a = r.join("a", "", 60_000, 10).await.unwrap();
        let view = r.elect(3).await.unwrap();
        let fence = CoordinatorFence { id: "a".into(), instance: a.instance, term: view.coordinator.term };
        let row = r.place(&fence, &request("web-1", "n1")).await.unwrap();
        assert_eq!((row.manager.as_deref(), row.term), (Some("a"), 1));
        assert_eq!(r.place(&fence, &request("web-1", "n1")).await.unwrap().instance, row.instance, "idempotent");
        let again = r.place(&fence, &request("web-1", "n2")).await.unwrap();
        assert!(again.instance > row.instance, "a new process is a new instance");
        let mut other = request("web-1", "n3");
        other.owner = "intruder".into();
        assert!(matches!(r.place(&fence, &other).await, Err(RegistryError::NotOwner { .. })));
        let old_process = Request { previous: Some(row.instance), ..request("web-1", "n1") };
        assert!(matches!(r.place(&fence, &old_process).await, Err(RegistryError::Superseded { .. })));
        r.join("a", "", 60_000, 10).await.unwrap();
        r.elect(3).await.unwrap();
        assert!(matches!(
            r.place(&fence, &request("web-2", "n")).await,
            Err(RegistryError::Fenced { held: 1, current: 2 })
        ));
        assert!(r.resource("web-2").await.unwrap().is_none());
    }
}
