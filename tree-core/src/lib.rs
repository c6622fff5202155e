//! dmtree's core: the management tree, independent of any transport or store.
//!
//! A [`Tree`] routes each operation on a [`Uri`] to the [`DataHandler`]
//! mounted at the longest matching prefix, checks the caller's [`Acl`]
//! rights and the handler's [`Meta`], runs writes in transactions (implicit,
//! or the caller's [`LockMode`] session), and records [`Event`]s with
//! monotonically increasing revisions.

pub mod acl;
pub mod backoff;
pub mod error;
pub mod event;
pub mod fanout;
pub mod handler;
pub mod lock;
pub mod memory;
pub mod meta;
pub mod mount;
pub mod node;
pub mod nodemap;
pub mod observed;
pub mod pattern;
pub mod session;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod uri;
pub mod value;
pub mod via;

pub use acl::{ADMIN, Acl, Permission, Principal, ReadRule};
pub use backoff::Backoff;
pub use error::{DmtError, ErrorCode, Result, error_chain};
pub use event::{Delivery, Event, EventCursor, EventDraft, EventKind, EventLog, EventLogConfig, PendingEvents};
pub use fanout::{Feed, FeedStats, Filter};
pub use handler::{ChangeSink, ConfigSaver, DataHandler, OpContext, TxId};
pub use memory::MemoryHandler;
pub use meta::{Meta, NodeKind, Operation, Scope};
pub use node::{NewNode, Node, Props, PropsPatch};
pub use observed::Observed;
pub use pattern::UriPattern;
pub use session::{LockMode, SessionInfo};
pub use snapshot::{SnapshotHandler, entry_children, entry_node, json_children, json_node};
pub use store::{InForce, MemoryTreeStore, TreeStore};
pub use tree::{Caller, Content, NodeView, Precondition, Selection, Tree, TreeConfig, Versions, Write, WriteOutcome};
pub use uri::{Uri, UriError, UriLimits};
pub use value::{Format, Value};
pub use via::Via;
