//! Running the firewall binaries: find them, feed them a batch on stdin, capture the output.
//!
//! A child process inherits the network namespace of the thread that spawns it, so every
//! command here acts on the calling thread's namespace.

use std::env;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

/// Searched after `PATH`: runtimes sometimes hand plugins a `PATH` without the sbin
/// directories, where iptables and nft live.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Errors of the `runner` module.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("spawn `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        /// Non-empty lines of stderr joined with "; ", plus the offending input line when the
        /// tool only gave its number.
        stderr: String,
    },
}

impl RunError {
    /// The tool ran and reported that an object does not exist (ENOENT): for `nft list`
    /// a missing table or chain.
    pub fn is_enoent(&self) -> bool {
        matches!(self, RunError::Failed { stderr, .. } if stderr.contains("No such file or directory"))
    }
}

/// An executable found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    path: PathBuf,
}

impl Program {
    /// Looks `name` up in `PATH`, then in the usual sbin/bin directories.
    pub fn find(name: &str) -> Option<Program> {
        let path_var = env::var_os("PATH").unwrap_or_default();
        env::split_paths(&path_var)
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
            .map(|path| Program { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the program with `args`, writing `stdin` to it, and returns its stdout. A non-zero
    /// exit is [`RunError::Failed`].
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, RunError> {
        let command = Shown(self, args).to_string();
        let mut child = Command::new(&self.path)
            .args(args)
            // Messages are matched (`is_enoent`) and shown to users: keep them unlocalized.
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                command: command.clone(),
                source,
            })?;
        // Write from a helper thread while this one drains stdout/stderr, so neither side
        // can block on a full pipe. The helper only writes to a pipe: its namespace does not
        // matter (the child was already spawned from this thread).
        let pipe = child.stdin.take();
        let output = thread::scope(|scope| {
            if let (Some(mut pipe), Some(input)) = (pipe, stdin) {
                scope.spawn(move || {
                    // A tool that exits early closes the pipe (EPIPE); its exit status and
                    // stderr then tell what went wrong, so the write error adds nothing.
                    let _ = pipe.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|source| RunError::Wait {
            command: command.clone(),
            source,
        })?;
        if !output.status.success() {
            return Err(RunError::Failed {
                command,
                status: output.status,
                stderr: summarize_stderr(&String::from_utf8_lossy(&output.stderr), stdin),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.display().fmt(f)
    }
}

/// `program arg…` for messages.
struct Shown<'a>(&'a Program, &'a [&'a str]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        for arg in self.1 {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One line out of a tool's stderr: nft's caret lines go, and for legacy iptables-restore,
/// which says only "line N failed", the input line is appended.
fn summarize_stderr(stderr: &str, stdin: Option<&str>) -> String {
    let mut summary = String::new();
    let lines = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| matches!(c, '^' | '~' | ' ')));
    for line in lines {
        if !summary.is_empty() {
            // "tool: \nline 2: …" reads as one sentence; separate lines are clauses.
            summary.push_str(if summary.ends_with(':') { " " } else { "; " });
        }
        summary.push_str(line);
    }
    if summary.is_empty() {
        summary.push_str("(no message)");
    }
    if let (Some(n), Some(input)) = (failed_line(stderr), stdin) {
        if let Some(text) = n.checked_sub(1).and_then(|i| input.lines().nth(i)) {
            summary.push_str(&format!(" (line {n}: {text})"));
        }
    }
    summary
}

/// N from legacy iptables-restore's "…: line N failed".
fn failed_line(stderr: &str) -> Option<usize> {
    let before = stderr.find(" failed")?;
    let head = &stderr[..before];
    let n = head.rsplit_once("line ")?.1;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_line_numbers_show_the_line() {
        let input = "*nat\n-A FOO -j BAR\nCOMMIT\n";
        assert_eq!(
            summarize_stderr("iptables-restore: line 2 failed\n", Some(input)),
            "iptables-restore: line 2 failed (line 2: -A FOO -j BAR)"
        );
        // iptables-nft-restore already names the line's content.
        let nft = "iptables-nft-restore v1.8.9 (nf_tables): \nline 2: CHAIN_DEL failed (Device or resource busy): chain X\n";
        assert_eq!(
            summarize_stderr(nft, Some(input)),
            "iptables-nft-restore v1.8.9 (nf_tables): line 2: CHAIN_DEL failed (Device or resource busy): chain X"
        );
    }

    #[test]
    fn nft_carets_are_dropped() {
        let err = "Error: No such file or directory\nlist chain inet berth postrouting\n                ^^^^^\n";
        assert_eq!(
            summarize_stderr(err, None),
            "Error: No such file or directory; list chain inet berth postrouting"
        );
    }

    #[test]
    fn runs_with_stdin_and_reports_failures() {
        let cat = Program::find("cat").expect("cat");
        assert_eq!(cat.run(&[], Some("hello\n")).unwrap(), "hello\n");
        let sh = Program::find("sh").expect("sh");
        let err = sh
            .run(
                &["-c", "echo 'No such file or directory' >&2; exit 3"],
                None,
            )
            .unwrap_err();
        assert!(err.is_enoent(), "{err}");
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert!(Program::find("surely-not-a-berth-binary").is_none());
    }
}
