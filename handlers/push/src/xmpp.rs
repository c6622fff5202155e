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
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::stanza::Stanza;
use tokio_xmpp::stanzastream::{StanzaStage, StanzaState, StanzaToken};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

use super::Subscription;
use super::spec::Transport;
use super::worker::{Connector, Receipt, Sink};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The JID dmtree logs in as, e.g. `dmtree@example.org` (resource
    /// `dmtree`) or a full JID. One JID and resource per dmtree server.
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

/// A chat message that arrived: the sender's bare JID and the body.
pub type Incoming = (String, String);

/// The shared XMPP session.
pub struct XmppLink {
    tx: mpsc::Sender<Outgoing>,
    /// Where arriving messages go, once someone listens (ContextStore propagation).
    inbox: Arc<Mutex<Option<mpsc::Sender<Incoming>>>>,
    /// Tells the session to announce itself available (it now takes messages).
    announce: Arc<tokio::sync::Notify>,
    online: Arc<AtomicBool>,
    /// Whether the server acks stanzas (XEP-0198).
    acks: Arc<AtomicBool>,
    state: Arc<Mutex<String>>,
}

impl XmppLink {
    pub fn start(config: XmppConfig, send_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let link = Self {
            tx,
            inbox: Arc::default(),
            announce: Arc::default(),
            online: Arc::default(),
            acks: Arc::default(),
            state: Arc::new(Mutex::new("connecting".into())),
        };
        let status = Status {
            online: link.online.clone(),
            acks: link.acks.clone(),
            state: link.state.clone(),
            inbox: link.inbox.clone(),
            announce: link.announce.clone(),
        };
        tokio::spawn(session(config, send_timeout, rx, status));
        link
    }

    /// Hands every arriving chat message with a body to `inbox` from now on.
    /// The session is then "available", so the server delivers messages
    /// (those it kept offline too); until then it stays unavailable, and
    /// nothing is lost.
    pub fn on_messages(&self, inbox: mpsc::Sender<Incoming>) {
        *self.inbox.lock() = Some(inbox);
        self.announce.notify_one();
    }

    /// Sends `body` to `to`; resolves once the server acked it (or, without
    /// stream management, once written).
    pub async fn deliver(&self, to: Jid, body: String) -> Result<(), String> {
        if !self.online.load(Ordering::Acquire) {
            return Err(format!("xmpp session is not online ({})", self.state.lock()));
        }
        let mut sink = XmppSink { tx: self.tx.clone(), to, acks: self.acks.load(Ordering::Acquire) };
        sink.send(0, body.into_bytes(), "").await?.await
    }
}

/// What the session reports to the workers.
struct Status {
    online: Arc<AtomicBool>,
    acks: Arc<AtomicBool>,
    state: Arc<Mutex<String>>,
    inbox: Arc<Mutex<Option<mpsc::Sender<Incoming>>>>,
    announce: Arc<tokio::sync::Notify>,
}

/// Passes a message with a body on to the inbox, if there is one.
fn received(stanza: Stanza, inbox: &Mutex<Option<mpsc::Sender<Incoming>>>) {
    let Stanza::Message(message) = stanza else { return };
    let (Some(from), Some((_, body))) = (&message.from, message.get_best_body_cloned(vec![])) else { return };
    if let Some(inbox) = inbox.lock().as_ref()
        && inbox.try_send((from.to_bare().to_string(), body)).is_err()
    {
        tracing::warn!(%from, "xmpp inbox full or closed; message dropped");
    }
}

/// The resource a bare configured JID logs in with.
const RESOURCE: &str = "dmtree";

/// A fixed resource, so that a restarted dmtree replaces the session its
/// previous process left behind. With a fresh random resource, that session
/// would hibernate (stream management) holding the messages sent to it, and
/// the server would bounce them when it expired; replaced, it hands what it
/// did not deliver to offline storage, which the new session then receives.
fn login_jid(configured: &str) -> Result<Jid, tokio_xmpp::jid::Error> {
    let jid: Jid = configured.parse()?;
    match jid.try_into_full() {
        Ok(full) => Ok(full.into()),
        Err(bare) => Ok(bare.with_resource_str(RESOURCE)?.into()),
    }
}

async fn session(config: XmppConfig, send_timeout: Duration, mut rx: mpsc::Receiver<Outgoing>, status: Status) {
    let jid = match login_jid(&config.jid) {
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
            _ = status.announce.notified() => {
                if status.online.load(Ordering::Acquire) {
                    let _ = client.send_stanza(Presence::available().into()).await;
                }
            }
            event = client.next() => match event {
                Some(Event::Online { features, resumed, .. }) => {
                    status.acks.store(features.stream_management.is_some(), Ordering::Release);
                    status.online.store(true, Ordering::Release);
                    *status.state.lock() = "connected".into();
                    tracing::info!(sm = features.stream_management.is_some(), resumed, "xmpp session online");
                    // Servers deliver messages for the bare JID (and those kept
                    // offline) only to available resources: only when listening.
                    if !resumed && status.inbox.lock().is_some() {
                        let _ = client.send_stanza(Presence::available().into()).await;
                    }
                }
                Some(Event::Disconnected(e)) => {
                    status.online.store(false, Ordering::Release);
                    *status.state.lock() = format!("retrying: {e}");
                    tracing::warn!(error = %e, "xmpp session lost; reconnecting");
                }
                Some(Event::Stanza(stanza)) => received(stanza, &status.inbox),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_jid_logs_in_with_the_fixed_resource_and_a_full_one_keeps_its_own() {
        assert_eq!(login_jid("a@example.org").unwrap().to_string(), "a@example.org/dmtree");
        assert_eq!(login_jid("a@example.org/site-b").unwrap().to_string(), "a@example.org/site-b");
        assert!(login_jid("@").is_err());
    }
}
