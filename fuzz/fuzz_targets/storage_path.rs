//! Storage path validation (`StoragePath`), the gate every driver relies on:
//! an accepted path has only valid segments, never `.` or `..`, and its
//! parent, name and joins agree with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_core::{StoragePath, check_segment};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = StoragePath::parse(s) else {
        return;
    };
    assert_eq!(p.as_str(), s);
    for seg in p.segments() {
        assert!(check_segment(seg).is_ok(), "{s:?}: segment {seg:?}");
        assert!(seg != "." && seg != "..", "{s:?}");
    }
    let segments: Vec<&str> = p.segments().collect();
    assert_eq!(p.depth(), segments.len());
    match (p.parent(), p.file_name()) {
        (None, None) => assert!(p.is_root()),
        (Some(parent), Some(name)) => {
            assert!(!p.is_root());
            assert_eq!(parent.depth() + 1, p.depth());
            assert!(parent.is_ancestor_of(&p));
            assert!(!p.is_ancestor_of(&parent));
            assert!(parent < p, "a parent sorts before its children");
            assert_eq!(parent.join(name).ok(), Some(p.clone()));
            assert_eq!(p.relative_to(&parent), Some(name));
            let rel = p.relative_to(&StoragePath::root());
            assert_eq!(
                StoragePath::root()
                    .join_relative(rel.unwrap_or_default())
                    .ok(),
                Some(p.clone())
            );
        }
        (parent, name) => panic!("{s:?}: parent {parent:?} but name {name:?}"),
    }
});
