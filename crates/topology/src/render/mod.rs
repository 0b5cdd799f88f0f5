//! Rendering a topology: back to a containerlab file ([`save`]), and as the sources of
//! pictures ([`dot`], [`mermaid`]) and data ([`json`]).

mod emit;
mod graph;
mod save;

pub use graph::{dot, json, mermaid};
pub use save::{NodeState, RuntimeState, save};
