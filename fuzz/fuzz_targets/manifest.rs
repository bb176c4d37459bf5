//! Manifest and index pushes: parse and validation (foreign-layer URLs
//! included), and the readers garbage collection and the storage check use
//! on stored manifests. Input: the body, as pushed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_server::fuzzing::parse_manifest;
use regstore_server::registry::{ManifestKind, ManifestUrls, media_type_of, references};

fuzz_target!(|body: &[u8]| {
    let any = ManifestUrls::any();
    // Read as stored manifests are, whatever the push would say.
    let refs = references(body);
    let media_type = media_type_of(body);
    let Ok(pushed) = parse_manifest(body, None, &any) else {
        return;
    };
    // What a push accepted, garbage collection can read, and it keeps
    // everything the push made the repository hold.
    let refs = match refs {
        Ok(r) => r,
        Err(e) => panic!("accepted on push, unreadable for gc: {e}"),
    };
    for b in &pushed.blobs {
        assert!(refs.blobs.contains(b), "blob {b} not referenced");
    }
    for m in &pushed.manifests {
        assert!(refs.manifests.contains(m), "manifest {m} not referenced");
    }
    assert_eq!(refs.subject, pushed.subject);
    assert_eq!(refs.foreign.len(), pushed.foreign.len());
    // Served with the media type the push decided on.
    assert_eq!(media_type, pushed.kind.media_type());
    // The same body with its own media type as Content-Type is the same
    // push; with another manifest media type it is refused if the body
    // names its type, and a type that is no manifest type is ignored.
    let own = parse_manifest(body, Some(pushed.kind.media_type()), &any)
        .expect("accepted with its own Content-Type");
    assert_eq!(own.kind, pushed.kind);
    assert_eq!(own.blobs, pushed.blobs);
    let plain = parse_manifest(body, Some("application/json"), &any)
        .expect("accepted with Content-Type application/json");
    assert_eq!(plain.kind, pushed.kind);
    // No foreign layers are accepted by a registry that allows none.
    let none = parse_manifest(body, None, &ManifestUrls::default());
    assert_eq!(none.is_ok(), pushed.foreign.is_empty());
    let other = if pushed.kind == ManifestKind::OciIndex {
        ManifestKind::OciManifest
    } else {
        ManifestKind::OciIndex
    };
    let _ = parse_manifest(body, Some(other.media_type()), &any);
});
