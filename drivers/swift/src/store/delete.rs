//! Deleting many objects: through the bulk middleware, in requests of at
//! most [`BULK`] names, when the cluster advertises it; one by one
//! otherwise. Already gone is fine either way.

use object_store::path::Path;
use reqwest::{Method, StatusCode};

use super::{BULK, SwiftStore, from_core, generic, status_error};
use crate::client::escape;

impl SwiftStore {
    /// Deletes `names` with one bulk-delete request; already gone is fine.
    async fn bulk_delete(&self, names: &[Path]) -> object_store::Result<()> {
        let container = self.client.container().to_owned();
        let body: String = names
            .iter()
            .map(|n| format!("/{}/{}\n", escape(&container), escape(n.as_ref())))
            .collect();
        let resp = self
            .client
            .send_to(
                |s| format!("{}?bulk-delete", s.storage_url),
                Method::POST,
                |r| {
                    r.header("Content-Type", "text/plain")
                        .header("Accept", "application/json")
                        .body(body.clone())
                },
            )
            .await
            .map_err(|e| from_core(e, "bulk delete"))?;
        if !resp.status().is_success() {
            return Err(status_error(resp, "bulk delete", &container).await);
        }
        let bytes = resp.bytes().await.map_err(generic)?;
        let report: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| generic(format!("Swift bulk delete: not a JSON report: {e}")))?;
        let errors: Vec<String> = report["Errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| !e[1].as_str().is_some_and(|s| s.starts_with("404")))
            .map(|e| format!("{} {}", e[0], e[1]))
            .collect();
        let status = report["Response Status"].as_str().unwrap_or("");
        if !errors.is_empty() || !(status.starts_with('2') || status.starts_with("404")) {
            return Err(generic(format!(
                "Swift bulk delete: {status}: {}",
                errors.join("; ")
            )));
        }
        for n in names {
            self.recent.gone(n.as_ref());
        }
        Ok(())
    }

    /// Deletes `name` alone; already gone is fine.
    async fn delete_one(&self, name: &Path) -> object_store::Result<()> {
        let resp = self
            .client
            .send(Method::DELETE, Some(name.as_ref()), "", |r| r)
            .await
            .map_err(|e| from_core(e, name.as_ref()))?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            self.recent.gone(name.as_ref());
            return Ok(());
        }
        Err(status_error(resp, "delete", name.as_ref()).await)
    }

    pub(super) async fn delete_batch(&self, names: Vec<Path>) -> object_store::Result<Vec<Path>> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| from_core(e, "info"))?
            .clone();
        match info.bulk_delete {
            Some(max) if names.len() > 1 => {
                for chunk in names.chunks(max.clamp(1, BULK)) {
                    self.bulk_delete(chunk).await?;
                }
            }
            _ => {
                for n in &names {
                    self.delete_one(n).await?;
                }
            }
        }
        Ok(names)
    }
}
