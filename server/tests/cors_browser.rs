//! CORS in a real browser: headless Chromium (Debian's `chromium`) loads a
//! page from one origin whose script reads the catalog, a tag list and a
//! manifest (with the `Accept` header a registry UI sends, which makes the
//! browser ask a preflight, and reading `Docker-Content-Digest`, which the
//! registry must expose) from regstore on another origin. From an origin
//! `http.cors` allows, everything reads; from one it does not, the browser
//! refuses the script every answer. Needs `chromium`
//! (`scripts/clients.sh install`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::response::Html;
use common::*;

/// The script's results, one line each, in `<pre id="out">`.
const PAGE: &str = r#"<html><body><pre id="out">running</pre><script>
const out = [];
const registry = "REGISTRY";
const accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";
async function run() {
  try {
    const c = await fetch(registry + "/v2/_catalog");
    out.push("catalog " + c.status + " " + JSON.stringify((await c.json()).repositories));
  } catch (e) { out.push("catalog blocked"); }
  try {
    const t = await fetch(registry + "/v2/ui/app/tags/list");
    out.push("tags " + t.status + " " + JSON.stringify((await t.json()).tags));
  } catch (e) { out.push("tags blocked"); }
  try {
    const m = await fetch(registry + "/v2/ui/app/manifests/v1", { headers: { "Accept": accept } });
    const body = await m.text();
    out.push("manifest " + m.status + " " + m.headers.get("Docker-Content-Digest") + " " + body.length);
  } catch (e) { out.push("manifest blocked"); }
  document.getElementById("out").textContent = out.join("\n");
}
run();
</script></body></html>"#;

/// Serves `PAGE` (pointing at `registry`) on a loopback port of its own: a
/// second origin. Returns its origin.
async fn page_origin(registry: &str) -> String {
    let html = PAGE.replace("REGISTRY", registry);
    let app = axum::Router::new().route(
        "/page.html",
        axum::routing::get(move || {
            let html = html.clone();
            async move { Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// What the page's script wrote, after Chromium ran it.
fn run_page(chromium: &PathBuf, origin: &str) -> Vec<String> {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{origin}/page.html"))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom
        .find("<pre id=\"out\">")
        .unwrap_or_else(|| panic!("no output element: {dom}"))
        + "<pre id=\"out\">".len();
    let end = dom[start..].find("</pre>").expect("end of output") + start;
    dom[start..end].lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_on_an_allowed_origin_reads_catalog_tags_and_manifests() {
    let Some(chromium) = require_program("chromium", "scripts/clients.sh install") else {
        return;
    };
    // The registry's config names the page's origin, so the page server
    // starts first, pointing at the registry's port chosen in advance.
    let port = free_port();
    let registry = format!("http://127.0.0.1:{port}");
    let allowed = page_origin(&registry).await;
    let refused = page_origin(&registry).await;
    let dir = tempfile::tempdir().unwrap();
    let reg = start_yaml_on(
        &format!(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  cors:\n    allowedorigins: ['{allowed}']\n"
        ),
        dir,
        port,
    )
    .await;
    let (manifest, digest) = reg.push_image("ui/app", "v1", "browser").await;

    let lines = run_page(&chromium, &allowed);
    assert_eq!(
        lines,
        [
            "catalog 200 [\"ui/app\"]".to_owned(),
            "tags 200 [\"v1\"]".to_owned(),
            format!("manifest 200 {digest} {}", manifest.len()),
        ],
        "from the allowed origin {allowed}"
    );
    let lines = run_page(&chromium, &refused);
    assert_eq!(
        lines,
        ["catalog blocked", "tags blocked", "manifest blocked"],
        "from {refused}, which is not allowed"
    );
}
