//! Read-your-writes for listings.
//!
//! Swift updates container listings after the object write returns, and
//! when a container server is busy or down the update waits on the object
//! server (`async_pending`) until the object updater sends it, seconds or
//! minutes later. Meanwhile a listing does not show the new object: a
//! registry that lists a directory right after writing to it would miss
//! it, and a directory delete would leave it behind. The driver remembers
//! the names it wrote for a while (`consistencywindow`) and merges those a
//! listing lacks — after a HEAD confirms they still exist — into listings,
//! walks and directory deletes. When listings are current this costs
//! nothing: every remembered name is in the listing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names remembered at most; the oldest go first.
const MAX: usize = 100_000;

/// Names this driver wrote recently.
#[derive(Debug)]
pub struct Recent {
    window: Duration,
    names: Mutex<BTreeMap<String, Instant>>,
}

impl Recent {
    /// Remembers names for `window` (zero: nothing is remembered).
    pub fn new(window: Duration) -> Recent {
        Recent {
            window,
            names: Mutex::new(BTreeMap::new()),
        }
    }

    /// `name` was just written.
    pub fn wrote(&self, name: &str) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        if let Ok(mut names) = self.names.lock() {
            if names.len() >= MAX {
                names.retain(|_, at| now.duration_since(*at) < self.window);
                while names.len() >= MAX {
                    let oldest = names
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(n, _)| n.clone());
                    match oldest {
                        Some(n) => names.remove(&n),
                        None => break,
                    };
                }
            }
            names.insert(name.to_owned(), now);
        }
    }

    /// `name` was deleted (or found missing).
    pub fn gone(&self, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.remove(name);
        }
    }

    /// Remembered names that start with `prefix` and sort after `after`,
    /// in byte order (Swift's listing order); expired ones are forgotten.
    pub fn under(&self, prefix: &str, after: Option<&str>) -> Vec<String> {
        let now = Instant::now();
        let Ok(mut names) = self.names.lock() else {
            return Vec::new();
        };
        names.retain(|_, at| now.duration_since(*at) < self.window);
        names
            .range(prefix.to_owned()..)
            .map(|(n, _)| n)
            .take_while(|n| n.starts_with(prefix))
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_a_prefix_after_a_marker_until_they_expire() {
        let r = Recent::new(Duration::from_millis(200));
        for n in ["a/x", "a/y/z", "ab", "b"] {
            r.wrote(n);
        }
        assert_eq!(r.under("a/", None), ["a/x", "a/y/z"]);
        assert_eq!(r.under("a/", Some("a/x")), ["a/y/z"]);
        assert_eq!(r.under("", Some("ab")), ["b"]);
        r.gone("a/x");
        assert_eq!(r.under("a/", None), ["a/y/z"]);
        std::thread::sleep(Duration::from_millis(250));
        assert!(r.under("", None).is_empty(), "expired");
        let off = Recent::new(Duration::ZERO);
        off.wrote("a");
        assert!(off.under("", None).is_empty());
    }
}
