//! What a pull tells the person waiting for it, as docker shows it: a line per layer
//! (`Waiting`, `Downloading 12.1MB/40.2MB`, `Verifying`, `Extracting 30MB/40.2MB`, `Pull
//! complete`, `Already exists`), and on a terminal a total with the speed, redrawn in place;
//! off a terminal, one plain line per change of state. The pull emits [`Event`]s to a
//! [`Progress`] sink; [`Terminal`], [`Plain`] and [`Quiet`] are the sinks the CLI uses, tests
//! record the events.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::oci::Platform;
use crate::reference::Reference;

/// Where a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// Queued behind the other downloads.
    Waiting,
    /// Its chain is in the store: nothing to fetch.
    AlreadyExists,
    /// `done` of `total` compressed bytes are on disk (and unpacked as they arrive).
    Downloading {
        done: u64,
        total: u64,
    },
    /// A failure to be retried: `attempt` of `of`, after `after`.
    Retrying {
        attempt: u32,
        of: u32,
        after: Duration,
        error: String,
    },
    /// Checking the blob's digest and the diffID.
    Verifying,
    /// `done` of `total` compressed bytes unpacked.
    Extracting {
        done: u64,
        total: u64,
    },
    Complete,
}

/// What a pull reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The manifest was read: the layers are listed next.
    Resolved {
        reference: Reference,
        platform: Platform,
        layers: usize,
    },
    /// A layer (by its blob's digest) changed state.
    Layer { digest: Digest, status: LayerStatus },
    /// The image is stored. `digest` is what the reference resolved to (the index's when it
    /// is one), `id` the image's (its config's digest).
    Done {
        reference: Reference,
        digest: Digest,
        id: Digest,
        up_to_date: bool,
    },
}

/// A sink of pull events (called from the download threads).
pub trait Progress: Sync {
    fn event(&self, event: Event);
}

/// Says nothing (`pull -q`, imports).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _event: Event) {}
}

/// Collects every event (tests).
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Progress for Recorder {
    fn event(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// `1.2MB`, `512B` (docker's decimal units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn status_text(status: &LayerStatus) -> String {
    match status {
        LayerStatus::Waiting => "Waiting".into(),
        LayerStatus::AlreadyExists => "Already exists".into(),
        LayerStatus::Downloading { done, total } => {
            format!("Downloading {}/{}", human(*done), human(*total))
        }
        LayerStatus::Retrying {
            attempt,
            of,
            after,
            error,
        } => format!(
            "Retrying in {}s ({attempt}/{of}): {error}",
            after.as_secs().max(1)
        ),
        LayerStatus::Verifying => "Verifying".into(),
        LayerStatus::Extracting { done, total } => {
            format!("Extracting {}/{}", human(*done), human(*total))
        }
        LayerStatus::Complete => "Pull complete".into(),
    }
}

/// The familiar name and the header line docker prints first: `latest: Pulling from
/// library/busybox`.
fn pulling_from(reference: &Reference) -> String {
    let what = reference
        .tag()
        .map(str::to_owned)
        .or_else(|| reference.digest().map(ToString::to_string))
        .unwrap_or_default();
    let name = if reference.registry() == crate::reference::DOCKER_HUB {
        reference.repository().to_owned()
    } else {
        reference.name()
    };
    format!("{what}: Pulling from {name}")
}

fn done_lines(reference: &Reference, digest: &Digest, up_to_date: bool) -> String {
    let status = if up_to_date {
        format!("Image is up to date for {}", reference.familiar())
    } else {
        format!("Downloaded newer image for {}", reference.familiar())
    };
    format!("Digest: {digest}\nStatus: {status}\n")
}

/// One line per change of state, for logs and pipes. Download progress is not repeated:
/// a layer says `Downloading` once, then how it ended.
pub struct Plain<W: Write + Send> {
    out: Mutex<(W, Vec<(Digest, String)>)>,
}

impl<W: Write + Send> Plain<W> {
    pub fn new(out: W) -> Plain<W> {
        Plain {
            out: Mutex::new((out, Vec::new())),
        }
    }
}

impl<W: Write + Send> Progress for Plain<W> {
    fn event(&self, event: Event) {
        let Ok(mut guard) = self.out.lock() else {
            return;
        };
        let (out, last) = &mut *guard;
        let _ = match event {
            Event::Resolved { reference, .. } => writeln!(out, "{}", pulling_from(&reference)),
            Event::Layer { digest, status } => {
                // The kind of state, without the numbers.
                let kind = status_text(&status)
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                match last.iter_mut().find(|(d, _)| *d == digest) {
                    Some((_, k)) if *k == kind => return,
                    Some((_, k)) => *k = kind,
                    None => last.push((digest.clone(), kind)),
                }
                let text = match status {
                    LayerStatus::Downloading { total, .. } => {
                        format!("Downloading ({})", human(total))
                    }
                    LayerStatus::Extracting { .. } => "Extracting".into(),
                    other => status_text(&other),
                };
                writeln!(out, "{}: {text}", digest.short())
            }
            Event::Done {
                reference,
                digest,
                up_to_date,
                ..
            } => write!(out, "{}", done_lines(&reference, &digest, up_to_date)),
        };
        let _ = out.flush();
    }
}

/// Lines redrawn in place on a terminal, with a total and the speed.
pub struct Terminal<W: Write + Send> {
    state: Mutex<TermState<W>>,
}

struct TermState<W> {
    out: W,
    header: Option<String>,
    layers: Vec<(Digest, LayerStatus)>,
    /// Lines drawn last time (to move the cursor back over them).
    drawn: usize,
    last_draw: Option<Instant>,
    started: Instant,
}

impl<W: Write + Send> Terminal<W> {
    pub fn new(out: W) -> Terminal<W> {
        Terminal {
            state: Mutex::new(TermState {
                out,
                header: None,
                layers: Vec::new(),
                drawn: 0,
                last_draw: None,
                started: Instant::now(),
            }),
        }
    }
}

impl<W: Write> TermState<W> {
    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut text = String::new();
        if self.drawn > 0 {
            // Up over the previous drawing, then clear each line as it is rewritten.
            text.push_str(&format!("\x1b[{}F", self.drawn));
        }
        let mut lines = 0;
        if let Some(h) = &self.header {
            text.push_str(&format!("\x1b[2K{h}\n"));
            lines += 1;
        }
        let (mut done, mut total) = (0u64, 0u64);
        for (digest, status) in &self.layers {
            text.push_str(&format!(
                "\x1b[2K{}: {}\n",
                digest.short(),
                status_text(status)
            ));
            lines += 1;
            match status {
                LayerStatus::Downloading { done: d, total: t }
                | LayerStatus::Extracting { done: d, total: t } => {
                    done += d;
                    total += t;
                }
                _ => {}
            }
        }
        let elapsed = now.duration_since(self.started).as_secs_f64().max(0.001);
        if total > 0 {
            text.push_str(&format!(
                "\x1b[2KTotal {}/{} at {}/s\n",
                human(done),
                human(total),
                human((done as f64 / elapsed) as u64)
            ));
            lines += 1;
        } else if self.drawn > lines {
            text.push_str("\x1b[2K\n");
            lines += 1;
        }
        self.drawn = lines;
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }
}

