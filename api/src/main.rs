//! `dmtree`: the server (`serve`) and its command-line client.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dmtree_api::client::{Client, ClientArgs, parse_uri};
use dmtree_api::config::{LogFormat, ServeArgs, ServerConfig};
use dmtree_api::{auth, context_cli, openapi, server};
use dmtree_core::Format;

#[derive(Parser)]
#[command(
    name = "dmtree",
    version,
    about = "A management tree served over REST, in the style of OMA-DM and OSGi DMT Admin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite in the data dir, in-process events, loopback by default).
    Serve(ServeArgs),
    /// Run a resource agent for a process that has none, in the manager cloud.
    Agent(dmtree_api::agent_cli::AgentArgs),
    /// Read a node: a leaf's value, or an interior node's subtree.
    Get {
        uri: String,
        /// Levels of children: a number or `unbounded`.
        #[arg(long)]
        depth: Option<String>,
        /// Include properties (with --json).
        #[arg(long)]
        props: bool,
    },
    /// Set a leaf, creating it (and missing ancestors) if needed.
    Set {
        uri: String,
        value: String,
        /// int, float, bool, string, date, time, datetime, binary, base64, json or null; inferred when absent.
        #[arg(long)]
        format: Option<String>,
    },
    /// List an interior node's children.
    Ls { uri: String },
    /// Delete a node and its subtree.
    Rm { uri: String },
    /// Execute a node, with optional JSON data.
    Exec { uri: String, data: Option<String> },
    /// Stream events matching a pattern (`*` one segment, final `**` a subtree).
    Watch {
        #[arg(default_value = "./**")]
        pattern: String,
        /// Replay events after this revision first.
        #[arg(long)]
        since: Option<u64>,
        /// Read this `sse` subscription instead (its pattern, and its stored position).
        #[arg(long, conflicts_with = "pattern")]
        subscription: Option<String>,
    },
    /// Subscribe to changes: delivered to an AMQP queue, an XMPP JID, or kept for `watch --subscription`.
    Subscribe {
        pattern: String,
        /// sse, amqp or xmpp.
        #[arg(long, default_value = "sse")]
        transport: String,
        /// AMQP queue name (default `dmtree.sub.<owner>.<id>`).
        #[arg(long)]
        queue: Option<String>,
        /// XMPP JID to send to.
        #[arg(long)]
        jid: Option<String>,
        /// Event kinds, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// At most one event per node per this many ms, the latest.
        #[arg(long)]
        sample_ms: Option<u64>,
        /// Start after this revision (default: now).
        #[arg(long)]
        since: Option<u64>,
        /// Name the subscription (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// Cancel a subscription.
    Unsubscribe { id: String },
    /// Mount another dmtree's subtree here (it must grant it to the principal of the remote token).
    Mount {
        /// Where, e.g. `./sites/b`.
        at: String,
        /// The other dmtree, e.g. `http://10.0.0.2:7878`.
        url: String,
        /// Its subtree, e.g. `./infrastructure`.
        remote_uri: String,
        /// The mount's id under `./mounts` (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// The bearer token the remote knows this tree by.
        #[arg(long, env = "DMTREE_REMOTE_TOKEN", hide_env_values = true)]
        remote_token: Option<String>,
        /// Per-request timeout, ms (default 3000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// How long reads may be answered from cache, ms (default 100; 0 never).
        #[arg(long)]
        cache_ms: Option<u64>,
    },
    /// Unmount a remote tree, by id or by mount point.
    Unmount { mount: String },
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Record ContextEvents to JSON Lines, or play them back.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Apply rules from a file, or explain one (a dry run of the next epoch).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print the OpenAPI contract (the committed `openapi.yaml`).
    Openapi,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Write every rule in a YAML, TOML or JSON file (all are checked first; none is sent if one is bad).
    Apply { file: std::path::PathBuf },
    /// For each binding: the values read, the condition, the counters, and what would fire or why not.
    Explain { name: String },
}

