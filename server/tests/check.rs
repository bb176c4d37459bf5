//! The storage check (`check::check`) on inmemory and filesystem: a clean
//! registry has no problems; each kind of damage is found and named;
//! repair removes the dangling links and nothing else.

mod common;

use common::*;
use regstore_server::check::{self, CheckReport, LinkKind, Options, Problem, ReferenceKind};
use regstore_server::registry::{Digest, RepoName, Tag, layout};
use reqwest::StatusCode;

const REPO: &str = "app";

fn repo() -> RepoName {
    RepoName::parse(REPO).unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// The config and layer digests of an image pushed by `push_image`.
fn blobs_of(manifest: &[u8]) -> (Digest, Digest) {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    (
        digest(v["config"]["digest"].as_str().unwrap()),
        digest(v["layers"][0]["digest"].as_str().unwrap()),
    )
}

async fn run(reg: &TestRegistry, repair: bool) -> CheckReport {
    check::check(
        &reg.registry,
        &Options {
            repair,
            concurrency: 3,
        },
    )
    .await
    .unwrap()
}

async fn exists(reg: &TestRegistry, path: &str) -> bool {
    match reg.registry.driver().stat(path).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => panic!("{path}: {e}"),
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{p}\n"))
        .collect::<String>()
}

/// What the scene holds, for breaking it.
struct Scene {
    one: (Vec<u8>, String),
    two: (Vec<u8>, String),
    gone: (Vec<u8>, String),
    index: String,
    orphan: Digest,
}

/// Two images and an index over them (and over a third, `gone`, tagged
/// `t-gone`), an image with a foreign layer, an orphan blob, an image in
/// another repository, and a referrer link whose manifest is gone (not a
/// problem).
async fn scene(reg: &TestRegistry) -> Scene {
    let one = reg.push_image(REPO, "v1", "one").await;
    let two = reg.push_image(REPO, "v2", "two").await;
    let gone = reg.push_image(REPO, "t-gone", "gone").await;
    let entries: Vec<String> = [&one, &two, &gone]
        .iter()
        .map(|(b, d)| {
            format!(
                "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{}}}",
                b.len()
            )
        })
        .collect();
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        entries.join(",")
    );
    let r = reg
        .put_manifest(REPO, "multi", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A foreign layer: its blob lives elsewhere.
    let cfg = reg.push_blob(REPO, b"{\"foreign\":true}").await;
    let absent = sha256(b"foreign layer bytes");
    let foreign = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":16}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{absent}","size":19,"urls":["https://mirror.example.com/layer.tgz"]}}]}}"#
    );
    let r = reg
        .put_manifest(REPO, "foreign", OCI_MANIFEST, foreign.as_bytes())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "a foreign layer is allowed"
    );
    let orphan = digest(&reg.push_blob(REPO, b"orphan blob").await);
    reg.push_image("other", "latest", "other").await;
    // A referrer link whose manifest does not exist: ignored by design.
    let nowhere = Digest::of(regstore_server::registry::Algorithm::Sha256, b"nowhere");
    reg.registry
        .driver()
        .put_content(
            layout::referrer_link(&repo(), &digest(&one.1), &nowhere),
            layout::link_content(&nowhere).into_bytes(),
        )
        .await
        .unwrap();
    Scene {
        one,
        two,
        gone,
        index: sha256(index.as_bytes()),
        orphan,
    }
}

