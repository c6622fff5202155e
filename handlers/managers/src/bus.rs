//! The cloud's RabbitMQ side: topology, one connection per member (reopened
//! when lost), publishing through the default exchange, and the consumers a
//! member needs: its inbox, its reply queue, and Manage Me while it coordinates.

use dmtree_agent::protocol::{DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, MANAGE_ME_QUEUE};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use parking_lot::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the broker is unreachable")]
    Unavailable,
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
}

/// Expired heartbeats are worthless: a dead member's inbox does not pile up.
const INBOX_TTL_MS: i64 = 10_000;
const DEAD_LETTERS_MAX: i64 = 10_000;

pub struct Bus {
    url: String,
    name: String,
    /// The AMQP user this member connects as (its messages' `user_id`).
    pub user: String,
    pub inbox: String,
    channel: RwLock<Option<Channel>>,
    reply_queue: RwLock<Option<String>>,
    quorum: bool,
}

/// One live connection and the consumers every member runs.
pub struct Link {
    pub connection: Connection,
    pub inbox: Consumer,
    pub replies: Consumer,
}

/// The arguments of the cloud's own queues: dead-lettered, and replicated on a cluster.
fn cloud_queue(quorum: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(DEAD_LETTER_EXCHANGE)));
    if quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    }
    args
}

impl Bus {
    pub fn new(url: String, member: &str, quorum: bool) -> Self {
        let user = url.parse::<lapin::uri::AMQPUri>().map(|u| u.authority.userinfo.username).unwrap_or_default();
        Self {
            url,
            user,
            name: format!("dmtree manager {member}"),
            inbox: dmtree_agent::protocol::manager_queue(member),
            channel: RwLock::new(None),
            reply_queue: RwLock::new(None),
            quorum,
        }
    }

    pub async fn connect(&self) -> Result<Link, BusError> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let connection = Connection::connect(&self.url, props).await?;
        let channel = connection.create_channel().await?;
        declare_topology(&channel, self.quorum).await?;
        let mut inbox_args = cloud_queue(self.quorum);
        inbox_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(INBOX_TTL_MS));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(self.inbox.as_str().into(), durable, inbox_args).await?;
        let consumer = connection.create_channel().await?;
        consumer.basic_qos(256, BasicQosOptions::default()).await?;
        let inbox = consumer
            .basic_consume(self.inbox.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let replies_queue = channel.queue_declare("".into(), private, FieldTable::default()).await?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let replies =
            channel.basic_consume(replies_queue.name().clone(), "".into(), no_ack, FieldTable::default()).await?;
        *self.reply_queue.write() = Some(replies_queue.name().to_string());
        *self.channel.write() = Some(channel);
        Ok(Link { connection, inbox, replies })
    }

    pub fn disconnected(&self) {
        *self.channel.write() = None;
        *self.reply_queue.write() = None;
    }

    /// Where replies to this member's requests go.
    pub fn reply_queue(&self) -> Option<String> {
        self.reply_queue.read().clone()
    }

    /// Consumes Manage Me on a channel of its own, closed when the member stops coordinating.
    pub async fn consume_manage_me(&self, link: &Link) -> Result<(Channel, Consumer), BusError> {
        let channel = link.connection.create_channel().await?;
        channel.basic_qos(16, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(MANAGE_ME_QUEUE.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok((channel, consumer))
    }

    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<(), BusError> {
        let channel = self.channel.read().clone().ok_or(BusError::Unavailable)?;
        let props = props.with_content_type("application/json".into());
        channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props).await?;
        Ok(())
    }
}

/// The queues and exchanges every member (and the test harness) relies on.
pub async fn declare_topology(channel: &Channel, quorum: bool) -> Result<(), BusError> {
    let durable_ex = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(DEAD_LETTER_EXCHANGE.into(), ExchangeKind::Fanout, durable_ex, FieldTable::default())
        .await?;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongLongInt(DEAD_LETTERS_MAX));
    channel.queue_declare(DEAD_LETTER_QUEUE.into(), durable, bounded).await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.queue_declare(MANAGE_ME_QUEUE.into(), durable, cloud_queue(quorum)).await?;
    Ok(())
}
