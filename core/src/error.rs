//! The one error type of the driver contract.
//!
//! Upper layers match on [`Error::PathNotFound`], [`Error::InvalidPath`],
//! [`Error::InvalidOffset`] and [`Error::Unsupported`]; a backend that
//! refuses or lacks credentials is [`Error::Credentials`] (what to change is
//! the configuration), and everything else a backend can do wrong is
//! [`Error::Backend`] (unreachable, failing, slow: worth retrying). Every value names the driver it
//! came from: driver code builds errors with the constructors below (which
//! leave the name empty) and the wrapper in [`crate::Driver`] fills the name
//! in, so a driver cannot forget it.

use std::fmt;

/// Boxed error of a backend client (HTTP, I/O, SDK), kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of every driver operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name of the driver an error came from (`"s3"`, `"filesystem"`, …).
///
/// Empty until the wrapper attaches it; displayed as `<unnamed driver>` then.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct DriverName(pub &'static str);

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<unnamed driver>")
        } else {
            f.write_str(self.0)
        }
    }
}

impl fmt::Debug for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// The kind of an [`Error`], without its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::PathNotFound`].
    PathNotFound,
    /// [`Error::InvalidPath`].
    InvalidPath,
    /// [`Error::InvalidOffset`].
    InvalidOffset,
    /// [`Error::Unsupported`].
    Unsupported,
    /// [`Error::Busy`].
    Busy,
    /// [`Error::Config`].
    Config,
    /// [`Error::Credentials`].
    Credentials,
    /// [`Error::Backend`].
    Backend,
}

impl ErrorKind {
    /// A short stable snake-case name (`path_not_found`), for metrics and
    /// test reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PathNotFound => "path_not_found",
            ErrorKind::InvalidPath => "invalid_path",
            ErrorKind::InvalidOffset => "invalid_offset",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Busy => "busy",
            ErrorKind::Config => "config",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong in a storage operation or while building a driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing is stored at `path` (or, for `list`, no directory is there).
    #[error("{driver}: path not found: {path}")]
    PathNotFound {
        /// Driver that answered.
        driver: DriverName,
        /// The path as the caller gave it.
        path: String,
    },
    /// `path` is not a valid storage path for the operation.
    #[error("{driver}: invalid path {path:?}: {reason}")]
    InvalidPath {
        /// Driver that answered.
        driver: DriverName,
        /// The path as the caller gave it.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `offset` lies beyond the end of the object at `path`.
    #[error("{driver}: invalid offset {offset} for {path}")]
    InvalidOffset {
        /// Driver that answered.
        driver: DriverName,
        /// The path read from.
        path: String,
        /// The offset asked for.
        offset: u64,
    },
    /// The driver does not support the operation (or this use of it).
    #[error("{driver}: unsupported: {what}")]
    Unsupported {
        /// Driver that answered.
        driver: DriverName,
        /// What was asked for, in words a user understands.
        what: String,
    },
    /// Another writer of `path` is open — in this process or in another
    /// that shares the backend — so no second one can be opened until it is
    /// closed, committed or cancelled (or its process ends). Retryable.
    #[error("{driver}: {path} is being written by another writer")]
    Busy {
        /// Driver that answered.
        driver: DriverName,
        /// The path whose writer is open.
        path: String,
    },
    /// The driver (or middleware) cannot be built from the parameters given.
    #[error("{driver}: {message}")]
    Config {
        /// Driver or middleware being configured.
        driver: DriverName,
        /// What to change, e.g. `unknown parameter "bucktet" (did you mean "bucket"?)`.
        message: String,
    },
    /// The backend refused the credentials (HTTP 401/403, a refused login)
    /// or none could be found. Retrying does not help; the configuration
    /// must change.
    #[error("{driver}: credentials refused or missing: {message}")]
    Credentials {
        /// Driver that answered.
        driver: DriverName,
        /// What was refused or is missing, each cause named once.
        message: String,
    },
    /// The backend failed: I/O, network, a server error, a timeout.
    ///
    /// Its message names the client error and each of its causes once
    /// ([`causes`]); so that a printer that walks `source()` (anyhow's
    /// `{:#}`) does not name them again, it has no `source()`: the client's
    /// error is [`Error::cause`].
    #[error("{driver}: {}", causes(cause.as_ref()))]
    Backend {
        /// Driver that answered.
        driver: DriverName,
        /// The backend client's error.
        cause: BoxError,
    },
}

/// `e` and its causes (`a: b: c`), each named once: a cause whose text the
/// message already holds (error types that print their source as part of
/// their own message, as object_store's and reqwest's do) is left out.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl Error {
    /// `PathNotFound` for `path`; the wrapper names the driver.
    pub fn not_found(path: impl fmt::Display) -> Self {
        Error::PathNotFound {
            driver: DriverName::default(),
            path: path.to_string(),
        }
    }

