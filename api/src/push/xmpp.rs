//! XMPP delivery (tokio-xmpp). dmtree logs in once as the configured JID and
//! sends each event to the subscriber's JID as a `normal` message (kept
//! offline by the server while the subscriber is away; `headline` would not be) whose
//! body is the event JSON. tokio-xmpp reconnects by itself; a message counts
//! as accepted when the server acks it (XEP-0198 stream management, which
//! Prosody's `mod_smacks` provides), or, where the server offers no stream
//! management, once written to the stream.
//!
//! tokio-xmpp 6 loops forever trying to resume a session after the server
//! restarted: Prosody's `<failed/>` lacks the optional `h` attribute, which
//! its parser rejects. So when a stanza cannot even be written within the
//! acknowledgement timeout, the session is replaced by a fresh one (with no
//! stream-management state), and delivery resumes from the last acked revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::stanzastream::{StanzaStage, StanzaState, StanzaToken};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

use super::Subscription;
use super::spec::Transport;
use super::worker::{Connector, Receipt, Sink};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The JID dmtree logs in as, e.g. `dmtree@example.org`.
    pub jid: String,
    pub password: String,
    /// `host:port` of the server's client port.
    pub server: String,
    /// StartTLS (the default). `false` sends credentials in clear: loopback test servers only.
    #[serde(default = "yes")]
    pub starttls: bool,
}

fn yes() -> bool {
    true
}

struct Outgoing {
    to: Jid,
    body: String,
    reply: oneshot::Sender<Result<StanzaToken, String>>,
}

/// The shared XMPP session.
pub struct XmppLink {
    tx: mpsc::Sender<Outgoing>,
    online: Arc<AtomicBool>,
    /// Whether the server acks stanzas (XEP-0198).
    acks: Arc<AtomicBool>,
    state: Arc<Mutex<String>>,
}

impl XmppLink {
    pub fn start(config: XmppConfig, send_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let link =
            Self { tx, online: Arc::default(), acks: Arc::default(), state: Arc::new(Mutex::new("connecting".into())) };
        let status = Status { online: link.online.clone(), acks: link.acks.clone(), state: link.state.clone() };
        tokio::spawn(session(config, send_timeout, rx, status));
        link
    }
}

/// What the session reports to the workers.
struct Status {
    online: Arc<AtomicBool>,
    acks: Arc<AtomicBool>,
    state: Arc<Mutex<String>>,
}

async fn session(config: XmppConfig, send_timeout: Duration, mut rx: mpsc::Receiver<Outgoing>, status: Status) {
    let jid: Jid = match config.jid.parse() {
        Ok(j) => j,
        Err(e) => {
            *status.state.lock() = format!("error: invalid jid {:?}: {e}", config.jid);
            return;
        }
    };
    let connect = || {
        let dns = DnsConfig::addr(&config.server);
        let (jid, password) = (jid.clone(), config.password.clone());
        if config.starttls {
            Client::new_starttls(jid, password, dns, Timeouts::default())
        } else {
            Client::new_plaintext(jid, password, dns, Timeouts::default())
        }
    };
    let mut client = connect();
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { return };
                let message = Message::normal(Some(out.to)).with_body(Lang(String::new()), out.body);
                match tokio::time::timeout(send_timeout, client.send_stanza(message.into())).await {
                    Ok(sent) => {
                        let _ = out.reply.send(sent.map_err(|e| e.to_string()));
                    }
                    Err(_) => {
                        tracing::warn!("xmpp session wedged (nothing written for {} ms); starting a fresh one", send_timeout.as_millis());
                        status.online.store(false, Ordering::Release);
                        *status.state.lock() = "retrying: starting a fresh session".into();
                        let _ = out.reply.send(Err("the xmpp session was replaced".into()));
                        client = connect();
                    }
                }
            }
            event = client.next() => match event {
                Some(Event::Online { features, resumed, .. }) => {
                    status.acks.store(features.stream_management.is_some(), Ordering::Release);
                    status.online.store(true, Ordering::Release);
                    *status.state.lock() = "connected".into();
                    tracing::info!(sm = features.stream_management.is_some(), resumed, "xmpp session online");
                }
                Some(Event::Disconnected(e)) => {
                    status.online.store(false, Ordering::Release);
                    *status.state.lock() = format!("retrying: {e}");
                    tracing::warn!(error = %e, "xmpp session lost; reconnecting");
                }
                Some(Event::Stanza(_)) => {}
                None => {
                    tracing::warn!("xmpp client stopped; starting a fresh one");
                    status.online.store(false, Ordering::Release);
                    client = connect();
                }
            }
        }
    }
}

#[async_trait]
impl Connector for XmppLink {
    async fn open(&self, sub: &Subscription) -> Result<Box<dyn Sink>, String> {
        let Transport::Xmpp { jid } = &sub.spec.transport else { return Err("not an XMPP subscription".into()) };
        if !self.online.load(Ordering::Acquire) {
            return Err(format!("xmpp session is not online ({})", self.state.lock()));
        }
        let to: Jid = jid.parse().map_err(|e| format!("invalid jid {jid:?}: {e}"))?;
        Ok(Box::new(XmppSink { tx: self.tx.clone(), to, acks: self.acks.load(Ordering::Acquire) }))
    }
}

struct XmppSink {
    tx: mpsc::Sender<Outgoing>,
    to: Jid,
    acks: bool,
}

#[async_trait]
impl Sink for XmppSink {
    async fn send(&mut self, revision: u64, body: Vec<u8>, _routing: &str) -> Result<Receipt, String> {
        let (reply, token) = oneshot::channel();
        let body = String::from_utf8(body).map_err(|e| e.to_string())?;
        let out = Outgoing { to: self.to.clone(), body, reply };
        self.tx.send(out).await.map_err(|_| "the xmpp session has stopped".to_string())?;
        let mut token = token.await.map_err(|_| "the xmpp session has stopped".to_string())??;
        let stage = if self.acks { StanzaStage::Acked } else { StanzaStage::Sent };
        Ok(Box::pin(async move {
            match token.wait_for(stage).await {
                Some(StanzaState::Acked { .. } | StanzaState::Sent { .. }) => Ok(()),
                Some(other) => Err(format!("revision {revision} was not delivered: {other:?}")),
                None => Err(format!("revision {revision} was dropped by the xmpp session")),
            }
        }))
    }
}
