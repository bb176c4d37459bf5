//! Repository names, tags, references, digests and link files. Each
//! accepted string displays as it was given, and every storage path built
//! from accepted parts is a valid `StoragePath`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_core::StoragePath;
use regstore_server::registry::layout;
use regstore_server::registry::{Digest, Reference, RepoName, Tag};

fn valid_path(p: String) {
    if let Err(e) = StoragePath::parse(&p) {
        panic!("layout path {p:?} is invalid: {e}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = layout::parse_link(data) {
        assert_eq!(
            layout::parse_link(layout::link_content(&d).as_bytes()),
            Ok(d)
        );
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let name = RepoName::parse(s);
    if let Ok(n) = &name {
        assert_eq!(n.as_str(), s);
        assert_eq!(n.to_string(), s);
        valid_path(layout::repository(n));
        valid_path(layout::upload_dir(n, "0"));
    }
    let tag = Tag::parse(s);
    if let Ok(t) = &tag {
        assert_eq!(t.to_string(), s);
        let n = RepoName::parse("a").expect("valid name");
        valid_path(layout::tag_current_link(&n, t));
    }
    let digest = s.parse::<Digest>();
    if let Ok(d) = &digest {
        assert_eq!(d.to_string(), s);
        let n = RepoName::parse("a").expect("valid name");
        valid_path(layout::blob_data(d));
        valid_path(layout::revision_link(&n, d));
        valid_path(layout::referrer_link(&n, d, d));
    }
    match Reference::parse(s) {
        Ok(r) => {
            assert_eq!(r.to_string(), s);
            match r {
                Reference::Tag(t) => assert_eq!(Ok(t), tag),
                Reference::Digest(d) => assert_eq!(Ok(d), digest),
            }
        }
        // Not a reference: neither a tag nor (with ':') a digest.
        Err(_) => assert!(tag.is_err() && digest.is_err(), "{s:?}"),
    }
    // `name:tag` and `name@digest`, as clients write them.
    if let Some((n, r)) = s.split_once('@').or_else(|| s.rsplit_once(':'))
        && let (Ok(n), Ok(r)) = (RepoName::parse(n), Reference::parse(r))
    {
        valid_path(layout::manifests_dir(&n));
        if let Reference::Tag(t) = r {
            valid_path(layout::tag_dir(&n, &t));
        }
    }
});
