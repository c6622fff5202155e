//! Federation, the serving side: mounts made from the config file or through
//! `./mounts` (remote trees, and the polled handlers provisioned beside
//! them), the grants other trees mount ours by, the grant check they call
//! before mounting, and the `Dmtree-Via` rules every federated request
//! passes (no loops, no more than `max_hops`, nothing outside a grant).

pub mod grants;
pub mod mounts;
pub mod via;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dmtree_core::{DmtError, Tree, Uri};
use dmtree_remote::{Local, RemoteHandler, RemoteSpec};
use dmtree_state::SqliteState;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::config::{HandlerKind, ServerConfig};
use grants::{Grants, GrantsHandler};

/// Where a remote mount came from: only those made through the API can be unmounted there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

pub struct RemoteMount {
    pub at: Uri,
    pub handler: Arc<RemoteHandler>,
    pub origin: Origin,
}

/// A mount: requested with `POST /tree/mounts` or `dmtree mount`, listed in
/// the configuration as `[[mounts]]` (where `id` is required), and stored so.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub id: Option<String>,
    pub at: Uri,
    /// `remote` (the default), `infrastructure` or `broker`.
    pub handler: Option<HandlerKind>,
    pub url: Option<String>,
    pub remote_uri: Option<Uri>,
    pub credentials: Option<dmtree_remote::Credentials>,
    pub timeout_ms: Option<u64>,
    pub cache_ms: Option<u64>,
    /// For `infrastructure` and `broker`: the handler's configuration.
    pub config: Option<Json>,
}

const MOUNT_SHAPE: &str = "expected {\"id\"?, \"at\", \"url\", \"remote_uri\", \"credentials\"?: {\"token\"}, \"timeout_ms\"?, \"cache_ms\"?} for a remote tree, or {\"id\"?, \"at\", \"handler\": \"infrastructure\"|\"broker\", \"config\"?: {...}}";

