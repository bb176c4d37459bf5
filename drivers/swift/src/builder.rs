//! Building the driver: its parameters, its factory, the credentials the
//! parameters describe, and the start-up work (log in, create the
//! container, store the TempURL key) before a [`SwiftDriver`] is handed out.

use std::sync::Arc;

use regstore_core::params::ParamKind::{self, Bool, Integer, Secret, Size, String as Str};
use regstore_core::{
    BuildFuture, DriverFactory, Error, ParamSpec, Params, RequestCounter, Result, StorageDriver,
};
use regstore_objectstore::ObjectDriver;

use crate::auth::{Auth, Credentials, Identity, Ref};
use crate::backend::SwiftBackend;
use crate::client::Client;
use crate::slo::SEGMENTS;
use crate::store::{self, SwiftStore};
use crate::{NAME, SwiftDriver};

const MIN_CHUNK: u64 = 1 << 20;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "authurl",
        Str,
        "TempAuth (…/auth/v1.0) or Keystone v3 (…/v3) URL",
    )
    .required(),
    ParamSpec::new("username", Str, "user name (account:user for TempAuth)"),
    ParamSpec::new("password", Secret, "password (TempAuth key)"),
    ParamSpec::new(
        "authversion",
        Integer,
        "1 (TempAuth) or 3 (Keystone); default from authurl",
    ),
    ParamSpec::new("userid", Str, "Keystone user id (instead of username)"),
    ParamSpec::new("domain", Str, "the user's Keystone domain name"),
    ParamSpec::new("domainid", Str, "the user's Keystone domain id"),
    ParamSpec::new("tenant", Str, "project name to scope to"),
    ParamSpec::new("tenantid", Str, "project id to scope to"),
    ParamSpec::new(
        "tenantdomain",
        Str,
        "the project's domain name (default: the user's)",
    ),
    ParamSpec::new("tenantdomainid", Str, "the project's domain id"),
    ParamSpec::new("trustid", Str, "Keystone trust id to scope to"),
    ParamSpec::new(
        "applicationcredentialid",
        Str,
        "Keystone application credential id",
    ),
    ParamSpec::new(
        "applicationcredentialname",
        Str,
        "application credential name (with username)",
    ),
    ParamSpec::new(
        "applicationcredentialsecret",
        Secret,
        "application credential secret",
    ),
    ParamSpec::new("region", Str, "region of the object-store endpoint"),
    ParamSpec::new("endpointtype", Str, "public, internal or admin").default("public"),
    ParamSpec::new("container", Str, "container, created if missing").required(),
    ParamSpec::new("prefix", Str, "name prefix of everything stored").default(""),
    ParamSpec::new("rootdirectory", Str, "alias of prefix"),
    ParamSpec::new("chunksize", Size, "segment size of large objects (>= 1MiB)").default("20MiB"),
    ParamSpec::new(
        "consistencywindow",
        ParamKind::Duration,
        "how long the driver merges its own writes into listings that lag them (0s: never)",
    )
    .default("15s"),
    ParamSpec::new(
        "listpagesize",
        Integer,
        "names per listing request (default: the cluster's container_listing_limit)",
    ),
    ParamSpec::new("insecureskipverify", Bool, "accept any TLS certificate").default("false"),
    ParamSpec::new("secretkey", Secret, "TempURL key; enables redirects"),
    ParamSpec::new(
        "tempurlcontainerkey",
        Bool,
        "secretkey is the container's TempURL key",
    )
    .default("false"),
    ParamSpec::new(
        "settempurlkey",
        Bool,
        "store secretkey on the account (or container) at startup",
    )
    .default("false"),
    regstore_objectstore::CONNECT_TIMEOUT_PARAM,
    regstore_objectstore::TIMEOUT_PARAM,
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: NAME,
    description: "OpenStack Swift (TempAuth or Keystone v3); large objects as SLOs; TempURL redirects",
    params: PARAMS,
    build,
};

/// Makes this driver known by name to `regstore_core::create` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_driver(&FACTORY);
}

fn build(params: Params) -> BuildFuture {
    Box::pin(async move {
        let driver = swift_driver(&params).await?;
        Ok(Box::new(driver) as Box<dyn StorageDriver>)
    })
}