impl<W: Write + Send> Progress for Terminal<W> {
    fn event(&self, event: Event) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match event {
            Event::Resolved { reference, .. } => {
                s.header = Some(pulling_from(&reference));
                s.draw(true);
            }
            Event::Layer { digest, status } => {
                let force = !matches!(
                    status,
                    LayerStatus::Downloading { .. } | LayerStatus::Extracting { .. }
                );
                match s.layers.iter_mut().find(|(d, _)| *d == digest) {
                    Some((_, st)) => *st = status,
                    None => s.layers.push((digest, status)),
                }
                s.draw(force);
            }
            Event::Done {
                reference,
                digest,
                up_to_date,
                ..
            } => {
                s.draw(true);
                let _ = write!(s.out, "{}", done_lines(&reference, &digest, up_to_date));
                let _ = s.out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn plain_lines_say_each_state_once() {
        let r = Reference::parse("busybox").unwrap();
        let d = Digest::sha256_of(b"l");
        let plain = Plain::new(Vec::new());
        plain.event(Event::Resolved {
            reference: r.clone(),
            platform: Platform::host(),
            layers: 1,
        });
        for done in [0, 10, 20] {
            plain.event(Event::Layer {
                digest: d.clone(),
                status: LayerStatus::Downloading { done, total: 20 },
            });
        }
        plain.event(Event::Layer {
            digest: d.clone(),
            status: LayerStatus::Complete,
        });
        plain.event(Event::Done {
            reference: r.clone(),
            digest: d.clone(),
            id: d.clone(),
            up_to_date: false,
        });
        let text = String::from_utf8(plain.out.into_inner().unwrap().0).unwrap();
        let s = d.short();
        assert_eq!(
            text,
            format!(
                "latest: Pulling from library/busybox\n{s}: Downloading (20B)\n{s}: Pull complete\nDigest: {d}\nStatus: Downloaded newer image for busybox:latest\n"
            )
        );
        assert_eq!(human(40_200_000), "40.2MB");
        let other = Reference::parse("127.0.0.1:5000/ns/app:v1").unwrap();
        assert_eq!(
            pulling_from(&other),
            "v1: Pulling from 127.0.0.1:5000/ns/app"
        );
    }

    #[test]
    fn the_terminal_shows_a_total() {
        let d = Digest::sha256_of(b"l");
        let term = Terminal::new(Vec::new());
        term.event(Event::Layer {
            digest: d.clone(),
            status: LayerStatus::Downloading {
                done: 1_000_000,
                total: 2_000_000,
            },
        });
        let text = String::from_utf8(term.state.into_inner().unwrap().out).unwrap();
        assert!(text.contains("Downloading 1.0MB/2.0MB"), "{text:?}");
        assert!(text.contains("Total 1.0MB/2.0MB at "), "{text:?}");
    }
}
