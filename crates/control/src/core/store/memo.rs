//! Rows that nearly every call reads and almost none changes (a bucket's), kept in memory
//! where the store serves one node. On SQLite every change goes through this process, so the
//! code that changes such a row forgets what was kept; on PostgreSQL another node may change
//! it, and nothing is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this many rows are kept; past it, the memo starts afresh (rows are looked up by
/// names a caller sends, and only rows that exist are kept, but the bound is cheap).
const CAPACITY: usize = 4096;

/// Rows by name, and the generation every forgetting moves on.
#[derive(Clone)]
pub struct Memo<V> {
    kept: Option<Arc<Mutex<Kept<V>>>>,
}

struct Kept<V> {
    generation: u64,
    rows: HashMap<String, V>,
}

/// A lookup that missed: its row may be kept under the generation it saw, once it is read.
pub struct Missed(Option<u64>);

impl<V: Clone> Memo<V> {
    /// A memo that keeps rows (`keeping`), or one that never does.
    pub(super) fn new(keeping: bool) -> Memo<V> {
        Memo { kept: keeping.then(|| Arc::new(Mutex::new(Kept { generation: 0, rows: HashMap::new() }))) }
    }

    /// The row kept under `name`, or what to hand `keep` once it is read from the store.
    pub fn get(&self, name: &str) -> Result<V, Missed> {
        let Some(kept) = &self.kept else { return Err(Missed(None)) };
        let kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.rows.get(name).cloned().ok_or(Missed(Some(kept.generation)))
    }

    /// Keeps a row read after `missed`, unless a change was forgotten since: the row read may
    /// predate that change.
    pub fn keep(&self, name: &str, missed: Missed, row: V) {
        let (Some(kept), Missed(Some(generation))) = (&self.kept, missed) else { return };
        let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.generation != generation {
            return;
        }
        if kept.rows.len() >= CAPACITY {
            kept.rows.clear();
        }
        kept.rows.insert(name.to_owned(), row);
    }

    /// Forgets every row kept: call it once a change to such a row is committed (and, for a
    /// change made in a transaction, before the commit too is harmless).
    pub fn forget(&self) {
        if let Some(kept) = &self.kept {
            let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            kept.generation += 1;
            kept.rows.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_read_before_a_change_is_not_kept_after_it() {
        let memo = Memo::new(true);
        let missed = memo.get("a").expect_err("empty");
        memo.forget();
        memo.keep("a", missed, 1);
        assert!(memo.get("a").is_err(), "a row read before the change was kept");
        let missed = memo.get("a").expect_err("still empty");
        memo.keep("a", missed, 2);
        assert_eq!(memo.get("a").ok(), Some(2));
        memo.forget();
        assert!(memo.get("a").is_err(), "forget kept a row");
    }

    #[test]
    fn a_memo_that_does_not_keep_never_answers() {
        let memo = Memo::new(false);
        let missed = memo.get("a").expect_err("empty");
        memo.keep("a", missed, 1);
        assert!(memo.get("a").is_err());
    }

    #[test]
    fn the_memo_stays_bounded() {
        let memo = Memo::new(true);
        for n in 0..CAPACITY + 10 {
            let name = n.to_string();
            let missed = memo.get(&name).expect_err("new");
            memo.keep(&name, missed, n);
        }
        let kept = memo.kept.as_ref().expect("keeping").lock().expect("lock").rows.len();
        assert!(kept <= CAPACITY, "{kept} rows kept");
    }
}
