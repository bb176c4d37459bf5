//! Resumable writers: full parts to a multipart upload on the final key, the
//! rest in a state object between sessions (see the crate docs).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use regstore_core::{Error, FileWriter, Result, StoragePath};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Part};
use crate::{Inner, map_err};

/// First bytes of a state object; the version is part of it.
const MAGIC: &[u8; 8] = b"RSWRITE1";

/// What a closed writer leaves behind, besides its tail bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// Multipart upload on the final key, once a first part was uploaded.
    pub(crate) upload: Option<String>,
    /// Uploaded parts, in order.
    pub(crate) parts: Vec<Part>,
    /// Bytes after the parts, stored after the header.
    #[serde(skip)]
    pub(crate) tail: Bytes,
}

impl State {
    /// `MAGIC`, the header's length (u32 LE), the JSON header, the tail.
    fn encode(&self, tail: &[Bytes]) -> Result<PutPayload> {
        let header = serde_json::to_vec(self).map_err(Error::backend)?;
        let len = u32::try_from(header.len()).map_err(Error::backend)?;
        let mut head = BytesMut::with_capacity(MAGIC.len() + 4 + header.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&header);
        Ok(std::iter::once(head.freeze())
            .chain(tail.iter().cloned())
            .collect())
    }

    fn decode(key: &Path, mut raw: Bytes) -> Result<State> {
        let corrupt = |why: &str| {
            Error::backend(format!(
                "writer state {key} is corrupt: {why}; delete the path to discard it"
            ))
        };
        if raw.len() < MAGIC.len() + 4 || &raw[..MAGIC.len()] != MAGIC {
            return Err(corrupt("unknown format"));
        }
        let _ = raw.split_to(MAGIC.len());
        let len_bytes: [u8; 4] = raw.split_to(4)[..]
            .try_into()
            .map_err(|_| corrupt("short header"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if raw.len() < len {
            return Err(corrupt("header longer than the object"));
        }
        let header = raw.split_to(len);
        let mut state: State =
            serde_json::from_slice(&header).map_err(|e| corrupt(&e.to_string()))?;
        if state.upload.is_none() && !state.parts.is_empty() {
            return Err(corrupt("parts without an upload"));
        }
        state.tail = raw;
        Ok(state)
    }
}

/// Reads the state at `state_key`; `None` when there is none.
pub(crate) async fn load_state<B: Backend>(
    inner: &Inner<B>,
    state_key: &Path,
) -> Result<Option<State>> {
    let got = match inner.store().get(state_key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(map_err(e, state_key)),
    };
    let raw = got.bytes().await.map_err(|e| map_err(e, state_key))?;
    State::decode(state_key, raw).map(Some)
}

/// A writer on an object store.
pub(crate) struct ObjectWriter<B> {
    inner: Arc<Inner<B>>,
    key: Path,
    state_key: Path,
    upload: Option<String>,
    parts: Vec<Part>,
    /// Bytes after the parts, not yet uploaded (shorter than a part between
    /// calls).
    tail: Vec<Bytes>,
    tail_len: usize,
    /// Whether a state object may exist and must be removed at the end.
    has_state: bool,
    /// Opened with `append`: the state object still describes the writer
    /// as it was resumed (this session's parts come after `resumed_parts`).
    resumed: bool,
    resumed_parts: usize,
    resumed_with_upload: bool,
}

impl<B: Backend> fmt::Debug for ObjectWriter<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key.as_ref())
            .field("upload", &self.upload)
            .field("parts", &self.parts.len())
            .field("tail_len", &self.tail_len)
            .finish()
    }
}

impl<B: Backend> ObjectWriter<B> {
    pub(crate) async fn open(
        inner: Arc<Inner<B>>,
        path: &StoragePath,
        append: bool,
    ) -> Result<Self> {
        let key = inner.key(path);
        let state_key = inner.state_key(path);
        let previous = load_state(&inner, &state_key).await?;
        let mut w = ObjectWriter {
            inner,
            key,
            state_key,
            upload: None,
            parts: Vec::new(),
            tail: Vec::new(),
            tail_len: 0,
            has_state: previous.is_some(),
            resumed: append,
            resumed_parts: 0,
            resumed_with_upload: false,
        };
        match (previous, append) {
            (Some(state), true) => {
                w.upload = state.upload;
                w.parts = state.parts;
                w.resumed_parts = w.parts.len();
                w.resumed_with_upload = w.upload.is_some();
                w.tail_len = state.tail.len();
                if !state.tail.is_empty() {
                    w.tail.push(state.tail);
                }
            }
            (Some(state), false) => {
                // Starting afresh discards the unfinished writer.
                if let Some(upload) = &state.upload {
                    w.inner.backend.abort_upload(&w.key, upload).await?;
                }
            }
            (None, true) => match w.inner.head(&w.key).await? {
                None => return Err(Error::not_found(path)),
                Some(meta) if meta.size > 0 => {
                    return Err(Error::unsupported(format!(
                        "appending to the committed object {path} ({} bytes)",
                        meta.size
                    )));
                }
                Some(_) => {}
            },
            (None, false) => {}
        }
        Ok(w)
    }