#[tokio::test]
async fn damage_is_found_named_and_dangling_links_repaired() {
    for driver in DRIVERS {
        let reg = start(driver, DELETE_ON, "validation:\n  disabled: true\n").await;
        let s = scene(&reg).await;
        let driver_ = reg.registry.driver();

        // Clean.
        let clean = run(&reg, false).await;
        assert!(
            clean.problems.is_empty(),
            "{driver}: {}",
            lines(&clean.problems)
        );
        assert!(
            clean.unexpected.is_empty(),
            "{driver}: {:?}",
            clean.unexpected
        );
        // 3 images × 3, the index, the foreign image's config and manifest,
        // the orphan, the other image's 3.
        assert_eq!(clean.blobs_checked, 16, "{driver}: {}", clean.summary());
        assert_eq!(clean.manifests_checked, 6, "{driver}: {}", clean.summary());
        assert!(clean.bytes_read > 0 && clean.links_checked > 20, "{driver}");

        // A file outside the layout is unexpected, not a problem.
        let junk = format!("{}/_manifests/junk", layout::repository(&repo()));
        driver_.put_content(&junk, b"?".to_vec()).await.unwrap();
        let r = run(&reg, false).await;
        assert!(r.problems.is_empty(), "{driver}: {}", lines(&r.problems));
        assert_eq!(r.unexpected.len(), 1, "{driver}");
        assert_eq!(r.unexpected[0].path, junk);

        // (a) A corrupt blob: two's config, same length, other bytes.
        let (two_cfg, _) = blobs_of(&s.two.0);
        let bytes = driver_
            .get_content(layout::blob_data(&two_cfg))
            .await
            .unwrap();
        let flipped: Vec<u8> = bytes.iter().map(|b| b ^ 0x20).collect();
        driver_
            .put_content(layout::blob_data(&two_cfg), flipped.clone())
            .await
            .unwrap();
        // (b) A dangling layer link: the orphan's data is gone.
        driver_.delete(layout::blob_data(&s.orphan)).await.unwrap();
        // (c) One's layer data is gone: a dangling link and a missing
        // reference of one.
        let (_, one_layer) = blobs_of(&s.one.0);
        driver_.delete(layout::blob_data(&one_layer)).await.unwrap();
        // (d) A revision that is not JSON.
        let not_json = digest(&reg.push_blob(REPO, b"not json at all").await);
        driver_
            .put_content(
                layout::revision_link(&repo(), &not_json),
                layout::link_content(&not_json).into_bytes(),
            )
            .await
            .unwrap();
        // (e) gone's manifest data is gone: its revision, its tag (current
        // and history) dangle, and the index misses a child.
        let gone = digest(&s.gone.1);
        driver_.delete(layout::blob_data(&gone)).await.unwrap();
        // (f) A tag on a blob that is not a manifest of the repository.
        let (one_cfg, _) = blobs_of(&s.one.0);
        let stray_tag = Tag::parse("not-a-manifest").unwrap();
        driver_
            .put_content(
                layout::tag_current_link(&repo(), &stray_tag),
                layout::link_content(&one_cfg).into_bytes(),
            )
            .await
            .unwrap();

        let one = digest(&s.one.1);
        let index = digest(&s.index);
        let t_gone = Tag::parse("t-gone").unwrap();
        let found = run(&reg, false).await;
        let text = lines(&found.problems);
        let ctx = format!("{driver}:\n{text}");
        let expected = vec![
            Problem::CorruptBlob {
                digest: two_cfg.clone(),
                actual: Digest::of(two_cfg.algorithm(), &flipped),
                path: layout::blob_data(&two_cfg),
            },
            Problem::DanglingLink {
                repo: repo(),
                kind: LinkKind::Layer,
                path: layout::layer_link(&repo(), &one_layer),
                digest: one_layer.clone(),
            },
            Problem::DanglingLink {
                repo: repo(),
                kind: LinkKind::Layer,
                path: layout::layer_link(&repo(), &s.orphan),
                digest: s.orphan.clone(),
            },
            Problem::DanglingLink {
                repo: repo(),
                kind: LinkKind::Revision,
                path: layout::revision_link(&repo(), &gone),
                digest: gone.clone(),
            },
            Problem::DanglingLink {
                repo: repo(),
                kind: LinkKind::TagCurrent(t_gone.clone()),
                path: layout::tag_current_link(&repo(), &t_gone),
                digest: gone.clone(),
            },
            Problem::DanglingLink {
                repo: repo(),
                kind: LinkKind::TagHistory(t_gone.clone()),
                path: layout::tag_index_link(&repo(), &t_gone, &gone),
                digest: gone.clone(),
            },
            Problem::TagWithoutRevision {
                repo: repo(),
                tag: stray_tag.clone(),
                digest: one_cfg.clone(),
                path: layout::tag_current_link(&repo(), &stray_tag),
            },
            Problem::MissingReference {
                repo: repo(),
                manifest: one.clone(),
                reference: one_layer.clone(),
                kind: ReferenceKind::Blob,
                linked: true,
                data: false,
            },
            Problem::MissingReference {
                repo: repo(),
                manifest: index.clone(),
                reference: gone.clone(),
                kind: ReferenceKind::Manifest,
                linked: true,
                data: false,
            },
            Problem::BrokenManifest {
                repo: repo(),
                digest: not_json.clone(),
                why: String::new(),
            },
        ];
        assert_eq!(found.problems.len(), expected.len(), "{ctx}");
        for want in &expected {
            let hit = found.problems.iter().any(|p| match (p, want) {
                (
                    Problem::BrokenManifest { repo, digest, why },
                    Problem::BrokenManifest {
                        repo: r, digest: d, ..
                    },
                ) => repo == r && digest == d && why.contains("not valid JSON"),
                _ => p == want,
            });
            assert!(hit, "{ctx}\nmissing: {want:?}");
        }
        // The lines name what is wrong.
        for needle in [
            format!("blob {two_cfg}: content hashes to "),
            format!(
                "dangling layer link {}: blob {} does not exist",
                layout::layer_link(&repo(), &s.orphan),
                s.orphan
            ),
            format!("manifest app@{one} references blob {one_layer} whose data does not exist"),
            format!("manifest app@{not_json} cannot be read: "),
            format!("tag app:not-a-manifest points at {one_cfg}"),
        ] {
            assert!(text.contains(&needle), "{ctx}\nmissing line: {needle}");
        }
        assert!(found.repaired.is_empty());

        // Repair removes the dangling links, and no data.
        let repaired = run(&reg, true).await;
        assert_eq!(repaired.repaired.len(), 5, "{driver}: {repaired:?}");
        assert!(
            repaired
                .repaired
                .iter()
                .all(|r| matches!(r.problem, Problem::DanglingLink { .. })),
            "{driver}"
        );
        assert_eq!(repaired.problems.len(), expected.len() - 5, "{driver}");
        // The references whose links were removed are reported unlinked.
        assert!(
            repaired
                .problems
                .iter()
                .all(|p| !matches!(p, Problem::MissingReference { linked: true, .. })),
            "{driver}: {:?}",
            repaired.problems
        );
        for path in [
            layout::layer_link(&repo(), &one_layer),
            layout::layer_link(&repo(), &s.orphan),
            layout::revision_link(&repo(), &gone),
            layout::tag_dir(&repo(), &t_gone),
        ] {
            assert!(!exists(&reg, &path).await, "{driver}: {path} is removed");
        }
        for path in [
            layout::blob_data(&two_cfg),
            layout::blob_data(&not_json),
            layout::blob_data(&one),
            layout::blob_data(&index),
            layout::revision_link(&repo(), &not_json),
            layout::revision_link(&repo(), &one),
            layout::tag_current_link(&repo(), &stray_tag),
            junk.clone(),
        ] {
            assert!(exists(&reg, &path).await, "{driver}: {path} is kept");
        }

        // What repair does not fix stays; the references now miss links.
        let after = run(&reg, false).await;
        let text = lines(&after.problems);
        assert!(after.repaired.is_empty());
        assert_eq!(after.problems.len(), 5, "{driver}:\n{text}");
        assert!(
            after
                .problems
                .iter()
                .all(|p| !matches!(p, Problem::DanglingLink { .. } | Problem::WrongLink { .. })),
            "{driver}:\n{text}"
        );
        for want in [
            Problem::MissingReference {
                repo: repo(),
                manifest: one.clone(),
                reference: one_layer.clone(),
                kind: ReferenceKind::Blob,
                linked: false,
                data: false,
            },
            Problem::MissingReference {
                repo: repo(),
                manifest: index.clone(),
                reference: gone.clone(),
                kind: ReferenceKind::Manifest,
                linked: false,
                data: false,
            },
        ] {
            assert!(after.problems.contains(&want), "{driver}:\n{text}");
        }
        assert!(
            text.contains(&format!(
                "manifest app@{one} references blob {one_layer} which is not in the repository and whose data does not exist"
            )),
            "{text}"
        );
        assert!(text.contains("(corrupt)"), "{text}");
    }
}

