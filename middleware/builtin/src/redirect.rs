//! `redirect`: storage middleware that sends every blob download to
//! `baseurl/<storage path>` — a CDN or mirror that serves the same tree as
//! the storage behind it. Configured as in distribution:
//!
//! ```yaml
//! middleware:
//!   storage:
//!     - name: redirect
//!       options:
//!         baseurl: https://cdn.example.com/registry
//! ```
//!
//! Everything except `redirect_url` goes to the wrapped driver unchanged.
//! The URL is `baseurl` with the storage path appended to its path
//! (`https://cdn.example.com/registry/docker/registry/v2/blobs/…/data`);
//! its query and port are kept. A `baseurl` without scheme and host is a
//! startup error.

use regstore_core::{
    BuildFuture, Capabilities, Driver, Error, Middleware, MiddlewareFactory, ParamKind, ParamSpec,
    Params, RedirectRequest, Result, StorageDriver, StoragePath, async_trait,
};
use url::Url;

/// Registry name of the middleware.
pub const NAME: &str = "redirect";

const PARAMS: &[ParamSpec] = &[ParamSpec::new(
    "baseurl",
    ParamKind::String,
    "URL every redirect starts with (scheme and host required); the storage path is appended",
)
.required()];

/// The middleware's factory, as [`register`] adds it.
pub static FACTORY: MiddlewareFactory = MiddlewareFactory {
    name: NAME,
    description: "Redirects blob downloads to baseurl/<path> (a CDN or mirror of the storage).",
    params: PARAMS,
    build,
};

/// Makes this middleware known by name to `regstore_core::wrap` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_middleware(&FACTORY);
}

fn build(inner: Driver, params: Params) -> BuildFuture {
    Box::pin(async move {
        let base = base_url(params.require_string("baseurl")?)?;
        Ok(Box::new(RedirectMiddleware { inner, base }) as Box<dyn StorageDriver>)
    })
}

/// Parses `baseurl`: it must be an absolute http(s) URL with a host.
///
/// # Errors
/// `Config` naming what is missing.
pub fn base_url(s: &str) -> Result<Url> {
    let url = Url::parse(s).map_err(|e| {
        Error::config(format!(
            "redirect: baseurl {s:?} is not an absolute URL ({e}); write it with its scheme, e.g. https://{s}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::config(format!(
            "redirect: baseurl {s:?} must be an http or https URL with a host"
        )));
    }
    Ok(url)
}

/// `base` with `path` appended to its path (one slash between).
pub fn join(base: &Url, path: &StoragePath) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.as_str().trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

/// The middleware: `inner` for everything, `baseurl` for redirects.
#[derive(Debug)]
pub struct RedirectMiddleware {
    inner: Driver,
    base: Url,
}

impl RedirectMiddleware {
    /// Wraps `inner`, redirecting to `base`.
    pub fn new(inner: Driver, base: Url) -> Self {
        RedirectMiddleware { inner, base }
    }
}

#[async_trait]
impl Middleware for RedirectMiddleware {
    fn inner(&self) -> &Driver {
        &self.inner
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_redirect(true)
    }

    async fn redirect_url(
        &self,
        _request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<Url>> {
        Ok(Some(join(&self.base, path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StoragePath {
        StoragePath::parse(s).expect("valid path")
    }

    #[test]
    fn urls_keep_port_path_and_query() {
        let cases = [
            (
                "https://cdn.example.com",
                "/a/b",
                "https://cdn.example.com/a/b",
            ),
            (
                "https://cdn.example.com/",
                "/a/b",
                "https://cdn.example.com/a/b",
            ),
            (
                "http://cdn:8080/mirror",
                "/a/b",
                "http://cdn:8080/mirror/a/b",
            ),
            (
                "http://cdn:8080/mirror/",
                "/a/b",
                "http://cdn:8080/mirror/a/b",
            ),
            ("https://cdn/x?sig=1", "/a", "https://cdn/x/a?sig=1"),
            ("http://[::1]:9000", "/a", "http://[::1]:9000/a"),
        ];
        for (base, path, want) in cases {
            let base = base_url(base).expect(base);
            assert_eq!(join(&base, &p(path)).as_str(), want);
        }
    }

    #[test]
    fn a_baseurl_without_scheme_or_host_is_refused() {
        for bad in [
            "cdn.example.com",
            "cdn.example.com/x",
            "ftp://cdn/x",
            "file:///tmp",
            "",
        ] {
            let e = base_url(bad).expect_err(bad);
            assert_eq!(e.kind(), regstore_core::ErrorKind::Config, "{bad}: {e}");
            assert!(e.to_string().contains("baseurl"), "{e}");
        }
    }

    #[tokio::test]
    async fn redirects_to_baseurl_and_passes_everything_else_through() -> Result<()> {
        regstore_driver_inmemory::InMemoryDriver::new();
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        let mut raw = regstore_core::RawParams::new();
        raw.insert("baseurl".into(), "http://cdn:8080/m".into());
        super::register();
        let driver = regstore_core::wrap(inner, NAME, &raw).await?;
        assert!(driver.capabilities().redirect);
        assert_eq!(driver.name(), "inmemory");
        driver.put_content("/x/y", "data").await?;
        assert_eq!(driver.get_content("/x/y").await?.as_ref(), b"data");
        let url = driver
            .redirect_url(
                &RedirectRequest::new(regstore_core::RedirectMethod::Get),
                "/x/y",
            )
            .await?;
        assert_eq!(
            url.map(|u| u.to_string()).as_deref(),
            Some("http://cdn:8080/m/x/y")
        );
        let mut bad = regstore_core::RawParams::new();
        bad.insert("baseurl".into(), "cdn".into());
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        super::register();
        assert!(regstore_core::wrap(inner, NAME, &bad).await.is_err());
        Ok(())
    }
}