    /// `InvalidPath` for `path` breaking `reason`.
    pub fn invalid_path(path: impl Into<String>, reason: &'static str) -> Self {
        Error::InvalidPath {
            driver: DriverName::default(),
            path: path.into(),
            reason,
        }
    }

    /// `InvalidOffset` for a read of `path` at `offset`.
    pub fn invalid_offset(path: impl fmt::Display, offset: u64) -> Self {
        Error::InvalidOffset {
            driver: DriverName::default(),
            path: path.to_string(),
            offset,
        }
    }

    /// `Unsupported`, describing what was asked for.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported {
            driver: DriverName::default(),
            what: what.into(),
        }
    }

    /// `Busy` for `path`, whose writer is open elsewhere.
    pub fn busy(path: impl fmt::Display) -> Self {
        Error::Busy {
            driver: DriverName::default(),
            path: path.to_string(),
        }
    }

    /// `Config` error with a message that says what to change.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            driver: DriverName::default(),
            message: message.into(),
        }
    }

    /// `Backend` error wrapping the backend client's error.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            driver: DriverName::default(),
            cause: source.into(),
        }
    }

    /// `Credentials` error: what was refused or is missing, and what to
    /// change if it can be said.
    pub fn credentials(message: impl Into<String>) -> Self {
        Error::Credentials {
            driver: DriverName::default(),
            message: message.into(),
        }
    }

    /// `Credentials` error naming `e` and each of its causes once.
    pub fn credentials_from(e: &(dyn std::error::Error + 'static)) -> Self {
        Error::credentials(causes(e))
    }

    /// The backend client's error behind an [`Error::Backend`].
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Backend { cause, .. } => Some(cause.as_ref()),
            _ => None,
        }
    }

    /// Whether the backend ran out of space: a `Backend` error with an I/O
    /// error of kind `StorageFull` (ENOSPC) or `QuotaExceeded` (EDQUOT)
    /// among its causes. Not worth retrying until space is freed; what the
    /// failed operation wrote is taken back as for any other failure.
    pub fn is_storage_full(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self {
            Error::Backend { cause, .. } => Some(cause.as_ref()),
            _ => None,
        };
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                return true;
            }
            next = e.source();
        }
        false
    }

    /// The driver this error names (empty before the wrapper saw it).
    pub fn driver(&self) -> &'static str {
        match self {
            Error::PathNotFound { driver, .. }
            | Error::InvalidPath { driver, .. }
            | Error::InvalidOffset { driver, .. }
            | Error::Unsupported { driver, .. }
            | Error::Busy { driver, .. }
            | Error::Config { driver, .. }
            | Error::Credentials { driver, .. }
            | Error::Backend { driver, .. } => driver.0,
        }
    }

    /// Attaches `name` unless a driver is already named (an error that passed
    /// through middleware keeps the name of the driver that raised it).
    pub fn named(mut self, name: &'static str) -> Self {
        let slot = match &mut self {
            Error::PathNotFound { driver, .. }
            | Error::InvalidPath { driver, .. }
            | Error::InvalidOffset { driver, .. }
            | Error::Unsupported { driver, .. }
            | Error::Busy { driver, .. }
            | Error::Config { driver, .. }
            | Error::Credentials { driver, .. }
            | Error::Backend { driver, .. } => driver,
        };
        if slot.0.is_empty() {
            slot.0 = name;
        }
        self
    }

    /// True for [`Error::Busy`].
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. })
    }

    /// True for [`Error::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// True for [`Error::Credentials`].
    pub fn is_credentials(&self) -> bool {
        matches!(self, Error::Credentials { .. })
    }

    /// True for [`Error::PathNotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::PathNotFound { .. })
    }

    /// Which kind of error this is (what callers branch on; its
    /// [`ErrorKind::as_str`] names it in metrics and reports).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::PathNotFound { .. } => ErrorKind::PathNotFound,
            Error::InvalidPath { .. } => ErrorKind::InvalidPath,
            Error::InvalidOffset { .. } => ErrorKind::InvalidOffset,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Config { .. } => ErrorKind::Config,
            Error::Credentials { .. } => ErrorKind::Credentials,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::backend(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_is_found_among_the_causes() {
        use std::io::{Error as Io, ErrorKind as K};
        #[derive(Debug, thiserror::Error)]
        #[error("writing /a")]
        struct Wrapped(#[source] Io);
        assert!(Error::backend(Io::from(K::StorageFull)).is_storage_full());
        assert!(Error::backend(Io::from(K::QuotaExceeded)).is_storage_full());
        assert!(Error::backend(Wrapped(Io::from(K::StorageFull))).is_storage_full());
        assert!(!Error::backend(Io::from(K::TimedOut)).is_storage_full());
        assert!(!Error::not_found("/a").is_storage_full());
    }

    #[test]
    fn named_fills_an_empty_name_only_once() {
        let e = Error::not_found("/a").named("s3").named("cloudfront");
        assert_eq!(e.driver(), "s3");
        assert_eq!(e.to_string(), "s3: path not found: /a");
    }

    /// An error that prints its source as part of its own message, as
    /// object_store's and reqwest's do.
    #[derive(Debug)]
    struct Wrapping(&'static str, Option<Box<Wrapping>>);

    impl fmt::Display for Wrapping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.1 {
                Some(inner) => write!(f, "{}: {inner}", self.0),
                None => f.write_str(self.0),
            }
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn token_failure() -> Wrapping {
        let io = Wrapping("connection refused", None);
        let send = Wrapping("error sending request", Some(Box::new(io)));
        let retry = Wrapping("Error after 3 retries", Some(Box::new(send)));
        Wrapping("Error performing token request", Some(Box::new(retry)))
    }

    /// What anyhow's `{:#}` prints: the error, then every `source()`.
    fn walked(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    #[test]
    fn a_backend_error_names_each_cause_once() {
        let expected = "gcs: Error performing token request: Error after 3 retries: \
                        error sending request: connection refused";
        let e = Error::backend(token_failure()).named("gcs");
        assert_eq!(e.to_string(), expected);
        assert_eq!(walked(&e), expected, "a chain printer adds nothing");
        assert!(e.cause().is_some());
        let plain = Wrapping("outer", Some(Box::new(Wrapping("inner", None))));
        assert_eq!(causes(&std::io::Error::other("x")), "x");
        assert_eq!(causes(&plain), "outer: inner");
    }

    #[test]
    fn credentials_are_their_own_kind() {
        let e = Error::credentials_from(&token_failure()).named("gcs");
        assert_eq!(e.kind(), ErrorKind::Credentials);
        assert!(e.is_credentials());
        assert_eq!(e.kind().as_str(), "credentials");
        assert_eq!(
            e.to_string(),
            "gcs: credentials refused or missing: Error performing token request: \
             Error after 3 retries: error sending request: connection refused"
        );
        assert_eq!(Error::backend("x").kind(), ErrorKind::Backend);
    }

    #[test]
    fn unnamed_error_says_so() {
        assert_eq!(
            Error::unsupported("x").to_string(),
            "<unnamed driver>: unsupported: x"
        );
    }
}
