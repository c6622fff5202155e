//! Server configuration: a TOML file, then environment variables, then flags
//! (each overriding the one before). Every field has an embedded default, so
//! `dmtree serve` needs no file at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dmtree_core::{Meta, TreeConfig, Uri, UriPattern};
use dmtree_state::Durability;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A tracing filter, e.g. `info` or `dmtree=debug`.
    pub log: String,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub tree: TreeConfig,
    pub config_store: ConfigStoreConfig,
    pub auth: AuthConfig,
    /// Subscriptions and their transports (AMQP, XMPP).
    pub push: dmtree_push::PushConfig,
    pub contextstore: ContextStoreConfig,
    /// Extra handlers to mount at start-up.
    pub mounts: Vec<crate::federation::MountRequest>,
    pub infrastructure: InfrastructureConfig,
    pub federation: FederationConfig,
    /// Listener limits: connections, header, body and idle timeouts.
    pub http: crate::listener::HttpConfig,
    /// HTTPS: a certificate and key to serve with, extra roots to trust.
    pub tls: crate::listener::TlsConfig,
    /// The manager role: `./managers` and the cloud it belongs to.
    pub managers: dmtree_managers::ManagersConfig,
    /// The rule layer: `./rules`.
    pub rules: RulesConfig,
}

/// `[rules]`; rules themselves as `[[rules.rule]]` tables (`name` plus the rule's fields).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    pub enabled: bool,
    /// Default: the managers' registry when it is PostgreSQL (a cloud shares its rules), else `<data>/rules.db`.
    pub database: Option<String>,
    /// How often rules are evaluated (seed 000 used 2 minutes).
    pub epoch: String,
    /// Evaluation time per rule per epoch before the rule is suspended.
    pub budget: String,
    pub rule: Vec<toml::Table>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self { enabled: true, database: None, epoch: "30s".into(), budget: "1s".into(), rule: Vec::new() }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("dmtree-data"),
            log: "info".into(),
            log_format: LogFormat::Text,
            max_body_bytes: 1 << 20,
            tree: TreeConfig::default(),
            config_store: ConfigStoreConfig::default(),
            auth: AuthConfig::default(),
            push: dmtree_push::PushConfig::default(),
            contextstore: ContextStoreConfig::default(),
            mounts: Vec::new(),
            infrastructure: InfrastructureConfig::default(),
            federation: FederationConfig::default(),
            http: Default::default(),
            tls: Default::default(),
            managers: Default::default(),
            rules: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigStoreConfig {
    pub mount: Uri,
    /// Meta for the nodes each pattern matches; patterns lie under `mount`.
    pub schema: Vec<SchemaConfig>,
    /// What an acknowledged write survives: `fsync` (power loss) or `os`
    /// (a crash of the process only). It covers the whole state database.
    pub durability: Durability,
}

impl Default for ConfigStoreConfig {
    fn default() -> Self {
        Self { mount: Uri::root().join_name("config"), schema: Vec::new(), durability: Durability::Fsync }
    }
}

