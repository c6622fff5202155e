//! Subtree locks. Two locks conflict when their subtrees overlap and either is
//! exclusive; a waiter gives up after its timeout with "concurrent access".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{DmtError, Result};
use crate::uri::Uri;

#[derive(Debug)]
struct Held {
    id: u64,
    root: Uri,
    exclusive: bool,
}

#[derive(Default)]
pub struct LockTable {
    held: Mutex<Vec<Held>>,
    released: Notify,
    next_id: AtomicU64,
}

/// Releases its lock when dropped.
#[must_use]
pub struct LockGuard {
    table: Arc<LockTable>,
    id: u64,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.table.held.lock().retain(|h| h.id != self.id);
        self.table.released.notify_waiters();
    }
}

impl LockTable {
    pub async fn acquire(self: &Arc<Self>, root: &Uri, exclusive: bool, timeout: Duration) -> Result<LockGuard> {
        let deadline = Instant::now() + timeout;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before checking, so a release in between still wakes us.
            released.as_mut().enable();
            if let Some(guard) = self.try_acquire(root, exclusive) {
                return Ok(guard);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(DmtError::concurrent(
                    root,
                    format!("{root} is locked by another session; gave up after {} ms", timeout.as_millis()),
                ));
            }
        }
    }

    fn try_acquire(self: &Arc<Self>, root: &Uri, exclusive: bool) -> Option<LockGuard> {
        let mut held = self.held.lock();
        if held.iter().any(|h| (h.exclusive || exclusive) && h.root.overlaps(root)) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        held.push(Held { id, root: root.clone(), exclusive });
        Some(LockGuard { table: self.clone(), id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::UriLimits;

    fn u(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    #[tokio::test]
    async fn overlapping_exclusive_locks_wait_then_fail() {
        let t = Arc::new(LockTable::default());
        let short = Duration::from_millis(30);
        let g = t.acquire(&u("./a"), true, short).await.unwrap();
        assert!(
            matches!(t.acquire(&u("./a/b"), true, short).await, Err(e) if e.is(crate::error::ErrorCode::ConcurrentAccess))
        );
        assert!(t.acquire(&u("./b"), true, short).await.is_ok());
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.acquire(&u("./a"), false, Duration::from_secs(5)).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(g);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn shared_locks_coexist() {
        let t = Arc::new(LockTable::default());
        let d = Duration::from_millis(20);
        let _a = t.acquire(&u("./a"), false, d).await.unwrap();
        let _b = t.acquire(&u("./a/b"), false, d).await.unwrap();
        assert!(t.acquire(&u("./a/b/c"), true, d).await.is_err());
    }
}
