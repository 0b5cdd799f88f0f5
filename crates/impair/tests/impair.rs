//! Impairments measured with real traffic between two throwaway namespaces joined by a veth
//! pair (`a:eth1` — `b:eth1`): rate with iperf3, loss with a counted UDP burst, delay and
//! jitter with a UDP echo's round trips; then that `clear` restores the baseline, that a
//! second `apply` replaces the first, that a killed delay line is seen by `status`, that a
//! vanished namespace or interface is a clear error, and that nothing is left behind.
//!
//! The delay line runs as its own process, as in the runtime: this test binary re-executes
//! itself with `--ignored --exact delay_line_child` (see [`TestLauncher`]).
//!
//! The measuring tests hold one lock: on a 2-core machine, measuring two links at once
//! measures the scheduler.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_impair::{
    Applied, DelayLineConfig, ImpairError, Impairment, Launcher, Mechanism, Missing, Percent, Rate,
    apply, clear, probe, spawn_detached, status,
};
use netns_fixtures::{TestNetns, require_root, test_subnet_v4, wire};

const CHILD_ENV: &str = "BERTH_IMPAIR_TEST_WIRE";
static MEASURE: Mutex<()> = Mutex::new(());

/// Starts the delay line as this test binary, re-executed to run only [`delay_line_child`].
struct TestLauncher;

impl Launcher for TestLauncher {
    fn launch(&self, config: &DelayLineConfig) -> std::io::Result<u32> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--ignored", "--exact", "delay_line_child", "--nocapture"])
            .env(CHILD_ENV, config.to_json());
        let log = std::env::var_os("BERTH_IMPAIR_TEST_LOG").map(std::path::PathBuf::from);
        spawn_detached(&mut cmd, log.as_ref())
    }
}

/// The delay line's process: what `berth lab wire` will run.
#[test]
#[ignore = "the delay line process that the other tests start"]
fn delay_line_child() {
    let json = std::env::var(CHILD_ENV).expect("run by TestLauncher with the config");
    let config = DelayLineConfig::from_json(&json).unwrap();
    match berth_impair::delay_line::run(&config) {
        Ok(exit) => eprintln!("delay line for {}: {exit:?}", config.ifname),
        Err(e) => panic!("delay line: {}", berth_netlink_chain(&e)),
    }
}

fn berth_netlink_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Two namespaces, a veth pair between them, an address on each end.
struct Pair {
    a: TestNetns,
    b: TestNetns,
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
}

impl Pair {
    fn new() -> Pair {
        require_root();
        let a = TestNetns::with_tag("a").unwrap();
        let b = TestNetns::with_tag("b").unwrap();
        wire(&a, "eth1", &b, "eth1").unwrap();
        let net = test_subnet_v4();
        let base = u32::from(net.network());
        let (ip_a, ip_b) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        a.ip(&["addr", "add", &format!("{ip_a}/24"), "dev", "eth1"])
            .unwrap();
        b.ip(&["addr", "add", &format!("{ip_b}/24"), "dev", "eth1"])
            .unwrap();
        let pair = Pair { a, b, ip_a, ip_b };
        // Resolve the neighbours before anything is impaired, so lost ARP requests do not
        // count as lost datagrams.
        let echo = pair.echo();
        assert!(pair.rtts(&echo, 3).len() == 3, "no baseline connectivity");
        pair
    }

    fn apply_a(&self, imp: &Impairment) -> Result<Applied, ImpairError> {
        apply(self.a.path(), "eth1", imp, &TestLauncher)
    }

    /// A UDP echo on b.
    fn echo(&self) -> Echo {
        Echo::start(&self.b, SocketAddr::from((self.ip_b, 7007)))
    }

