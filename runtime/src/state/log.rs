//! The log of a container: `<root>/containers/<id>/ctr.log`, written by whoever supervises
//! it (the monitor of a detached container, or `berth run` in the foreground, which also
//! shows the output), appended to by every start, read by `berth logs [-f]` and
//! `berth attach`.
//!
//! The format is the CRI's (what kubelet and CRI-O write, so existing tools read it): one
//! record per line, `<RFC 3339 nanos> <stdout|stderr> <F|P> <bytes>`. `F` ends a line of the
//! container's output, `P` is a piece of a line that continues in the next record of the same
//! stream (output without a trailing newline is logged as soon as it arrives, not held
//! back). With `-t` the pty's output (both streams, with its `\r\n` line ends) is logged as
//! stdout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sandbox::process::Stream;
use crate::state::clock;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Appends records to a container's log.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
}

impl LogWriter {
    pub fn create(path: &Path) -> Result<LogWriter, LogError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Logs one chunk of output: a record per complete line, and one `P` record for a
    /// trailing piece without newline, in a single append (readers only take what is
    /// complete up to their last newline).
    pub fn write(&mut self, stream: Stream, chunk: &[u8]) -> Result<(), LogError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let stamp = clock::now_rfc3339_nanos();
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, tag, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], 'F', &rest[i + 1..]),
                None => (rest, 'P', &rest[rest.len()..]),
            };
            out.extend_from_slice(format!("{stamp} {} {tag} ", stream.as_str()).as_bytes());
            out.extend_from_slice(piece);
            out.push(b'\n');
            rest = next;
        }
        self.file.write_all(&out).map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub stream: Stream,
    /// `F`: the end of a line of output.
    pub full: bool,
    pub content: &'a [u8],
}

/// Parses one record (without its newline); `None` for a malformed line.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        timestamp,
        stream,
        full,
        content: parts.next().unwrap_or_default(),
    })
}

/// Prints a log to two sinks (the caller's stdout and stderr), optionally following it.
pub struct LogPrinter<O: Write, E: Write> {
    pub out: O,
    pub err: E,
    /// Prefix each output line with its timestamp.
    pub timestamps: bool,
    /// Whether each stream is at the start of a line (for the timestamp prefix).
    at_line_start: [bool; 2],
}

impl<O: Write, E: Write> LogPrinter<O, E> {
    pub fn new(out: O, err: E, timestamps: bool) -> LogPrinter<O, E> {
        LogPrinter {
            out,
            err,
            timestamps,
            at_line_start: [true, true],
        }
    }

    fn print(&mut self, record: &Record<'_>) -> io::Result<()> {
        let index = record.stream.index();
        let sink: &mut dyn Write = match record.stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        };
        if self.timestamps && self.at_line_start[index] {
            write!(sink, "{} ", record.timestamp)?;
        }
        sink.write_all(record.content)?;
        if record.full {
            sink.write_all(b"\n")?;
        }
        self.at_line_start[index] = record.full;
        Ok(())
    }

    /// Prints the log at `path` from the start; with `follow`, keeps printing what is
    /// appended until `done()` says the writer is gone (then prints the rest and returns).
    /// A missing log is an empty one.
    pub fn print_file(
        &mut self,
        path: &Path,
        follow: bool,
        mut done: impl FnMut() -> bool,
    ) -> Result<(), LogError> {
        let mut tail = LogTail::new(path, 0);
        loop {
            // Decide before reading: whatever was written before the writer finished is
            // read in this round, so nothing is lost between the check and the read.
            let finished = !follow || done();
            if !tail.print_new(self)? || finished {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The part of a log not printed yet: where reading resumes, and the incomplete last line
/// (a reader only takes records up to the last newline; the writer appends whole records).
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    file: Option<File>,
    /// Where the first read starts (0, or the end of the log when an attach began).
    offset: u64,
    pending: Vec<u8>,
}

impl LogTail {
    pub fn new(path: &Path, offset: u64) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            file: None,
            offset,
            pending: Vec::new(),
        }
    }

    /// Prints the records appended since the last call. A log that does not exist (yet) is
    /// empty. False once the reader went away (`| head`): the caller stops quietly.
    pub fn print_new<O: Write, E: Write>(
        &mut self,
        printer: &mut LogPrinter<O, E>,
    ) -> Result<bool, LogError> {
        let read_err = |source| LogError::Read {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(mut f) => {
                    f.seek(SeekFrom::Start(self.offset)).map_err(read_err)?;
                    self.file = Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                Err(source) => return Err(read_err(source)),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(true);
        };
        file.read_to_end(&mut self.pending).map_err(read_err)?;
        let complete = self
            .pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in self.pending[..complete].split(|b| *b == b'\n') {
            if let Some(record) = parse_record(line) {
                if let Err(e) = printer.print(&record) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(false);
                    }
                    return Err(LogError::Write {
                        path: PathBuf::from("-"),
                        source: e,
                    });
                }
            }
        }
        self.pending.drain(..complete);
        let _ = printer.out.flush();
        let _ = printer.err.flush();
        Ok(true)
    }
}

/// The size of the log at `path` (0 if there is none yet): where following only what comes
/// next starts.
pub fn log_end(path: &Path) -> Result<u64, LogError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(LogError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_lines_and_keep_partial_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ctr.log");
        let mut log = LogWriter::create(&path).unwrap();
        log.write(Stream::Stdout, b"one\ntwo\npar").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"tial\n").unwrap();
        let text = std::fs::read(&path).unwrap();
        let records: Vec<_> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_record(l).unwrap())
            .map(|r| {
                (
                    r.stream,
                    r.full,
                    String::from_utf8_lossy(r.content).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            records,
            [
                (Stream::Stdout, true, "one".to_owned()),
                (Stream::Stdout, true, "two".to_owned()),
                (Stream::Stdout, false, "par".to_owned()),
                (Stream::Stderr, true, "oops".to_owned()),
                (Stream::Stdout, true, "tial".to_owned()),
            ]
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        LogPrinter::new(&mut out, &mut err, false)
            .print_file(&path, false, || true)
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\npartial\n");
        assert_eq!(String::from_utf8(err).unwrap(), "oops\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        LogPrinter::new(&mut out, &mut err, true)
            .print_file(&path, false, || true)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 3);
        assert!(
            out.lines().all(|l| l.starts_with("20") && l.contains("Z ")),
            "{out}"
        );
    }

    #[test]
    fn empty_content_and_garbage() {
        assert_eq!(parse_record(b"t stdout F ").unwrap().content, b"");
        assert_eq!(parse_record(b"t stdout F").unwrap().content, b"");
        assert!(parse_record(b"t other F x").is_none());
        assert!(parse_record(b"t stdout X x").is_none());
    }
}
