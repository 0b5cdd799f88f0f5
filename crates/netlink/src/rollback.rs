//! [`Rollback`]: undo the completed steps of a failed operation.
//!
//! It replaces Go's `success := false; defer func() { if !success { ... } }()`: each step of
//! an ADD registers its undo right after it succeeds; `commit` at the end disarms everything;
//! any early return (`?`) or panic drops the `Rollback`, which undoes the steps in reverse.

use std::error::Error;
use std::fmt::Write as _;

/// What an undo step returns on failure.
pub type UndoError = Box<dyn Error + Send + Sync + 'static>;

type Undo<'a> = Box<dyn FnOnce() -> Result<(), UndoError> + 'a>;

/// A stack of undo steps, run in reverse order on drop unless committed.
///
/// ```
/// # use berth_netlink::Rollback;
/// let mut log = Vec::new();
/// {
///     let mut rb = Rollback::new();
///     rb.push("step one", || { log.push("undo one"); Ok::<(), std::io::Error>(()) });
///     // an early return here would undo step one
///     rb.commit();
/// }
/// assert!(log.is_empty());
/// ```
#[must_use = "dropping a Rollback right away undoes nothing useful; keep it until commit()"]
#[derive(Default)]
pub struct Rollback<'a> {
    steps: Vec<(String, Undo<'a>)>,
}

impl<'a> Rollback<'a> {
    pub fn new() -> Rollback<'a> {
        Rollback { steps: Vec::new() }
    }

    /// Registers the undo of a step that just succeeded. `what` describes the undo, e.g.
    /// `"delete veth h-3f2a"`; it prefixes the report if the undo fails.
    pub fn push<E, F>(&mut self, what: impl Into<String>, undo: F)
    where
        E: Into<UndoError>,
        F: FnOnce() -> Result<(), E> + 'a,
    {
        self.steps
            .push((what.into(), Box::new(move || undo().map_err(Into::into))));
    }

    /// The number of registered steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Success: forget every undo step.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Undoes now, in reverse order, and returns the failures (`what`, error) instead of
    /// printing them, for callers that want to attach them to their own error.
    pub fn rollback(mut self) -> Vec<(String, UndoError)> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> Vec<(String, UndoError)> {
        let mut failures = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(err) = undo() {
                failures.push((what, err));
            }
        }
        failures
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        for (what, err) in self.undo_all() {
            // stderr, never stdout: in a plugin stdout is the protocol.
            eprintln!("berth: rollback: {what}: {}", error_chain(err.as_ref()));
        }
    }
}

impl std::fmt::Debug for Rollback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(what, _)| what))
            .finish()
    }
}

/// `outer: inner: innermost`, on one line.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io;

    #[test]
    fn drop_undoes_in_reverse_order() {
        let log = RefCell::new(Vec::new());
        {
            let mut rb = Rollback::new();
            for step in 1..=3 {
                let log = &log;
                rb.push(format!("undo {step}"), move || {
                    log.borrow_mut().push(step);
                    Ok::<(), io::Error>(())
                });
            }
            assert_eq!(rb.len(), 3);
        }
        assert_eq!(*log.borrow(), vec![3, 2, 1]);
    }

    #[test]
    fn commit_disarms() {
        let ran = RefCell::new(false);
        let mut rb = Rollback::new();
        rb.push("undo", || {
            *ran.borrow_mut() = true;
            Ok::<(), io::Error>(())
        });
        rb.commit();
        assert!(!*ran.borrow());
    }

    #[test]
    fn failures_do_not_stop_later_undos_and_are_reported() {
        let log = RefCell::new(Vec::new());
        let mut rb = Rollback::new();
        rb.push("first", || {
            log.borrow_mut().push("first");
            Ok::<(), io::Error>(())
        });
        rb.push("second", || {
            log.borrow_mut().push("second");
            Err(io::Error::other("boom"))
        });
        let failures = rb.rollback();
        assert_eq!(*log.borrow(), vec!["second", "first"]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, "second");
        assert_eq!(failures[0].1.to_string(), "boom");
    }

    #[test]
    fn undo_runs_on_panic() {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rb = Rollback::new();
            rb.push("undo", || {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), io::Error>(())
            });
            panic!("step two failed");
        }));
        assert!(result.is_err());
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let err = Outer(io::Error::other("inner"));
        assert_eq!(error_chain(&err), "outer: inner");
    }
}
