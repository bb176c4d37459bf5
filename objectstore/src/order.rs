//! Turning a flat listing (keys in byte order, one request per 1,000 keys)
//! into the contract's walk order (pre-order, siblings by name), streaming.
//!
//! The two orders differ in one way only. Comparing whole keys byte-wise
//! puts `a-b` (and `a.b`) before `a/x`, because `-` and `.` sort before `/`;
//! the walk puts the directory `a` and everything in it before its sibling
//! `a-b`. No other storage-path character sorts before `/`, so an entry `E`
//! can still be overtaken by a key not yet listed only if `E` = `L` + (`-`
//! or `.`) + … for some prefix `L` of `E` inside its segment, and the last
//! key listed still starts with `L` followed by `-`, `.` or `/` (keys below
//! `L/` may yet come). Entries that no later key can precede are released at
//! once, so the buffer holds only such near-siblings, not the listing.

use std::collections::BTreeMap;

use regstore_core::{FileInfo, StoragePath};

/// Entries of one flat listing under `base`, re-ordered for the walk.
#[derive(Debug)]
pub(crate) struct Reorder {
    /// Length of the base path's string plus its `/` (0 for the root):
    /// overtaking prefixes start below the base.
    base_len: usize,
    /// Listed but not yet released, in walk order (the `Ord` of paths).
    pending: BTreeMap<StoragePath, FileInfo>,
    /// Directories of the last key listed, outermost first.
    open_dirs: Vec<StoragePath>,
    /// The last key listed, as a path string.
    last: String,
}

impl Reorder {
    pub(crate) fn new(base: &StoragePath) -> Self {
        Reorder {
            base_len: if base.is_root() {
                1
            } else {
                base.as_str().len() + 1
            },
            pending: BTreeMap::new(),
            open_dirs: Vec::new(),
            last: String::new(),
        }
    }

    /// Adds the next file of the listing (keys must come in byte order), and
    /// the directories between the base and it that the listing has not
    /// shown yet. `dirs` are the file's ancestors below the base, outermost
    /// first.
    pub(crate) fn push(&mut self, file: FileInfo, dirs: Vec<StoragePath>) {
        let shared = self
            .open_dirs
            .iter()
            .zip(&dirs)
            .take_while(|(a, b)| a == b)
            .count();
        for dir in &dirs[shared..] {
            self.pending
                .insert(dir.clone(), FileInfo::dir(dir.clone(), None));
        }
        self.open_dirs = dirs;
        self.last.clear();
        self.last.push_str(file.path.as_str());
        self.pending.insert(file.path.clone(), file);
    }

    /// The next entry in walk order, if no key still to come can precede it.
    pub(crate) fn ready(&mut self) -> Option<FileInfo> {
        let (first, _) = self.pending.first_key_value()?;
        if self.may_be_overtaken(first.as_str()) {
            return None;
        }
        self.pending.pop_first().map(|(_, info)| info)
    }

    /// Every remaining entry, in walk order (call after the last key).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = FileInfo> + '_ {
        std::mem::take(&mut self.pending).into_values()
    }

    fn may_be_overtaken(&self, entry: &str) -> bool {
        let (e, k) = (entry.as_bytes(), self.last.as_bytes());
        (self.base_len + 1..e.len()).any(|i| {
            matches!(e[i], b'-' | b'.')
                && e[i - 1] != b'/'
                && k.len() > i
                && k[..i] == e[..i]
                && matches!(k[i], b'-' | b'.' | b'/')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// Feeds `keys` (sorted byte-wise, as a flat listing gives them) under
    /// `base` and returns the released order, checking that every entry is
    /// released at the latest when the listing ends.
    fn order(base: &str, keys: &[&str]) -> (Vec<String>, usize) {
        let base = StoragePath::parse(base).unwrap();
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(sorted, keys, "test input must be in byte order");
        let mut r = Reorder::new(&base);
        let mut out = Vec::new();
        let mut max_pending = 0;
        for k in keys {
            let p = StoragePath::parse(k).unwrap();
            let mut dirs = Vec::new();
            let mut d = p.parent();
            while let Some(dir) = d {
                if dir == base || !base.is_ancestor_of(&dir) {
                    break;
                }
                d = dir.parent();
                dirs.push(dir);
            }
            dirs.reverse();
            r.push(FileInfo::file(p, 1, SystemTime::UNIX_EPOCH), dirs);
            max_pending = max_pending.max(r.pending.len());
            while let Some(i) = r.ready() {
                out.push(i.path.to_string());
            }
        }
        out.extend(r.drain().map(|i| i.path.to_string()));
        (out, max_pending)
    }

    fn walk_order(mut v: Vec<String>) -> Vec<String> {
        v.sort_by_key(|s| StoragePath::parse(s).unwrap());
        v
    }

    #[test]
    fn directories_come_before_siblings_that_sort_before_slash() {
        let (got, _) = order("/", &["/a-b", "/a.c", "/a/x", "/a/y/z", "/b"]);
        assert_eq!(
            got,
            ["/a", "/a/x", "/a/y", "/a/y/z", "/a-b", "/a.c", "/b"],
            "walk order is pre-order by segment"
        );
    }

    #[test]
    fn output_is_always_the_walk_order_of_files_and_their_directories() {
        let keys = [
            "/r/v1-rc/current/link",
            "/r/v1.0/current/link",
            "/r/v1.0/index/sha256/aa/link",
            "/r/v1/current/link",
            "/r/v1/index/sha256/bb/link",
            "/r/v10/current/link",
            "/r/w",
        ];
        let (got, _) = order("/r", &keys);
        let expected = walk_order(got.clone());
        assert_eq!(got, expected);
        assert!(got.contains(&"/r/v1/index/sha256".to_owned()));
        assert_eq!(got.len(), 7 + 14, "7 files and 14 directories: {got:?}");
    }

    #[test]
    fn a_plain_tree_is_released_as_it_is_listed() {
        let mut keys = Vec::new();
        for i in 0..200 {
            keys.push(format!("/blobs/sha256/{:02x}/{i:064x}/data", i % 256));
        }
        keys.sort();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (got, max_pending) = order("/blobs", &refs);
        assert_eq!(got, walk_order(got.clone()));
        // A file, its directory and maybe the two-hex directory: nothing waits.
        assert!(max_pending <= 4, "buffered {max_pending} entries");
    }

    #[test]
    fn prefixes_above_the_base_do_not_hold_entries_back() {
        // Under /a-b, no key of /a can ever come: nothing need wait.
        let (got, max_pending) = order("/a-b", &["/a-b/c", "/a-b/d"]);
        assert_eq!(got, ["/a-b/c", "/a-b/d"]);
        assert!(max_pending <= 1);
    }
}
