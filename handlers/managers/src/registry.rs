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
    /// `lease`: a member paused inside a transaction longer than this has its
    /// transaction ended by PostgreSQL, so the locks it held (the coordinator
    /// row) cannot stall the election that replaces it.
    pub async fn open(url: &str, lease: std::time::Duration) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres };
        let options = match dialect {
            // One writer: SQLite would otherwise answer "database is locked".
            Dialect::Sqlite => AnyPoolOptions::new().max_connections(1),
            Dialect::Postgres => {
                let idle_ms = lease.as_millis().max(1000) as u64;
                AnyPoolOptions::new().max_connections(8).after_connect(move |conn, _| {
                    Box::pin(async move {
                        let set = format!("SET idle_in_transaction_session_timeout = {idle_ms}");
                        sqlx::query(&set).execute(conn).await.map(drop)
                    })
                })
            }
        };
        let pool = options.acquire_timeout(std::time::Duration::from_secs(5)).connect(url).await?;
        let mut migrator = match dialect {
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        };
        // The rule layer keeps its tables in the same registry, with its own migrations.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
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
}

mod resources;
#[cfg(test)]
mod tests;
