//! `dmtree serve`: open the state, build the tree, mount the built-in
//! handlers, and serve REST until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use dmtree_context_store::{ContextStore, ContextStoreHandler};
use dmtree_core::{Acl, MemoryHandler, Tree, Uri};
use dmtree_state::{ConfigStore, SchemaRule, SqliteState};

use crate::auth;
use crate::config::{HandlerKind, ServerConfig};
use crate::federation::Federation;
use crate::metrics::Metrics;
use crate::rest;
use crate::state::{App, AppState};
use crate::system;
use dmtree_push::Push;
use dmtree_push::handler::SubscriptionsHandler;

pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let tls = config.tls.acceptor()?;
    let app = build(config).await?;
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.config.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, data = %app.config.data_dir.display(), "dmtree listening");
    let state = app.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Ends open event streams, so graceful shutdown can finish.
        state.shutdown.send_replace(true);
    };
    crate::listener::serve(listener, rest::router(app.clone()), &app.config.http, tls, shutdown).await?;
    tracing::info!("dmtree stopped");
    Ok(())
}

pub async fn build(config: ServerConfig) -> anyhow::Result<AppState> {
    create_private_dir(&config.data_dir)?;
    let state = SqliteState::open(&config.data_dir.join("dmtree.db"), config.config_store.durability).await?;
    let tokens = Arc::new(auth::bootstrap(&state, &config.auth, &config.data_dir).await?);
    let tree = Tree::open(config.tree.clone(), Arc::new(state.clone()), Acl::default_root()).await?;

    let mount = &config.config_store.mount;
    let schema = config
        .config_store
        .schema
        .iter()
        .filter_map(|r| Some(SchemaRule { pattern: r.pattern.strip_base(mount)?, meta: r.meta.clone() }))
        .collect();
    tree.mount(
        "config",
        mount.clone(),
        Arc::new(ConfigStore::open(state.clone(), schema, config.tree.max_write_nodes).await?),
    )?;
    for m in &config.mounts {
        // Remote mounts are the federation's.
        if m.kind() == HandlerKind::Memory {
            tree.mount(m.id(), m.at.clone(), Arc::new(MemoryHandler::default()))?;
        }
    }
    let federation = Federation::start(&tree, state.clone(), &config).await?;
    if config.infrastructure.localhost {
        let kind = HandlerKind::Infrastructure;
        let handler = crate::provision::build(&state, "localhost", kind, &serde_json::json!({})).await?;
        tree.mount("localhost", config.infrastructure.mount.clone(), handler)?;
        crate::provision::protect_config(&tree, &config.infrastructure.mount.join_name("config")).await?;
    }
    let push = Push::start(tree.clone(), state.clone(), config.push.clone()).await?;
    let subscriptions = Uri::root().join_name("subscriptions");
    tree.mount("subscriptions", subscriptions.clone(), Arc::new(SubscriptionsHandler::new(Arc::downgrade(&push))))?;
    // Any authenticated principal may subscribe; the handler lets only owners cancel.
    tree.ensure_acl(&subscriptions, "Add=*&Delete=*&Get=*&Replace=admin&Exec=admin".parse()?).await?;
    let cs = &config.contextstore;
    if cs.enabled {
        let url = cs
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("contextstore.db").display()));
        let store = ContextStore::start(&url, &tree, cs.settings(), cs.initial()?).await?;
        if let Some(link) = push.xmpp() {
            store.use_relay(Arc::new(crate::context_xmpp::Relay(link.clone())));
            if !cs.xmpp_senders.is_empty() {
                crate::context_xmpp::receive(&link, store.clone(), cs.xmpp_senders.clone());
            }
        }
        tree.mount("contextstore", cs.mount.clone(), Arc::new(ContextStoreHandler::new(store)))?;
        // Propagation targets carry tokens.
        let propagation = cs.mount.join_name("config").join_name("propagation");
        crate::provision::protect_config(&tree, &propagation).await?;
    }
    if config.managers.enabled {
        let cloud = dmtree_managers::Cloud::open(config.managers_settings()?).await?;
        tree.mount(
            "managers",
            Uri::root().join_name("managers"),
            Arc::new(dmtree_managers::ManagersHandler::new(cloud)),
        )?;
    }
    if config.rules.enabled {
        mount_rules(&tree, &config).await?;
    }
    let metrics = Arc::new(Metrics::default());
    let (started, started_at) = (Instant::now(), chrono::Utc::now());
    system::mount(&tree, tokens.clone(), metrics.clone(), started, started_at, federation.local.instance.clone())
        .await?;
    Ok(AppState::new(App {
        tree,
        tokens,
        metrics,
        config,
        push,
        federation,
        state,
        shutdown: tokio::sync::watch::channel(false).0,
        streams: Arc::default(),
    }))
}

/// `./rules`: admin-only until the operator grants more (a rule's state derives from what its owner reads).
async fn mount_rules(tree: &Arc<Tree>, config: &ServerConfig) -> anyhow::Result<()> {
    let (engine, _task) = dmtree_rules::start(tree.clone(), config.rules_settings()?).await?;
    let admin = dmtree_core::Principal::named(dmtree_core::ADMIN);
    for (name, spec) in config.initial_rules()? {
        // Unchanged since the last start: keep its counters (rewriting would re-arm it).
        if engine.with_rule(&name, |l| l.rule.spec == spec && l.rule.owner == dmtree_core::ADMIN) == Some(true) {
            continue;
        }
        engine.put(&name, &admin, spec).await.with_context(|| format!("rule {name} from the configuration"))?;
    }
    let at = Uri::root().join_name("rules");
    tree.mount("rules", at.clone(), Arc::new(dmtree_rules::RulesHandler::new(engine)))?;
    crate::provision::protect_config(tree, &at).await?;
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
