//! Crash injection for the runtime verbs (issue 11): `berth run -d`, `berth rm -f` and
//! `berth restart` are killed with SIGKILL at random points, then `berth rm -f` of whatever
//! `ps -a` lists and `berth system prune` must leave nothing: no container directory (staging
//! and doomed ones included), record, netns file, mount, cgroup, process, veth, per-container
//! firewall rule, IPAM reservation or CNI cache entry, all inside the test's own roots and
//! throwaway host namespace.
//!
//! Each round picks a verb, its flags and a kill point from a seeded generator, runs the verb,
//! kills it, recovers and audits. Kill points are of two kinds, alternately:
//! - **at a system call**: the verb runs under ptrace and is killed on entry to its k-th
//!   system call that changes something outside the process (writes, creates, renames,
//!   removes, mounts, signals, spawns): crash consistency is decided exactly there, and some
//!   windows are only a few system calls wide (a directory made but its record not yet
//!   renamed into it). k is drawn up to the number a whole unkilled run makes, so every such
//!   point can be hit, reproducibly;
//! - **after a delay**, drawn up to a bit more than a whole unkilled run takes, and sometimes
//!   applied to every `berth` process of the test at once, monitors included (a crash of the
//!   machine's berth side): the verb's children are not traced, this reaches them too.
//!
//! - `cargo test -p berth-runtime --test crash_injection`: a short run (12 kills).
//! - `BERTH_CRASH_KILLS=60 cargo test -p berth-runtime --test crash_injection -- --nocapture`:
//!   the long mode; `BERTH_CRASH_SEED=<n>` replays a seed. The last line printed is the
//!   summary: seed, kills, kills that landed on a live process, rounds with leftovers.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BERTH, Env, have_portmap, processes_mentioning};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

const DEFAULT_KILLS: usize = 12;
const DEFAULT_SEED: u64 = 0x000b_e274_0011;

/// splitmix64: small, seedable, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    RunDetached,
    RemoveForce,
    Restart,
}

const VERBS: [Verb; 3] = [Verb::RunDetached, Verb::RemoveForce, Verb::Restart];

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// On entry to the k-th (1-based) state-changing system call of the verb's process.
    Syscall(u64),
    /// After this long; `everything`: every berth process of the test, not just the verb.
    After { delay: Duration, everything: bool },
}

/// One round's choices, printed with any failure so that it can be replayed.
#[derive(Debug)]
struct Round {
    verb: Verb,
    /// `run -d` flags beyond the name.
    flags: Vec<&'static str>,
    kill: KillPoint,
}

/// What an unkilled run of a verb costs: how long, how many state-changing system calls.
#[derive(Debug, Clone, Copy)]
struct Calibration {
    took: Duration,
    syscalls: u64,
}