/// The credentials the parameters describe.
///
/// # Errors
/// `Config` naming what is missing or contradictory.
pub fn credentials(params: &Params) -> Result<Credentials> {
    let url = params.require_string("authurl")?.trim_end_matches('/');
    let version = match params.integer("authversion") {
        Some(v) => v,
        None if url.ends_with("/v3") => 3,
        None if url.contains("/v1") || url.ends_with("/auth") => 1,
        None => {
            return Err(Error::config(format!(
                "authurl {url:?}: cannot tell the auth version; set authversion: 1 (TempAuth) or 3 (Keystone)"
            )));
        }
    };
    let s = |name: &str| params.string(name).filter(|v| !v.is_empty());
    match version {
        1 => {
            let user = s("username")
                .ok_or_else(|| Error::config("username (account:user) is required for TempAuth"))?;
            let key =
                s("password").ok_or_else(|| Error::config("password is required for TempAuth"))?;
            Ok(Credentials::V1 {
                url: url.to_owned(),
                user: user.to_owned(),
                key: key.to_owned(),
            })
        }
        3 => {
            let user = Ref::from_parts(s("userid"), s("username"));
            let domain = Ref::from_parts(s("domainid"), s("domain"));
            let credential =
                Ref::from_parts(s("applicationcredentialid"), s("applicationcredentialname"));
            let identity = match credential {
                Some(credential) => {
                    let secret = s("applicationcredentialsecret").ok_or_else(|| {
                        Error::config("applicationcredentialsecret is required with an application credential")
                    })?;
                    if credential.id.is_none() && user.is_none() {
                        return Err(Error::config(
                            "applicationcredentialname needs username or userid (names are per user)",
                        ));
                    }
                    Identity::ApplicationCredential {
                        credential,
                        user,
                        domain,
                        secret: secret.to_owned(),
                    }
                }
                None => {
                    let user = user.ok_or_else(|| {
                        Error::config("username or userid is required for Keystone (or an application credential)")
                    })?;
                    if user.id.is_none() && domain.is_none() {
                        return Err(Error::config(
                            "a Keystone user named by username needs domain or domainid",
                        ));
                    }
                    let password = s("password")
                        .ok_or_else(|| Error::config("password is required for Keystone"))?;
                    Identity::Password {
                        user,
                        domain,
                        password: password.to_owned(),
                    }
                }
            };
            let project = Ref::from_parts(s("tenantid"), s("tenant"));
            let project_domain = Ref::from_parts(s("tenantdomainid"), s("tenantdomain")).or_else(
                || match &identity {
                    Identity::Password { domain, .. } => domain.clone(),
                    Identity::ApplicationCredential { .. } => None,
                },
            );
            if project.as_ref().is_some_and(|p| p.id.is_none()) && project_domain.is_none() {
                return Err(Error::config(
                    "a project named by tenant needs tenantdomain, tenantdomainid or the user's domain",
                ));
            }
            let interface = params.require_string("endpointtype")?;
            if !matches!(interface, "public" | "internal" | "admin") {
                return Err(Error::config(format!(
                    "endpointtype {interface:?} must be public, internal or admin"
                )));
            }
            Ok(Credentials::V3 {
                url: url.to_owned(),
                identity,
                project,
                project_domain,
                trust_id: s("trustid").map(str::to_owned),
                region: s("region").map(str::to_owned),
                interface: interface.to_owned(),
            })
        }
        other => Err(Error::config(format!(
            "authversion {other} is not supported (1: TempAuth, 3: Keystone v3)"
        ))),
    }
}

/// The `swift` driver from checked parameters (see the crate docs): logs
/// in, creates the container if missing, and stores the TempURL key when
/// `settempurlkey` says so.
///
/// # Errors
/// `Config` for parameters that cannot work; `Credentials` when the auth
/// service refuses the credentials; `Backend` when Swift cannot be reached
/// or fails.
pub async fn swift_driver(params: &Params) -> Result<SwiftDriver> {
    regstore_objectstore::install_crypto();
    let creds = credentials(params)?;
    let container = params.require_string("container")?;
    if container.is_empty() || container.contains('/') {
        return Err(Error::config(format!(
            "container {container:?} must be a non-empty name without '/'"
        )));
    }
    let chunk = params.require_size("chunksize")?;
    if chunk < MIN_CHUNK {
        return Err(Error::config(format!(
            "chunksize {chunk} is below the minimum of 1 MiB (1048576)"
        )));
    }
    let http = regstore_objectstore::Timeouts::from_params(params)?
        .http_client()
        .danger_accept_invalid_certs(params.require_bool("insecureskipverify")?)
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
    let page = match params.integer("listpagesize") {
        None => 0,
        Some(n) if n >= 1 => usize::try_from(n.min(store::PAGE as i64)).unwrap_or(store::PAGE),
        Some(n) => {
            return Err(Error::config(format!(
                "listpagesize {n} must be at least 1"
            )));
        }
    };
    let requests = RequestCounter::default();
    let auth = Auth::new(creds, http.clone(), requests.clone());
    let client = Arc::new(Client::new(http, auth, requests, container.to_owned()));
    let window = params.require_duration("consistencywindow")?;
    let swift = SwiftStore::new(Arc::clone(&client), page, window);
    let prefix = match params.string("rootdirectory") {
        Some(alias) => alias,
        None => params.require_string("prefix")?,
    };
    let trimmed = prefix.trim_matches('/');
    let segments = if trimmed.is_empty() {
        SEGMENTS.to_owned()
    } else {
        format!("{trimmed}/{SEGMENTS}")
    };
    let backend = SwiftBackend {
        store: Arc::new(swift.clone()),
        swift,
        client,
        part_size: usize::try_from(chunk)
            .map_err(|_| Error::config("chunksize does not fit in memory"))?,
        segments,
        tempurl_key: params.string("secretkey").map(str::to_owned),
    };
    backend.ensure_container().await?;
    if params.require_bool("settempurlkey")? {
        let on_container = params.require_bool("tempurlcontainerkey")?;
        backend.store_tempurl_key(on_container).await?;
    }
    ObjectDriver::new(backend, prefix)
}
