//! regstore-server: the `regstore` binary's library.
//!
//! Today it holds the configuration reader and the commands that work on a
//! configured backend (`drivers`, `conformance`). The OCI registry HTTP
//! server (`regstore serve`) is the next piece of work and lands here.

pub mod cli;
pub mod config;
