//! Garbage collection against docker/distribution 2.8.2's (Debian's
//! `docker-registry garbage-collect`) on one filesystem root: both find
//! the same blobs eligible for deletion, and after regstore's collection
//! distribution still serves every kept image and nothing collected.
//! Needs `/usr/bin/docker-registry` (`scripts/clients.sh install`).
//!
//! 2.8.2's collection, observed on these scenes and on an index (run by
//! hand):
//! - without `--delete-untagged` it marks every manifest revision and what
//!   it references, as regstore does;
//! - with `--delete-untagged` it lists the untagged children of a tagged
//!   index as manifests to delete, removes their revision links (the child
//!   is then 404 by digest in its repository) and deletes their configs
//!   and layers, keeping only the child manifests' own bytes (the index
//!   marks those); regstore keeps the children and their blobs;
//! - it knows no referrers: with `--delete-untagged` an untagged manifest
//!   whose `subject` is a kept image is deleted; regstore keeps it;
//! - it leaves the `_layers` links of the blobs it deletes; regstore
//!   removes them;
//! - with `--delete-untagged` it fails ("failed to mark: … failed to
//!   retrieve tags unknown repository") on a repository that holds a
//!   manifest revision but no tag at all, and collects nothing; regstore
//!   deletes such a repository's manifests.
//!
//! So the scene for `--delete-untagged` has no index and no referrer.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::distribution::{self, GcOutput};
use common::*;
use regstore_server::gc::{self, Options, Report};
use reqwest::StatusCode;

/// An image (or index) pushed through regstore.
#[derive(Clone, Debug)]
struct Image {
    repo: &'static str,
    /// Its tag, if it still has one.
    tag: Option<&'static str>,
    /// Its manifest's digest and length.
    digest: String,
    len: usize,
    /// The config and layers it references.
    blobs: Vec<String>,
}

/// Pushes a config and `layers` into `repo` and a manifest naming them
/// (Docker schema 2 if `docker`, else OCI with `extra` fields), by `tag`
/// or else by digest.
async fn image(
    api: &Api,
    repo: &'static str,
    tag: Option<&'static str>,
    seed: &str,
    layers: &[&[u8]],
    docker: bool,
    extra: Option<&str>,
) -> Image {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
    let (body, digest, blobs) = api
        .push_manifest_of(repo, tag, config.as_bytes(), layers, docker, extra)
        .await;
    Image {
        repo,
        tag,
        digest,
        len: body.len(),
        blobs,
    }
}