impl MountRequest {
    pub fn kind(&self) -> HandlerKind {
        self.handler.unwrap_or(HandlerKind::Remote)
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Checks a configured mount; the remote spec of a `remote` mount, `None` for other handlers.
    pub fn checked(&self) -> Result<Option<RemoteSpec>, String> {
        if self.id.is_none() {
            return Err("a configured mount needs an id".into());
        }
        match self.kind() {
            HandlerKind::Memory if self.has_remote_fields() || self.config.is_some() => {
                Err("a memory mount takes only id, at and handler".into())
            }
            HandlerKind::Memory => Ok(None),
            HandlerKind::Infrastructure | HandlerKind::Broker => self.handler_config().map(|_| None),
            HandlerKind::Remote => {
                let spec = self.spec()?;
                spec.validate().map_err(|e| e.to_string())?;
                Ok(Some(spec))
            }
        }
    }

    pub(crate) fn has_remote_fields(&self) -> bool {
        self.url.is_some()
            || self.remote_uri.is_some()
            || self.credentials.is_some()
            || self.timeout_ms.is_some()
            || self.cache_ms.is_some()
    }

    pub(crate) fn spec(&self) -> Result<RemoteSpec, String> {
        let (Some(url), Some(remote_uri)) = (&self.url, &self.remote_uri) else {
            return Err(format!("a remote mount needs url and remote_uri; {MOUNT_SHAPE}"));
        };
        if self.config.is_some() {
            return Err("config is for infrastructure and broker mounts".into());
        }
        let mut spec = RemoteSpec::new(url.clone(), remote_uri.clone());
        spec.credentials = self.credentials.clone();
        spec.timeout_ms = self.timeout_ms.unwrap_or(spec.timeout_ms);
        spec.cache_ms = self.cache_ms.unwrap_or(spec.cache_ms);
        Ok(spec)
    }

    /// A polled handler's configuration, checked.
    pub(crate) fn handler_config(&self) -> Result<Json, String> {
        if self.has_remote_fields() {
            return Err(
                "url, remote_uri, credentials, timeout_ms and cache_ms are for remote mounts; put settings in config"
                    .into(),
            );
        }
        let config = self.config.clone().unwrap_or_else(|| json!({}));
        crate::provision::check(self.kind(), &config)?;
        Ok(config)
    }
}

pub struct Federation {
    pub local: Local,
    pub grants: Arc<Grants>,
    remotes: RwLock<BTreeMap<String, RemoteMount>>,
    /// Polled handlers mounted from the config file or through the API.
    provisioned: RwLock<BTreeMap<String, (Uri, Origin)>>,
    state: SqliteState,
    tree: Weak<Tree>,
    /// Serialises mounts and unmounts, so checks and the table agree.
    changing: tokio::sync::Mutex<()>,
}

/// How often event-bridge positions are saved.
const SAVE_POSITIONS: Duration = Duration::from_millis(250);

impl Federation {
    /// Loads grants and remote mounts, and mounts `./federation/grants` and `./mounts`.
    pub async fn start(tree: &Arc<Tree>, state: SqliteState, config: &ServerConfig) -> anyhow::Result<Arc<Self>> {
        let instance = config.federation.instance.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let roots = config.tls.extra_roots()?;
        let local = Local { instance: instance.into(), max_hops: config.federation.max_hops, roots };
        let grants = Grants::load(state.clone()).await?;
        let at = Uri::root().join_name("federation");
        tree.mount(
            "federation-grants",
            at.join_name("grants"),
            Arc::new(GrantsHandler::new(grants.clone(), at.join_name("grants"))),
        )?;
        // Grants are the owner's business alone.
        tree.ensure_acl(&at, "Get=admin&Add=admin&Delete=admin&Replace=admin&Exec=admin".parse()?).await?;
        let fed = Arc::new(Self {
            local,
            grants,
            remotes: RwLock::default(),
            provisioned: RwLock::default(),
            state,
            tree: Arc::downgrade(tree),
            changing: tokio::sync::Mutex::new(()),
        });
        for m in &config.mounts {
            let failed = |e: String| anyhow::anyhow!("mounts.{}: {e}", m.id());
            if let Some(spec) = m.checked().map_err(failed)? {
                fed.attach(tree, m.id(), m.at.clone(), spec, Origin::Config).await?;
            } else if matches!(m.kind(), HandlerKind::Infrastructure | HandlerKind::Broker) {
                let config = m.handler_config().map_err(failed)?;
                fed.provision(tree, m.id(), &m.at, m.kind(), &config, Origin::Config).await?;
            }
        }
        for row in fed.state.mounts().await? {
            let req: MountRequest = serde_json::from_str(&row.json)
                .map_err(|e| anyhow::anyhow!("stored mount {} is unreadable: {e}", row.id))?;
            match req.kind() {
                HandlerKind::Remote => {
                    let spec = req.spec().map_err(|e| anyhow::anyhow!("stored mount {}: {e}", row.id))?;
                    fed.attach(tree, &row.id, req.at.clone(), spec, Origin::Api).await?;
                }
                kind => {
                    let config = req.handler_config().map_err(|e| anyhow::anyhow!("stored mount {}: {e}", row.id))?;
                    fed.provision(tree, &row.id, &req.at, kind, &config, Origin::Api).await?;
                }
            }
        }
        tree.mount(
            "mounts",
            Uri::root().join_name("mounts"),
            Arc::new(mounts::MountsHandler::new(Arc::downgrade(tree), Arc::downgrade(&fed))),
        )?;
        tokio::spawn(save_positions(Arc::downgrade(&fed)));
        Ok(fed)
    }

    /// Mounts a remote found at start-up, without asking it first: it may be down, and comes back by itself.
    async fn attach(&self, tree: &Tree, id: &str, at: Uri, spec: RemoteSpec, origin: Origin) -> anyhow::Result<()> {
        let resume = self.state.bridge_position(id, &remote_key(&spec)).await?;
        let handler =
            Arc::new(RemoteHandler::new(spec, &self.local, resume).map_err(|e| anyhow::anyhow!("mounts.{id}: {e}"))?);
        tree.mount(id, at.clone(), handler.clone())?;
        self.remotes.write().insert(id.to_owned(), RemoteMount { at, handler, origin });
        Ok(())
    }

    /// Mounts a polled handler (saved configuration first).
    async fn provision(
        &self,
        tree: &Tree,
        id: &str,
        at: &Uri,
        kind: HandlerKind,
        config: &Json,
        origin: Origin,
    ) -> anyhow::Result<()> {
        let handler = crate::provision::build(&self.state, id, kind, config).await?;
        tree.mount(id, at.clone(), handler)?;
        crate::provision::protect_config(tree, &at.join_name("config")).await?;
        self.provisioned.write().insert(id.to_owned(), (at.clone(), origin));
        Ok(())
    }