/// The ContextStore: where it keeps its events, and its initial configuration
/// (entries already set through the tree are kept).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextStoreConfig {
    pub enabled: bool,
    pub mount: Uri,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<data_dir>/contextstore.db`.
    pub database: Option<String>,
    /// The principal its tree subscriptions read as.
    pub principal: String,
    /// Batches waiting for the writer before submitters wait (back-pressure).
    pub queue: usize,
    /// How long a REST batch may wait for its commit before a 503.
    pub ingest_timeout_ms: u64,
    pub gc_interval_ms: u64,
    pub subscriptions: BTreeMap<String, serde_json::Value>,
    pub handlers: BTreeMap<String, serde_json::Value>,
    pub retention: BTreeMap<String, serde_json::Value>,
    pub propagation: BTreeMap<String, serde_json::Value>,
    /// Bare JIDs whose propagated events this store accepts over XMPP (`[push.xmpp]` must be set).
    pub xmpp_senders: Vec<String>,
}

impl Default for ContextStoreConfig {
    fn default() -> Self {
        let settings = dmtree_context_store::Settings::default();
        Self {
            enabled: true,
            mount: Uri::root().join_name("contextstore"),
            database: None,
            principal: settings.principal,
            queue: settings.queue,
            ingest_timeout_ms: settings.ingest_timeout.as_millis() as u64,
            gc_interval_ms: settings.gc_interval.as_millis() as u64,
            subscriptions: BTreeMap::new(),
            handlers: BTreeMap::new(),
            retention: BTreeMap::new(),
            propagation: BTreeMap::new(),
            xmpp_senders: Vec::new(),
        }
    }
}

impl ContextStoreConfig {
    pub fn settings(&self) -> dmtree_context_store::Settings {
        dmtree_context_store::Settings {
            queue: self.queue,
            ingest_timeout: std::time::Duration::from_millis(self.ingest_timeout_ms),
            gc_interval: std::time::Duration::from_millis(self.gc_interval_ms),
            principal: self.principal.clone(),
        }
    }

    /// The initial entries, checked.
    pub fn initial(&self) -> Result<dmtree_context_store::Config, ConfigError> {
        let mut config = dmtree_context_store::Config::default();
        let sections = [
            ("subscriptions", &self.subscriptions),
            ("handlers", &self.handlers),
            ("retention", &self.retention),
            ("propagation", &self.propagation),
        ];
        for (section, entries) in sections {
            for (name, body) in entries {
                config.set(section, name, body).map_err(|reason| ConfigError::ContextStore {
                    section,
                    name: name.clone(),
                    reason,
                })?;
            }
        }
        Ok(config)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SchemaConfig {
    pub pattern: UriPattern,
    #[serde(flatten)]
    pub meta: Meta,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// A token by hash: the token itself never appears in configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub principal: String,
    /// Hex SHA-256 of the token (`dmtree token new` prints it).
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    /// Volatile, transactional scratch space.
    Memory,
    /// Another dmtree's subtree (federation).
    Remote,
    /// Polled monitoring: the local host, a Prometheus exporter, a cloud's REST API.
    Infrastructure,
    /// A RabbitMQ broker through its management API.
    Broker,
}

/// The local host's monitoring, mounted by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfrastructureConfig {
    /// Mount the local host at `mount` (id `localhost`).
    pub localhost: bool,
    pub mount: Uri,
}

impl Default for InfrastructureConfig {
    fn default() -> Self {
        Self { localhost: true, mount: Uri::from_key("infrastructure\0localhost") }
    }
}

/// This server in a federation of trees.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// This server's name in `Dmtree-Via` paths; default: a random id per start.
    pub instance: Option<String>,
    /// The longest path a request may take through mounts before it is refused as a loop.
    pub max_hops: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self { instance: None, max_hops: 8 }
    }
}

/// Overrides from the environment and the command line (flags win; clap reads both).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DMTREE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (SQLite database, admin token).
    #[arg(long = "data", env = "DMTREE_DATA")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "DMTREE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `dmtree=debug`.
    #[arg(long, env = "DMTREE_LOG")]
    pub log: Option<String>,
    #[arg(long, env = "DMTREE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "DMTREE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration in {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("schema pattern {pattern} is not under the config store mount {mount}")]
    SchemaOutsideStore { pattern: String, mount: String },
    #[error("contextstore.{section}.{name}: {reason}")]
    ContextStore { section: &'static str, name: String, reason: String },
    #[error("mounts.{id}: {reason}")]
    Mount { id: String, reason: String },
    #[error("federation.instance: {0}")]
    Instance(String),
    #[error("{0}")]
    Listener(String),
    #[error(transparent)]
    Managers(#[from] dmtree_managers::ConfigError),
    #[error("rules: {0}")]
    Rules(String),
}

impl ServerConfig {
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(v) = args.listen {
            config.listen = v;
        }
        if let Some(v) = &args.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &args.log {
            config.log = v.clone();
        }
        if let Some(v) = args.log_format {
            config.log_format = v;
        }
        if let Some(v) = args.max_body_bytes {
            config.max_body_bytes = v;
        }
        config.check()?;
        config.contextstore.initial()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }

    fn check(&self) -> Result<(), ConfigError> {
        let mount = &self.config_store.mount;
        for rule in &self.config_store.schema {
            if rule.pattern.strip_base(mount).is_none_or(|rel| rel.segments().is_empty()) {
                return Err(ConfigError::SchemaOutsideStore {
                    pattern: rule.pattern.to_string(),
                    mount: mount.to_string(),
                });
            }
        }
        for m in &self.mounts {
            m.checked().map_err(|reason| ConfigError::Mount { id: m.id().into(), reason })?;
        }
        if let Some(id) = &self.federation.instance
            && (id.is_empty() || id.contains(',') || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::Instance(format!("{id:?} must be printable ASCII without commas")));
        }
        self.http.check().map_err(|e| ConfigError::Listener(e.to_string()))?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Listener("[tls] needs both cert and key".into()));
        }
        self.managers_settings()?;
        self.rules_settings()?;
        self.initial_rules()?;
        Ok(())
    }

    /// `[rules]`, checked.
    pub fn rules_settings(&self) -> Result<dmtree_rules::Settings, ConfigError> {
        let r = &self.rules;
        let duration = |field: &str, text: &str| {
            dmtree_rules::rule::parse_duration(text).map_err(|e| ConfigError::Rules(format!("{field}: {e}")))
        };
        let shared = self.managers.registry.as_deref().filter(|u| u.starts_with("postgres"));
        let database = r
            .database
            .clone()
            .or_else(|| shared.map(str::to_owned))
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("rules.db").display()));
        Ok(dmtree_rules::Settings {
            shared: !database.starts_with("sqlite:"),
            database,
            epoch: duration("epoch", &r.epoch)?,
            budget: duration("budget", &r.budget)?,
            member: self.managers.id.clone(),
        })
    }

    /// The `[[rules.rule]]` tables, each checked as a rule: (name, definition).
    pub fn initial_rules(&self) -> Result<Vec<(String, dmtree_rules::rule::RuleSpec)>, ConfigError> {
        self.rules
            .rule
            .iter()
            .map(|t| {
                let mut t = t.clone();
                let name = match t.remove("name") {
                    Some(toml::Value::String(n)) => n,
                    _ => return Err(ConfigError::Rules("every [[rules.rule]] needs a name".into())),
                };
                let spec: dmtree_rules::rule::RuleSpec =
                    toml::Value::Table(t).try_into().map_err(|e| ConfigError::Rules(format!("{name}: {e}")))?;
                dmtree_rules::rule::Rule::compile(&name, "admin", spec.clone())
                    .map_err(|e| ConfigError::Rules(format!("{name}: {e}")))?;
                Ok((name, spec))
            })
            .collect()
    }

    /// `[managers]`, checked, with defaults drawn from the rest of the file.
    pub fn managers_settings(&self) -> Result<dmtree_managers::Settings, ConfigError> {
        let registry = format!("sqlite://{}?mode=rwc", self.data_dir.join("managers.db").display());
        let scheme = if self.tls.cert.is_some() { "https" } else { "http" };
        Ok(self.managers.settings(registry, format!("{scheme}://{}", self.listen))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let text = r#"
            listen = "127.0.0.1:9000"
            data_dir = "/tmp/x"
            max_body_bytes = 1000
            [tree]
            lock_timeout = 250
            [tree.uri_limits]
            max_segments = 10
            [config_store]
            mount = "./config"
            [[config_store.schema]]
            pattern = "./config/limits/*"
            formats = ["int"]
            min = 0
            max = 100
            [[auth.tokens]]
            principal = "ops"
            sha256 = "00"
            [[mounts]]
            id = "scratch"
            at = "./scratch"
            handler = "memory"
        "#;
        let c: ServerConfig = toml::from_str(text).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.tree.lock_timeout.as_millis(), 250);
        assert_eq!(c.tree.uri_limits.max_segments, 10);
        assert_eq!(c.config_store.schema[0].meta.max, Some(100.0));
        assert_eq!(c.mounts[0].kind(), HandlerKind::Memory);
        c.check().unwrap();
    }

    #[test]
    fn remote_mounts_are_checked() {
        let text = r#"
            [federation]
            instance = "site-a"
            [[mounts]]
            id = "b"
            at = "./sites/b"
            handler = "remote"
            url = "http://127.0.0.1:7879"
            remote_uri = "./infrastructure"
            credentials = { token = "t" }
        "#;
        let c: ServerConfig = toml::from_str(text).unwrap();
        c.check().unwrap();
        let spec = c.mounts[0].checked().unwrap().unwrap();
        assert_eq!((spec.url.as_str(), spec.token(), spec.timeout_ms), ("http://127.0.0.1:7879", Some("t"), 3000));
        let broken = text.replace("http://127.0.0.1:7879", "127.0.0.1:7879");
        assert!(toml::from_str::<ServerConfig>(&broken).unwrap().check().is_err());
        let memory_with_url = "[[mounts]]\nid = \"m\"\nat = \"./m\"\nhandler = \"memory\"\nurl = \"http://x\"\n";
        assert!(toml::from_str::<ServerConfig>(memory_with_url).unwrap().check().is_err());
    }

    #[test]
    fn handler_mounts_are_checked() {
        let broker = "[[mounts]]\nid = \"r\"\nat = \"./brokers/r\"\nhandler = \"broker\"\nconfig = { url = \"http://127.0.0.1:15672\", interval_ms = 1000 }\n";
        let c: ServerConfig = toml::from_str(broker).unwrap();
        c.check().unwrap();
        assert_eq!(c.mounts[0].handler_config().unwrap()["interval_ms"], 1000);
        for bad in [
            broker.replace("http://127.0.0.1:15672", "nope"),
            broker.replace("interval_ms = 1000", "colour = 1"),
            broker.replace("handler = \"broker\"", "handler = \"memory\""),
            broker.replace("config = ", "url = \"http://x\"\nconfig = "),
            "[[mounts]]\nid = \"i\"\nat = \"./i\"\nhandler = \"infrastructure\"\nconfig = { supplier = \"cloud\" }\n"
                .into(),
        ] {
            assert!(toml::from_str::<ServerConfig>(&bad).unwrap().check().is_err(), "{bad}");
        }
        let localhost = toml::from_str::<ServerConfig>("[infrastructure]\nlocalhost = false\n").unwrap();
        assert!(!localhost.infrastructure.localhost);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n").unwrap();
        let args =
            ServeArgs { config: Some(path), listen: Some("127.0.0.1:9001".parse().unwrap()), ..ServeArgs::default() };
        let c = ServerConfig::load(&args).unwrap();
        assert_eq!((c.listen.port(), c.log.as_str()), (9001, "debug"));
    }

    #[test]
    fn rejects_unknown_keys_and_stray_schema() {
        assert!(toml::from_str::<ServerConfig>("lisen = \"x\"").is_err());
        let c: ServerConfig = toml::from_str("[[config_store.schema]]\npattern = \"./other/*\"\n").unwrap();
        assert!(c.check().is_err());
    }
}
