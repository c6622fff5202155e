//! Requests waiting for an answer: commands sent to agents (answered by a
//! `result` in the inbox) and requests to other members (answered on the
//! reply queue, matched by correlation id).

use std::collections::HashMap;

use dmtree_agent::protocol::Reply;
use lapin::message::Delivery;
use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Pending {
    waiting: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
}

impl Pending {
    /// A fresh, unguessable id and where its answer will arrive.
    pub fn register(&self) -> (String, oneshot::Receiver<Reply>) {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id.clone(), tx);
        (id, rx)
    }

    pub fn forget(&self, id: &str) {
        self.waiting.lock().remove(id);
    }

    /// Delivers an answer; false when nobody waits for `id` (late or forged).
    pub fn complete(&self, id: &str, reply: Reply) -> bool {
        match self.waiting.lock().remove(id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// An answer from another member, on this member's reply queue.
    pub fn reply(&self, d: &Delivery) {
        let Some(id) = d.properties.correlation_id().as_ref().map(|c| c.to_string()) else { return };
        if let Ok(reply) = serde_json::from_slice::<Reply>(&d.data) {
            self.complete(&id, reply);
        }
    }
}
