//! Reading committed objects: opening a regular file and streaming it in
//! chunks, each read on a blocking thread while the caller consumes the
//! chunk before it.

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
    file: File,
    /// Bytes still to read.
    remaining: u64,
    full: PathBuf,
}

impl ReadState {
    /// Reads the next chunk (empty when nothing remains).
    fn read_chunk(&mut self) -> Result<Bytes> {
        let want = self.remaining.min(READ_CHUNK as u64);
        if want == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = Vec::with_capacity(want as usize);
        (&self.file)
            .take(want)
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

/// A reader stream between chunks: the next chunk is read on a blocking
/// thread while the caller sends the one before it (to a socket, say), so
/// the copy out of the page cache overlaps with the caller's work. At most
/// one read is in flight: a stream holds two chunks at most.
struct Ahead {
    /// The chunk [`open`] read, yielded first.
    first: Option<Bytes>,
    /// The state between reads; `None` while a read is in flight or after
    /// the stream ended or failed.
    idle: Option<ReadState>,
    /// The read in flight.
    next: Option<tokio::task::JoinHandle<(Result<Bytes>, ReadState)>>,
}

impl Ahead {
    /// Starts reading the next chunk, unless nothing remains.
    fn read_next(&mut self) {
        let Some(mut state) = self.idle.take() else {
            return;
        };
        if state.remaining == 0 {
            return;
        }
        self.next = Some(tokio::task::spawn_blocking(move || {
            let chunk = state.read_chunk();
            (chunk, state)
        }));
    }
}

async fn next_chunk(mut a: Ahead) -> Option<(Result<Bytes>, Ahead)> {
    let chunk = match a.first.take() {
        Some(first) => Ok(first),
        None => match a.next.take()?.await {
            Ok((chunk, state)) => {
                a.idle = Some(state);
                chunk
            }
            // The state went down with the task: end after reporting.
            Err(e) => Err(Error::backend(e)),
        },
    };
    match chunk {
        Ok(c) if c.is_empty() => None,
        Ok(c) => {
            a.read_next();
            Some((Ok(c), a))
        }
        Err(e) => {
            a.idle = None;
            Some((Err(e), a))
        }
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
/// the first chunk already (on the blocking thread that opens it); the
/// state for the rest with that chunk.
///
/// Errors: `PathNotFound` when nothing (or a directory) is at `path`,
/// `InvalidOffset` when `offset` lies past the end.
pub(crate) fn open(l: &Layout, path: &StoragePath, offset: u64) -> Result<(ReadState, Bytes)> {
    let full = l.committed(path);
    let (mut file, len) = open_regular(&full, path)?;
    if offset > len {
        return Err(Error::invalid_offset(path, offset));
    }
    if offset > 0 {
        file.seek(SeekFrom::Start(offset)).at("seek", &full)?;
    }
    let mut state = ReadState {
        file,
        remaining: len - offset,
        full,
    };
    let first = state.read_chunk()?;
    Ok((state, first))
}

/// The stream of what [`open`] opened: its first chunk, then the rest,
/// each read while the one before is consumed.
pub(crate) fn stream((state, first): (ReadState, Bytes)) -> ByteStream {
    let a = Ahead {
        first: Some(first),
        idle: Some(state),
        next: None,
    };
    Box::pin(futures_util::stream::unfold(a, next_chunk))
}