#[derive(Subcommand)]
enum ContextCommand {
    /// Export events of a type (and time range) as JSON Lines.
    Record {
        #[arg(long = "type")]
        kind: String,
        /// RFC 3339; default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339; default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        sender: Option<String>,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
        #[arg(long, default_value = "./contextstore")]
        mount: String,
    },
    /// Replay a JSON Lines file into a ContextStore or into the tree.
    Play {
        file: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "store")]
        into: dmtree_api::context_cli::Into,
        #[arg(long, value_enum, default_value = "fast")]
        pace: dmtree_api::context_cli::Pace,
        /// With `--pace recorded`: 2 plays twice as fast.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        #[arg(long, default_value = "./contextstore")]
        mount: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a principal; prints the token once, and its hash for the config file.
    New {
        #[arg(long)]
        principal: String,
    },
    /// Print the SHA-256 hash of a token, as `[[auth.tokens]]` expects it.
    Hash { token: String },
    /// Revoke a token on a running server (admin): by its id under
    /// `./system/tokens`, or by the token itself. Works at once and for good.
    Revoke { token_or_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || Client::new(cli.client.clone());
    match &cli.command {
        Command::Serve(args) => {
            let config = ServerConfig::load(args)?;
            init_tracing(&config.log, config.log_format)?;
            server::serve(config).await
        }
        Command::Agent(args) => {
            init_tracing(&std::env::var("DMTREE_LOG").unwrap_or_else(|_| "info".into()), LogFormat::Text)?;
            dmtree_api::agent_cli::run(args).await
        }
        Command::Get { uri, depth, props } => client()?.get(&parse_uri(uri)?, depth.as_deref(), *props).await,
        Command::Set { uri, value, format } => {
            let format = format.as_deref().map(str::parse::<Format>).transpose().map_err(|e| anyhow::anyhow!("{e}"))?;
            client()?.set(&parse_uri(uri)?, value, format).await
        }
        Command::Ls { uri } => client()?.ls(&parse_uri(uri)?).await,
        Command::Rm { uri } => client()?.rm(&parse_uri(uri)?).await,
        Command::Exec { uri, data } => client()?.exec(&parse_uri(uri)?, data.as_deref()).await,
        Command::Watch { pattern, since, subscription } => {
            client()?.watch(pattern, *since, subscription.as_deref()).await
        }
        Command::Subscribe { .. } => client()?.subscribe(serde_json::to_value(subscription(&cli.command))?).await,
        Command::Unsubscribe { id } => client()?.rm(&parse_uri(&format!("./subscriptions/{id}"))?).await,
        Command::Mount { .. } => client()?.mount(serde_json::to_value(mount(&cli.command)?)?).await,
        Command::Unmount { mount } => client()?.unmount(mount).await,
        Command::Context(command) => context(command, &client()?).await,
        Command::Rules(RulesCommand::Apply { file }) => dmtree_api::rules_cli::apply(&client()?, file).await,
        Command::Rules(RulesCommand::Explain { name }) => {
            dmtree_api::rules_cli::explain(&client()?, name, cli.client.json).await
        }
        Command::Token(command) => token(command, client).await,
        Command::Openapi => {
            print!("{}", openapi::yaml());
            Ok(())
        }
    }
}

/// `dmtree subscribe`: the very request type the server parses.
fn subscription(command: &Command) -> dmtree_push::spec::Request {
    let Command::Subscribe { pattern, transport, queue, jid, kinds, sample_ms, since, id } = command else {
        return dmtree_push::spec::Request::default();
    };
    dmtree_push::spec::Request {
        id: id.clone(),
        pattern: pattern.clone(),
        kinds: kinds.clone(),
        sample_ms: *sample_ms,
        since: *since,
        transport: transport.clone(),
        queue: queue.clone(),
        jid: jid.clone(),
    }
}

/// `dmtree mount`: the very request type the server parses.
fn mount(command: &Command) -> anyhow::Result<dmtree_api::federation::MountRequest> {
    let Command::Mount { at, url, remote_uri, id, remote_token, timeout_ms, cache_ms } = command else {
        anyhow::bail!("not a mount command");
    };
    Ok(dmtree_api::federation::MountRequest {
        id: id.clone(),
        at: parse_uri(at)?,
        handler: None,
        url: Some(url.clone()),
        remote_uri: Some(parse_uri(remote_uri)?),
        credentials: remote_token.clone().map(|token| dmtree_remote::Credentials { token }),
        timeout_ms: *timeout_ms,
        cache_ms: *cache_ms,
        config: None,
    })
}

async fn context(command: &ContextCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        ContextCommand::Record { kind, from, to, sender, out, mount } => {
            let mut query = serde_json::json!({ "type": kind, "limit": 1000 });
            for (key, value) in [("from", from), ("to", to), ("sender", sender)] {
                if let Some(v) = value {
                    query[key] = serde_json::json!(v);
                }
            }
            let mut sink: Box<dyn std::io::Write> = match out {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            let n = context_cli::record(client, &parse_uri(mount)?, query, &mut sink).await?;
            sink.flush()?;
            eprintln!("recorded {n} events");
        }
        ContextCommand::Play { file, into, pace, speed, mount } => {
            let n = context_cli::play(client, &parse_uri(mount)?, file, *into, *pace, *speed).await?;
            eprintln!("played {n} events");
        }
    }
    Ok(())
}

async fn token(command: &TokenCommand, client: impl Fn() -> anyhow::Result<Client>) -> anyhow::Result<()> {
    match command {
        TokenCommand::New { principal } => {
            let token = auth::generate_token();
            println!("token:  {token}");
            println!(
                "config: [[auth.tokens]]\n        principal = \"{principal}\"\n        sha256 = \"{}\"",
                auth::hash_token(&token)
            );
        }
        TokenCommand::Revoke { token_or_id } => {
            client()?.rm(&parse_uri(&format!("./system/tokens/{}", auth::token_ref(token_or_id)))?).await?;
        }
        TokenCommand::Hash { token } => println!("{}", auth::hash_token(token)),
    }
    Ok(())
}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}
