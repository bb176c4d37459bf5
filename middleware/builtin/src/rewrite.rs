//! `rewrite`: edits the redirect URLs of the inner driver, as distribution's
//! middleware of that name.
//!
//! ```yaml
//! middleware:
//!   storage:
//!     - name: rewrite
//!       options:
//!         scheme: https                 # replace the scheme
//!         host: cdn.example.com:8443    # replace host (and port, if given)
//!         trimpathprefix: /bucket       # remove this prefix from the path
//! ```
//!
//! When the inner driver gives no URL (it serves bytes itself), neither
//! does `rewrite`. The query (a presigned signature) is kept as it is.

use regstore_core::{
    BuildFuture, Driver, Error, Middleware, MiddlewareFactory, ParamKind, ParamSpec, Params,
    RedirectRequest, Result, StorageDriver, StoragePath, async_trait,
};
use url::Url;

/// Registry name of the middleware.
pub const NAME: &str = "rewrite";

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new("scheme", ParamKind::String, "new scheme: http or https"),
    ParamSpec::new(
        "host",
        ParamKind::String,
        "new host, optionally with :port (without a port, the URL's port is dropped)",
    ),
    ParamSpec::new(
        "trimpathprefix",
        ParamKind::String,
        "prefix removed from the URL path when the path starts with it",
    ),
];

/// The middleware's factory, as [`register`] adds it.
pub static FACTORY: MiddlewareFactory = MiddlewareFactory {
    name: NAME,
    description: "Rewrites the scheme, host and path prefix of the inner driver's redirect URLs.",
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
        let rules = Rules::new(
            params.string("scheme"),
            params.string("host"),
            params.string("trimpathprefix"),
        )?;
        Ok(Box::new(Rewrite { inner, rules }) as Box<dyn StorageDriver>)
    })
}

/// What `rewrite` changes in a URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    trim: Option<String>,
}

impl Rules {
    /// Checked rules.
    ///
    /// # Errors
    /// `Config` for a scheme other than http/https, or a host that is not a
    /// host name or `name:port`.
    pub fn new(scheme: Option<&str>, host: Option<&str>, trim: Option<&str>) -> Result<Self> {
        let scheme = match scheme {
            None => None,
            Some(s @ ("http" | "https")) => Some(s.to_owned()),
            Some(other) => {
                return Err(Error::config(format!(
                    "scheme {other:?} must be http or https"
                )));
            }
        };
        let (host, port) = match host {
            None => (None, None),
            Some(h) => {
                // Parse as the authority of a URL, which handles [v6]:port.
                let probe = Url::parse(&format!("http://{h}/")).ok().filter(|u| {
                    u.host_str().is_some() && u.username().is_empty() && u.path() == "/"
                });
                let Some(probe) = probe else {
                    return Err(Error::config(format!(
                        "host {h:?} is not a host name or host:port"
                    )));
                };
                let port = probe.port().or_else(|| {
                    h.rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .filter(|_| !h.ends_with(']'))
                });
                (probe.host_str().map(str::to_owned), port)
            }
        };
        let trim = trim
            .filter(|t| !t.is_empty() && *t != "/")
            .map(|t| format!("/{}", t.trim_matches('/')));
        Ok(Rules {
            scheme,
            host,
            port,
            trim,
        })
    }

