//! The state: where everything lives, the lock, container records, their logs.

pub mod clock;
pub mod log;
mod store;

pub use store::{
    AttachmentState, ContainerRecord, ContainerState, Scan, StateError, Status, Store, StoreLock,
};
