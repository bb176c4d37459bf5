//! Reading committed objects: opening a regular file and streaming it in
//! chunks, each read on a blocking thread.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use regstore_core::{ByteStream, Error, Result, StoragePath};

use crate::fsio::{At, is_missing};
use crate::layout::Layout;

/// Largest chunk a reader stream yields.
const READ_CHUNK: usize = 1 << 20;

/// State of a reader stream.
pub(crate) struct ReadState {
    /// `None` once the stream failed.
    file: Option<File>,
    /// A chunk read ahead, yielded next.
    pending: Option<Bytes>,
    /// Bytes still to read.
    remaining: u64,
    full: PathBuf,
}

impl ReadState {
    /// Reads the next chunk (empty when nothing remains).
    fn read_chunk(&mut self) -> Result<Bytes> {
        let Some(file) = &self.file else {
            return Ok(Bytes::new());
        };
        let want = self.remaining.min(READ_CHUNK as u64);
        if want == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want)
            .read_to_end(&mut buf)
            .at("read", &self.full)?;
        if buf.is_empty() {
            return Err(Error::backend(format!(
                "{} ended {} bytes early (truncated by someone else?)",
                self.full.display(),
                self.remaining
            )));
        }
        self.remaining -= buf.len() as u64;
        Ok(Bytes::from(buf))
    }
}

async fn next_chunk(mut state: ReadState) -> Option<(Result<Bytes>, ReadState)> {
    if let Some(chunk) = state.pending.take().filter(|c| !c.is_empty()) {
        return Some((Ok(chunk), state));
    }
    if state.remaining == 0 || state.file.is_none() {
        return None;
    }
    let joined = tokio::task::spawn_blocking(move || {
        let chunk = state.read_chunk();
        (chunk, state)
    })
    .await;
    match joined {
        Ok((Ok(chunk), state)) => Some((Ok(chunk), state)),
        Ok((Err(e), mut state)) => {
            state.file = None;
            Some((Err(e), state))
        }
        // The state went down with the task: end after reporting.
        Err(e) => Some((
            Err(Error::backend(e)),
            ReadState {
                file: None,
                pending: None,
                remaining: 0,
                full: PathBuf::new(),
            },
        )),
    }
}

/// Opens `full` for reading if it is a regular file; its length with it.
pub(crate) fn open_regular(full: &Path, path: &StoragePath) -> Result<(File, u64)> {
    let file = match File::open(full) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Err(Error::not_found(path)),
        Err(e) => return Err(e).at("open", full).map_err(Error::from),
    };
    let meta = file.metadata().at("stat", full)?;
    if !meta.is_file() {
        return Err(Error::not_found(path));
    }
    Ok((file, meta.len()))
}

/// Opens the committed file at `path` for a stream from `offset` and reads
/// the first chunk already (on the blocking thread that opens it).
///
/// Errors: `PathNotFound` when nothing (or a directory) is at `path`,
/// `InvalidOffset` when `offset` lies past the end.
pub(crate) fn open(l: &Layout, path: &StoragePath, offset: u64) -> Result<ReadState> {
    let full = l.committed(path);
    let (mut file, len) = open_regular(&full, path)?;
    if offset > len {
        return Err(Error::invalid_offset(path, offset));
    }
    if offset > 0 {
        file.seek(SeekFrom::Start(offset)).at("seek", &full)?;
    }
    let mut state = ReadState {
        file: Some(file),
        pending: None,
        remaining: len - offset,
        full,
    };
    let first = state.read_chunk()?;
    state.pending = Some(first);
    Ok(state)
}

/// The stream of what [`open`] opened: the chunk read ahead, then the rest.
pub(crate) fn stream(state: ReadState) -> ByteStream {
    Box::pin(futures_util::stream::unfold(state, next_chunk))
}
