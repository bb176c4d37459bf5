//! The catalog index (`catalog.index: storage | file | sql`): the same
//! pushes and deletes give the same `_catalog` pages on every index; an
//! index drops a repository whose last manifest is deleted; search
//! (`?q=`); access rules on index pages; two instances on one MariaDB;
//! rebuilds from storage (at startup when empty, and of 1,000
//! repositories).
//!
//! MySQL/MariaDB and PostgreSQL are the servers `scripts/backends.sh`
//! starts (or `REGSTORE_MYSQL_URL` and `REGSTORE_POSTGRES_URL`, URLs
//! without a database; see `regstore_testenv::backend`): each test creates
//! its own `regstore_t_<random>` and drops it. Unreachable, those cases
//! are skipped, and fail under `REGSTORE_REQUIRE_BACKENDS=1`.

mod common;

use std::time::Duration;

use common::users::{as_user, write_htpasswd};
use common::{Api, DELETE_ON, TestRegistry, expect_error, header, start_yaml};
use regstore_server::registry::{Digest, RepoName, RepositoryMarker, layout};
use regstore_testenv::backend;
use reqwest::StatusCode;
use sqlx::Row as _;

/// A database of its own on a MySQL or PostgreSQL server, dropped by
/// [`TestDb::drop_database`].
struct TestDb {
    /// The URL of the server (no database).
    server: String,
    /// The URL of the test's database.
    url: String,
    name: String,
    postgres: bool,
}

impl TestDb {
    /// A fresh database on `server` (a URL without a database, from the
    /// environment variable `var` or its default); `None` (skipped) when
    /// it is unreachable.
    async fn create(var: &str, server: String) -> Option<TestDb> {
        let server = server.trim_end_matches('/').to_owned();
        let postgres = server.starts_with("postgres");
        let name = format!("regstore_t_{:016x}", rand_u64());
        let created = async {
            let pool = admin_pool(&server).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
            pool.close().await;
            Ok::<_, String>(())
        }
        .await;
        regstore_testenv::backend::skip_unless_required(var, created)?;
        Some(TestDb {
            url: format!("{server}/{name}"),
            server,
            name,
            postgres,
        })
    }

    /// Rows of `repositories`.
    async fn rows(&self) -> i64 {
        let pool = admin_pool(&self.url)
            .await
            .expect("connect to the test database");
        let row = sqlx::query("SELECT COUNT(*) FROM repositories")
            .fetch_one(&pool)
            .await
            .expect("count rows");
        pool.close().await;
        row.try_get::<i64, _>(0).expect("a count")
    }

    async fn drop_database(self) {
        let pool = admin_pool(&self.server)
            .await
            .expect("connect to the server");
        let force = if self.postgres { " WITH (FORCE)" } else { "" };
        sqlx::query(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
            .execute(&pool)
            .await
            .expect("drop the test database");
        pool.close().await;
    }
}

async fn admin_pool(url: &str) -> Result<sqlx::AnyPool, String> {
    sqlx::any::install_default_drivers();
    tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(url),
    )
    .await
    .map_err(|_| {
        format!(
            "{} does not answer within 5 s",
            regstore_server::config::redact_url(url)
        )
    })?
    .map_err(|e| format!("{}: {e}", regstore_server::config::redact_url(url)))
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32) ^ uuid::Uuid::new_v4().as_u64_pair().0
}

/// One index to test: its `catalog:` section and, for SQL servers, the
/// database to drop at the end.
struct Index {
    label: &'static str,
    yaml: String,
    db: Option<TestDb>,
}

