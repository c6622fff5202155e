//! The client subcommands: `get`, `set`, `ls`, `rm`, `exec`, `watch`.
//! Output is readable by default and the server's JSON with `--json`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use dmtree_core::{Format, Uri, UriLimits, Value};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value as Json, json};

use dmtree_remote::sse::{SseFrame, SseReader};

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The dmtree server.
    #[arg(long, global = true, env = "DMTREE_SERVER", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// Bearer token.
    #[arg(long, global = true, env = "DMTREE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (e.g. `dmtree-data/admin.token`).
    #[arg(long, global = true, env = "DMTREE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Run inside this session.
    #[arg(long, global = true, env = "DMTREE_SESSION")]
    pub session: Option<String>,
    /// Print the server's JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct Client {
    http: reqwest::Client,
    args: ClientArgs,
    token: Option<String>,
}

/// Accepts `./a/b`, `.` or the relative `a/b`.
pub fn parse_uri(text: &str) -> anyhow::Result<Uri> {
    Uri::parse_relative(&Uri::root(), text, &UriLimits::default()).with_context(|| format!("bad URI {text:?}"))
}

impl Client {
    pub fn new(args: ClientArgs) -> anyhow::Result<Self> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { http, args, token })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.args.server.trim_end_matches('/'), path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = &self.args.session {
            req = req.header("Dmtree-Session", s);
        }
        req
    }

    async fn send(&self, req: RequestBuilder) -> anyhow::Result<Json> {
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.args.server))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Json::Null);
        }
        let body: Json = resp.json().await.unwrap_or(Json::Null);
        if !status.is_success() {
            let e = &body["error"];
            bail!(
                "{} ({}): {}",
                e["code"].as_str().unwrap_or("error"),
                status.as_u16(),
                e["message"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    }

    fn print_json(&self, v: &Json) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }

    pub async fn get(&self, uri: &Uri, depth: Option<&str>, props: bool) -> anyhow::Result<()> {
        let mut query = vec![];
        if let Some(d) = depth {
            query.push(("depth", d.to_owned()));
        }
        if props {
            query.push(("props", "true".to_owned()));
        }
        let node = self.send(self.request(Method::GET, &uri.to_http_path()).query(&query)).await?;
        if self.args.json {
            self.print_json(&node);
        } else if node.get("children").is_some() {
            print_tree(&node, 0);
        } else {
            println!("{}", display_value(&node["value"]));
        }
        Ok(())
    }

    pub async fn ls(&self, uri: &Uri) -> anyhow::Result<()> {
        let node = self.send(self.request(Method::GET, &uri.to_http_path())).await?;
        if self.args.json {
            self.print_json(&node);
            return Ok(());
        }
        match node["children"].as_object() {
            Some(children) => {
                for (name, child) in children {
                    match child["kind"].as_str() {
                        Some("interior") => println!("{name}/"),
                        Some(_) => println!("{name}\t{}", display_value(&child["value"])),
                        None => println!("{name}\t(no access)"),
                    }
                }
            }
            None => println!("{}", uri.name().unwrap_or(".")),
        }
        Ok(())
    }

    pub async fn set(&self, uri: &Uri, text: &str, format: Option<Format>) -> anyhow::Result<()> {
        let value = Value::from_text(text, format).map_err(|e| anyhow::anyhow!("{e}"))?;
        let body = json!({ "value": value.to_json(), "format": value.format() });
        let out = self.send(self.request(Method::PUT, &uri.to_http_path()).json(&body)).await?;
        if self.args.json {
            self.print_json(&out);
        } else {
            let verb = if out["created"].as_bool() == Some(true) { "created" } else { "replaced" };
            println!("{verb} {} (version {})", out["uri"].as_str().unwrap_or_default(), out["version"]);
        }
        Ok(())
    }

    pub async fn rm(&self, uri: &Uri) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, &uri.to_http_path())).await?;
        if !self.args.json {
            println!("deleted {uri}");
        }
        Ok(())
    }

    /// Executes a node with JSON data; returns the server's answer.
    pub async fn exec_json(&self, uri: &Uri, data: &Json) -> anyhow::Result<Json> {
        let path = format!("/exec{}", &uri.to_http_path()["/tree".len()..]);
        self.send(self.request(Method::POST, &path).json(data)).await
    }

    /// Writes a node with a JSON body; returns the server's answer.
    pub async fn put_json(&self, uri: &Uri, body: &Json) -> anyhow::Result<Json> {
        self.send(self.request(Method::PUT, &uri.to_http_path()).json(body)).await
    }

    pub async fn exec(&self, uri: &Uri, data: Option<&str>) -> anyhow::Result<()> {
        let out = match data {
            Some(d) => self.exec_json(uri, &serde_json::from_str(d).context("exec data must be JSON")?).await?,
            None => {
                let path = format!("/exec{}", &uri.to_http_path()["/tree".len()..]);
                self.send(self.request(Method::POST, &path)).await?
            }
        };
        if self.args.json {
            self.print_json(&out);
        } else {
            self.print_json(&out["result"]);
        }
        Ok(())
    }

    /// Creates a subscription (`POST /tree/subscriptions`) and prints its id and target.
    pub async fn subscribe(&self, request: Json) -> anyhow::Result<()> {
        let out = self.send(self.request(Method::POST, "/tree/subscriptions").json(&request)).await?;
        let uri = out["uri"].as_str().unwrap_or_default().to_owned();
        let id = uri.rsplit('/').next().unwrap_or_default().to_owned();
        let target = self.send(self.request(Method::GET, &format!("/tree/subscriptions/{id}/config/target"))).await?;
        if self.args.json {
            self.print_json(&json!({ "id": id, "uri": uri, "target": target["value"] }));
        } else {
            println!("subscription {id}");
            match request["transport"].as_str() {
                Some("amqp") => println!("queue {}", display_value(&target["value"])),
                Some("xmpp") => println!("messages to {}", display_value(&target["value"])),
                _ => println!("read it with: dmtree watch --subscription {id}"),
            }
        }
        Ok(())
    }

    /// Mounts a remote tree (`POST /tree/mounts`).
    pub async fn mount(&self, request: Json) -> anyhow::Result<()> {
        let out = self.send(self.request(Method::POST, "/tree/mounts").json(&request)).await?;
        if self.args.json {
            self.print_json(&out);
        } else {
            let id = out["uri"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or_default();
            let text = |k: &str| request[k].as_str().unwrap_or_default().to_owned();
            println!("mounted {} {} at {} as {id}", text("url"), text("remote_uri"), text("at"));
        }
        Ok(())
    }

    /// Unmounts a remote tree given its id, or its mount point (`./…`).
    pub async fn unmount(&self, mount: &str) -> anyhow::Result<()> {
        let id = match mount.strip_prefix("./") {
            None => mount.to_owned(),
            Some(_) => {
                let at = parse_uri(mount)?.to_string();
                let mounts = self.send(self.request(Method::GET, "/tree/mounts?depth=2")).await?;
                let found = mounts["children"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(_, m)| m["children"]["uri"]["value"].as_str() == Some(at.as_str()));
                match found {
                    Some((id, _)) => id.clone(),
                    None => anyhow::bail!("{at} is not a mount point (see: dmtree ls ./mounts)"),
                }
            }
        };
        self.send(self.request(Method::DELETE, &parse_uri(&format!("./mounts/{id}"))?.to_http_path())).await?;
        if !self.args.json {
            println!("unmounted {id}");
        }
        Ok(())
    }

    /// Streams events, reconnecting with backoff and resuming after the last one seen.
    /// With `subscription`, reads that `sse` subscription (the server keeps its position).
    pub async fn watch(&self, pattern: &str, since: Option<u64>, subscription: Option<&str>) -> anyhow::Result<()> {
        let mut last = since;
        let mut backoff = dmtree_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let query = match subscription {
                Some(id) => [("subscription", id)],
                None => [("uri", pattern)],
            };
            let mut req = self.request(Method::GET, "/events").query(&query);
            if let Some(rev) = last {
                req = req.header("Last-Event-ID", rev.to_string());
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    backoff.reset();
                    self.consume(resp, &mut last).await;
                }
                Ok(resp) => {
                    let body: Json = resp.json().await.unwrap_or(Json::Null);
                    bail!("{}", body["error"]["message"].as_str().unwrap_or("the server refused the stream"));
                }
                Err(e) => eprintln!("watch: {e}; retrying"),
            }
            backoff.wait().await;
        }
    }

    async fn consume(&self, resp: Response, last: &mut Option<u64>) {
        let mut frames = SseReader::new(resp.bytes_stream());
        while let Some(frame) = frames.next().await {
            if let Some(id) = frame.id.as_deref().and_then(|i| i.parse().ok()) {
                *last = Some(id);
            }
            self.print_event(&frame);
        }
    }

    fn print_event(&self, frame: &SseFrame) {
        if self.args.json {
            println!("{}", frame.data);
            return;
        }
        let Ok(e) = serde_json::from_str::<Json>(&frame.data) else { return };
        match frame.event.as_deref() {
            Some("gap") => println!("-- gap: revisions {} to {} are no longer retained", e["from"], e["to"]),
            _ => {
                let value = e.get("value").map(|v| format!(" = {}", display_value(v))).unwrap_or_default();
                let to = e.get("to").and_then(Json::as_str).map(|t| format!(" -> {t}")).unwrap_or_default();
                println!(
                    "{} {} {}{to}{value}",
                    e["revision"],
                    e["kind"].as_str().unwrap_or("?"),
                    e["uri"].as_str().unwrap_or("?")
                );
            }
        }
    }
}

fn display_value(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_tree(node: &Json, indent: usize) {
    let Some(children) = node["children"].as_object() else { return };
    for (name, child) in children {
        let pad = "  ".repeat(indent);
        match child["kind"].as_str() {
            Some("interior") => {
                println!("{pad}{name}/");
                print_tree(child, indent + 1);
            }
            Some(_) => println!("{pad}{name} = {}", display_value(&child["value"])),
            None => println!("{pad}{name} (no access)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_arguments() {
        assert_eq!(parse_uri("config/x").unwrap().to_string(), "./config/x");
        assert_eq!(parse_uri(".").unwrap(), Uri::root());
        assert!(parse_uri("./a//b").is_err());
    }
}