    /// `url` with the rules applied.
    ///
    /// # Errors
    /// `Backend` when the URL cannot take the new scheme or host (a URL
    /// without a host, such as `data:`).
    pub fn apply(&self, mut url: Url) -> Result<Url> {
        let original = url.to_string();
        let refuse = |what: &str| {
            Error::backend(format!(
                "rewrite middleware cannot set the {what} of {original}"
            ))
        };
        if let Some(host) = &self.host {
            url.set_host(Some(host)).map_err(|_| refuse("host"))?;
            url.set_port(self.port).map_err(|()| refuse("port"))?;
        }
        if let Some(scheme) = &self.scheme {
            let port = url.port();
            url.set_scheme(scheme).map_err(|()| refuse("scheme"))?;
            // A port equal to the new scheme's default is dropped by `url`;
            // one given explicitly stays.
            if port.is_some() {
                url.set_port(port).map_err(|()| refuse("port"))?;
            }
        }
        if let Some(prefix) = &self.trim {
            let path = url.path();
            let rest = path
                .strip_prefix(prefix.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'));
            if let Some(rest) = rest {
                let rest = if rest.is_empty() { "/" } else { rest }.to_owned();
                url.set_path(&rest);
            }
        }
        Ok(url)
    }
}

/// The middleware.
#[derive(Debug)]
pub struct Rewrite {
    inner: Driver,
    rules: Rules,
}

#[async_trait]
impl Middleware for Rewrite {
    fn inner(&self) -> &Driver {
        &self.inner
    }

    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<Url>> {
        match self.inner.backend().redirect_url(request, path).await? {
            Some(url) => self.rules.apply(url).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(rules: (Option<&str>, Option<&str>, Option<&str>), url: &str) -> String {
        let rules = Rules::new(rules.0, rules.1, rules.2).expect("valid rules");
        rules
            .apply(Url::parse(url).expect("url"))
            .expect("applies")
            .to_string()
    }

    #[test]
    fn scheme_host_port_and_prefix() {
        let s3 = "http://127.0.0.1:9000/bucket/docker/blob?X-Amz-Signature=ab%2Fc";
        assert_eq!(
            rewrite((Some("https"), Some("cdn.example.com"), None), s3),
            "https://cdn.example.com/bucket/docker/blob?X-Amz-Signature=ab%2Fc"
        );
        assert_eq!(
            rewrite((None, Some("cdn:8443"), Some("/bucket")), s3),
            "http://cdn:8443/docker/blob?X-Amz-Signature=ab%2Fc"
        );
        assert_eq!(
            rewrite((None, None, Some("bucket/")), s3),
            "http://127.0.0.1:9000/docker/blob?X-Amz-Signature=ab%2Fc"
        );
        // Only a whole segment is trimmed.
        assert_eq!(
            rewrite((None, None, Some("/buck")), s3),
            "http://127.0.0.1:9000/bucket/docker/blob?X-Amz-Signature=ab%2Fc"
        );
        // The scheme changes, an explicit port stays.
        assert_eq!(
            rewrite((Some("https"), None, None), s3),
            "https://127.0.0.1:9000/bucket/docker/blob?X-Amz-Signature=ab%2Fc"
        );
        assert_eq!(
            rewrite((None, Some("[::1]:8080"), None), "https://a/b"),
            "https://[::1]:8080/b"
        );
        assert_eq!(
            rewrite((None, None, Some("/b")), "https://a/b"),
            "https://a/"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        for (scheme, host, what) in [
            (Some("ftp"), None, "scheme"),
            (None, Some("a/b"), "host"),
            (None, Some("user@a"), "host"),
            (None, Some(""), "host"),
        ] {
            let e = Rules::new(scheme, host, None).expect_err(what);
            assert_eq!(e.kind(), regstore_core::ErrorKind::Config);
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[tokio::test]
    async fn no_inner_url_means_no_redirect() -> Result<()> {
        regstore_driver_inmemory::InMemoryDriver::new();
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        let mut raw = regstore_core::RawParams::new();
        raw.insert("host".into(), "cdn".into());
        super::register();
        let d = regstore_core::wrap(inner, NAME, &raw).await?;
        d.put_content("/a", "x").await?;
        let url = d
            .redirect_url(
                &RedirectRequest::new(regstore_core::RedirectMethod::Get),
                "/a",
            )
            .await?;
        assert_eq!(url, None);
        assert_eq!(d.get_content("/a").await?.as_ref(), b"x");
        Ok(())
    }
}