    fn committed_len(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Takes the first `n` tail bytes (without copying them).
    fn take_front(&mut self, n: usize) -> PutPayload {
        let mut taken = Vec::new();
        let mut need = n;
        while need > 0 {
            let Some(first) = self.tail.first_mut() else {
                break;
            };
            if first.len() <= need {
                need -= first.len();
                taken.push(self.tail.remove(0));
            } else {
                taken.push(first.split_to(need));
                need = 0;
            }
        }
        self.tail_len -= n - need;
        taken.into_iter().collect()
    }

    async fn upload_full_parts(&mut self) -> Result<()> {
        let part_size = self.inner.backend.part_size();
        while self.tail_len >= part_size {
            let upload = match &self.upload {
                Some(u) => u.clone(),
                None => {
                    let u = self.inner.backend.create_upload(&self.key).await?;
                    self.upload = Some(u.clone());
                    u
                }
            };
            let offset = self.committed_len();
            let data = self.take_front(part_size);
            let id = self
                .inner
                .backend
                .upload_part(&self.key, &upload, self.parts.len(), offset, data)
                .await?;
            self.parts.push(Part {
                id,
                size: part_size as u64,
            });
        }
        Ok(())
    }

    /// Takes back what this session sent, leaving the state object (which
    /// only `close` writes) to describe the writer: a multipart upload this
    /// session started is aborted, parts it added past the resumed ones
    /// (and, after a failed commit, the last part) are discarded. A fresh
    /// writer is cancelled.
    async fn take_back(self: Box<Self>, also_last: bool) -> Result<()> {
        if !self.resumed {
            return self.cancel().await;
        }
        match &self.upload {
            Some(upload) if !self.resumed_with_upload => {
                self.inner.backend.abort_upload(&self.key, upload).await
            }
            Some(upload) => {
                let to = self.parts.len() + usize::from(also_last);
                if to > self.resumed_parts {
                    self.inner
                        .backend
                        .discard_parts(&self.key, upload, self.resumed_parts, to)
                        .await
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// After a failed `close` or `commit`: takes back the session (see
    /// [`ObjectWriter::take_back`]); the caller reports the first error.
    async fn take_back_after(self: Box<Self>, error: Error, also_last: bool) -> Result<()> {
        let key = self.key.clone();
        if let Err(e) = self.take_back(also_last).await {
            tracing::warn!(key = %key, error = %e, "cannot take back a failed writer session");
        }
        Err(error)
    }

    async fn remove_state(&self) -> Result<()> {
        if self.has_state {
            self.inner.delete_keys(vec![self.state_key.clone()]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<B: Backend> FileWriter for ObjectWriter<B> {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.tail_len += data.len();
        self.tail.push(data);
        self.upload_full_parts().await
    }

    fn size(&self) -> u64 {
        self.committed_len() + self.tail_len as u64
    }

    async fn close(self: Box<Self>) -> Result<()> {
        let state = State {
            upload: self.upload.clone(),
            parts: self.parts.clone(),
            tail: Bytes::new(),
        };
        let payload = state.encode(&self.tail)?;
        match self.inner.backend.put(&self.state_key, payload).await {
            Ok(()) => Ok(()),
            Err(e) => self.take_back_after(e, false).await,
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let total = self.size();
        let tail_len = self.tail_len;
        let last = self.take_front(tail_len);
        let published = match &self.upload {
            None => self.inner.backend.put(&self.key, last).await,
            Some(upload) => {
                self.inner
                    .backend
                    .complete_upload(&self.key, upload, &self.parts, last, total)
                    .await
            }
        };
        if let Err(e) = published {
            return self.take_back_after(e, true).await;
        }
        self.remove_state().await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        if let Some(upload) = &self.upload {
            self.inner.backend.abort_upload(&self.key, upload).await?;
        }
        self.remove_state().await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.take_back(false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_its_tail() {
        let state = State {
            upload: Some("up-1".into()),
            parts: vec![Part {
                id: "etag-1".into(),
                size: 5,
            }],
            tail: Bytes::new(),
        };
        let payload = state
            .encode(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")])
            .unwrap();
        let raw: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let back = State::decode(&Path::from("k"), Bytes::from(raw)).unwrap();
        assert_eq!(back.upload.as_deref(), Some("up-1"));
        assert_eq!(back.parts, state.parts);
        assert_eq!(&back.tail[..], b"abc");
    }

    #[test]
    fn a_foreign_object_is_not_taken_for_state() {
        let err =
            State::decode(&Path::from("k"), Bytes::from_static(b"{\"upload\":null}")).unwrap_err();
        assert!(
            err.to_string().contains("writer state k is corrupt"),
            "{err}"
        );
    }
}
