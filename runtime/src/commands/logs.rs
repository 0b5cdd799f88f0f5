//! `berth logs [-f] [-t]`: a container's log (see [`crate::state::log`]) on the caller's
//! stdout and stderr.

use std::io;

use crate::state::log::{LogError, LogPrinter};
use crate::state::{StateError, Store};

/// Errors of `berth logs`.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// `berth logs [-f] [-t]`: prints a container's log to stdout and stderr; with `follow`,
/// until the container stopped and its monitor finished.
pub fn show(store: &Store, query: &str, follow: bool, timestamps: bool) -> Result<(), LogsError> {
    let record = store.find(query)?;
    let path = store.log_path(&record.id);
    let mut printer = LogPrinter::new(io::stdout().lock(), io::stderr().lock(), timestamps);
    printer.print_file(&path, follow, || {
        // Done once the record is gone (`--rm`) or nothing supervises a stopped container.
        !matches!(store.load_if_exists(&record.id), Ok(Some(r)) if r.is_active())
    })?;
    Ok(())
}
