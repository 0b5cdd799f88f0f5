//! The harness shared by the fuzz and crash-injection tests (see fuzz/README.md).

#![allow(dead_code)] // Each test binary uses a part.

pub mod catalog;
pub mod crash;
pub mod fuzzer;
pub mod mutate;
pub mod proc;
pub mod snapshot;
pub mod verdict;
pub mod world;
