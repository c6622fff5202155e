//! `./federation/grants`: which principals (other trees' credentials) may
//! mount which of our subtrees, read-only or read-write. Created with
//! `POST /tree/federation/grants`, revoked with `DELETE`; kept in SQLite.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::{DataHandler, DmtError, Meta, Node, OpContext, Principal, Result, Uri, json_children, json_node};
use dmtree_state::SqliteState;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rights {
    ReadOnly,
    ReadWrite,
}

impl Rights {
    fn as_str(self) -> &'static str {
        match self {
            Rights::ReadOnly => "read-only",
            Rights::ReadWrite => "read-write",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The principal the other tree's credentials stand for.
    pub principal: String,
    /// The subtrees it may mount (and everything below them).
    pub subtrees: Vec<Uri>,
    pub rights: Rights,
}

/// What `POST /tree/federation/grants` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    id: Option<String>,
    principal: String,
    subtrees: Vec<Uri>,
    rights: Rights,
}

/// The grant that lets a principal reach a node, and with what rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub id: String,
    pub rights: Rights,
}

impl Granted {
    pub fn rights(&self) -> &'static str {
        self.rights.as_str()
    }
}

pub struct Grants {
    by_id: RwLock<BTreeMap<String, Grant>>,
    state: SqliteState,
}

impl Grants {
    pub async fn load(state: SqliteState) -> anyhow::Result<Arc<Self>> {
        let mut by_id = BTreeMap::new();
        for row in state.grants().await? {
            let grant: Grant = serde_json::from_str(&row.json)
                .map_err(|e| anyhow::anyhow!("stored grant {} is unreadable: {e}", row.id))?;
            by_id.insert(row.id, grant);
        }
        Ok(Arc::new(Self { by_id: RwLock::new(by_id), state }))
    }

    /// The best grant `principal` holds on `uri`: read-write wins over read-only.
    pub fn covering(&self, principal: &Principal, uri: &Uri) -> Option<Granted> {
        let name = principal.name()?;
        self.by_id
            .read()
            .iter()
            .filter(|(_, g)| g.principal == name && g.subtrees.iter().any(|s| s.is_prefix_of(uri)))
            .map(|(id, g)| Granted { id: id.clone(), rights: g.rights })
            .max_by_key(|g| g.rights == Rights::ReadWrite)
    }

    /// Whether `principal` may write anywhere (to open sessions, which lock before they write).
    pub fn any_read_write(&self, principal: &Principal) -> bool {
        let Some(name) = principal.name() else { return false };
        self.by_id.read().values().any(|g| g.principal == name && g.rights == Rights::ReadWrite)
    }

