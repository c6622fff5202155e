//! AMQP delivery (lapin, RabbitMQ). One topic exchange; every subscription
//! has its own durable queue bound with `<subscription>.#`, and dmtree
//! publishes each authorised event once per matching subscription with the
//! routing key `<subscription>.<uri words>`. A consumer therefore only ever
//! sees events its subscription's owner may read, provided consumers are not
//! granted `read` on the exchange (so they cannot bind queues of their own).

use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::Subscription;
use super::spec::{SubscriptionSpec, Transport};
use super::worker::{Connector, Receipt, Sink};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`
    pub url: String,
    #[serde(default = "default_exchange")]
    pub exchange: String,
}

fn default_exchange() -> String {
    "dmtree.events".into()
}

/// One connection, shared by every subscription's channel, reopened on demand.
pub struct AmqpConnector {
    config: AmqpConfig,
    connection: Mutex<Option<Arc<Connection>>>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl AmqpConnector {
    pub fn new(config: AmqpConfig) -> Self {
        Self { config, connection: Mutex::new(None) }
    }

    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let props = ConnectionProperties::default().with_connection_name("dmtree".into());
        let conn = Arc::new(Connection::connect(&self.config.url, props).await.map_err(err)?);
        let channel = conn.create_channel().await.map_err(err)?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(self.config.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(err)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Whether `queue` exists on the broker (a passive declare, on a channel of its own,
    /// since the broker closes the channel of a passive declare that fails).
    pub async fn queue_exists(&self, queue: &str) -> Result<bool, String> {
        let channel = self.connection().await?.create_channel().await.map_err(err)?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
            Ok(_) => {
                let _ = channel.close(200, "".into()).await;
                Ok(true)
            }
            Err(e) => match e.kind() {
                lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404 => Ok(false),
                _ => Err(err(e)),
            },
        }
    }

    pub async fn delete_queue(&self, queue: &str) -> Result<(), String> {
        let channel = self.connection().await?.create_channel().await.map_err(err)?;
        channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await.map_err(err)?;
        Ok(())
    }
}

impl AmqpConnector {
    /// Declares the subscription's durable queue and binds it for this subscription only.
    pub async fn declare(&self, spec: &SubscriptionSpec) -> Result<Channel, String> {
        let Transport::Amqp { queue } = &spec.transport else { return Err("not an AMQP subscription".into()) };
        let channel = self.connection().await?.create_channel().await.map_err(err)?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.map_err(err)?;
        let binding = format!("{}.#", spec.id);
        let (queue, exchange) = (queue.as_str().into(), self.config.exchange.as_str().into());
        channel
            .queue_bind(queue, exchange, binding.into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(err)?;
        Ok(channel)
    }
}

#[async_trait]
impl Connector for AmqpConnector {
    async fn open(&self, sub: &Subscription) -> Result<Box<dyn Sink>, String> {
        let channel = self.declare(&sub.spec).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(err)?;
        Ok(Box::new(AmqpSink { channel, exchange: self.config.exchange.clone(), prefix: sub.spec.id.clone() }))
    }
}

/// An unroutable message comes back instead of vanishing, so it counts as undelivered.
const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };

struct AmqpSink {
    channel: Channel,
    exchange: String,
    /// The subscription id: the first word of every routing key.
    prefix: String,
}

#[async_trait]
impl Sink for AmqpSink {
    async fn send(&mut self, revision: u64, body: Vec<u8>, routing: &str) -> Result<Receipt, String> {
        let key = if routing.is_empty() { self.prefix.clone() } else { format!("{}.{routing}", self.prefix) };
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(revision.to_string().into());
        let confirm = self
            .channel
            .basic_publish(self.exchange.as_str().into(), key.into(), MANDATORY, &body, props)
            .await
            .map_err(err)?;
        Ok(Box::pin(async move {
            match confirm.await.map_err(err)? {
                // Returned: no queue took it (the queue was deleted behind dmtree's back).
                Confirmation::Ack(Some(_)) => Err(format!("revision {revision} was unroutable: the queue is gone")),
                Confirmation::Ack(None) => Ok(()),
                _ => Err(format!("the broker refused revision {revision}")),
            }
        }))
    }
}
