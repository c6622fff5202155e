//! `dmtree agent`: a resource agent for a process that has none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmtree_agent::wrap::{Source, Wrapped};
use dmtree_agent::{Agent, AgentConfig, Exit, FailurePolicy};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The resource's id (unique in the cloud).
    #[arg(long)]
    pub id: String,
    #[arg(long = "type", default_value = "service")]
    pub kind: String,
    /// The broker; its user must own the resource, e.g. `amqp://web-1:secret@127.0.0.1:5672/%2f`.
    #[arg(long, env = "DMTREE_AGENT_AMQP", hide_env_values = true)]
    pub amqp: String,
    /// Where the resource itself answers (shown in the summary).
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// `require-user-input` or `auto-instantiate`.
    #[arg(long, default_value = "require-user-input", value_parser = policy)]
    pub policy: FailurePolicy,
    /// A command the agent starts and watches (run again on `respawn` and the `restart` action).
    #[arg(long)]
    pub spawn: Option<String>,
    /// NAME=PATH (a file) or NAME=sh:COMMAND; repeatable.
    #[arg(long = "property", value_parser = pair)]
    pub properties: Vec<(String, String)>,
    /// NAME=COMMAND, run with `sh -c` and the exec data in `DMTREE_EXEC_DATA`; repeatable.
    #[arg(long = "action", value_parser = pair)]
    pub actions: Vec<(String, String)>,
    /// NAME=PATH: a property managers may set, written to the file; repeatable.
    #[arg(long = "writable", value_parser = pair)]
    pub writable: Vec<(String, String)>,
    /// How often to ask to be managed while waiting, ms.
    #[arg(long, default_value_t = 1000)]
    pub retry_ms: u64,
    /// Unanswered heartbeats before asking to be managed again.
    #[arg(long, default_value_t = 3)]
    pub missed: u32,
}

fn pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name.into(), value.into())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn policy(text: &str) -> Result<FailurePolicy, String> {
    FailurePolicy::parse(text).ok_or_else(|| format!("unknown policy {text:?}: require-user-input or auto-instantiate"))
}

pub async fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let resource = Arc::new(Wrapped::new(
        args.properties.iter().map(|(n, s)| (n.clone(), Source::parse(s))).collect(),
        args.actions.clone(),
        args.writable.iter().map(|(n, p)| (n.clone(), PathBuf::from(p))).collect(),
        args.spawn.clone(),
    ));
    resource.start().await.map_err(anyhow::Error::msg)?;
    let config = AgentConfig {
        resource: args.id.clone(),
        resource_type: args.kind.clone(),
        amqp: args.amqp.clone(),
        endpoint: args.endpoint.clone(),
        policy: args.policy,
        retry: Duration::from_millis(args.retry_ms.max(10)),
        missed: args.missed.max(1),
    };
    let agent = Arc::new(Agent::new(config, resource.clone())?);
    let exit = tokio::select! {
        exit = agent.run() => exit,
        _ = tokio::signal::ctrl_c() => Exit::Shutdown("interrupted".into()),
    };
    resource.stop().await;
    let Exit::Shutdown(reason) = exit;
    eprintln!("agent {} stopped: {reason}", args.id);
    Ok(())
}