    fn snapshot(&self) -> Json {
        let grants = self.by_id.read();
        grants
            .iter()
            .map(|(id, g)| {
                let subtrees: Vec<String> = g.subtrees.iter().map(Uri::to_string).collect();
                (id.clone(), json!({ "principal": g.principal, "subtrees": subtrees, "rights": g.rights.as_str() }))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    async fn add(&self, at: &Uri, request: &Json) -> Result<String> {
        let invalid = |reason: String| DmtError::invalid_data(at, reason);
        let GrantRequest { id, principal, subtrees, rights } = serde_json::from_value(request.clone()).map_err(|e| {
            invalid(format!("{e}; expected {{\"id\"?, \"principal\", \"subtrees\": [\"./…\"], \"rights\": \"read-only\"|\"read-write\"}}"))
        })?;
        let grant = Grant { principal, subtrees, rights };
        if grant.principal.is_empty() || grant.subtrees.is_empty() {
            return Err(invalid("a grant names a principal and at least one subtree".into()));
        }
        let id = id.unwrap_or_else(|| format!("g-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        super::check_id(at, &id)?;
        let json = serde_json::to_string(&grant).map_err(|e| invalid(e.to_string()))?;
        if self.by_id.read().contains_key(&id) {
            return Err(DmtError::exists(&at.join_name(&id)));
        }
        self.state
            .add_grant(&id, &json, chrono::Utc::now().timestamp_millis())
            .await
            .map_err(|e| DmtError::store(at, e.to_string()))?;
        self.by_id.write().insert(id.clone(), grant);
        Ok(id)
    }

    async fn remove(&self, at: &Uri, id: &str) -> Result<()> {
        if !self.by_id.read().contains_key(id) {
            return Err(DmtError::not_found(at));
        }
        self.state.remove_grant(id).await.map_err(|e| DmtError::store(at, e.to_string()))?;
        self.by_id.write().remove(id);
        Ok(())
    }
}

/// The grants as a subtree of the tree.
pub struct GrantsHandler {
    grants: Arc<Grants>,
    at: Uri,
}

impl GrantsHandler {
    pub fn new(grants: Arc<Grants>, at: Uri) -> Self {
        Self { grants, at }
    }
}

#[async_trait]
impl DataHandler for GrantsHandler {
    fn kind(&self) -> &'static str {
        "grants"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        json_node(self.grants.snapshot(), path)
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        json_children(self.grants.snapshot(), path)
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        Ok(Meta::collection(path))
    }

    async fn create(&self, _cx: OpContext<'_>, parent: &Uri, request: &Json) -> Result<Option<String>> {
        if !parent.is_root() {
            return Ok(None);
        }
        self.grants.add(&self.at, request).await.map(Some)
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let at = self.at.concat(path);
        match path.name().filter(|_| path.depth() == 1) {
            Some(id) => self.grants.remove(&at, id).await,
            None => Err(DmtError::not_allowed(&at, "only a whole grant can be revoked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmtree_state::Durability;

    #[tokio::test]
    async fn covering_picks_the_best_grant_of_the_principal() {
        let dir = tempfile::tempdir().unwrap();
        let grants =
            Grants::load(SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap()).await.unwrap();
        let at = Uri::from_key("federation\0grants");
        let ro = json!({"id": "ro", "principal": "site-a", "subtrees": ["./infra"], "rights": "read-only"});
        let rw = json!({"id": "rw", "principal": "site-a", "subtrees": ["./infra/vms"], "rights": "read-write"});
        grants.add(&at, &ro).await.unwrap();
        grants.add(&at, &rw).await.unwrap();
        let a = Principal::named("site-a");
        let u = |s: &str| Uri::parse(s, &Default::default()).unwrap();
        assert_eq!(grants.covering(&a, &u("./infra/x")).unwrap().rights, Rights::ReadOnly);
        assert_eq!(grants.covering(&a, &u("./infra/vms/1")).unwrap().id, "rw");
        assert_eq!(grants.covering(&a, &u("./other")), None);
        assert_eq!(grants.covering(&Principal::named("site-b"), &u("./infra")), None);
        assert_eq!(grants.covering(&Principal::Anonymous, &u("./infra")), None);
        assert!(matches!(grants.add(&at, &ro).await, Err(e) if e.is(dmtree_core::ErrorCode::NodeAlreadyExists)));
        for bad in [
            json!({"principal": "p", "subtrees": [], "rights": "read-only"}),
            json!({"principal": "p", "subtrees": ["./x"], "rights": "all"}),
            json!({"principal": "p", "subtrees": ["x/"], "rights": "read-only"}),
            json!({"principal": "p", "subtrees": ["./x"], "rights": "read-only", "extra": 1}),
            json!({"id": "a/b", "principal": "p", "subtrees": ["./x"], "rights": "read-only"}),
        ] {
            assert!(grants.add(&at, &bad).await.is_err(), "{bad}");
        }
        grants.remove(&at, "ro").await.unwrap();
        let again = Grants::load(grants.state.clone()).await.unwrap();
        assert_eq!(again.snapshot().as_object().unwrap().keys().collect::<Vec<_>>(), ["rw"]);
    }
}