fn env_number(key: &str) -> Option<u64> {
    let text = std::env::var(key).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The verb's command line (after the global flags) for container `name`.
fn verb_args(env: &Env, verb: Verb, flags: &[&str], name: &str) -> Vec<String> {
    let mut args: Vec<String> = match verb {
        Verb::RunDetached => vec![
            "run".into(),
            "-d".into(),
            "--cgroup-parent".into(),
            env.cgroup_parent.clone(),
            "--name".into(),
            name.into(),
        ],
        Verb::RemoveForce => vec!["rm".into(), "-f".into(), name.into()],
        Verb::Restart => vec!["restart".into(), "-t".into(), "0".into(), name.into()],
    };
    if verb == Verb::RunDetached {
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        args.extend(["busybox", "sleep", "600"].map(String::from));
    }
    args
}

/// System calls that change something outside the calling process (x86_64 numbers): where a
/// kill decides what is left on disk, in the kernel, or in other processes.
#[cfg(target_arch = "x86_64")]
fn changes_state(nr: u64, args: [u64; 3]) -> bool {
    const O_ACCMODE: u64 = 3;
    const O_CREAT: u64 = 0o100;
    const O_TRUNC: u64 = 0o1000;
    let writes_file = |flags: u64| flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0;
    match nr {
        // open(path, flags), openat(dirfd, path, flags)
        2 => writes_file(args[1]),
        257 => writes_file(args[2]),
        // write, pwrite64, writev, sendfile, fsync, fdatasync, ftruncate, rename, mkdir,
        // rmdir, creat, link, unlink, symlink, chmod, fchmod, chown, fchown, mknod, mount,
        // umount2, mkdirat, mknodat, fchownat, unlinkat, renameat, linkat, symlinkat,
        // fchmodat, renameat2, copy_file_range
        1
        | 18
        | 20
        | 40
        | 74
        | 75
        | 77
        | 82..=88
        | 90..=93
        | 133
        | 165
        | 166
        | 258
        | 259
        | 260
        | 263..=266
        | 268
        | 316
        | 326 => true,
        // clone, fork, vfork, execve, kill, tgkill, clone3, pidfd_send_signal
        56..=59 | 62 | 234 | 435 | 424 => true,
        // flock, setns, unshare
        73 | 308 | 272 => true,
        _ => false,
    }
}

/// Runs `berth <args>` in the test's host netns under ptrace and kills it on entry to its
/// `kill_at`-th state-changing system call (never, with `None`). Returns how many such calls
/// it made and whether it was killed while alive.
#[cfg(target_arch = "x86_64")]
fn run_traced(env: &Env, args: &[String], kill_at: Option<u64>) -> (u64, bool) {
    use nix::sys::ptrace;
    let (root, runroot) = (env.root.clone(), env.runroot.clone());
    let args = args.to_vec();
    // The tracer is the thread that forked the tracee: the whole trace runs on the one helper
    // thread Netns::run provides (which also puts the tracee in the test's host netns).
    env.host
        .run(move || {
            let mut cmd = Command::new(BERTH);
            cmd.arg("--root")
                .arg(&root)
                .arg("--runroot")
                .arg(&runroot)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: PTRACE_TRACEME is a single async-signal-safe system call.
            unsafe {
                cmd.pre_exec(|| ptrace::traceme().map_err(std::io::Error::from));
            }
            // Reaped by the waitpid calls below, which ptrace needs anyway.
            #[allow(clippy::zombie_processes)]
            let child = cmd.spawn().unwrap();
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
            // Stopped by the SIGTRAP of its exec.
            waitpid(pid, None).unwrap();
            ptrace::setoptions(
                pid,
                ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL,
            )
            .unwrap();
            let mut count = 0;
            let mut signal = None;
            loop {
                if ptrace::syscall(pid, signal.take()).is_err() {
                    break;
                }
                match waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap() {
                    WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return (count, false),
                    WaitStatus::PtraceSyscall(_) => {
                        let regs = ptrace::getregs(pid).unwrap();
                        // On entry the kernel has set rax to -ENOSYS; on exit it holds the
                        // result.
                        let entry = regs.rax as i64 == -i64::from(libc::ENOSYS);
                        if entry && changes_state(regs.orig_rax, [regs.rdi, regs.rsi, regs.rdx]) {
                            count += 1;
                            if Some(count) == kill_at {
                                kill(pid, Signal::SIGKILL).unwrap();
                                while !matches!(
                                    waitpid(pid, Some(WaitPidFlag::__WALL)),
                                    Ok(WaitStatus::Signaled(..) | WaitStatus::Exited(..)) | Err(_)
                                ) {}
                                return (count, true);
                            }
                        }
                    }
                    // SIGTRAP would be ours (an exec); anything else is the verb's to get.
                    WaitStatus::Stopped(_, sig) => {
                        signal = (sig != Signal::SIGTRAP).then_some(sig);
                    }
                    _ => {}
                }
            }
            (count, false)
        })
        .unwrap()
}

#[cfg(not(target_arch = "x86_64"))]
fn run_traced(_env: &Env, _args: &[String], _kill_at: Option<u64>) -> (u64, bool) {
    (0, false)
}

/// Runs the verb, killed after `delay` (it, or every berth process of the test).
fn run_killed_after(env: &Env, args: &[String], delay: Duration, everything: bool) -> bool {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = env.command(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = env.host.spawn(&mut cmd).unwrap();
    std::thread::sleep(delay);
    let alive = child.try_wait().unwrap().is_none();
    if everything {
        for pid in processes_mentioning(env.tmp.path()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = child.kill();
    child.wait().unwrap();
    alive
}

/// A container for `rm -f` and `restart` to work on.
fn prepare(env: &Env, verb: Verb, name: &str) {
    if verb != Verb::RunDetached {
        env.run_detached(&["--name", name, "busybox", "sleep", "600"]);
    }
}

/// An unkilled, traced run of `verb`.
fn calibrate(env: &Env, verb: Verb) -> Calibration {
    prepare(env, verb, "calibrate");
    let started = Instant::now();
    let (syscalls, _) = run_traced(env, &verb_args(env, verb, &[], "calibrate"), None);
    let took = started.elapsed();
    let _ = env.berth(&["rm", "-f", "calibrate"]);
    Calibration { took, syscalls }
}

/// `rm -f` of everything `ps -a` lists, then `system prune`: what failed.
fn recover(env: &Env) -> Vec<String> {
    let mut failures = Vec::new();
    for c in env.ps() {
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        let out = env.berth(&["rm", "-f", &id]);
        if out.code != 0 {
            failures.push(format!("rm -f {id}: {out:?}"));
        }
    }
    let out = env.berth(&["system", "prune"]);
    if out.code != 0 {
        failures.push(format!("system prune: {out:?}"));
    }
    failures
}

#[test]
fn runtime_verbs_killed_at_random_points_leave_nothing_behind() {
    let kills = env_number("BERTH_CRASH_KILLS").map_or(DEFAULT_KILLS, |n| n as usize);
    let seed = env_number("BERTH_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    let mut rng = Rng(seed);
    let env = Env::new();
    let portmap = have_portmap();
    // The image and the default network exist before the first calibration.
    env.run(&["--rm", "busybox", "true"]);
    let calibrations: Vec<(Verb, Calibration)> =
        VERBS.iter().map(|v| (*v, calibrate(&env, *v))).collect();
    eprintln!("crash injection: seed {seed:#x}, {kills} kills, unkilled runs {calibrations:?}");
    let traced = calibrations.iter().all(|(_, c)| c.syscalls > 0);

    let mut landed = 0;
    let mut leftovers = Vec::new();
    for n in 0..kills {
        let verb = VERBS[n % VERBS.len()];
        let mut flags = Vec::new();
        if verb == Verb::RunDetached {
            match rng.below(3) {
                0 => flags.push("--rm"),
                1 if portmap => flags.extend(["-p", "18080:80"]),
                _ => {}
            }
        }
        let cal = calibrations.iter().find(|(v, _)| *v == verb).unwrap().1;
        let point = if traced && (n / VERBS.len()) % 2 == 0 {
            KillPoint::Syscall(1 + rng.below(cal.syscalls))
        } else {
            let max_us = u64::try_from(cal.took.as_micros()).unwrap_or(u64::MAX) * 11 / 10;
            KillPoint::After {
                delay: Duration::from_micros(rng.below(max_us)),
                everything: rng.below(3) == 0,
            }
        };
        let round = Round {
            verb,
            flags,
            kill: point,
        };
        let name = format!("c{n}");
        prepare(&env, round.verb, &name);
        let args = verb_args(&env, round.verb, &round.flags, &name);
        let alive = match round.kill {
            KillPoint::Syscall(k) => run_traced(&env, &args, Some(k)).1,
            KillPoint::After { delay, everything } => {
                run_killed_after(&env, &args, delay, everything)
            }
        };
        if alive {
            landed += 1;
        }
        let mut left = recover(&env);
        left.extend(env.leftovers());
        if !left.is_empty() {
            eprintln!("round {n} {round:?}: left {left:#?}");
            leftovers.push((n, format!("{round:?}"), left));
            // Start the next round clean, whatever this one left.
            recover(&env);
        }
    }
    eprintln!(
        "crash injection summary: seed {seed:#x}, {kills} kills, {landed} landed on a live \
         berth process, {} rounds with leftovers",
        leftovers.len()
    );
    assert!(leftovers.is_empty(), "leftovers: {leftovers:#?}");
    // Kills must mostly land mid-way, or the test proves little.
    assert!(
        landed * 2 >= kills,
        "only {landed} of {kills} kills landed on a live process"
    );
    env.assert_clean();
}
