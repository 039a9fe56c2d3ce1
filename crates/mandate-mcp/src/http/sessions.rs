//! The client sessions the proxy knows, by `Mcp-Session-Id`, ended after
//! they have been idle for a while.
//!
//! The proxy only serves session ids it saw issued (by an upstream's answer
//! to `initialize`, or by the merged endpoint itself). A request naming
//! any other id (one that ended, expired, or was issued before the proxy
//! restarted) gets `404`, which tells an MCP client to initialize again. So
//! a session's state in the proxy (in agent mode, its history) is never
//! silently replaced by an empty one while the client goes on.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default for how long a session may stay idle before the proxy ends it.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(60 * 60);

/// Sessions by id, each with the time it was last used.
pub(super) struct SessionTable<T> {
    inner: Mutex<Inner<T>>,
    idle: Duration,
}

struct Inner<T> {
    by_id: HashMap<String, Entry<T>>,
    /// When idle sessions were last looked for.
    swept: Instant,
}

struct Entry<T> {
    value: T,
    seen: Instant,
}

impl<T: Clone> SessionTable<T> {
    /// An empty table whose sessions end after `idle` without a request.
    pub(super) fn new(idle: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                by_id: HashMap::new(),
                swept: Instant::now(),
            }),
            idle,
        }
    }

    /// The session `id`, if it is open; counts as a use.
    pub(super) fn get(&self, id: &str) -> Option<T> {
        let mut inner = self.lock();
        let entry = inner.by_id.get_mut(id)?;
        entry.seen = Instant::now();
        Some(entry.value.clone())
    }

    /// Records session `id`, issued just now; a session already open under
    /// that id is kept (an upstream repeats the id on later answers).
    pub(super) fn issued(&self, id: &str, value: impl FnOnce() -> T) -> T {
        let mut inner = self.lock();
        let entry = inner.by_id.entry(id.to_owned()).or_insert_with(|| Entry {
            value: value(),
            seen: Instant::now(),
        });
        entry.seen = Instant::now();
        entry.value.clone()
    }

    /// Ends session `id`; returns it if it was open.
    pub(super) fn remove(&self, id: &str) -> Option<T> {
        self.lock().by_id.remove(id).map(|entry| entry.value)
    }

    /// Ends the sessions idle for longer than the table's bound and returns
    /// them; a session `busy` says is still at work (a call in progress)
    /// counts as used instead. Cheap when called often: it looks at most
    /// once a minute (or once per bound, when that is shorter).
    pub(super) fn sweep(&self, busy: impl Fn(&T) -> bool) -> Vec<T> {
        let now = Instant::now();
        let mut inner = self.lock();
        if now.duration_since(inner.swept) < self.idle.min(Duration::from_secs(60)) {
            return Vec::new();
        }
        inner.swept = now;
        let idle = self.idle;
        let mut expired = Vec::new();
        for (id, entry) in &mut inner.by_id {
            if now.duration_since(entry.seen) <= idle {
                continue;
            }
            if busy(&entry.value) {
                entry.seen = now;
            } else {
                expired.push(id.clone());
            }
        }
        expired
            .iter()
            .filter_map(|id| inner.by_id.remove(id).map(|entry| entry.value))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // The table holds no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_sessions_are_served_until_they_idle_out() {
        let table = SessionTable::new(Duration::from_millis(30));
        assert_eq!(table.get("a"), None);
        assert_eq!(table.issued("a", || 1), 1);
        assert_eq!(table.issued("a", || 2), 1, "an open session is kept");
        assert_eq!(table.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(table.issued("b", || 3), 3);
        assert_eq!(table.sweep(|_| false), vec![1]);
        assert_eq!(table.get("a"), None);
        assert_eq!(table.get("b"), Some(3));
        assert_eq!(
            table.sweep(|_| false),
            Vec::<i32>::new(),
            "not due again yet"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(table.sweep(|&n| n == 3), Vec::<i32>::new(), "busy: kept");
        assert_eq!(table.get("b"), Some(3));
        assert_eq!(table.remove("b"), Some(3));
        assert_eq!(table.get("b"), None);
    }
}
