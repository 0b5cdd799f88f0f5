//! Rendering a topology: back to containerlab YAML, and as pictures' sources.