    /// Round trips of `n` sequential probes from a to the echo (lost ones are left out).
    fn rtts(&self, echo: &Echo, n: usize) -> Vec<Duration> {
        real_time();
        let any = match echo.addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        let sock = self.a.run(|| UdpSocket::bind(any)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        for seq in 0..n as u32 {
            let start = Instant::now();
            sock.send_to(&seq.to_be_bytes(), echo.addr).unwrap();
            // Skip late answers to earlier probes.
            while let Ok(len) = sock.recv(&mut buf) {
                if len == 4 && buf[..4] == seq.to_be_bytes() {
                    out.push(start.elapsed());
                    break;
                }
            }
        }
        out
    }
}

struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &TestNetns, addr: SocketAddr) -> Echo {
        let sock = ns.run(|| UdpSocket::bind(addr)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            real_time();
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Puts the calling thread in `SCHED_FIFO` 1, as the delay line puts itself: round trips
/// then measure the link, not how long a woken test thread waits for a busy CPU (seen here:
/// +4 ms on the median with both cores busy, for the echo and the client alike).
fn real_time() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler(2) on the calling thread with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    assert_eq!(rc, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
}

fn mean_ms(v: &[Duration]) -> f64 {
    v.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / v.len() as f64
}

/// The median round trip in ms: what the assertions use. A user-space delay line shares two
/// cores with whatever else runs (other test binaries, builds); a few probes that waited for
/// a CPU move the mean, not the median, and the delay itself is what is measured.
fn median_ms(v: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

/// No Berth process, qdisc, table or TAP left on a's eth1.
fn assert_nothing_left(pair: &Pair, applied: &Applied) {
    let links = pair.a.ip(&["-o", "link"]).unwrap();
    assert!(!links.contains("berthdl"), "TAP left:\n{links}");
    let qdiscs = pair
        .a
        .output(Command::new("tc").args(["qdisc", "show", "dev", "eth1"]))
        .unwrap();
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout).into_owned();
    assert!(!qdiscs.contains("be27:"), "qdisc left: {qdiscs}");
    let tables = pair
        .a
        .output(Command::new("nft").args(["list", "tables"]))
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(!tables.contains("berth-impair"), "table left: {tables}");
    // clear waits for the delay line to exit: it is gone (or a zombie for our reaper) now.
    if let Some(line) = &applied.delay_line {
        let pid = line.pid;
        assert!(
            is_zombie(pid) || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "delay line {pid} still runs after clear"
        );
    }
}

/// Waits up to 2 s for process `pid` to exit (a zombie counts: its reaper thread may not
/// have run yet).
fn wait_exited(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_zombie(pid) && std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "delay line {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn this_kernel_has_a_mechanism_for_everything() {
    require_root();
    let caps = probe();
    eprintln!("{}", serde_json::to_string(&caps).unwrap());
    assert!(caps.tbf.is_yes(), "tbf: {}", caps.tbf);
    assert!(
        caps.netem.is_yes() || caps.delay_line().is_yes(),
        "no delay: {caps:?}"
    );
    if let berth_impair::Availability::No(why) = &caps.netem {
        assert!(why.contains("CONFIG_NET_SCH_NETEM"), "{why}");
    }
}

#[test]
fn rate_10mbit_within_15_percent() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    let imp = Impairment {
        rate: Rate::bits_per_second(10_000_000),
        ..Impairment::default()
    };
    let applied = pair.apply_a(&imp).unwrap();
    let measured = iperf3(&pair, 5201);
    eprintln!("rate 10mbit: measured {:.2} Mbit/s", measured / 1e6);
    // Goodput: TCP/IP and Ethernet headers take ~4.4 % of each 1514-byte frame tbf counts.
    assert!(
        (measured - 10e6).abs() <= 0.15 * 10e6,
        "10 Mbit/s measured as {:.2} Mbit/s",
        measured / 1e6
    );
    clear(&applied).unwrap();
    let baseline = iperf3(&pair, 5202);
    eprintln!("after clear: {:.0} Mbit/s", baseline / 1e6);
    assert!(
        baseline > 50e6,
        "clear left the link slow: {:.1} Mbit/s",
        baseline / 1e6
    );
    assert_nothing_left(&pair, &applied);
}

/// Bits per second received by an iperf3 server on b from a client on a in 3 s (at 10
/// Mbit/s slow start is over within milliseconds; iperf3's `-O` skews the receiver's sum).
fn iperf3(pair: &Pair, port: u16) -> f64 {
    let port_s = port.to_string();
    let mut server = pair
        .b
        .spawn(
            Command::new("iperf3")
                .args(["-s", "-1", "-B", &pair.ip_b.to_string(), "-p", &port_s])
                .stdout(std::process::Stdio::null()),
        )
        .unwrap();
    let mut out = None;
    for _ in 0..50 {
        let o = pair
            .a
            .output(Command::new("iperf3").args([
                "-c",
                &pair.ip_b.to_string(),
                "-p",
                &port_s,
                "-t",
                "3",
                "-J",
            ]))
            .unwrap();
        // iperf3 -J exits 0 on "connection refused" too: the JSON's "error" says it.
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if o.status.success() && json.get("error").is_none() {
            out = Some(json);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    let json = out.expect("iperf3 client never connected");
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 said: {json}"))
}

/// Sends `n` numbered datagrams from a to b, paced, and returns the share that arrived.
fn udp_delivery(pair: &Pair, n: u32, port: u16) -> f64 {
    let rx = pair
        .b
        .run(|| UdpSocket::bind((pair.ip_b, port)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Room for every datagram (each costs ~1 KiB of buffer): a receiver descheduled for a
    // moment by a busy machine must not drop what the impairment let through.
    let size: libc::c_int = 8 << 20;
    // SAFETY: a valid socket and a pointer to an int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    let counter = std::thread::spawn(move || {
        let mut seen = vec![false; n as usize];
        let mut buf = [0u8; 64];
        while let Ok(len) = rx.recv(&mut buf) {
            if len == 4 {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(s) = seen.get_mut(seq) {
                    *s = true;
                }
            }
        }
        seen.iter().filter(|&&s| s).count()
    });
    let tx = pair
        .a
        .run(|| UdpSocket::bind((pair.ip_a, 0)))
        .unwrap()
        .unwrap();
    for seq in 0..n {
        tx.send_to(&seq.to_be_bytes(), (pair.ip_b, port)).unwrap();
        // 50 µs apart: ~20 000 datagrams a second, far below what the receiver drains.
        if seq % 10 == 9 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let received = counter.join().unwrap();
    received as f64 / f64::from(n)
}

#[test]
fn loss_5_and_20_percent_within_5_points() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    for (percent, port) in [(5u32, 7101u16), (20, 7102)] {
        let imp = Impairment {
            loss: Percent::whole(percent),
            ..Impairment::default()
        };
        let applied = pair.apply_a(&imp).unwrap();
        assert_eq!(applied.mechanism, Mechanism::Fallback);
        let delivered = udp_delivery(&pair, 4000, port);
        let lost = (1.0 - delivered) * 100.0;
        eprintln!("loss {percent}%: measured {lost:.2}% over 4000 datagrams");
        assert!(
            (lost - f64::from(percent)).abs() <= 5.0,
            "loss {percent}% measured as {lost:.2}%"
        );
        clear(&applied).unwrap();
        assert_nothing_left(&pair, &applied);
    }
    let after = udp_delivery(&pair, 1000, 7103);
    assert!(
        after > 0.99,
        "clear left loss: {:.1}% delivered",
        after * 100.0
    );
}

#[test]
fn delay_and_jitter_within_20_percent() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    let echo = pair.echo();
    let base = mean_ms(&pair.rtts(&echo, 20));
    eprintln!("baseline RTT {base:.3} ms");

    // a's egress only: the round trip gains one delay.
    let imp = Impairment {
        delay: ms(20),
        ..Impairment::default()
    };
    let applied = pair.apply_a(&imp).unwrap();
    let rtts = pair.rtts(&echo, 50);
    assert_eq!(rtts.len(), 50, "probes lost through the delay line");
    let median = median_ms(&rtts);
    eprintln!(
        "delay 20ms: RTT median {median:.2} ms, mean {:.2} ms",
        mean_ms(&rtts)
    );
    assert!(
        (median - 20.0).abs() <= 4.0,
        "delay 20 ms measured as {median:.2} ms"
    );

    // Both ends: each direction gains 20 ms, as with netem on both ends.
    let applied_b = apply(pair.b.path(), "eth1", &imp, &TestLauncher).unwrap();
    let rtts = pair.rtts(&echo, 30);
    let median = median_ms(&rtts);
    eprintln!(
        "delay 20ms both ends: RTT median {median:.2} ms, mean {:.2} ms",
        mean_ms(&rtts)
    );
    assert!(
        (median - 40.0).abs() <= 8.0,
        "2 × 20 ms measured as {median:.2} ms"
    );
    clear(&applied_b).unwrap();

    // With jitter: every round trip within delay ± jitter (plus scheduling), mean on delay.
    let imp = Impairment {
        delay: ms(20),
        jitter: ms(2),
        ..Impairment::default()
    };
    let applied = {
        let replaced = pair.apply_a(&imp).unwrap();
        // The first delay line is gone: apply replaced it.
        assert_nothing_running(&applied);
        replaced
    };
    let rtts = pair.rtts(&echo, 100);
    assert_eq!(rtts.len(), 100);
    let median = median_ms(&rtts);
    let (lo, hi) = rtts.iter().fold((f64::MAX, 0f64), |(lo, hi), d| {
        let v = d.as_secs_f64() * 1e3;
        (lo.min(v), hi.max(v))
    });
    eprintln!(
        "delay 20ms jitter 2ms: RTT median {median:.2} ms, mean {:.2}, min {lo:.2}, max {hi:.2}",
        mean_ms(&rtts)
    );
    assert!((median - 20.0).abs() <= 4.0, "median {median:.2} ms");
    assert!(
        lo >= 17.5,
        "a round trip of {lo:.2} ms is below delay - jitter"
    );
    assert!(hi - lo >= 1.0, "no jitter seen: {lo:.2}..{hi:.2} ms");

    clear(&applied).unwrap();
    let after = mean_ms(&pair.rtts(&echo, 20));
    eprintln!("after clear: RTT {after:.3} ms");
    assert!(after < base + 2.0, "clear left a delay: {after:.2} ms");
    assert_nothing_left(&pair, &applied);
}

fn assert_nothing_running(applied: &Applied) {
    wait_exited(applied.delay_line.as_ref().expect("a delay line").pid);
}

#[test]
fn everything_at_once_then_a_killed_delay_line_is_seen_and_restarted() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    let echo = pair.echo();
    let imp = Impairment {
        delay: ms(20),
        loss: Percent::whole(10),
        rate: Rate::bits_per_second(50_000_000),
        ..Impairment::default()
    };
    let applied = pair.apply_a(&imp).unwrap();
    assert!(applied.qdisc && applied.table.is_some() && applied.delay_line.is_some());
    assert_eq!(status(&applied).unwrap(), vec![]);
    let rtts = pair.rtts(&echo, 100);
    let lost = 100 - rtts.len();
    let median = median_ms(&rtts);
    eprintln!("delay 20ms loss 10%: {lost} of 100 probes lost, RTT median {median:.2} ms");
    assert!(
        (median - 20.0).abs() <= 4.0,
        "delay 20 ms measured as {median:.2} ms"
    );
    assert!(lost <= 25, "{lost} of 100 lost at 10 %");

    // The state round-trips as the caller stores it.
    let stored: Applied = serde_json::from_str(&serde_json::to_string(&applied).unwrap()).unwrap();
    assert_eq!(stored, applied);

    let line = applied.delay_line.clone().unwrap();
    // SAFETY: kill(2) of the delay line this test started.
    assert_eq!(unsafe { libc::kill(line.pid as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let missing = status(&applied).unwrap();
        if missing == vec![Missing::DelayLine { pid: line.pid }] {
            break;
        }
        assert!(Instant::now() < deadline, "status after kill: {missing:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A dead delay line blackholes the link (the fwd finds no TAP) rather than removing the
    // delay silently.
    assert!(
        pair.rtts(&echo, 3).is_empty(),
        "frames passed a dead delay line"
    );

    let restarted = pair.apply_a(&applied.impairment).unwrap();
    assert_eq!(status(&restarted).unwrap(), vec![]);
    assert!(pair.rtts(&echo, 20).len() >= 10);
    clear(&restarted).unwrap();
    assert_nothing_left(&pair, &restarted);
    assert_eq!(
        status(&restarted).unwrap(),
        vec![
            Missing::Qdisc,
            Missing::Table,
            Missing::DelayLine {
                pid: restarted.delay_line.as_ref().unwrap().pid
            }
        ]
    );
}

#[test]
fn vanished_namespace_or_interface_is_a_clear_error() {
    require_root();
    let imp = Impairment {
        delay: ms(5),
        ..Impairment::default()
    };
    let err = apply(
        std::path::Path::new("/run/netns/bt-no-such-ns"),
        "eth1",
        &imp,
        &TestLauncher,
    )
    .unwrap_err();
    assert!(matches!(err, ImpairError::NetnsGone(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "network namespace /run/netns/bt-no-such-ns does not exist (any more)"
    );

    let ns = TestNetns::with_tag("v").unwrap();
    let err = apply(ns.path(), "eth9", &imp, &TestLauncher).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no interface eth9 in {}", ns.path().display())
    );

    let bad = Impairment {
        jitter: ms(2),
        ..Impairment::default()
    };
    let err = apply(ns.path(), "lo", &bad, &TestLauncher).unwrap_err();
    assert!(
        err.to_string().contains("jitter 2ms needs a delay"),
        "{err}"
    );

    // An impairment whose namespace went away clears without error and says so in status;
    // its delay line exits on its own rather than keep the dead namespace alive.
    let other = TestNetns::with_tag("w").unwrap();
    other
        .ip(&["link", "add", "x0", "type", "veth", "peer", "name", "x1"])
        .unwrap();
    other.ip(&["link", "set", "x0", "up"]).unwrap();
    let applied = apply(
        other.path(),
        "x0",
        &Impairment {
            delay: ms(1),
            loss: Percent::whole(1),
            ..Impairment::default()
        },
        &TestLauncher,
    )
    .unwrap();
    let path = other.path().to_path_buf();
    drop(other);
    assert_eq!(status(&applied).unwrap(), vec![Missing::Netns]);
    wait_exited(applied.delay_line.as_ref().unwrap().pid);
    clear(&applied).unwrap();
    assert!(!path.exists());
}

#[test]
fn corruption_is_seen_by_the_receiver() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    let imp = Impairment {
        corrupt: Percent::whole(20),
        ..Impairment::default()
    };
    let applied = pair.apply_a(&imp).unwrap();
    assert!(
        applied.delay_line.is_some(),
        "corruption runs in the delay line"
    );
    // One bit flipped in a 46-byte frame: the IP or UDP checksum, or a wrong destination
    // MAC or EtherType, makes the receiver drop it — unless it landed in the source MAC
    // (6 of 46 bytes). So about 20 % × 87 % of the datagrams do not arrive.
    let lost = (1.0 - udp_delivery(&pair, 4000, 7201)) * 100.0;
    eprintln!("corrupt 20%: {lost:.2}% of 4000 datagrams dropped by the receiver");
    assert!(
        (12.0..=25.0).contains(&lost),
        "corrupt 20% dropped {lost:.2}%"
    );
    clear(&applied).unwrap();
    assert_nothing_left(&pair, &applied);
}

#[test]
fn arp_and_neighbour_discovery_cross_the_delay_line() {
    let _m = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new();
    // IPv6 addresses without duplicate address detection, so they are usable at once; no
    // neighbour has been resolved on them yet.
    let net = netns_fixtures::test_subnet_v6();
    let base = u128::from(net.network());
    let (v6_a, v6_b) = (
        std::net::Ipv6Addr::from(base + 1),
        std::net::Ipv6Addr::from(base + 2),
    );
    pair.a
        .ip(&["addr", "add", &format!("{v6_a}/64"), "dev", "eth1", "nodad"])
        .unwrap();
    pair.b
        .ip(&["addr", "add", &format!("{v6_b}/64"), "dev", "eth1", "nodad"])
        .unwrap();
    let imp = Impairment {
        delay: ms(5),
        ..Impairment::default()
    };
    let applied_a = pair.apply_a(&imp).unwrap();
    let applied_b = apply(pair.b.path(), "eth1", &imp, &TestLauncher).unwrap();
    // Forget the IPv4 neighbours: the next probe's ARP request and reply cross both lines.
    pair.a.ip(&["neigh", "flush", "dev", "eth1"]).unwrap();
    pair.b.ip(&["neigh", "flush", "dev", "eth1"]).unwrap();
    let echo = pair.echo();
    let rtts = pair.rtts(&echo, 10);
    assert_eq!(
        rtts.len(),
        10,
        "IPv4 probes lost after an ARP through the delay lines"
    );
    // The first round trip waited for ARP: at least two more crossings.
    eprintln!(
        "IPv4 with ARP: first {:?}, median {:.2} ms",
        rtts[0],
        median_ms(&rtts)
    );
    assert!(rtts[0] >= Duration::from_millis(19), "first {:?}", rtts[0]);
    assert!((median_ms(&rtts) - 10.0).abs() <= 2.0);

    let echo6 = Echo::start(&pair.b, SocketAddr::from((v6_b, 7007)));
    let rtts = pair.rtts(&echo6, 10);
    assert_eq!(
        rtts.len(),
        10,
        "IPv6 probes lost: neighbour discovery through the lines"
    );
    eprintln!(
        "IPv6 with ND: first {:?}, median {:.2} ms",
        rtts[0],
        median_ms(&rtts)
    );
    assert!(rtts[0] >= Duration::from_millis(19), "first {:?}", rtts[0]);
    assert!((median_ms(&rtts) - 10.0).abs() <= 2.0);
    clear(&applied_a).unwrap();
    clear(&applied_b).unwrap();
    assert_nothing_left(&pair, &applied_a);
}