/// A link whose content is not the digest its path names is a problem that
/// repair leaves; a tag link that holds no digest too.
#[tokio::test]
async fn wrong_link_contents_are_named_and_left() {
    let reg = start("inmemory", DELETE_ON, "").await;
    let (m, d) = reg.push_image(REPO, "v1", "one").await;
    let (cfg, layer) = blobs_of(&m);
    let driver = reg.registry.driver();
    let layer_link = layout::layer_link(&repo(), &layer);
    driver
        .put_content(&layer_link, layout::link_content(&cfg).into_bytes())
        .await
        .unwrap();
    let tag = Tag::parse("v1").unwrap();
    driver
        .put_content(layout::tag_current_link(&repo(), &tag), b"garbage".to_vec())
        .await
        .unwrap();
    let r = run(&reg, true).await;
    let text = lines(&r.problems);
    assert!(r.repaired.is_empty(), "{text}");
    assert!(
        text.contains(&format!(
            "layer link {layer_link} holds \"{cfg}\", not {layer}"
        )),
        "{text}"
    );
    assert!(
        text.contains("tag link") && text.contains("holds \"garbage\", not a digest"),
        "{text}"
    );
    // The layer is then not in the repository for the manifest.
    assert!(
        text.contains(&format!(
            "manifest app@{d} references blob {layer} which is not in the repository\n"
        )),
        "{text}"
    );
    assert_eq!(r.problems.len(), 3, "{text}");
    assert!(exists(&reg, &layer_link).await);
}
