//! XMPP delivery (tokio-xmpp). dmtree logs in once as the configured JID and
//! sends each event to the subscriber's JID as a `headline` message whose
//! body is the event JSON. tokio-xmpp reconnects by itself; a message counts
//! as accepted when the server acks it (XEP-0198 stream management, which
//! Prosody's `mod_smacks` provides), or, where the server offers no stream
//! management, once written to the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    pub fn start(config: XmppConfig) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let link =
            Self { tx, online: Arc::default(), acks: Arc::default(), state: Arc::new(Mutex::new("connecting".into())) };
        tokio::spawn(session(config, rx, link.online.clone(), link.acks.clone(), link.state.clone()));
        link
    }
}

async fn session(
    config: XmppConfig,
    mut rx: mpsc::Receiver<Outgoing>,
    online: Arc<AtomicBool>,
    acks: Arc<AtomicBool>,
    state: Arc<Mutex<String>>,
) {
    let jid: Jid = match config.jid.parse() {
        Ok(j) => j,
        Err(e) => {
            *state.lock() = format!("error: invalid jid {:?}: {e}", config.jid);
            return;
        }
    };
    let dns = DnsConfig::addr(&config.server);
    let mut client = if config.starttls {
        Client::new_starttls(jid, config.password, dns, Timeouts::default())
    } else {
        Client::new_plaintext(jid, config.password, dns, Timeouts::default())
    };
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { return };
                let message = Message::headline(Some(out.to)).with_body(Lang(String::new()), out.body);
                let sent = client.send_stanza(message.into()).await.map_err(|e| e.to_string());
                let _ = out.reply.send(sent);
            }
            event = client.next() => match event {
                Some(Event::Online { features, .. }) => {
                    acks.store(features.stream_management.is_some(), Ordering::Release);
                    online.store(true, Ordering::Release);
                    *state.lock() = "connected".into();
                    tracing::info!(sm = features.stream_management.is_some(), "xmpp session online");
                }
                Some(Event::Disconnected(e)) => {
                    online.store(false, Ordering::Release);
                    *state.lock() = format!("retrying: {e}");
                    tracing::warn!(error = %e, "xmpp session lost; reconnecting");
                }
                Some(Event::Stanza(_)) => {}
                None => {
                    *state.lock() = "error: the xmpp client stopped".into();
                    return;
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
