//! The one error of building test images: every step names its input.

use std::io;
use std::path::PathBuf;

/// Errors of writing test images (layers, layouts, archives).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("add {entry} to a layer")]
    Tar {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("compress a layer")]
    Compress(#[source] io::Error),
    #[error("chown {entry}: the layer has no such entry")]
    NoEntry { entry: String },
    #[error("{layout} has no tag {tag}")]
    NoTag { layout: PathBuf, tag: String },
    #[error("{blob} in {layout}: {problem}")]
    Blob {
        layout: PathBuf,
        blob: String,
        problem: String,
    },
}
