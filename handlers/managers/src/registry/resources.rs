//! Resource rows: placing Manage Me requests, moving orphans, holders'
//! status writes, and the reads behind `./managers/resources`.

use super::*;

impl Registry {
    /// A resource's row, locked for the rest of the transaction.
    async fn locked(&self, tx: &mut Tx<'_>, id: &str) -> Result<Option<ResourceRow>> {
        let lock = self.dialect.lock(" FOR UPDATE");
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM dmtree_resources WHERE id = $1{lock}");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
        row.as_ref().map(resource_row).transpose()
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
        let existing = self.locked(&mut tx, &req.resource).await?;
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
        let Some(mut row) = self.locked(&mut tx, &orphan.id).await? else { return Ok(None) };
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