    pub fn remote(&self, id: &str) -> Option<(Uri, Arc<RemoteHandler>, Origin)> {
        self.remotes.read().get(id).map(|m| (m.at.clone(), m.handler.clone(), m.origin))
    }

    fn tree(&self, at: &Uri) -> dmtree_core::Result<Arc<Tree>> {
        self.tree.upgrade().ok_or_else(|| DmtError::store(at, "the server is shutting down"))
    }

    /// `POST /tree/mounts`: checks the request, asks the remote for its grant
    /// (and so for loops), then mounts and records it; all or nothing.
    pub async fn mount(&self, collection: &Uri, request: &Json) -> dmtree_core::Result<String> {
        let req: MountRequest = serde_json::from_value(request.clone())
            .map_err(|e| DmtError::invalid_data(collection, format!("{e}; {MOUNT_SHAPE}")))?;
        let tree = self.tree(collection)?;
        let id =
            req.id.clone().unwrap_or_else(|| format!("remote-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        check_id(collection, &id)?;
        let _changing = self.changing.lock().await;
        self.refuse_overlap(&tree, &id, &req.at)?;
        if req.kind() != HandlerKind::Remote {
            return self.mount_provisioned(&tree, collection, id, req).await;
        }
        let spec = req.spec().map_err(|e| DmtError::invalid_data(collection, e))?;
        let handler =
            Arc::new(RemoteHandler::new(spec, &self.local, None).map_err(|e| DmtError::invalid_data(&req.at, e))?);
        let answer = handler.check(&req.at, &Uri::root()).await?;
        let stored = MountRequest { id: Some(id.clone()), ..req.clone() };
        let json = serde_json::to_string(&stored).map_err(|e| DmtError::store(&req.at, e.to_string()))?;
        tree.mount(&id, req.at.clone(), handler.clone())?;
        if let Err(e) = self.state.add_mount(&id, &json, chrono::Utc::now().timestamp_millis()).await {
            let _ = tree.unmount(&req.at);
            return Err(DmtError::store(&req.at, e.to_string()));
        }
        tracing::info!(id, at = %req.at, url = ?req.url, remote_uri = ?req.remote_uri, rights = %answer["rights"], "mounted a remote tree");
        self.remotes.write().insert(id.clone(), RemoteMount { at: req.at, handler, origin: Origin::Api });
        Ok(id)
    }

    /// `POST /tree/mounts` for an infrastructure or broker handler.
    async fn mount_provisioned(
        &self,
        tree: &Tree,
        collection: &Uri,
        id: String,
        req: MountRequest,
    ) -> dmtree_core::Result<String> {
        let config = req.handler_config().map_err(|e| DmtError::invalid_data(collection, e))?;
        let stored = MountRequest { id: Some(id.clone()), config: Some(config.clone()), ..req.clone() };
        let json = serde_json::to_string(&stored).map_err(|e| DmtError::store(&req.at, e.to_string()))?;
        // A mount made afresh starts from its own configuration.
        self.state.remove_mount(&id).await.map_err(|e| DmtError::store(&req.at, e.to_string()))?;
        let handler = crate::provision::build(&self.state, &id, req.kind(), &config)
            .await
            .map_err(|e| DmtError::invalid_data(collection, e.to_string()))?;
        tree.mount(&id, req.at.clone(), handler)?;
        let stored = match crate::provision::protect_config(tree, &req.at.join_name("config")).await {
            Ok(()) => {
                self.state.add_mount(&id, &json, chrono::Utc::now().timestamp_millis()).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            let _ = tree.unmount(&req.at);
            return Err(DmtError::store(&req.at, e));
        }
        tracing::info!(id, at = %req.at, kind = ?req.kind(), "mounted a handler");
        self.provisioned.write().insert(id.clone(), (req.at, Origin::Api));
        Ok(id)
    }

    /// A mount point must be new ground: not at, inside or above another mount.
    fn refuse_overlap(&self, tree: &Tree, id: &str, at: &Uri) -> dmtree_core::Result<()> {
        if at.is_root() {
            return Err(DmtError::not_allowed(at, "the root cannot be a mount point"));
        }
        let conflict = |reason: String| DmtError::conflict(at, reason);
        if tree.mounts().iter().any(|m| m.id == id) {
            return Err(conflict(format!("there is already a mount {id}")));
        }
        match tree.mounts().into_iter().find(|m| m.at.overlaps(at)) {
            Some(m) if m.at == *at => {
                Err(conflict(format!("{at} is already a mount point ({}); unmount it first", m.id)))
            }
            Some(m) => Err(conflict(format!("{at} overlaps the mount {} at {}", m.id, m.at))),
            None => Ok(()),
        }
    }

    /// `DELETE /tree/mounts/<id>`: only remote mounts made through the API.
    pub async fn unmount(&self, node: &Uri, id: &str) -> dmtree_core::Result<()> {
        let tree = self.tree(node)?;
        let _changing = self.changing.lock().await;
        let found =
            self.remote(id).map(|(at, _, origin)| (at, origin)).or_else(|| self.provisioned.read().get(id).cloned());
        let Some((at, origin)) = found else {
            return match tree.mounts().iter().any(|m| m.id == id) {
                true => Err(DmtError::not_allowed(node, format!("{id} is a built-in mount"))),
                false => Err(DmtError::not_found(node)),
            };
        };
        if origin == Origin::Config {
            return Err(DmtError::not_allowed(
                node,
                format!("{id} comes from the configuration file; remove it there"),
            ));
        }
        self.state.remove_mount(id).await.map_err(|e| DmtError::store(node, e.to_string()))?;
        tree.unmount(&at)?;
        self.remotes.write().remove(id);
        self.provisioned.write().remove(id);
        tracing::info!(id, %at, "unmounted");
        Ok(())
    }

    /// For a grant check of `subtree`: asks every remote mounted at or below it
    /// (or above it) in turn, one hop further. A loop anywhere fails the whole
    /// check; other trouble down there is reported, not fatal.
    pub async fn check_nested(&self, subtree: &Uri) -> dmtree_core::Result<Vec<Json>> {
        let overlapping: Vec<(String, Uri, Arc<RemoteHandler>)> = self
            .remotes
            .read()
            .iter()
            .filter(|(_, m)| m.at.overlaps(subtree))
            .map(|(id, m)| (id.clone(), m.at.clone(), m.handler.clone()))
            .collect();
        let mut nested = Vec::new();
        for (id, at, handler) in overlapping {
            let rel = subtree.strip_prefix(&at).unwrap_or_default();
            match handler.check(&at, &rel).await {
                Ok(answer) => nested.push(json!({ "mount": id, "at": at.to_string(), "answer": answer })),
                Err(e) if e.is(dmtree_core::ErrorCode::LoopDetected) => return Err(e),
                Err(e) => nested.push(json!({ "mount": id, "at": at.to_string(), "error": e.to_string() })),
            }
        }
        Ok(nested)
    }

    /// What `./mounts/<id>` adds for a remote mount.
    pub fn origin(&self, id: &str) -> Option<Origin> {
        self.remotes.read().get(id).map(|m| m.origin).or_else(|| self.provisioned.read().get(id).map(|(_, o)| *o))
    }
}

/// Mount and grant ids become node names and appear in logs: keep them plain.
pub fn check_id(collection: &Uri, id: &str) -> dmtree_core::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=64).contains(&id.len()) && id.chars().all(plain) && id != "." && id != ".." {
        Ok(())
    } else {
        Err(DmtError::invalid_data(collection, format!("id {id:?} must be 1 to 64 of A-Z a-z 0-9 - _ .")))
    }
}

fn remote_key(spec: &RemoteSpec) -> String {
    format!("{} {}", spec.url, spec.remote_uri)
}

/// Saves where each event bridge stopped, so a restart resumes there.
async fn save_positions(fed: Weak<Federation>) {
    let mut saved: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(SAVE_POSITIONS).await;
        let Some(fed) = fed.upgrade() else { return };
        let changed: Vec<(String, String, u64)> = fed
            .remotes
            .read()
            .iter()
            .filter_map(|(id, m)| {
                let pos = m.handler.position()?;
                (saved.get(id) != Some(&pos)).then(|| (id.clone(), remote_key(m.handler.spec()), pos))
            })
            .collect();
        match fed.state.save_bridge_positions(&changed).await {
            Ok(()) => saved.extend(changed.into_iter().map(|(id, _, pos)| (id, pos))),
            Err(e) => tracing::warn!(error = %e, "cannot save event-bridge positions; retrying"),
        }
    }
}
