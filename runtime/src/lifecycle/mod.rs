//! What a container goes through: the request, creation, start, release.

pub mod container;
pub mod request;