/// Every index available here: storage, file, sqlite, and mysql and
/// postgres when their servers are.
async fn indexes(dir: &std::path::Path) -> Vec<Index> {
    let mut out = vec![
        Index {
            label: "storage",
            yaml: String::new(),
            db: None,
        },
        Index {
            label: "file",
            yaml: format!(
                "catalog:\n  index: file\n  path: {}\n",
                dir.join("repositories").display()
            ),
            db: None,
        },
        Index {
            label: "sqlite",
            yaml: format!(
                "catalog:\n  index: sql\n  url: sqlite://{}\n",
                dir.join("catalog.db").display()
            ),
            db: None,
        },
    ];
    for (label, var, url) in [
        ("mysql", "REGSTORE_MYSQL_URL", backend::mysql_url()),
        ("postgres", "REGSTORE_POSTGRES_URL", backend::postgres_url()),
    ] {
        if let Some(db) = TestDb::create(var, url).await {
            out.push(Index {
                label,
                yaml: format!("catalog:\n  index: sql\n  url: {}\n", db.url),
                db: Some(db),
            });
        }
    }
    out
}

/// A registry on a filesystem root of its own with `catalog` (YAML) and
/// `extra` top-level sections.
async fn start_with(catalog: &str, extra: &str) -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    start_on(&root, catalog, extra, dir).await
}

async fn start_on(
    root: &std::path::Path,
    catalog: &str,
    extra: &str,
    dir: tempfile::TempDir,
) -> TestRegistry {
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{DELETE_ON}{catalog}{extra}",
        root.display()
    );
    start_yaml(&yaml, dir).await
}

/// One catalog page: its names and the path of its `Link`, if any.
type Page = (Vec<String>, Option<String>);

/// The names of one catalog page and the path of its `Link`, if any.
async fn page(api: &Api, path: &str) -> Page {
    let r = api.client.get(api.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let link = header(&r, "link");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let names = serde_json::from_value(body["repositories"].clone()).unwrap();
    let next = (!link.is_empty()).then(|| {
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        link[1..link.find('>').unwrap()].to_owned()
    });
    (names, next)
}

/// Every page from `first` on, following `Link`, each with its link.
async fn pages(api: &Api, first: &str) -> Vec<Page> {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let (names, link) = page(api, &path).await;
        next = link.clone();
        out.push((names, link));
        assert!(out.len() <= 50, "a Link loop: {out:?}");
    }
    out
}

/// Pushes a full image (config, layer, manifest by tag `v1`); returns the
/// manifest digest and the blob digests.
async fn push(api: &Api, repo: &str, seed: &str) -> (String, Vec<String>) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}");
    let (_, digest, blobs) = api
        .push_manifest_of(
            repo,
            Some("v1"),
            config.as_bytes(),
            &[layer.as_bytes()],
            false,
            None,
        )
        .await;
    (digest, blobs)
}