async fn delete_manifest(api: &Api, repo: &str, digest: &str) {
    let r = api
        .client
        .delete(api.url(&format!("/v2/{repo}/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "delete {repo}@{digest}");
}

/// What a scene holds, and what each collection must do with it.
#[derive(Default)]
struct Scene {
    /// Kept by every collection.
    kept: Vec<Image>,
    /// Kept without `--delete-untagged`; deleted with it (their manifests
    /// and `untagged_garbage`).
    untagged: Vec<Image>,
    /// Blobs unreferenced from the start.
    garbage: BTreeSet<String>,
    /// Blobs referenced only by `untagged`.
    untagged_garbage: BTreeSet<String>,
    /// Repositories, for the 404 checks.
    repos: Vec<&'static str>,
}

impl Scene {
    fn eligible(&self, delete_untagged: bool) -> BTreeSet<String> {
        let mut out = self.garbage.clone();
        if delete_untagged {
            out.extend(self.untagged_garbage.iter().cloned());
        }
        out
    }
}

/// The scene: in `app`, `lib/base` and `other`,
/// - tagged images sharing a base layer (a Docker and an OCI manifest in
///   `app`, one more in `lib/base`);
/// - an untagged manifest pushed by digest, and a manifest that lost its
///   tag when the tag moved to another image;
/// - `lib/base`'s tagged manifest pushed by digest into `other` too
///   (untagged there, tagged where it came from), and a tagged image in
///   `other`;
/// - an image whose manifest was deleted by digest;
/// - orphan blobs: one in `app`, one in `other` (a repository with no
///   manifest at all), one linked in two repositories, and an orphan link
///   in `other` to the shared base layer (whose blob stays);
/// - an upload in progress;
/// - with `index_and_referrer`: a tagged OCI index over two children pushed
///   by digest, and an SBOM whose `subject` is a tagged image.
async fn scene(api: &Api, index_and_referrer: bool) -> Scene {
    let mut s = Scene {
        repos: vec!["app", "lib/base", "other"],
        ..Scene::default()
    };
    let base = b"base layer ".repeat(300);
    s.kept.push(
        image(
            api,
            "app",
            Some("v1"),
            "v1",
            &[&base, b"v1 layer"],
            true,
            None,
        )
        .await,
    );
    s.kept.push(
        image(
            api,
            "app",
            Some("v2"),
            "v2",
            &[&base, b"v2 layer"],
            false,
            None,
        )
        .await,
    );
    let lib = image(
        api,
        "lib/base",
        Some("latest"),
        "base",
        &[&base],
        false,
        None,
    )
    .await;
    s.kept.push(lib.clone());

    // Untagged: pushed by digest, and left behind by a moving tag.
    let untagged = image(
        api,
        "app",
        None,
        "untagged",
        &[&base, b"untagged layer"],
        false,
        None,
    )
    .await;
    let before = image(
        api,
        "app",
        Some("moving"),
        "before the move",
        &[b"moved-from layer"],
        true,
        None,
    )
    .await;
    let after = image(
        api,
        "app",
        Some("moving"),
        "after the move",
        &[b"moved-to layer"],
        true,
        None,
    )
    .await;
    s.kept.push(after);
    for i in [&untagged, &before] {
        s.untagged_garbage.insert(i.digest.clone());
        s.untagged_garbage.extend(i.blobs[..1].iter().cloned());
        s.untagged_garbage.insert(i.blobs.last().unwrap().clone());
    }
    s.untagged.push(Image {
        tag: None,
        ..before
    });
    s.untagged.push(untagged);

    // lib/base's manifest, untagged in `other`: its revision there goes
    // with --delete-untagged, its bytes and blobs stay. `other` has a tag
    // too: 2.8.2's --delete-untagged stops with "failed to retrieve tags
    // unknown repository" on a repository with revisions but no tags.
    s.kept.push(
        image(
            api,
            "other",
            Some("tagged"),
            "other",
            &[b"other layer"],
            false,
            None,
        )
        .await,
    );
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"base\"}";
    assert_eq!(api.push_blob("other", config).await, lib.blobs[0]);
    assert_eq!(api.push_blob("other", &base).await, lib.blobs[1]);
    let body = api
        .client
        .get(api.url(&format!("/v2/lib/base/manifests/{}", lib.digest)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = api
        .put_manifest("other", &lib.digest, OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    s.untagged.push(Image {
        repo: "other",
        tag: None,
        ..lib.clone()
    });

    // Deleted by digest (while tagged).
    let gone = image(
        api,
        "app",
        Some("gone"),
        "gone",
        &[&base, b"gone layer"],
        false,
        None,
    )
    .await;
    delete_manifest(api, "app", &gone.digest).await;
    s.garbage.insert(gone.digest.clone());
    s.garbage.insert(gone.blobs[0].clone());
    s.garbage.insert(gone.blobs[2].clone());

    // Orphans.
    s.garbage
        .insert(api.push_blob("app", b"orphan in app").await);
    s.garbage
        .insert(api.push_blob("other", b"orphan in other").await);
    let twice = api.push_blob("app", b"orphan in two repositories").await;
    assert_eq!(
        api.push_blob("lib/base", b"orphan in two repositories")
            .await,
        twice
    );
    s.garbage.insert(twice);
    api.push_blob("other", &base).await;

    // An upload in progress (neither collection looks at it).
    let loc = header(
        &api.client
            .post(api.url("/v2/app/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = api
        .client
        .patch(api.url(&loc))
        .header("content-type", "application/octet-stream")
        .body(b"half an upload".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    if index_and_referrer {
        let c1 = image(api, "app", None, "child 1", &[&base, b"c1"], false, None).await;
        let c2 = image(api, "app", None, "child 2", &[b"c2"], false, None).await;
        let entries: Vec<String> = [&c1, &c2]
            .iter()
            .map(|c| {
                format!(
                    "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":{},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}",
                    c.digest, c.len
                )
            })
            .collect();
        let index = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
            entries.join(",")
        );
        let r = api
            .put_manifest("app", "multi", OCI_INDEX, index.as_bytes())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        s.kept.push(Image {
            repo: "app",
            tag: Some("multi"),
            digest: sha256(index.as_bytes()),
            len: index.len(),
            blobs: Vec::new(),
        });
        s.kept.extend([c1, c2]);
        let v2 = &s.kept[1];
        let subject = format!(
            "\"artifactType\":\"application/vnd.example.sbom\",\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":{}}}",
            v2.digest, v2.len
        );
        let sbom = image(
            api,
            "app",
            None,
            "sbom",
            &[b"sbom of v2"],
            false,
            Some(&subject),
        )
        .await;
        s.kept.push(sbom);
    }
    s
}

fn blob_set(r: &Report) -> BTreeSet<String> {
    r.blobs_deleted.iter().map(|(d, _)| d.to_string()).collect()
}

/// Both dry runs on `root`: the same blobs eligible, the scene's; with
/// `delete_untagged` the same manifests.
async fn compare_dry_runs(
    program: &Path,
    reg: &TestRegistry,
    root: &Path,
    s: &Scene,
    delete_untagged: bool,
) {
    let ctx = format!("delete_untagged {delete_untagged}");
    let theirs: GcOutput = distribution::garbage_collect(program, root, true, delete_untagged);
    let ours = gc::collect(
        &reg.registry,
        &Options {
            dry_run: true,
            delete_untagged,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(ours.warnings.is_empty(), "{ctx}: {:?}", ours.warnings);
    assert_eq!(
        blob_set(&ours),
        theirs.blobs,
        "{ctx}: blobs eligible, regstore (left) and distribution (right); distribution said:\n{}",
        theirs.stdout
    );
    assert_eq!(blob_set(&ours), s.eligible(delete_untagged), "{ctx}");
    assert_eq!(ours.blobs_marked, theirs.marked, "{ctx}: blobs marked");
    let our_manifests: BTreeSet<String> = ours
        .manifests_deleted
        .iter()
        .map(|m| m.digest.to_string())
        .collect();
    assert_eq!(our_manifests, theirs.manifests, "{ctx}: manifests");
    if delete_untagged {
        let expected: BTreeSet<(String, String)> = s
            .untagged
            .iter()
            .map(|i| (i.repo.to_owned(), i.digest.clone()))
            .collect();
        let ours: BTreeSet<(String, String)> = ours
            .manifests_deleted
            .iter()
            .map(|m| (m.repo.to_string(), m.digest.to_string()))
            .collect();
        assert_eq!(ours, expected, "{ctx}");
        assert_eq!(theirs.manifests_count, expected.len(), "{ctx}");
    } else {
        assert_eq!(theirs.manifests_count, 0, "{ctx}");
    }
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

async fn get(api: &Api, path: &str) -> reqwest::Response {
    api.client
        .get(api.url(path))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap()
}

/// `api` serves the image: its manifest by tag and by digest, and every
/// blob, each hashing to its digest.
async fn assert_served(api: &Api, i: &Image) {
    let mut refs = vec![i.digest.as_str()];
    refs.extend(i.tag);
    for reference in refs {
        let r = get(api, &format!("/v2/{}/manifests/{reference}", i.repo)).await;
        assert_eq!(r.status(), StatusCode::OK, "{}:{reference}", i.repo);
        assert_eq!(header(&r, "docker-content-digest"), i.digest);
        assert_eq!(sha256(&r.bytes().await.unwrap()), i.digest);
    }
    for b in &i.blobs {
        let r = get(api, &format!("/v2/{}/blobs/{b}", i.repo)).await;
        assert_eq!(r.status(), StatusCode::OK, "{} blob {b}", i.repo);
        assert_eq!(sha256(&r.bytes().await.unwrap()), *b);
    }
}

/// regstore's real collection on `root`, then distribution serves what is
/// kept, 404s what was collected, and finds nothing more to collect.
async fn collect_then_serve(
    program: &Path,
    reg: TestRegistry,
    root: &Path,
    s: &Scene,
    delete_untagged: bool,
) {
    let ctx = format!("delete_untagged {delete_untagged}");
    let report = gc::collect(
        &reg.registry,
        &Options {
            delete_untagged,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(blob_set(&report), s.eligible(delete_untagged), "{ctx}");
    drop(reg);

    let dist = distribution::serve(program, root).await;
    let mut kept = s.kept.clone();
    if !delete_untagged {
        kept.extend(s.untagged.iter().cloned());
    }
    for i in &kept {
        assert_served(&dist.api, i).await;
    }
    for repo in &s.repos {
        for b in s.eligible(delete_untagged) {
            let r = get(&dist.api, &format!("/v2/{repo}/blobs/{b}")).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{ctx}: {repo} blob {b}");
        }
    }
    if delete_untagged {
        for i in &s.untagged {
            let r = get(&dist.api, &format!("/v2/{}/manifests/{}", i.repo, i.digest)).await;
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "{ctx}: {}@{}",
                i.repo,
                i.digest
            );
        }
    }
    drop(dist);
    let again = distribution::garbage_collect(program, root, true, delete_untagged);
    assert!(
        again.blobs.is_empty() && again.manifests_count == 0,
        "{ctx}: distribution finds more to collect after regstore:\n{}",
        again.stdout
    );
}

/// Without `--delete-untagged`, on the whole scene (index and referrer
/// included: every revision is kept, so 2.8.2's differences do not apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_agrees_with_distribution() {
    let Some(program) = require_program("docker-registry", "run scripts/clients.sh install") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let reg = start_on_root(root.path(), DELETE_ON).await;
    let s = scene(&reg, true).await;
    compare_dry_runs(&program, &reg, root.path(), &s, false).await;
    collect_then_serve(&program, reg, root.path(), &s, false).await;
}

/// With `--delete-untagged`, on the scene without an index and a referrer
/// (see the module docs); the plain dry runs agree there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_delete_untagged_agrees_with_distribution() {
    let Some(program) = require_program("docker-registry", "run scripts/clients.sh install") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let reg = start_on_root(root.path(), DELETE_ON).await;
    let s = scene(&reg, false).await;
    compare_dry_runs(&program, &reg, root.path(), &s, false).await;
    compare_dry_runs(&program, &reg, root.path(), &s, true).await;
    collect_then_serve(&program, reg, root.path(), &s, true).await;
}
