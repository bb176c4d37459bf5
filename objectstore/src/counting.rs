//! The HTTP connector the cloud drivers build their `object_store` clients
//! with: `object_store`'s reqwest client, with every request counted.

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use regstore_core::RequestCounter;

/// Builds `object_store`'s usual reqwest client (same [`ClientOptions`]:
/// timeouts, proxies, TLS settings) and passes every request it sends —
/// each attempt, retries and credential fetches included — through
/// `counter` (counted, and delayed when a delay is set).
#[derive(Debug)]
pub struct CountingConnector {
    counter: RequestCounter,
}

impl CountingConnector {
    /// A connector counting into `counter`.
    pub fn new(counter: RequestCounter) -> Self {
        CountingConnector { counter }
    }
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting {
            inner,
            counter: self.counter.clone(),
        }))
    }
}

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    counter: RequestCounter,
}

#[async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.counter.request().await;
        self.inner.execute(req).await
    }
}
