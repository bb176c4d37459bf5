//! Lists kept in memory with the [`DirStamp`] of the directory they were
//! read from: the one cache behind the registry's tag lists and the
//! filesystem driver's kept listings of large directories.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::driver::DirStamp;

/// Lists by key, each kept with a stamp and served only with that stamp,
/// within a budget of entries over all lists; the list used longest ago
/// goes first. A caller takes the stamp so that an equal stamp means the
/// same list (see [`crate::StorageDriver::children_stamp`]).
#[derive(Debug)]
pub struct StampedLists<K, T> {
    kept: Mutex<Kept<K, T>>,
    budget: usize,
}

#[derive(Debug)]
struct Kept<K, T> {
    lists: HashMap<K, Entry<T>>,
    /// The entries of all `lists` together.
    entries: usize,
    /// Counts uses, to find the list used longest ago.
    clock: u64,
}

#[derive(Debug)]
struct Entry<T> {
    stamp: DirStamp,
    list: Arc<[T]>,
    used: u64,
}

impl<K: Eq + Hash + Clone, T> StampedLists<K, T> {
    /// Nothing kept; at most `budget` entries in all from now on.
    pub fn new(budget: usize) -> Self {
        StampedLists {
            kept: Mutex::new(Kept {
                lists: HashMap::new(),
                entries: 0,
                clock: 0,
            }),
            budget,
        }
    }

    /// The list kept for `key` if it was kept with `stamp`.
    pub fn get(&self, key: &K, stamp: DirStamp) -> Option<Arc<[T]>> {
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        let entry = kept.lists.get_mut(key).filter(|e| e.stamp == stamp)?;
        entry.used = now;
        Some(Arc::clone(&entry.list))
    }

    /// Whether a list is kept for `key`, whatever its stamp.
    pub fn holds(&self, key: &K) -> bool {
        self.lock().lists.contains_key(key)
    }

    /// Keeps `list` for `key` with `stamp`, in place of what was kept for
    /// it; the lists used longest ago make room. A list longer than the
    /// whole budget is not kept (and the old one is gone all the same).
    pub fn keep(&self, key: &K, stamp: DirStamp, list: Arc<[T]>) {
        let mut kept = self.lock();
        if let Some(old) = kept.lists.remove(key) {
            kept.entries -= old.list.len();
        }
        if list.len() > self.budget {
            return;
        }
        while kept.entries + list.len() > self.budget {
            let Some(oldest) = kept
                .lists
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = kept.lists.remove(&oldest) {
                kept.entries -= gone.list.len();
            }
        }
        kept.clock += 1;
        let used = kept.clock;
        kept.entries += list.len();
        kept.lists.insert(key.clone(), Entry { stamp, list, used });
    }

    /// The entries kept over all lists.
    pub fn entries(&self) -> usize {
        self.lock().entries
    }

    /// The lists, also after a panic elsewhere while locked (every update
    /// leaves them consistent before it can panic).
    fn lock(&self) -> MutexGuard<'_, Kept<K, T>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Arc<[u32]> {
        (0..n as u32).collect()
    }

    /// A list is served only with the stamp it was kept with, and only for
    /// its key.
    #[test]
    fn a_list_is_served_only_with_its_stamp() {
        let lists = StampedLists::new(100);
        let (a, b) = (DirStamp::new([1, 2, 3, 4]), DirStamp::new([1, 2, 3, 5]));
        assert!(lists.get(&"x", a).is_none());
        assert!(!lists.holds(&"x"));
        lists.keep(&"x", a, list(3));
        assert!(lists.holds(&"x"));
        assert_eq!(lists.get(&"x", a).as_deref(), Some(&*list(3)));
        assert!(lists.get(&"x", b).is_none(), "served with another stamp");
        assert!(lists.get(&"y", a).is_none(), "served for another key");
    }

    /// The kept entries stay within the budget: the list used longest ago
    /// goes first, a list over the whole budget is not kept (and replaces
    /// the old one all the same), and keeping a key's list again replaces
    /// its old one.
    #[test]
    fn the_list_used_longest_ago_makes_room() {
        let budget = 1000;
        let lists = StampedLists::new(budget);
        let s = DirStamp::new([0; 4]);
        let half = budget / 2;
        lists.keep(&"a", s, list(half));
        lists.keep(&"b", s, list(half));
        assert!(lists.get(&"a", s).is_some());
        lists.keep(&"c", s, list(half));
        assert!(
            lists.get(&"b", s).is_none(),
            "the list used longest ago stayed"
        );
        assert!(lists.get(&"a", s).is_some() && lists.get(&"c", s).is_some());
        lists.keep(&"c", s, list(10));
        assert_eq!(lists.entries(), half + 10, "a replaced list still counted");
        lists.keep(&"a", s, list(budget + 1));
        assert!(
            lists.get(&"a", s).is_none(),
            "a list over the budget was kept"
        );
        assert_eq!(lists.entries(), 10, "the list it replaced still counted");
    }
}
