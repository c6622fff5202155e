//! `dmtree context record|play`: ContextEvents to and from JSON Lines.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use dmtree_core::Uri;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};

use crate::client::Client;

/// Where `play` sends events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Into {
    /// The ContextStore's `ingest` node.
    Store,
    /// The tree: each event's `payload.uri` is set to its `payload.value`.
    Tree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// Keep the recorded time between events (scaled by `--speed`).
    Recorded,
    /// As fast as the server takes them.
    Fast,
}

fn bar(len: Option<u64>) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = len.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} events {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn node(mount: &Uri, name: &str) -> Uri {
    mount.join_name(name)
}

/// Writes every event of a type in a time range as JSON Lines.
pub async fn record(client: &Client, mount: &Uri, query: Json, out: &mut dyn Write) -> anyhow::Result<u64> {
    let progress = bar(None);
    let mut query = query;
    let mut written = 0;
    loop {
        let page = client.exec_json(&node(mount, "query"), &query).await?;
        for e in page["result"]["events"].as_array().into_iter().flatten() {
            writeln!(out, "{e}")?;
            written += 1;
        }
        progress.set_position(written);
        match page["result"]["cursor"].as_str() {
            Some(c) => query["cursor"] = json!(c),
            None => break,
        }
    }
    progress.finish_and_clear();
    Ok(written)
}

/// Replays a JSON Lines file into the store or the tree.
pub async fn play(
    client: &Client,
    mount: &Uri,
    file: &Path,
    into: Into,
    pace: Pace,
    speed: f64,
) -> anyhow::Result<u64> {
    if speed <= 0.0 {
        bail!("--speed must be positive");
    }
    let lines: Vec<String> =
        std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?)
            .lines()
            .collect::<Result<_, _>>()?;
    let events: Vec<Json> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {} is not JSON", i + 1)))
        .collect::<Result<_, _>>()?;
    if into == Into::Tree
        && let Some(i) = events.iter().position(|e| !e["payload"]["uri"].is_string())
    {
        bail!("event {} has no payload.uri: only events recorded from tree changes can be played into the tree", i + 1);
    }
    let time = |e: &Json| {
        e["timestamp"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
    };
    let first = events.first().and_then(time);
    let started = tokio::time::Instant::now();
    let progress = bar(Some(events.len() as u64));
    let mut batch = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if pace == Pace::Recorded
            && let (Some(first), Some(t)) = (first, time(e))
        {
            let due =
                started + Duration::from_secs_f64(((t - first).num_milliseconds().max(0) as f64 / 1000.0) / speed);
            if tokio::time::Instant::now() < due {
                send(client, mount, into, &mut batch).await?;
                tokio::time::sleep_until(due).await;
            }
        }
        batch.push(e.clone());
        if batch.len() >= 500 {
            send(client, mount, into, &mut batch).await?;
        }
        progress.set_position(i as u64 + 1);
    }
    send(client, mount, into, &mut batch).await?;
    progress.finish_and_clear();
    Ok(events.len() as u64)
}

async fn send(client: &Client, mount: &Uri, into: Into, batch: &mut Vec<Json>) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    match into {
        Into::Store => {
            client.exec_json(&node(mount, "ingest"), &json!({ "events": batch })).await?;
        }
        Into::Tree => {
            for e in batch.iter() {
                let uri = e["payload"]["uri"].as_str().unwrap_or_default();
                let uri = crate::client::parse_uri(uri)?;
                let mut body = json!({ "value": e["payload"]["value"] });
                if let Some(f) = e["payload"]["format"].as_str() {
                    body["format"] = json!(f);
                }
                client.put_json(&uri, &body).await?;
            }
        }
    }
    batch.clear();
    Ok(())
}