async fn delete(api: &Api, path: &str) {
    let r = api.client.delete(api.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE {path}");
}

/// Deletes `repo` wholly through the API: its manifest and its blobs, so
/// that the storage walk stops listing it too.
async fn delete_repository(api: &Api, repo: &str, image: &(String, Vec<String>)) {
    delete(api, &format!("/v2/{repo}/manifests/{}", image.0)).await;
    for b in &image.1 {
        delete(api, &format!("/v2/{repo}/blobs/{b}")).await;
    }
}

// Names whose byte order is the storage walk's order: no name is a path
// prefix of another (the walk meets `a` then `a/b`, byte order agrees, but
// the index would list `a` after its layers go only on some indexes), and
// no `-` or `.` sibling of a `/` (the walk gives `a`, `a/b`, `a-c`; byte
// order `a-c` before `a/b`, as '-' < '/'). `delta_x` before `deltaa` is
// byte order ('_' < 'a'), which a locale collation ignoring punctuation
// would reverse.
const NAMES: [&str; 8] = [
    "alpha",
    "beta/app",
    "beta/tool",
    "delta_x",
    "deltaa",
    "gamma/deep/er",
    "omega",
    "zulu/one",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_index_gives_the_same_pages_for_the_same_pushes_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut answers: Vec<(&str, Vec<Vec<Page>>)> = Vec::new();
    for index in indexes(dir.path()).await {
        let reg = start_with(&index.yaml, "").await;
        let mut images = Vec::new();
        for name in NAMES {
            images.push(push(&reg, name, name).await);
        }
        // One repository deleted wholly, one pushed again.
        delete_repository(&reg, "beta/tool", &images[2]).await;
        delete_repository(&reg, "omega", &images[6]).await;
        push(&reg, "omega", "omega again").await;
        let mut seen = Vec::new();
        for first in [
            "/v2/_catalog",
            "/v2/_catalog?n=1",
            "/v2/_catalog?n=2",
            "/v2/_catalog?n=3",
            "/v2/_catalog?n=2&last=beta/app",
            "/v2/_catalog?n=3&last=delta_x",
            "/v2/_catalog?n=0",
        ] {
            seen.push(pages(&reg, first).await);
        }
        let all: Vec<String> = seen[0].iter().flat_map(|(n, _)| n.clone()).collect();
        assert_eq!(
            all,
            [
                "alpha",
                "beta/app",
                "delta_x",
                "deltaa",
                "gamma/deep/er",
                "omega",
                "zulu/one"
            ],
            "{}",
            index.label
        );
        answers.push((index.label, seen));
        drop(reg);
        if let Some(db) = index.db {
            db.drop_database().await;
        }
    }
    let (first, expected) = &answers[0];
    assert_eq!(
        expected[2][0],
        (
            vec!["alpha".to_owned(), "beta/app".to_owned()],
            Some("/v2/_catalog?n=2&last=beta%2Fapp".to_owned())
        )
    );
    for (label, seen) in &answers[1..] {
        assert_eq!(seen, expected, "{label} differs from {first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_drops_a_repository_with_its_last_manifest_and_the_walk_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    for index in indexes(dir.path()).await {
        let reg = start_with(&index.yaml, "").await;
        let first = push(&reg, "app", "one").await;
        let second = push(&reg, "app", "two").await;
        push(&reg, "other", "other").await;
        delete(&reg, &format!("/v2/app/manifests/{}", first.0)).await;
        let (names, _) = page(&reg, "/v2/_catalog").await;
        assert_eq!(
            names,
            ["app", "other"],
            "{}: one manifest left",
            index.label
        );
        delete(&reg, &format!("/v2/app/manifests/{}", second.0)).await;
        let (names, _) = page(&reg, "/v2/_catalog").await;
        if index.label == "storage" {
            // distribution's rule: layers alone make a repository.
            assert_eq!(names, ["app", "other"], "storage");
        } else {
            assert_eq!(names, ["other"], "{}: no manifest left", index.label);
        }
        push(&reg, "app", "three").await;
        let (names, _) = page(&reg, "/v2/_catalog").await;
        assert_eq!(names, ["app", "other"], "{}: pushed again", index.label);
        drop(reg);
        if let Some(db) = index.db {
            db.drop_database().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_substrings_in_pages_with_underscore_taken_literally() {
    let dir = tempfile::tempdir().unwrap();
    for index in indexes(dir.path()).await {
        let reg = start_with(&index.yaml, "").await;
        if index.label == "storage" {
            push(&reg, "lib", "lib").await;
            let r = reg
                .client
                .get(reg.url("/v2/_catalog?q=lib"))
                .send()
                .await
                .unwrap();
            let m = expect_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
            assert!(m.contains("catalog.index"), "{m}");
            continue;
        }
        for name in [
            "a/app_x",
            "b/appx",
            "c/app_y",
            "d/app_z",
            "lib",
            "tools/xapp",
        ] {
            push(&reg, name, name).await;
        }
        let (names, link) = page(&reg, "/v2/_catalog?q=app_").await;
        assert_eq!(names, ["a/app_x", "c/app_y", "d/app_z"], "{}", index.label);
        assert_eq!(link, None);
        let all = pages(&reg, "/v2/_catalog?q=app&n=2").await;
        assert_eq!(
            all,
            [
                (
                    vec!["a/app_x".to_owned(), "b/appx".to_owned()],
                    Some("/v2/_catalog?q=app&n=2&last=b%2Fappx".to_owned())
                ),
                (
                    vec!["c/app_y".to_owned(), "d/app_z".to_owned()],
                    Some("/v2/_catalog?q=app&n=2&last=d%2Fapp_z".to_owned())
                ),
                (vec!["tools/xapp".to_owned()], None),
            ],
            "{}",
            index.label
        );
        let (names, _) = page(&reg, "/v2/_catalog?q=nothing").await;
        assert!(names.is_empty(), "{}", index.label);
        for (q, says) in [("App", "'A'"), ("a%25", "'%'"), ("", "empty")] {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/_catalog?q={q}")))
                .send()
                .await
                .unwrap();
            let m = expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
            assert!(m.contains(says), "{}: {q}: {m}", index.label);
        }
        drop(reg);
        if let Some(db) = index.db {
            db.drop_database().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_filter_index_pages_and_searches() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "a"), ("carol", "c")]);
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: r\n    path: {}\n  access:\n    admins: [alice]\n    repositories:\n      \"mix/*-v\": {{\"*\": [pull]}}\n",
        file.display()
    );
    let catalog = format!(
        "catalog:\n  index: sql\n  url: sqlite://{}\n",
        dir.path().join("c.db").display()
    );
    let reg = start_with(&catalog, &auth).await;
    let alice = as_user(&reg.base, "alice", "a");
    let carol = as_user(&reg.base, "carol", "c");
    let repos = [
        "mix/a1-v",
        "mix/a2",
        "mix/a3-v",
        "mix/a4",
        "mix/a5",
        "mix/a6-v",
        "mix/a7-v",
        "zz/hidden",
    ];
    for repo in repos {
        push(&alice, repo, repo).await;
    }
    let (all, _) = page(&alice, "/v2/_catalog").await;
    assert_eq!(all, repos);
    let seen: Vec<Vec<String>> = pages(&carol, "/v2/_catalog?n=2")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        seen,
        [vec!["mix/a1-v", "mix/a3-v"], vec!["mix/a6-v", "mix/a7-v"]],
        "full pages of visible names; no Link after the last visible one"
    );
    let (names, link) = page(&carol, "/v2/_catalog?q=a&n=1&last=mix/a4").await;
    assert_eq!(names, ["mix/a6-v"], "`last` may be hidden");
    assert_eq!(
        link.as_deref(),
        Some("/v2/_catalog?q=a&n=1&last=mix%2Fa6-v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_bucket_and_one_mariadb_list_100_concurrent_first_pushes() {
    let Some(db) = TestDb::create("REGSTORE_MYSQL_URL", backend::mysql_url()).await else {
        return;
    };
    // One bucket (a root of its own on moto) for both instances.
    let Some(params) = backend::emulator_params_or_skip("s3").await else {
        return;
    };
    let yaml = serde_json::json!({
        "version": "0.1",
        "storage": { "s3": params, "delete": { "enabled": true } },
        "catalog": { "index": "sql", "url": db.url },
    })
    .to_string();
    let a = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
    let b = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
    // 0..60 on a, 40..100 on b: 20 repositories first-pushed on both at once.
    let names: Vec<String> = (0..100).map(|i| format!("load/r{i:03}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (reg, range) in [(&a, 0..60), (&b, 40..100)] {
        for chunk in names[range].chunks(15) {
            let api = Api::new(reg.base.clone());
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                for name in chunk {
                    push(&api, &name, "same image everywhere").await;
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a pusher");
    }
    assert_eq!(db.rows().await, 100, "one row per repository");
    for reg in [&a, &b] {
        let listed: Vec<String> = pages(reg, "/v2/_catalog?n=30")
            .await
            .into_iter()
            .flat_map(|(n, _)| n)
            .collect();
        assert_eq!(listed, names);
    }
    drop((a, b));
    db.drop_database().await;
}

/// Writes `count` repositories `bulk/rNNNN` through the driver: a revision
/// link each (what makes a repository for the index), and every tenth
/// with layers only (listed by the storage walk, not the index).
async fn write_layout(reg: &TestRegistry, count: usize) -> Vec<String> {
    let driver = reg.registry.driver().clone();
    let d: Digest = common::sha256(b"m").parse().unwrap();
    let mut with_manifests = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let name = RepoName::parse(&format!("bulk/r{i:04}")).unwrap();
        let path = if i % 10 == 9 {
            layout::layer_link(&name, &d)
        } else {
            with_manifests.push(name.as_str().to_owned());
            layout::revision_link(&name, &d)
        };
        let driver = driver.clone();
        let content = layout::link_content(&d);
        tasks.spawn(async move { driver.put_content(&path, content.into_bytes()).await });
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    with_manifests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_1000_repositories_equals_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    for index in indexes(dir.path()).await {
        if index.label == "storage" {
            continue;
        }
        let reg = start_with(&index.yaml, "").await;
        push(&reg, "stale", "gone after the rebuild").await;
        // Written behind the registry's back: the index does not know them.
        let expected = write_layout(&reg, 1000).await;
        std::fs::remove_dir_all(
            reg.dir
                .path()
                .join("root/docker/registry/v2/repositories/stale"),
        )
        .unwrap();
        let count = reg.registry.rebuild_catalog().await.unwrap();
        assert_eq!(count, 900, "{}", index.label);
        let mut walked = Vec::new();
        reg.registry
            .walk_repositories(None, RepositoryMarker::Manifests, |r| {
                walked.push(r);
                true
            })
            .await
            .unwrap();
        assert_eq!(walked, expected, "{}: the walk", index.label);
        let listed: Vec<String> = pages(&reg, "/v2/_catalog?n=1000")
            .await
            .into_iter()
            .flat_map(|(n, _)| n)
            .collect();
        assert_eq!(
            listed, expected,
            "{}: the index after the rebuild",
            index.label
        );
        // The storage walk lists the same, plus the repositories of layers only.
        let (storage, _) = reg
            .registry
            .clone()
            .with_catalog(Default::default())
            .catalog(2000, None, None, &|_| true)
            .await
            .unwrap();
        let filtered: Vec<String> = storage
            .into_iter()
            .filter(|n| n[n.len() - 1..] != *"9")
            .collect();
        assert_eq!(filtered, expected, "{}: the storage walk", index.label);
        drop(reg);
        if let Some(db) = index.db {
            db.drop_database().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_index_is_filled_from_storage_at_startup_and_a_full_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let plain = start_on(&root, "", "", tempfile::tempdir().unwrap()).await;
    for name in ["one", "two/x"] {
        push(&plain, name, name).await;
    }
    plain.push_blob("layers-only", b"a blob").await;
    drop(plain);
    let db = dir.path().join("c.db");
    let catalog = format!("catalog:\n  index: sql\n  url: sqlite://{}\n", db.display());
    let reg = start_on(&root, &catalog, "", tempfile::tempdir().unwrap()).await;
    let (names, _) = page(&reg, "/v2/_catalog").await;
    assert_eq!(names, ["one", "two/x"], "filled at startup");
    reg.registry.catalog_index().remove("one").await.unwrap();
    drop(reg);
    let reg = start_on(&root, &catalog, "", tempfile::tempdir().unwrap()).await;
    let (names, _) = page(&reg, "/v2/_catalog").await;
    assert_eq!(
        names,
        ["two/x"],
        "a non-empty index is not rebuilt at startup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_of_untagged_manifests_drops_the_repositories_it_empties() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = format!(
        "catalog:\n  index: sql\n  url: sqlite://{}\n",
        dir.path().join("c.db").display()
    );
    let reg = start_with(&catalog, "").await;
    push(&reg, "tagged", "kept").await;
    reg.push_manifest_of("untagged", None, b"{}", &[b"layer"], false, None)
        .await;
    let (names, _) = page(&reg, "/v2/_catalog").await;
    assert_eq!(names, ["tagged", "untagged"]);
    let report = regstore_server::gc::collect(
        &reg.registry,
        &regstore_server::gc::Options {
            delete_untagged: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.manifests_deleted.len(), 1);
    let (names, _) = page(&reg, "/v2/_catalog").await;
    assert_eq!(names, ["tagged"], "gc -m emptied `untagged`");
}
