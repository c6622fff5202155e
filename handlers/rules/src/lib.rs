//! The rule layer, mounted at `./rules`: declarative rules whose conditions
//! are CEL, evaluated once per epoch over bindings of a tree pattern (local)
//! or once (global), with consecutive-epoch, hysteresis and cooldown timing,
//! priorities, guards, and actions run with the owner's rights.
//!
//! - [`rule`]: a rule as written, checked and compiled at write time;
//! - [`expr`]: CEL and the functions rules read the tree with;
//! - [`decide`]: the timing state machine, pure;
//! - [`epoch`]: one epoch's plan (evaluation, conflicts, guards);
//! - [`engine`]: placement, the epoch loop, claims and actions;
//! - [`store`]: rules, counters and firings in SQL;
//! - [`handler`]: the `./rules` subtree.

pub mod act;
pub mod decide;
pub mod engine;
pub mod epoch;
pub mod expr;
pub mod handler;
pub mod reader;
pub mod rule;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use dmtree_core::{DmtError, Tree, Uri};

pub use engine::Engine;
pub use handler::RulesHandler;

/// `[rules]` as the server resolved it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://…` alone, the managers' PostgreSQL registry in a cloud.
    pub database: String,
    pub epoch: Duration,
    /// Per rule per epoch; a rule over it is suspended.
    pub budget: Duration,
    /// This server's name when there is no manager cloud.
    pub member: String,
    /// The database is shared with other members.
    pub shared: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("no such rule")]
    NotFound,
    #[error("rule store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("rule store schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    pub fn at(self, uri: &Uri) -> DmtError {
        match self {
            Error::Invalid(m) => DmtError::invalid_rule(uri, m),
            Error::NotFound => DmtError::not_found(uri),
            other => DmtError::store(uri, other),
        }
    }
}

/// Opens the store, loads the rules and starts the epoch loop.
pub async fn start(tree: Arc<Tree>, settings: Settings) -> Result<(Arc<Engine>, tokio::task::JoinHandle<()>), Error> {
    let engine = Engine::open(tree, settings).await?;
    let task = tokio::spawn(engine.clone().run());
    Ok((engine, task))
}
