//! regstore-driver-azure: the `azure` storage driver for Azure Blob Storage
//! (block blobs), on the `object_store` crate.
//!
//! Keys, directories, walk and resumable writers (blocks staged on the final
//! blob, committed with a block list) come from [`regstore_objectstore`].
//!
//! # Parameters
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `accountname` | required | storage account |
//! | `container` | required | blob container |
//! | `accountkey` | none | shared key; also what signs redirect SAS URLs |
//! | `realm` | `core.windows.net` | endpoint suffix: `https://<account>.blob.<realm>` |
//! | `serviceurl` | from `realm` | full endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1` for Azurite |
//! | `sastoken` | none | a SAS token (`sv=…&sig=…`) instead of a key; no redirects then |
//! | `clientid`, `tenantid`, `clientsecret` | none | Entra ID service principal |
//! | `federatedtokenfile` | none | workload identity (AKS): token file, with `clientid` and `tenantid` |
//! | `rootdirectory` | `""` | key prefix of everything stored |
//! | `chunksize` | `10MiB` | size of the blocks a writer stages (1 MiB to 4000 MiB) |
//! | `skipverify` | `false` | accept any TLS certificate (test setups only) |
//! | `connecttimeout` | `10s` | longest wait for a connection to the backend, per attempt |
//! | `timeout` | `60s` | longest wait for a byte of an answer, per attempt; failed attempts are retried for at most 3 × `timeout`, so a hung backend fails a call within about that |
//!
//! Credentials are tried in that order: `accountkey`, `sastoken`,
//! `clientsecret`, `federatedtokenfile`; with none of them the `AZURE_*`
//! environment variables and then the managed identity of the VM or
//! container are used (what `object_store` supports; tokens are refreshed).
//!
//! Redirects: with a shared key (or Entra ID credentials, through a user
//! delegation key) `redirect_url` gives a read-only service SAS URL valid for
//! 20 minutes; with a SAS token there is nothing to sign with, so blobs are
//! served by the registry.
//!
//! Tested against Azurite (`scripts/backends.sh start azure`) on every CI
//! run. Azurite verifies SAS signatures, so the conformance redirect case
//! proves them. It ignores the listing offset (`startFrom`); the walk filters
//! client-side as well, so that costs bytes, not correctness.

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use regstore_core::params::ParamKind::{Bool, Secret, Size, String as Str};
use regstore_core::{
    BuildFuture, Capabilities, DriverFactory, Error, ParamSpec, Params, RedirectMethod,
    RequestCounter, Result, StorageDriver,
};
use regstore_objectstore::{Backend, CountingConnector, ObjectDriver, Timeouts, map_err};

const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 4000 << 20;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new("accountname", Str, "storage account").required(),
    ParamSpec::new("container", Str, "blob container").required(),
    ParamSpec::new("accountkey", Secret, "shared key of the account"),
    ParamSpec::new("realm", Str, "endpoint suffix").default("core.windows.net"),
    ParamSpec::new("serviceurl", Str, "full blob endpoint (overrides realm)"),
    ParamSpec::new("sastoken", Secret, "SAS token instead of a key"),
    ParamSpec::new("clientid", Str, "Entra ID client (application) id"),
    ParamSpec::new("tenantid", Str, "Entra ID tenant id"),
    ParamSpec::new("clientsecret", Secret, "Entra ID client secret"),
    ParamSpec::new("federatedtokenfile", Str, "workload identity token file"),
    ParamSpec::new("rootdirectory", Str, "key prefix of everything stored").default(""),
    ParamSpec::new(
        "chunksize",
        Size,
        "block size of writers (1 MiB to 4000 MiB)",
    )
    .default("10MiB"),
    ParamSpec::new("skipverify", Bool, "accept any TLS certificate").default("false"),
    regstore_objectstore::CONNECT_TIMEOUT_PARAM,
    regstore_objectstore::TIMEOUT_PARAM,
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: "azure",
    description: "Azure Blob Storage (block blobs; Azurite for tests); SAS redirects",
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
        let driver = azure_driver(&params)?;
        Ok(Box::new(driver) as Box<dyn StorageDriver>)
    })
}

/// The `azure` driver: [`ObjectDriver`] on [`AzureBackend`].
pub type AzureDriver = ObjectDriver<AzureBackend>;

/// Azure Blob Storage under [`ObjectDriver`].
#[derive(Debug)]
pub struct AzureBackend {
    store: Arc<dyn ObjectStore>,
    client: Arc<MicrosoftAzure>,
    requests: RequestCounter,
    part_size: usize,
    can_sign: bool,
}

