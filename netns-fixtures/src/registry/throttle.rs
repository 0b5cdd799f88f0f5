//! [`Throttle`]: a TCP proxy in front of a registry, for the failures a client must survive:
//! a bandwidth limit (a pull that takes long enough to be killed midway), connections cut on
//! demand or after so many bytes (a resume), and `429 Too Many Requests` answers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use super::FixtureError;
use super::http::{read_head, respond};
use crate::netns::TestNetns;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Bytes per second towards the client; 0: unlimited.
    rate: AtomicU64,
    /// Cut every connection once this many more bytes went to clients; 0: never. One-shot.
    cut_after: AtomicU64,
    /// Bytes forwarded to clients.
    forwarded: AtomicU64,
    /// The next this many connections get a 429 instead of the registry.
    answer_429: AtomicU32,
    retry_after: AtomicU64,
    answered_429: AtomicU32,
    /// Both ends of every connection, so that `cut` can shut them down.
    conns: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Shared {
    fn cut_all(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(PoisonError::into_inner));
        for (a, b) in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A proxy on 127.0.0.1 in a namespace, forwarding to `target` in the same namespace. Its
/// threads live in the namespace (they connect to the target from there); they stop on drop.
pub struct Throttle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A proxy to `target` (e.g. [`TestRegistry::addr`](super::TestRegistry::addr)).
    pub fn start(ns: &TestNetns, target: SocketAddr) -> Result<Throttle, FixtureError> {
        let shared = Arc::new(Shared::default());
        let (listener, addr) = super::listen(ns)?;
        let state = shared.clone();
        let thread = super::spawn_in(ns, "throttle", move || {
            accept_loop(&listener, target, &state)
        })?;
        Ok(Throttle {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, a registry name for references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Limits what goes to clients to `bytes_per_sec` (0: no limit), from now on.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Closes every open connection now.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Closes every open connection once `bytes` more have gone to clients (once).
    pub fn cut_after(&self, bytes: u64) {
        let now = self.shared.forwarded.load(Ordering::SeqCst);
        self.shared
            .cut_after
            .store(now + bytes.max(1), Ordering::SeqCst);
    }

    /// The next `times` connections get `429 Too Many Requests` (with `Retry-After:
    /// retry_after` seconds when given) in answer to their first request, then are closed.
    pub fn answer_429(&self, times: u32, retry_after: Option<u64>) {
        self.shared
            .retry_after
            .store(retry_after.map_or(u64::MAX, |s| s), Ordering::SeqCst);
        self.shared.answer_429.store(times, Ordering::SeqCst);
    }

    /// How many 429s were sent.
    pub fn answered_429(&self) -> u32 {
        self.shared.answered_429.load(Ordering::SeqCst)
    }

    /// Bytes forwarded to clients so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, state: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let state = state.clone();
                // Spawned from this thread, so in the namespace: the connect to the target
                // happens there.
                match thread::Builder::new()
                    .name("throttle-conn".into())
                    .spawn(move || {
                        if let Err(e) = connection(client, target, &state) {
                            if !state.stop.load(Ordering::SeqCst) {
                                eprintln!("netns-fixtures: throttle: {e}");
                            }
                        }
                    }) {
                    Ok(h) => workers.push(h),
                    Err(e) => eprintln!("netns-fixtures: throttle: spawn: {e}"),
                }
                workers.retain(|w| !w.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("netns-fixtures: throttle accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    state.cut_all();
    for w in workers {
        let _ = w.join();
    }
}

fn connection(mut client: TcpStream, target: SocketAddr, state: &Shared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    // A TLS ClientHello (record type 22) is not a request to answer 429 to: clients probe
    // https first, also on plain registries.
    let mut first = [0u8; 1];
    let tls = client.peek(&mut first)? == 1 && first[0] == 0x16;
    client.set_read_timeout(None)?;
    let take_429 = !tls
        && state
            .answer_429
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if take_429 {
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = read_head(&mut client)?;
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        let retry_after = state.retry_after.load(Ordering::SeqCst);
        if retry_after != u64::MAX {
            headers.push(("Retry-After", retry_after.to_string()));
        }
        let body = json!({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]});
        // Counted before the answer leaves: a client may read it and the test check the
        // count before this thread runs again.
        state.answered_429.fetch_add(1, Ordering::SeqCst);
        respond(
            &mut client,
            429,
            "Too Many Requests",
            &headers,
            body.to_string().as_bytes(),
        )?;
        return Ok(());
    }
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    state
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((client.try_clone()?, server.try_clone()?));

    // Client → server untouched, on its own thread; server → client here, metered.
    let mut up_from = client.try_clone()?;
    let mut up_to = server.try_clone()?;
    let up = thread::Builder::new()
        .name("throttle-up".into())
        .spawn(move || {
            let _ = io::copy(&mut up_from, &mut up_to);
            let _ = up_to.shutdown(Shutdown::Write);
        })?;
    let result = downstream(server, client, state);
    let _ = up.join();
    result
}

fn downstream(mut from: TcpStream, mut to: TcpStream, state: &Shared) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let started = Instant::now();
    let mut sent: u64 = 0;
    loop {
        let rate = state.rate.load(Ordering::SeqCst);
        // Small reads at low rates, so the pace is even.
        let chunk = if rate == 0 {
            buf.len()
        } else {
            usize::try_from(rate / 20)
                .unwrap_or(buf.len())
                .clamp(512, buf.len())
        };
        let n = match from.read(&mut buf[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        let total = state.forwarded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let cut_at = state.cut_after.load(Ordering::SeqCst);
        if cut_at != 0
            && total >= cut_at
            && state
                .cut_after
                .compare_exchange(cut_at, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            state.cut_all();
            break;
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                thread::sleep(due - elapsed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    Ok(())
}
