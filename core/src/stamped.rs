//! Lists kept in memory with the [`DirStamp`] of the directory they were
//! read from: the one cache behind the registry's tag lists and the
//! filesystem driver's kept directory listings.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::driver::DirStamp;

/// Lists by key, each kept with a stamp and served only with that stamp,
/// within a budget of entries over all lists; the list used longest ago
/// goes first. A caller takes the stamp so that an equal stamp means the
/// same list (see [`crate::StorageDriver::children_stamp`]).
///
/// Finding the list to drop is a lookup in an index by last use, not a
/// scan: the filesystem driver keeps one small list per repository
/// directory, and a catalog walk of 100,000 repositories keeps lists by the
/// thousand while the budget is full.
#[derive(Debug)]
pub struct StampedLists<K, T> {
    kept: Mutex<Kept<K, T>>,
    budget: usize,
    /// What a list costs beyond its entries, in entries.
    list_cost: usize,
}

#[derive(Debug)]
struct Kept<K, T> {
    lists: HashMap<K, Entry<T>>,
    /// The keys of `lists` by their entries' `used`.
    by_use: BTreeMap<u64, K>,
    /// The cost of all `lists` together: their entries, plus `list_cost`
    /// each.
    entries: usize,
    /// Counts uses, to find the list used longest ago.
    clock: u64,
}

#[derive(Debug)]
struct Entry<T> {
    stamp: DirStamp,
    list: Arc<[T]>,
    used: u64,
    /// What it counts against the budget.
    cost: usize,
}

impl<K: Eq + Hash + Clone, T> StampedLists<K, T> {
    /// Nothing kept; at most `budget` entries in all from now on.
    pub fn new(budget: usize) -> Self {
        StampedLists {
            kept: Mutex::new(Kept {
                lists: HashMap::new(),
                by_use: BTreeMap::new(),
                entries: 0,
                clock: 0,
            }),
            budget,
            list_cost: 0,
        }
    }

    /// The same, counting each list as `cost` entries more than it holds:
    /// where lists are many and short, their keys and bookkeeping weigh
    /// more than their entries, and the budget should bound the memory.
    pub fn with_list_cost(mut self, cost: usize) -> Self {
        self.list_cost = cost;
        self
    }

    /// The list kept for `key` if it was kept with `stamp`.
    pub fn get(&self, key: &K, stamp: DirStamp) -> Option<Arc<[T]>> {
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        let entry = kept.lists.get_mut(key).filter(|e| e.stamp == stamp)?;
        let was = std::mem::replace(&mut entry.used, now);
        let list = Arc::clone(&entry.list);
        kept.by_use.remove(&was);
        kept.by_use.insert(now, key.clone());
        Some(list)
    }

    /// Whether a list is kept for `key`, whatever its stamp.
    pub fn holds(&self, key: &K) -> bool {
        self.lock().lists.contains_key(key)
    }

    /// Keeps `list` for `key` with `stamp`, in place of what was kept for
    /// it; the lists used longest ago make room. A list that costs more
    /// than the whole budget is not kept (and the old one is gone all the
    /// same).
    pub fn keep(&self, key: &K, stamp: DirStamp, list: Arc<[T]>) {
        let mut kept = self.lock();
        kept.remove(key);
        let cost = list.len() + self.list_cost;
        if cost > self.budget {
            return;
        }
        while kept.entries + cost > self.budget {
            let Some((_, oldest)) = kept.by_use.pop_first() else {
                break;
            };
            kept.remove(&oldest);
        }
        kept.clock += 1;
        let used = kept.clock;
        kept.entries += cost;
        kept.by_use.insert(used, key.clone());
        kept.lists.insert(
            key.clone(),
            Entry {
                stamp,
                list,
                used,
                cost,
            },
        );
    }

    /// The budget in use: the entries kept over all lists, plus the cost
    /// of each list (see [`StampedLists::with_list_cost`]).
    pub fn entries(&self) -> usize {
        self.lock().entries
    }

    /// The lists, also after a panic elsewhere while locked (every update
    /// leaves them consistent before it can panic).
    fn lock(&self) -> MutexGuard<'_, Kept<K, T>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Eq + Hash, T> Kept<K, T> {
    /// Takes `key`'s list out, if one is kept.
    fn remove(&mut self, key: &K) {
        if let Some(gone) = self.lists.remove(key) {
            self.entries -= gone.cost;
            self.by_use.remove(&gone.used);
        }
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

    /// Many small lists in a full budget: each new one pushes out exactly
    /// the one used longest ago, a list served meanwhile stays, and the
    /// index by use always names exactly the kept lists.
    #[test]
    fn many_small_lists_go_in_order_of_use() {
        let lists = StampedLists::new(100);
        let s = DirStamp::new([0; 4]);
        for k in 0..100u32 {
            lists.keep(&k, s, list(1));
        }
        // 0 is used, so 1 is now the one used longest ago.
        assert!(lists.get(&0, s).is_some());
        for k in 100..150u32 {
            lists.keep(&k, s, list(1));
        }
        assert_eq!(lists.entries(), 100);
        assert!(lists.get(&0, s).is_some(), "a list just used was dropped");
        assert!(lists.get(&50, s).is_none() && lists.get(&51, s).is_some());
        assert!(lists.get(&149, s).is_some());
        let kept = lists.lock();
        assert_eq!(kept.lists.len(), 100);
        assert_eq!(kept.by_use.len(), 100);
        assert!(kept.by_use.iter().all(|(u, k)| kept.lists[k].used == *u));
    }

    /// With a cost per list, the budget counts it: 10 lists of 1 entry
    /// costing 4 more each fill a budget of 50.
    #[test]
    fn a_cost_per_list_counts_against_the_budget() {
        let lists = StampedLists::new(50).with_list_cost(4);
        let s = DirStamp::new([0; 4]);
        for k in 0..12u32 {
            lists.keep(&k, s, list(1));
        }
        assert_eq!(lists.entries(), 50);
        assert!(lists.get(&1, s).is_none() && lists.get(&2, s).is_some());
        lists.keep(&99, s, list(47));
        assert!(
            lists.get(&99, s).is_none(),
            "a list over the budget was kept"
        );
    }
}