/// The `azure` driver from checked parameters (see the crate docs).
///
/// # Errors
/// `Config` naming the parameter when one cannot work.
pub fn azure_driver(params: &Params) -> Result<AzureDriver> {
    regstore_objectstore::install_crypto();
    let account = params.require_string("accountname")?;
    let container = params.require_string("container")?;
    let chunk = params.require_size("chunksize")?;
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk) {
        return Err(Error::config(format!(
            "chunksize {chunk} is outside 1 MiB to 4000 MiB"
        )));
    }
    let endpoint = match params.string("serviceurl") {
        Some(raw) => {
            let url = url::Url::parse(raw)
                .map_err(|e| Error::config(format!("serviceurl {raw:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::config(format!(
                    "serviceurl {raw:?} must be an http or https URL"
                )));
            }
            url
        }
        None => {
            let realm = params.require_string("realm")?;
            let raw = format!("https://{account}.blob.{realm}");
            url::Url::parse(&raw).map_err(|e| {
                Error::config(format!(
                    "accountname and realm give no valid URL ({raw}): {e}"
                ))
            })?
        }
    };
    let explicit = [
        "accountkey",
        "sastoken",
        "clientsecret",
        "federatedtokenfile",
    ]
    .iter()
    .any(|k| params.string(k).is_some());
    let mut b = if explicit {
        MicrosoftAzureBuilder::new()
    } else {
        // AZURE_* variables, then managed identity.
        MicrosoftAzureBuilder::from_env()
    };
    let skipverify = params.require_bool("skipverify")?;
    let timeouts = Timeouts::from_params(params)?;
    let requests = RequestCounter::default();
    b = b
        .with_http_connector(CountingConnector::new(requests.clone()))
        .with_account(account)
        .with_container_name(container)
        .with_endpoint(endpoint.as_str().trim_end_matches('/').to_owned())
        .with_allow_http(endpoint.scheme() == "http")
        .with_retry(timeouts.retry_config())
        .with_client_options(
            timeouts
                .client_options()
                .with_allow_invalid_certificates(skipverify)
                .with_allow_http(endpoint.scheme() == "http"),
        );
    let need = |name: &str, with: &str| {
        params
            .string(name)
            .ok_or_else(|| Error::config(format!("{with} needs {name:?} as well")))
    };
    let mut can_sign = true;
    if let Some(key) = params.string("accountkey") {
        b = b.with_access_key(key);
    } else if let Some(sas) = params.string("sastoken") {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect();
        if !pairs.iter().any(|(k, _)| k == "sig") {
            return Err(Error::config(
                "sastoken has no \"sig\" field; paste the whole token (sv=…&sig=…)",
            ));
        }
        b = b.with_sas_authorization(pairs);
        can_sign = false;
    } else if let Some(secret) = params.string("clientsecret") {
        b = b.with_client_secret_authorization(
            need("clientid", "clientsecret")?,
            secret,
            need("tenantid", "clientsecret")?,
        );
    } else if let Some(file) = params.string("federatedtokenfile") {
        b = b
            .with_federated_token_file(file)
            .with_client_id(need("clientid", "federatedtokenfile")?)
            .with_tenant_id(need("tenantid", "federatedtokenfile")?);
    }
    let client = Arc::new(
        b.build()
            .map_err(|e| Error::config(format!("cannot build the Azure client: {e}")))?,
    );
    let backend = AzureBackend {
        store: Arc::clone(&client) as Arc<dyn ObjectStore>,
        client,
        requests,
        part_size: usize::try_from(chunk)
            .map_err(|_| Error::config("chunksize does not fit in memory"))?,
        can_sign,
    };
    ObjectDriver::new(backend, params.require_string("rootdirectory")?)
}

#[async_trait]
impl Backend for AzureBackend {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    fn multipart(&self) -> Option<&dyn MultipartStore> {
        Some(self.client.as_ref())
    }

    fn pages(&self) -> Option<&dyn object_store::list::PaginatedListStore> {
        Some(self.client.as_ref())
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_redirect(self.can_sign)
            .with_create_if_absent(true)
    }

    async fn signed_url(
        &self,
        key: &Path,
        method: RedirectMethod,
        expires: Duration,
    ) -> Result<Option<url::Url>> {
        if !self.can_sign {
            return Ok(None);
        }
        // A read SAS serves GET and HEAD alike.
        let _ = method;
        self.client
            .signed_url(object_store::signer::Method::GET, key, expires)
            .await
            .map(Some)
            .map_err(|e| map_err(e, key))
    }
}
