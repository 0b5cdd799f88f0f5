//! The state: where everything lives, the lock, container records, their logs.

pub mod clock;
pub mod log;
mod store;

pub use store::{
    AttachmentState, ContainerRecord, ContainerState, ProcessRef, Scan, StateError, Status, Store,
    StoreLock, process_start_time,
};
