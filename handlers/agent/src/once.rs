//! Actions that carry an `action_id` (a rule's firing, say) run once per id:
//! a manager that redoes a command after a failover gets the first run's
//! result instead of a second run.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

type Outcome = Result<Json, String>;

/// How many recent ids are remembered.
pub const REMEMBERED: usize = 1024;

/// The runs by id, and the ids oldest first (to forget them in order).
#[derive(Default)]
struct Runs {
    cells: HashMap<String, Arc<OnceCell<Outcome>>>,
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct Once {
    runs: Mutex<Runs>,
}

impl Once {
    /// Runs `action` unless an action with this id ran (or is running): then its outcome.
    pub async fn run<F: Future<Output = Outcome>>(&self, id: Option<&str>, action: F) -> Outcome {
        let Some(id) = id else { return action.await };
        let cell = {
            let mut guard = self.runs.lock();
            let Runs { cells, order } = &mut *guard;
            if !cells.contains_key(id) {
                order.push_back(id.to_owned());
                if order.len() > REMEMBERED
                    && let Some(old) = order.pop_front()
                {
                    cells.remove(&old);
                }
            }
            cells.entry(id.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| action).await.clone()
    }
}

/// The `action_id` of exec data, if any.
pub fn action_id(data: &Json) -> Option<&str> {
    data.get("action_id").and_then(Json::as_str)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_id_runs_once_even_when_redone_concurrently() {
        let once = Arc::new(Once::default());
        let runs = Arc::new(AtomicU32::new(0));
        let go = |once: Arc<Once>, runs: Arc<AtomicU32>| async move {
            once.run(Some("r|b|7"), async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(Json::from(1))
            })
            .await
        };
        let (a, b) = tokio::join!(go(once.clone(), runs.clone()), go(once.clone(), runs.clone()));
        assert_eq!((a, b), (Ok(Json::from(1)), Ok(Json::from(1))));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(once.run(None, async { Ok(Json::from(2)) }).await, Ok(Json::from(2)));
    }

    #[tokio::test]
    async fn old_ids_are_forgotten() {
        let once = Once::default();
        for i in 0..=REMEMBERED {
            once.run(Some(&i.to_string()), async { Ok(Json::Null) }).await.unwrap();
        }
        assert_eq!(once.runs.lock().cells.len(), REMEMBERED);
    }
}
