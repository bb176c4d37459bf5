//! The server's test helpers (`server/tests/common`, shared by path), and
//! the `regstore` binary as a child process, which only this crate has.

#![allow(dead_code, unused_imports)] // each test crate uses a different part

pub mod process;
#[path = "../../../server/tests/common/mod.rs"]
mod shared;

pub use process::*;
pub use shared::*;
