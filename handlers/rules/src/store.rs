//! Where rules and their state live: the manager cloud's registry
//! (PostgreSQL) in a cloud, the server's own SQLite alone. Every member reads
//! the same rules and the same counters, and a firing is a row whose key is
//! the action id (rule, binding, epoch): inserting it is the compare-and-set
//! that lets exactly one evaluator act.

use std::collections::HashMap;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row as _};

use crate::decide::Counters;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

pub struct Store {
    pool: AnyPool,
}

/// A rule as stored.
#[derive(Debug, Clone)]
pub struct StoredRule {
    pub name: String,
    pub owner: String,
    pub spec: String,
    pub updated_ms: i64,
}

/// A firing about to be claimed: its action id and its planned actions (JSON).
pub struct Firing<'a> {
    pub rule: &'a str,
    pub binding: &'a str,
    pub epoch: i64,
    pub actions: &'a str,
}

/// A firing that was claimed and not finished: its evaluator may have died.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub rule: String,
    pub binding: String,
    pub epoch: i64,
    pub member: String,
    pub actions: String,
}

impl Store {
    pub async fn open(url: &str) -> std::result::Result<Self, crate::Error> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let options =
            if sqlite { AnyPoolOptions::new().max_connections(1) } else { AnyPoolOptions::new().max_connections(4) };
        let pool = options.acquire_timeout(std::time::Duration::from_secs(5)).connect(url).await?;
        // One schema for both: plain SQL types.
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn rules(&self) -> Result<Vec<StoredRule>> {
        let rows = sqlx::query("SELECT name, owner, spec, updated_ms FROM dmtree_rules ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRule {
                    name: r.try_get("name")?,
                    owner: r.try_get("owner")?,
                    spec: r.try_get("spec")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    /// Writes a rule; its counters start over, since its meaning may have changed.
    pub async fn put_rule(&self, name: &str, owner: &str, spec: &str, now_ms: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dmtree_rules (name, owner, spec, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, spec = excluded.spec, updated_ms = excluded.updated_ms",
        )
        .bind(name)
        .bind(owner)
        .bind(spec)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dmtree_rule_state WHERE rule = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await
    }

    pub async fn delete_rule(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM dmtree_rules WHERE name = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM dmtree_rule_state WHERE rule = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// The stored counters of a rule, by binding (absent bindings are at their defaults).
    pub async fn counters(&self, rule: &str) -> Result<HashMap<String, Counters>> {
        let rows = sqlx::query(
            "SELECT binding, consecutive, armed, last_fired_ms, last_epoch FROM dmtree_rule_state WHERE rule = $1",
        )
        .bind(rule)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let c = Counters {
                    consecutive: r.try_get::<i64, _>("consecutive")?.clamp(0, u32::MAX as i64) as u32,
                    armed: r.try_get::<i64, _>("armed")? != 0,
                    last_fired_ms: r.try_get("last_fired_ms")?,
                    last_epoch: r.try_get("last_epoch")?,
                };
                Ok((r.try_get("binding")?, c))
            })
            .collect()
    }

    /// Saves counters that changed, each only if its epoch was not counted yet.
    pub async fn save_counters(&self, rule: &str, changed: &[(String, Counters)]) -> Result<()> {
        if changed.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (binding, c) in changed {
            upsert(&mut tx, rule, binding, *c).await?;
        }
        tx.commit().await
    }

    /// Claims a firing: inserts its row and moves the counters, in one
    /// transaction, only if nobody claimed this (rule, binding, epoch) and
    /// nobody counted this epoch already. `false`: someone else acts.
    pub async fn claim(&self, f: &Firing<'_>, member: &str, c: Counters, now_ms: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO dmtree_rule_firings (rule, binding, epoch, member, status, at_ms, actions)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(f.rule)
        .bind(f.binding)
        .bind(f.epoch)
        .bind(member)
        .bind(now_ms)
        .bind(f.actions)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != 1 || !upsert(&mut tx, f.rule, f.binding, c).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records how a claimed firing ended.
    pub async fn finish(&self, rule: &str, binding: &str, epoch: i64, ok: bool, detail: &str) -> Result<()> {
        sqlx::query(
            "UPDATE dmtree_rule_firings SET status = $1, detail = $2 WHERE rule = $3 AND binding = $4 AND epoch = $5",
        )
        .bind(if ok { "done" } else { "failed" })
        .bind(detail)
        .bind(rule)
        .bind(binding)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Firings claimed but never finished, oldest first.
    pub async fn pending(&self) -> Result<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT rule, binding, epoch, member, actions FROM dmtree_rule_firings WHERE status = 'pending' ORDER BY at_ms LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Pending {
                    rule: r.try_get("rule")?,
                    binding: r.try_get("binding")?,
                    epoch: r.try_get("epoch")?,
                    member: r.try_get("member")?,
                    actions: r.try_get("actions")?,
                })
            })
            .collect()
    }

    /// Takes over a pending firing of a member that is gone: `false` if another did.
    pub async fn adopt(&self, p: &Pending, member: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE dmtree_rule_firings SET member = $1 WHERE rule = $2 AND binding = $3 AND epoch = $4 AND member = $5 AND status = 'pending'",
        )
        .bind(member)
        .bind(&p.rule)
        .bind(&p.binding)
        .bind(p.epoch)
        .bind(&p.member)
        .execute(&self.pool)
        .await?;
        Ok(n.rows_affected() == 1)
    }

    /// Forgets finished firings from before `before_ms` (pending ones stay for a redo).
    pub async fn prune(&self, before_ms: i64) -> Result<u64> {
        let n = sqlx::query("DELETE FROM dmtree_rule_firings WHERE status <> 'pending' AND at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(n.rows_affected())
    }

    /// How many firings a rule has on record (all members).
    pub async fn firings(&self, rule: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM dmtree_rule_firings WHERE rule = $1")
            .bind(rule)
            .fetch_one(&self.pool)
            .await
    }
}

/// Writes counters unless this epoch was already counted; `false` if it was.
async fn upsert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rule: &str, binding: &str, c: Counters) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO dmtree_rule_state (rule, binding, consecutive, armed, last_fired_ms, last_epoch) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (rule, binding) DO UPDATE SET consecutive = excluded.consecutive, armed = excluded.armed,
           last_fired_ms = excluded.last_fired_ms, last_epoch = excluded.last_epoch
         WHERE dmtree_rule_state.last_epoch < excluded.last_epoch",
    )
    .bind(rule)
    .bind(binding)
    .bind(c.consecutive as i64)
    .bind(c.armed as i64)
    .bind(c.last_fired_ms)
    .bind(c.last_epoch)
    .execute(&mut **tx)
    .await?;
    Ok(n.rows_affected() == 1)
}
